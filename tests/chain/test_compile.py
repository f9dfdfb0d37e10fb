"""Compiling the contracts: the disk cache, and clear errors about the compiler."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from fedmarket.chain import compile as compile_module
from fedmarket.chain.compile import CompilerError, compile_contract


def test_second_compile_hits_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMARKET_CACHE", str(tmp_path))
    first = compile_contract("DevToken")
    second = compile_contract("DevToken")
    assert (first.from_cache, second.from_cache) == (False, True)
    assert second == first  # same ABI, bytecode, versions
    assert len(list((tmp_path / "contracts").glob("DevToken-*.json"))) == 1


def test_unwritable_cache_still_compiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("FEDMARKET_CACHE", str(blocker))
    compiled = compile_contract("DevToken")
    assert compiled.bytecode and not compiled.from_cache
    assert not compile_contract("DevToken").from_cache


def test_wrong_vyper_version_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_module.metadata, "version", lambda _name: "0.3.10")
    with pytest.raises(CompilerError) as info:
        compile_contract("DevToken")
    assert "0.4.3" in str(info.value) and "0.3.10" in str(info.value)


def test_missing_vyper_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(compile_module.metadata, "version", missing)
    with pytest.raises(CompilerError, match="not installed"):
        compile_contract("Market")


def test_unknown_contract_lists_the_available_ones() -> None:
    with pytest.raises(CompilerError, match="DevToken, Market"):
        compile_contract("Nope")


def test_the_three_market_contracts_share_one_storage_layout_and_fit_eip170() -> None:
    """Market delegates to MarketSetup, which delegates to MarketCourt: they act on one
    storage, so their layouts must be identical; each must deploy (<= 24,576 bytes)."""
    from vyper.compiler import compile_code
    from vyper.compiler.input_bundle import FilesystemInputBundle

    from fedmarket.chain.compile import CONTRACTS_DIR

    layouts = []
    for name in ("Market", "MarketSetup", "MarketCourt"):
        out = compile_code(
            (CONTRACTS_DIR / f"{name}.vy").read_text(),
            contract_path=f"{name}.vy",
            input_bundle=FilesystemInputBundle([CONTRACTS_DIR]),
            output_formats=["layout", "bytecode_runtime"],
        )
        layouts.append((out["layout"]["storage_layout"], out["layout"]["transient_storage_layout"]))
        assert len(bytes.fromhex(out["bytecode_runtime"].removeprefix("0x"))) <= 24_576, name
    assert layouts[0] == layouts[1] == layouts[2]
