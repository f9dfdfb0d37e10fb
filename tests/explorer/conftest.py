"""A real anvil with a market on which a real task ran, `fedmarket explorer` serving it from
its own process, and Debian's headless Chromium looking at it through chromedriver.

Everything here is package-scoped: the chain, the task, the server and the browser are made
once for the explorer's tests (``xdist_group("explorer")`` keeps them on one worker).
Chromium and chromedriver missing is a failure, not a skip: ``make test`` installs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from fedmarket.chain.backends import Anvil, dev_keys, rpc
from fedmarket.chain.client import MarketClient, Side, TokenClient, deploy
from fedmarket.explorer.runs import ProgressWriter
from fedmarket.protocol.plaintext import Plaintext
from fedmarket.run import RunResult, run_task
from fedmarket.spec import SpecFile, dump_spec, load_spec
from fedmarket.units import format_units

ROOT = Path(__file__).resolve().parents[2]
GRACE_SECONDS = 3_600
ACCOUNTS = 12
PRICE = 100_000_000_000_000


def spec_for(epochs: int, attacks: dict[str, str], name: str = "breast_cancer") -> SpecFile:
    """breast cancer in 32-point blocks with three processors (which all win), short."""
    data = load_spec(ROOT / "examples" / "breast_cancer.toml").model_dump()
    data["task"]["name"] = name
    data["task"]["max_epochs"] = epochs
    data["stopping"]["patience"] = 0
    data["he"]["block_points"] = 32
    data["run"]["processors"] = [
        {"name": f"processor{i + 1}", "capacity": cap, "price": PRICE + i * 10**12}
        | ({"attack": attacks[f"processor{i + 1}"]} if f"processor{i + 1}" in attacks else {})
        for i, cap in enumerate((152, 151, 151))
    ]
    return SpecFile.model_validate(data)


def play(
    spec: SpecFile, url: str, market: str, out: Path, hook: Callable[[str, dict[str, Any]], None]
) -> RunResult:
    """The task as `fedmarket run --chain URL --market ADDR --out OUT` plays it (progress.json
    and spec.toml included), with the plaintext twin's crypto to keep it quick."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "task.toml").write_text(dump_spec(spec))
    announced = spec.spec
    writer = ProgressWriter(
        out, "0x" + announced.spec_hash().hex(), announced.kind.metric, out / "task.toml"
    )

    def progress(event: str, data: dict[str, Any]) -> None:
        writer(event, data)
        hook(event, data)

    return run_task(
        spec,
        chain_url=url,
        market=market,
        out=out,
        workers=0,
        crypto=Plaintext(),
        progress=progress,
        base=ROOT / "examples",
    )


@dataclass
class Market:
    """The chain as the tests read it directly (never through the explorer)."""

    url: str
    client: MarketClient
    token: TokenClient
    runs: Path
    specs: Path
    finished: RunResult  # task 0: played to the end
    before: dict[str, int]  # token balances before task 0, by address (lower case)
    after: dict[str, int]
    bidding_spec: SpecFile  # task 1: announced, still taking bids

    def units(self, amount: int) -> str:
        return format_units(amount, 18)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="package")
def node() -> Iterator[Anvil]:
    with Anvil(accounts=ACCOUNTS) as running:
        yield running


@pytest.fixture(scope="package")
def market(node: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Market:
    keys = dev_keys(ACCOUNTS)
    chain = rpc(node.url, keys)
    client, token = deploy(chain.w3, chain.accounts[0], GRACE_SECONDS)
    # Funded up front, so the run mints nothing and balance changes are the task's alone.
    for account in chain.accounts[1:]:
        token.mint(account.address, 10**24)
    runs = tmp_path_factory.mktemp("runs")
    specs = tmp_path_factory.mktemp("specs")
    addresses = [Account.from_key(k).address for k in keys]
    before = {a.lower(): token.balance_of(a) for a in addresses}
    finished = play(
        spec_for(3, {"processor2": "late", "processor3": "random"}),
        node.url,
        client.address,
        runs / "finished",
        lambda event, data: None,
    )
    after = {a.lower(): token.balance_of(a) for a in addresses}
    # task 1: announced by hand and bid on, left in bidding
    bidding = spec_for(2, {}, name="open_for_bids")
    requester, owner, processor = chain.accounts[9], chain.accounts[10], chain.accounts[11]
    budget = bidding.budget.data + bidding.budget.processing
    token.as_(requester).approve(client.address, budget)
    client.as_(requester).create_task(
        bidding.spec.spec_hash(),
        b"\x01" * 32,
        bidding.task.num_points,
        bidding.task.epoch_seconds,
        bidding.task.max_epochs,
        bidding.budget.data,
        bidding.budget.processing,
        3_600,
        bidding.task.late_penalty_bps,
    )
    client.as_(owner).bid_data(1, 300, 2 * 10**15)
    token.as_(processor).approve(client.address, 200 * PRICE * bidding.task.max_epochs)
    client.as_(processor).bid_processing(1, 200, PRICE)
    assert len(client.bids(1, Side.DATA)) == len(client.bids(1, Side.PROCESSING)) == 1
    return Market(node.url, client, token, runs, specs, finished, before, after, bidding)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Any

    def output(self) -> str:
        self.log.seek(0)
        return str(self.log.read().decode(errors="replace"))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()


def explorer_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedmarket.cli", "explorer", *args]


@pytest.fixture(scope="package")
def server(market: Market) -> Iterator[Server]:
    port = _free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    args = ["--chain", market.url, "--market", market.client.address, "--port", str(port),
            "--runs", str(market.runs), "--specs", str(market.specs)]  # fmt: skip
    process = subprocess.Popen(
        explorer_command(*args), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    running = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"fedmarket explorer exited: {running.output()}", pytrace=False)
            try:
                if running.get("/")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"fedmarket explorer did not answer: {running.output()}")
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _browser_paths() -> tuple[str, str]:
    chromium = os.environ.get("FEDMARKET_CHROMIUM") or shutil.which("chromium")
    driver = os.environ.get("FEDMARKET_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "the explorer's browser tests need Debian's chromium and chromium-driver: "
            "`make test` installs them (as root), or `apt-get install chromium chromium-driver`",
            pytrace=False,
        )
    return chromium, driver


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.set_page_load_timeout(30)
    try:
        yield session
    finally:
        session.quit()
