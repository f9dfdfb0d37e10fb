"""Compile the market's Vyper contracts to ABI and bytecode, cached on disk.

Compiling Market.vy takes seconds; the result depends only on the source and the compiler
version, so it is cached under ``$FEDMARKET_CACHE`` (default ``~/.cache/fedmarket``) keyed by
the sha256 of both. An unwritable cache directory only costs speed, never correctness.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from fedmarket.errors import ChainError

__all__ = [
    "CONTRACTS_DIR",
    "REQUIRED_VYPER",
    "CompiledContract",
    "CompilerError",
    "cache_dir",
    "compile_contract",
    "compile_source",
    "vyper_version",
]

log = logging.getLogger(__name__)

# Pinned exactly (not just the pragma's ~=0.4.3): every machine must deploy the same bytecode,
# and the gas benchmarks are only comparable across runs with the same compiler.
REQUIRED_VYPER = "0.4.3"
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
# Bump when the cache file layout changes, so old entries are ignored rather than misread.
_CACHE_FORMAT = 1


class CompilerError(ChainError):
    """The contracts could not be compiled: the compiler is missing, the wrong version, or
    rejected the source."""


@dataclass(frozen=True)
class CompiledContract:
    """One compiled contract: what web3 needs to deploy it and talk to it."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    vyper_version: str
    source_sha256: str
    # Whether this came from the disk cache; not part of the contract's identity.
    from_cache: bool = field(default=False, compare=False)


def vyper_version() -> str:
    """The installed vyper version, or :class:`CompilerError` if it is missing or not the pinned
    one. Reads package metadata only, so a cache hit never imports the compiler."""
    try:
        found = metadata.version("vyper")
    except metadata.PackageNotFoundError:
        raise CompilerError(
            "the vyper compiler is not installed, so the contracts cannot be compiled",
            hint=f"run `make` (it creates .venv with the pinned tools) or "
            f"`pip install vyper=={REQUIRED_VYPER}`",
        ) from None
    if found != REQUIRED_VYPER:
        raise CompilerError(
            f"fedmarket's contracts need vyper {REQUIRED_VYPER} but vyper {found} is installed",
            hint=f"`pip install vyper=={REQUIRED_VYPER}` (or `make` to rebuild .venv)",
        )
    return found


def cache_dir() -> Path:
    """Where compiled contracts are cached: ``$FEDMARKET_CACHE/contracts``, by default
    ``~/.cache/fedmarket/contracts``."""
    root = os.environ.get("FEDMARKET_CACHE") or str(Path.home() / ".cache" / "fedmarket")
    return Path(root).expanduser() / "contracts"


def _cache_key(source: str, version: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"fedmarket-contract-cache-v{_CACHE_FORMAT}\0".encode())
    digest.update(version.encode())
    digest.update(b"\0")
    digest.update(source.encode())
    return digest.hexdigest()


def _read_cache(path: Path, name: str, version: str, source_sha: str) -> CompiledContract | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry["vyper_version"] != version or entry["source_sha256"] != source_sha:
            return None
        return CompiledContract(
            name=name,
            abi=list(entry["abi"]),
            bytecode=bytes.fromhex(entry["bytecode"]),
            vyper_version=version,
            source_sha256=source_sha,
            from_cache=True,
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # A truncated or foreign file is just a miss; it is overwritten below.
        log.info("ignoring unreadable contract cache entry %s: %s", path, exc)
        return None


def _write_cache(path: Path, compiled: CompiledContract) -> None:
    entry = {
        "name": compiled.name,
        "vyper_version": compiled.vyper_version,
        "source_sha256": compiled.source_sha256,
        "abi": compiled.abi,
        "bytecode": compiled.bytecode.hex(),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: parallel test workers may compile the same contract at once,
        # and a reader must never see half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(entry, out)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.info("contract cache %s is not writable (%s); compiling without a cache", path, exc)


def _modules() -> str:
    """The shipped modules' sources (lower-case ``.vy`` files a contract may import), in
    name order: part of every cache key, so that editing a module recompiles its users."""
    return "".join(
        f"{p.name}\0{p.read_text(encoding='utf-8')}\0"
        for p in sorted(CONTRACTS_DIR.glob("*.vy"))
        if p.stem.islower()
    )


def compile_source(source: str, name: str, *, use_cache: bool = True) -> CompiledContract:
    """Compile Vyper ``source`` (the contract called ``name``) to ABI and init bytecode; it
    may import the modules shipped in ``contracts/`` (``import market_state``)."""
    version = vyper_version()
    key = _cache_key(source + "\0" + _modules(), version)
    source_sha = hashlib.sha256(source.encode()).hexdigest()
    path = cache_dir() / f"{name}-{key}.json"
    if use_cache:
        cached = _read_cache(path, name, version, source_sha)
        if cached is not None:
            return cached

    # Imported here: importing the compiler costs about a second, which a cache hit avoids.
    from vyper.compiler import compile_code
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.exceptions import VyperException

    try:
        out = compile_code(
            source,
            contract_path=f"{name}.vy",
            input_bundle=FilesystemInputBundle([CONTRACTS_DIR]),
            output_formats=["abi", "bytecode"],
        )
    except VyperException as exc:
        raise CompilerError(
            f"vyper {version} rejected {name}.vy: {exc}",
            hint="fix the contract source; `vyper` on the file shows the same error",
        ) from exc
    compiled = CompiledContract(
        name=name,
        abi=list(out["abi"]),
        bytecode=bytes.fromhex(out["bytecode"].removeprefix("0x")),
        vyper_version=version,
        source_sha256=source_sha,
    )
    if use_cache:
        _write_cache(path, compiled)
    return compiled


def compile_contract(name: str, *, use_cache: bool = True) -> CompiledContract:
    """Compile ``contracts/<name>.vy`` shipped with fedmarket (``"Market"``, ``"MarketSetup"``,
    ``"MarketCourt"`` or ``"DevToken"``)."""
    path = CONTRACTS_DIR / f"{name}.vy"
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        available = sorted(p.stem for p in CONTRACTS_DIR.glob("*.vy"))
        raise CompilerError(
            f"no contract called {name!r} in {CONTRACTS_DIR}",
            hint=f"available: {', '.join(available)}",
        ) from None
    return compile_source(source, name, use_cache=use_cache)
