"""docs/deploy.md is exact: its loopback commands, run as written, twice in the same folder.

The commands are read from the doc's first ``bash`` block (so they cannot drift from what is
tested). The only changes: the chain's and the SuperLink's ports become free ones (other tests
may hold 8545 and 8000), and the commands that run until Ctrl-C (the chain, the SuperLink, the
nodes) start in the background - each "in its own terminal" - and are stopped with Ctrl-C
(SIGINT) at the end, as a user would. The second pass, on a fresh chain that reuses task 0 and
the same market address, must pay the nodes again (their state is kept per chain).
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fedmarket.processes import stop_group
from fedmarket.runtime.flower.loopback import free_port
from fedmarket.runtime.flower.serve import health

pytestmark = [pytest.mark.anvil, pytest.mark.xdist_group("deploy")]
ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
LONG_RUNNING = ("fedmarket chain up", "fedmarket superlink", "fedmarket node ")


def doc_commands() -> list[str]:
    """The shell commands of the doc's loopback block: continuation lines joined, a ``for``
    loop kept whole, comments dropped."""
    text = DOC.read_text()
    section = text[text.index("## On one machine") :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    block = block[: block.index("```")]
    commands: list[str] = []
    current = ""
    depth = 0
    for line in block.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += line + "\n"
        if stripped.startswith("for "):
            depth += 1
        if stripped == "done":
            depth -= 1
        if not stripped.endswith("\\") and depth == 0:
            commands.append(current.strip())
            current = ""
    assert not current, f"unterminated command in {DOC}: {current}"
    return commands


def test_the_doc_block_is_what_this_test_expects() -> None:
    commands = doc_commands()
    kinds = [next((k for k in LONG_RUNNING if k in c), "once") for c in commands]
    assert kinds.count("fedmarket node ") == 4
    assert kinds[:4] == ["once", "fedmarket chain up", "once", "once"]  # certs, chain, keys
    assert any("fedmarket request" in c for c in commands)
    assert any("fedmarket report" in c for c in commands)


def _wait(what: str, ready: object, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"{what} not ready:\n{log.read_text()[-3000:]}")


def follow_the_doc(folder: Path, chain_port: int, link_port: int, pass_no: int) -> str:
    """Every command of the doc in ``folder``; the requester's output."""
    background: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLWR_")}
    output = ""
    try:
        for i, command in enumerate(doc_commands()):
            command = re.sub(r"\b8545\b", str(chain_port), command)
            command = re.sub(r"\b8000\b", str(link_port), command)
            log = folder / f"pass{pass_no}-{i}.log"
            kind = next((k for k in LONG_RUNNING if k in command), None)
            if kind is None:
                done = subprocess.run(
                    ["bash", "-euc", command], cwd=folder, env=env, capture_output=True,
                    text=True, timeout=600,
                )  # fmt: skip
                log.write_text(done.stdout + done.stderr)
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                output += done.stdout
                continue
            with log.open("wb") as handle:
                proc = subprocess.Popen(
                    ["bash", "-euc", command], cwd=folder, env=env,
                    stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            background.append(proc)
            if kind == "fedmarket chain up":
                _wait("the chain", lambda log=log: b"running;" in log.read_bytes(), proc, log)
            elif kind == "fedmarket superlink":
                up = functools.partial(
                    health, f"127.0.0.1:{link_port}", str(folder / "certs" / "ca.crt"), timeout=1
                )
                _wait("the SuperLink", lambda up=up: up() is None, proc, log)
    finally:
        for proc in reversed(background):  # Ctrl-C in each terminal
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in reversed(background):
            stop_group(proc, timeout=20)  # type: ignore[arg-type]
    return output


def test_deploy_md_runs_as_written_twice_in_the_same_folder(tmp_path: Path) -> None:
    for name in (".venv", "examples", "tools", "Makefile"):
        (tmp_path / name).symlink_to(ROOT / name)
    for pass_no in (1, 2):
        out = follow_the_doc(tmp_path, free_port(), free_port(), pass_no)
        result = json.loads((tmp_path / "runs" / "request" / "result.json").read_text())
        assert result["status"] == "finished", result
        assert result["task_id"] == 0  # a fresh chain each time: task 0 again
        assert sorted(result["winners"]["owners"]) == ["owner1", "owner2"]
        assert sorted(result["winners"]["processors"]) == ["processor1", "processor2"]
        epochs = result["epochs"]
        assert epochs and all(sorted(e["on_time"]) == ["processor1", "processor2"] for e in epochs)
        # every winner paid, nothing escrowed: the nodes bid again on the fresh chain
        assert result["unsettled"] == {}
        assert all(int(result["balances"][n]) > 10**24 for n in ("owner1", "owner2"))
        # the requester showed the epochs as they happened, then the report and the model
        for e in epochs:
            assert f"epoch {e['epoch']}: validation" in out
        assert "re-rendered" in out and "ScaledModel" in out
        for name in ("report.md", "report.json", "model.npz", "progress.jsonl"):
            assert (tmp_path / "runs" / "request" / name).stat().st_size > 0, name
    states = {p.name for p in (tmp_path / "runs" / "nodes").iterdir()}
    assert {"owner1.sqlite", "owner2.sqlite", "processor1.sqlite", "processor2.sqlite"} <= states
