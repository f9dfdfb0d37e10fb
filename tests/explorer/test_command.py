"""`fedmarket explorer`'s mistakes: each a clear message and exit 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.explorer.conftest import Market, explorer_command

pytestmark = [pytest.mark.anvil, pytest.mark.xdist_group("explorer")]


def explorer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(explorer_command(*args), capture_output=True, text=True, timeout=120)


def test_a_bad_chain_or_market_is_a_clear_error(market: Market) -> None:
    url, address = market.url, market.client.address
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening
        cases = [
            ((dead, address), f"cannot reach the chain at {dead}"),
            (("embedded", address), "the explorer reads a node over JSON-RPC"),
            ((url, "0x12"), "--market '0x12' is not an address"),
            ((url, "0x" + "00" * 19 + "01"), "no contract at 0x" + "00" * 19 + "01"),
            ((url, market.token.address), "is not a fedmarket market"),
        ]  # fmt: skip
        for (chain, where), message in cases:
            done = explorer("--chain", chain, "--market", where, "--port", "1")
            assert done.returncode == 2, done
            first = done.stderr.splitlines()[0]
            assert first.startswith("error: ") and message in first, done.stderr
            assert "Traceback" not in done.stderr
            assert done.stderr.splitlines()[1].startswith("hint: ")


def test_a_taken_port_or_a_missing_folder_is_a_clear_error(market: Market, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        args = ["--chain", market.url, "--market", market.client.address]
        done = explorer(*args, "--port", port)
        assert done.returncode == 2 and f"port {port} on 127.0.0.1 is already in use" in done.stderr
        done = explorer(*args, "--runs", str(tmp_path / "nope"))
        assert done.returncode == 2 and "no such file or folder" in done.stderr
        assert "Traceback" not in done.stderr
