# fedmarket — every target creates what it needs (.venv, tools/node_modules) by itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV  := .venv
BIN   := $(VENV)/bin
PY    := $(BIN)/python
STAMP := $(VENV)/.installed
ANVIL := tools/node_modules/.bin/anvil
# The first interpreter that is Python >= 3.11 (TenSEAL and the code need it).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)

.PHONY: help demo test browser lint typecheck bench-gas bench-he bench-e2e bench-integrity bench-deploy bench-deep bench-privacy certs clean

help:
	@echo "make demo       run the main job on the embedded defaults"
	@echo "make test       run the whole test suite (lint, types, unit, contract, anvil)"
	@echo "make bench-gas  gas of every contract call  -> benchmarks/results/gas.json"
	@echo "make bench-he   encrypted-training speed    -> benchmarks/results/he.json"
	@echo "make bench-e2e  a whole task, phases, sweep -> benchmarks/results/e2e.json"
	@echo "make bench-integrity  attacks x defences    -> benchmarks/results/integrity.json"
	@echo "make bench-deploy     in-process vs multi-process -> benchmarks/results/deploy.json"
	@echo "make bench-deep       an MLP trained on encrypted data -> benchmarks/results/deep.json"
	@echo "                      (ARGS='--epochs 40 --tabular-epochs 10': fewer epochs; ARGS=--quick: 3)"
	@echo "make bench-privacy    a deviating requester's attacks, accuracy vs epsilon -> benchmarks/results/privacy.json"
	@echo "                      (ARGS=--quick: a smoke run)"
	@echo "make certs      a test CA and a SuperLink certificate in certs/ (TLS on a test network)"

$(STAMP): pyproject.toml constraints.txt
	@if [ -z "$(PYTHON)" ]; then echo "error: fedmarket needs Python >= 3.11 on PATH (python3.11, python3.12 or python3.13)." >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[test,explorer]"
	@touch $@

$(ANVIL): tools/package.json
	@command -v npm >/dev/null || { echo "error: npm is needed to install anvil (@foundry-rs/anvil); install Node.js >= 18." >&2; exit 1; }
	# `npm ci` rejects a lock that holds only this platform's anvil binary package; install honours it
	npm --prefix tools install --no-audit --no-fund --loglevel=error
	@test -x $(ANVIL) || { echo "error: npm installed @foundry-rs/anvil but no binary for this platform was found at $(ANVIL)." >&2; exit 1; }
	@touch $@

# The explorer's browser tests drive Debian's Chromium through its ChromeDriver (never a
# downloaded browser). Installed here when missing and we are root, as CI is.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver (Debian packages) for the explorer's browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "error: the explorer's browser tests need Chromium and ChromeDriver: sudo apt-get install chromium chromium-driver" >&2; exit 1; \
	  fi; \
	fi

demo: $(STAMP)
	$(BIN)/fedmarket run examples/breast_cancer.toml --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) $(ANVIL) browser lint typecheck
	FEDMARKET_ANVIL=$(abspath $(ANVIL)) $(BIN)/pytest -n 2 --dist loadgroup

bench-gas: $(STAMP)
	$(PY) benchmarks/gas.py

bench-he: $(STAMP)
	$(PY) benchmarks/he.py

bench-e2e: $(STAMP)
	$(PY) benchmarks/e2e.py

bench-integrity: $(STAMP)
	$(PY) benchmarks/integrity.py

bench-deep: $(STAMP)
	$(PY) benchmarks/deep.py $(ARGS)

bench-privacy: $(STAMP)
	$(PY) benchmarks/privacy.py $(ARGS)

bench-deploy: $(STAMP) $(ANVIL)
	FEDMARKET_ANVIL=$(abspath $(ANVIL)) $(PY) benchmarks/deploy.py

certs:
	tools/mkcerts.sh certs

clean:
	rm -rf $(VENV) tools/node_modules .pytest_cache .mypy_cache .ruff_cache .fedmarket-cache
