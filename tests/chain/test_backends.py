"""The chains the market runs on: embedded, JSON-RPC, and the anvil node the tests start."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from fedmarket.chain import Anvil, Chain, ChainError, embedded, rpc
from fedmarket.chain.backends import ANVIL_CHAIN_ID, dev_keys, find_anvil

# anvil's first dev account for the standard mnemonic.
FIRST_DEV_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def closed_port() -> int:
    """A loopback port nothing listens on (the kernel just handed it out and we released it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_embedded_accounts_match_anvil_dev_accounts() -> None:
    chain = embedded(num_accounts=3)
    assert chain.accounts[0].address == FIRST_DEV_ADDRESS
    assert [a.key.to_0x_hex() for a in chain.accounts] == list(dev_keys(3))
    assert chain.w3.eth.get_balance(chain.accounts[2].address) == 10**6 * 10**18
    assert chain.name == "embedded"


def test_time_travel_and_mine(chain: Chain) -> None:
    before = chain.timestamp()
    height = chain.w3.eth.block_number
    after = chain.time_travel(1_000)
    assert after >= before + 1_000
    chain.mine(2)
    assert chain.w3.eth.block_number >= height + 3
    assert chain.timestamp() >= after
    with pytest.raises(ValueError, match="forward"):
        chain.time_travel(-1)


def test_unreachable_rpc_url_names_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ChainError) as info:
        rpc(url, dev_keys(1))
    assert url in str(info.value)
    assert "cannot reach" in str(info.value)


def test_unsupported_url_scheme() -> None:
    with pytest.raises(ChainError, match="only http"):
        rpc("ws://127.0.0.1:8545")


@pytest.mark.anvil
@pytest.mark.xdist_group("anvil")
def test_unexpected_chain_id_names_the_url(anvil_node: Anvil) -> None:
    with pytest.raises(ChainError) as info:
        rpc(anvil_node.url, chain_id=1)
    assert anvil_node.url in str(info.value)
    assert str(ANVIL_CHAIN_ID) in str(info.value)
    assert rpc(anvil_node.url, chain_id=ANVIL_CHAIN_ID).chain_id == ANVIL_CHAIN_ID


@pytest.mark.anvil
@pytest.mark.xdist_group("anvil")
def test_anvil_starts_on_a_free_port_and_stops() -> None:
    with Anvil(accounts=2) as node:
        url = node.url
        chain = node.chain()
        assert chain.accounts[0].address == FIRST_DEV_ADDRESS
        assert chain.w3.eth.get_balance(chain.accounts[1].address) > 0
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with pytest.raises(OSError):
        urllib.request.urlopen(request, timeout=1)
    with pytest.raises(ChainError, match="not running"):
        _ = node.url


def test_missing_anvil_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ChainError) as info:
        Anvil(binary=tmp_path / "anvil").start()
    assert "make test" in str(info.value) and "npm --prefix tools install" in str(info.value)


def test_fedmarket_anvil_must_point_at_an_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDMARKET_ANVIL", str(tmp_path / "nope"))
    with pytest.raises(ChainError) as info:
        find_anvil()
    assert "FEDMARKET_ANVIL" in str(info.value) and "make test" in str(info.value)
