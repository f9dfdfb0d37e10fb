"""`fedmarket chain demo`: the scripted task runs, balances, and fails cleanly on a bad URL."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys

from rich.console import Console

from fedmarket.chain.demo import run_demo


def test_demo_runs_and_conserves_tokens() -> None:
    screen = io.StringIO()
    result = run_demo("embedded", console=Console(file=screen, width=120))
    text = screen.getvalue()
    assert "token flow per party" in text and "conservation" in text
    assert sum(f.net for f in result.flows) == -result.dust
    assert result.market_balance == result.dust
    assert all(f.end - f.start == f.net for f in result.flows)
    nets = {f.name: f.net for f in result.flows}
    assert nets["dave"] == nets["ivan"] == 0  # losers get exactly their stake back
    assert nets["erin"] < 0 < nets["frank"]  # the convicted processor loses, the honest gain
    assert nets["reserve"] > 0  # erin's stake, frank's late penalty
    assert result.market_balance == 0


def test_demo_on_an_unreachable_url_exits_with_a_message() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    done = subprocess.run(
        [sys.executable, "-m", "fedmarket.cli", "chain", "demo", "--chain", url],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},  # keep rich from wrapping the URL
    )
    assert done.returncode == 2
    assert url in done.stderr and "cannot reach" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
