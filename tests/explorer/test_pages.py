"""The explorer in a real headless Chromium, against a real anvil on which a task ran: every
number on a page is compared with the chain read directly (MarketClient, the token's
balances, the run's own gas log), never with the explorer's own API."""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from fedmarket.chain.client import MarketClient, Outcome, Side, TaskState
from fedmarket.chain.events import (
    DisputeOpened,
    DisputeResolved,
    EpochClosed,
    EpochRoots,
    ProcessorSlashed,
    RootSubmitted,
)
from fedmarket.run import RunResult
from fedmarket.spec import dump_spec
from tests.explorer.conftest import Market, Server, play, spec_for

pytestmark = [pytest.mark.anvil, pytest.mark.slow, pytest.mark.xdist_group("explorer")]

# FEDMARKET_SCREENSHOTS=docs/img pytest tests/explorer  rewrites the README's screenshots
SHOTS = os.environ.get("FEDMARKET_SCREENSHOTS")


def units(element: WebElement) -> int:
    """The exact amount behind a rendered one (the page shows it rounded to 6 places)."""
    return int(element.get_attribute("data-units") or "x")


def addresses(element: WebElement, selector: str) -> set[str]:
    return {
        str(a.get_attribute("data-address"))
        for a in element.find_elements(By.CSS_SELECTOR, f"{selector} a.party")
    }


def roots(client: MarketClient, task: int) -> list[tuple[int, str, bool, int]]:
    """(epoch, processor, on time, pay) of every root the chain recorded, read directly: a
    relayed epoch pays each processor its fill x price, a root sent alone what its event
    says; results the requester marked not received are paid nothing."""
    marked = {e.epoch: e.not_received for e in client.logs(EpochClosed, task=task)}

    def bidder(i: int) -> str:
        return str(client.get_bid(task, Side.PROCESSING, i).bidder)

    out = []
    for e in client.logs(EpochRoots, task=task):
        for i in range(128):
            if e.processors >> i & 1:
                bid = client.get_bid(task, Side.PROCESSING, i)
                paid = 0 if marked.get(e.epoch, 0) >> i & 1 else bid.fill * bid.price
                out.append((e.epoch, bid.bidder, True, paid))
    for r in client.logs(RootSubmitted, task=task):
        paid = 0 if marked.get(r.epoch, 0) >> r.processor & 1 else r.pay
        out.append((r.epoch, bidder(r.processor), r.on_time, paid))
    return out


def slashed(client: MarketClient, task: int) -> list[tuple[int, str, int]]:
    """(epoch of the result it was slashed for, processor, forfeited) per slash on chain."""
    opened = {d.dispute: d for d in client.logs(DisputeOpened, task=task)}
    fatal = [
        opened[r.dispute]
        for r in client.logs(DisputeResolved, task=task)
        if r.outcome in (Outcome.CONVICTED, Outcome.UNOPENED)
    ]
    out = []
    for s in client.logs(ProcessorSlashed, task=task):
        first = next(d for d in fatal if d.accused == s.processor)
        who = str(client.get_bid(task, Side.PROCESSING, s.processor).bidder)
        out.append((first.epoch, who, s.forfeited))
    return out


def shot(browser: Any, name: str, height: int | None = None) -> None:
    if not SHOTS:
        return
    from PIL import Image

    full = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.set_window_size(1280, min(height or full, 2600))
    path = Path(SHOTS) / f"explorer-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    # a 64-colour palette keeps a page under 200 KB, text still sharp
    Image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)
    browser.set_window_size(1280, 1000)


def test_the_market_lists_tasks_by_state_with_the_chains_terms(
    browser: Any, server: Server, market: Market
) -> None:
    browser.get(server.url + "/")
    row = browser.find_element(By.CSS_SELECTOR, "#state-finished tr[data-task='0']")
    terms = market.client.terms(0)
    amounts = [units(e) for e in row.find_elements(By.CSS_SELECTOR, "[data-units]")]
    assert amounts == [terms.data_budget, terms.processing_budget]
    assert row.find_element(By.CSS_SELECTOR, "td.model").text.startswith("logistic")
    assert f"{terms.num_points:,}" in row.text
    closed = len(market.client.logs(EpochClosed, task=0))
    assert f"{closed} / {terms.max_epochs}" in row.text
    # task 1 takes bids: its spec is unknown here, its open bids are listed per side
    row = browser.find_element(By.CSS_SELECTOR, "#state-bidding tr[data-task='1']")
    assert row.find_element(By.CSS_SELECTOR, "td.model").text == "?"
    assert market.client.clock_of(1).state == TaskState.BIDDING
    bids = browser.find_element(By.CSS_SELECTOR, "#state-bidding tr.bids-row")
    shown = {
        (b.get_attribute("class"), a, units(b.find_element(By.CSS_SELECTOR, "[data-units]")))
        for b in bids.find_elements(By.CSS_SELECTOR, "span.bid")
        for a in addresses(b, "")
    }
    on_chain = {
        (f"bid {side.name.lower()}", bid.bidder, bid.price)
        for side in Side
        for _, bid in market.client.bids(1, side)
    }
    assert shown == on_chain and len(on_chain) == 2
    shot(browser, "market")


def test_the_task_page_shows_epochs_flags_and_payments_as_the_chain_recorded_them(
    browser: Any, server: Server, market: Market
) -> None:
    browser.get(server.url + "/task/0")
    assert "matches the on-chain hash" in browser.find_element(By.ID, "spec-status").text
    client, report = market.client, market.finished.report
    closes = client.logs(EpochClosed, task=0)
    results = roots(client, 0)
    slashes = slashed(client, 0)
    # the scenario has each case: on time, late and slashed (convicted by a drawn panel)
    assert any(r[2] for r in results) and any(not r[2] for r in results) and slashes
    rows = browser.find_elements(
        By.CSS_SELECTOR, ".epochs-table tr[data-epoch]:not(.evidence):not(.alarm)"
    )
    assert [int(r.get_attribute("data-epoch")) for r in rows] == [c.epoch for c in closes]
    for row in rows:
        epoch = int(row.get_attribute("data-epoch"))
        mine = [r for r in results if r[0] == epoch]
        assert addresses(row, "td.on-time") == {r[1] for r in mine if r[2]}
        assert addresses(row, "td.late") == {r[1] for r in mine if not r[2]}
        assert addresses(row, "td.flagged") == {s[1] for s in slashes if s[0] == epoch}
        assert units(row.find_element(By.CSS_SELECTOR, "td.pay [data-units]")) == sum(
            r[3] for r in mine
        )
    # the dispute that convicted it, with its panel
    convicted = browser.find_elements(By.CSS_SELECTOR, ".disputes-table tr.convicted")
    assert {a for d in convicted for a in addresses(d, "td.accused")} == {s[1] for s in slashes}
    # the metric curve is the requester's (the chain has none), from its run folder
    metrics = [r.find_element(By.CSS_SELECTOR, "td.metric").text for r in rows]
    assert metrics == [f"{e.metric:.4f}" for e in report.epochs]
    chart = browser.find_element(By.ID, "metric-chart")
    assert chart.get_attribute("data-points") == str(len(report.epochs))
    assert chart.find_elements(By.TAG_NAME, "canvas")  # uPlot drew it, offline
    # the flag's evidence, next to the slash it caused
    evidence = browser.find_element(By.CSS_SELECTOR, ".epochs-table tr.evidence")
    assert addresses(evidence, "") == {slashes[0][1]}
    assert int(evidence.get_attribute("data-epoch")) == slashes[0][0]
    assert "digest-mismatch" in evidence.text or "audit" in evidence.text
    # every party's net is its balance change in the token contract, to the base unit
    flows = browser.find_elements(By.CSS_SELECTOR, ".flows-table tr[data-party]")
    assert {f.get_attribute("data-party") for f in flows} == {
        p.address.lower() for p in report.parties
    }
    for flow in flows:
        party = str(flow.get_attribute("data-party"))
        net = units(flow.find_element(By.CSS_SELECTOR, "td.net [data-units]"))
        assert net == market.after[party] - market.before[party], party
    # gas per function: what the run's gas log took from each transaction's receipt
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for g in report.gas:
        expected[g.function][0] += 1
        expected[g.function][1] += g.gas
    # a bare withdraw (a bond back, audit fees) names no task: the page cannot count it
    expected.pop("withdraw", None)
    shown = {
        str(r.get_attribute("data-function")): [
            int(r.find_element(By.CSS_SELECTOR, "td.calls").text),
            int(r.find_element(By.CSS_SELECTOR, "td.total").text.replace(",", "")),
        ]
        for r in browser.find_elements(By.CSS_SELECTOR, ".gas-table tr[data-function]")
    }
    assert shown == dict(expected)
    roots_sent = shown.get("relay_epoch", [0, 0])[0] + shown.get("submit_root", [0, 0])[0]
    assert roots_sent >= len(closes)
    assert shown["close_epoch"][0] == len(closes)
    shot(browser, "task")


def test_the_party_page_shows_a_slashed_processors_losses(
    browser: Any, server: Server, market: Market
) -> None:
    slashes = slashed(market.client, 0)
    cheater = slashes[0][1]
    browser.get(server.url + f"/party/{cheater}")
    assert browser.find_element(By.ID, "party-address").text == cheater
    section = browser.find_element(By.CSS_SELECTOR, ".party-task[data-task='0']")
    assert units(section.find_element(By.CSS_SELECTOR, "dd.slashed [data-units]")) == sum(
        s[2] for s in slashes
    )
    change = market.after[cheater.lower()] - market.before[cheater.lower()]
    assert units(section.find_element(By.CSS_SELECTOR, "dd.net [data-units]")) == change < 0
    claimable = browser.find_element(By.CSS_SELECTOR, "#party-claimable [data-units]")
    assert units(claimable) == market.client.claimable(cheater)
    shot(browser, "party")
    # the late processor: each result it committed, paid less
    results = roots(market.client, 0)
    late = {r[1] for r in results if not r[2]}
    (slow,) = late
    browser.get(server.url + f"/party/{slow}")
    mine = [r for r in results if r[1] == slow and not r[2]]
    shown = browser.find_elements(By.CSS_SELECTOR, ".party-task[data-task='0'] .result.late")
    assert [units(s.find_element(By.CSS_SELECTOR, "[data-units]")) for s in shown] == [
        r[3] for r in mine
    ]


def test_a_spec_is_shown_only_when_its_hash_is_the_chains(
    browser: Any, server: Server, market: Market
) -> None:
    spec = market.bidding_spec
    tampered = spec.model_dump()
    tampered["task"]["num_points"] += 1
    (market.specs / "tampered.toml").write_text(dump_spec(type(spec).model_validate(tampered)))
    browser.get(server.url + "/task/1")
    assert browser.find_element(By.ID, "spec-status").text == "not found"
    (market.specs / "open_for_bids.toml").write_text(dump_spec(spec))
    browser.get(server.url + "/task/1")
    assert "matches the on-chain hash" in browser.find_element(By.ID, "spec-status").text
    assert browser.find_element(By.ID, "spec-model").text == spec.task.model
    browser.get(server.url + "/")
    row = browser.find_element(By.CSS_SELECTOR, "#state-bidding tr[data-task='1']")
    assert row.find_element(By.CSS_SELECTOR, "td.model").text.startswith(spec.task.model)
    assert "open_for_bids" in row.text


def test_unknown_tasks_and_parties_are_clear_404s(browser: Any, server: Server) -> None:
    tasks = server.get("/api/market")
    count = len(json.loads(tasks[1])["tasks"])
    for path, message in [
        ("/task/99", "no task 99 on market"),
        ("/task/abc", "is not a task id"),
        ("/party/0x0000000000000000000000000000000000000001", "never requested, bid or collected"),
        ("/party/someone", "is not an address"),
        ("/nowhere", "Not Found"),
    ]:
        status, _ = server.get(path)
        assert status == 404, path
        browser.get(server.url + path)
        assert message in browser.find_element(By.ID, "error-message").text, path
    browser.get(server.url + "/task/99")
    assert f"it has {count} tasks" in browser.find_element(By.ID, "error-message").text


def test_the_json_api_carries_amounts_as_exact_strings(server: Server, market: Market) -> None:
    status, body = server.get("/api/task/0")
    assert status == 200
    task = json.loads(body)
    assert task["summary"]["data_budget"] == str(market.client.terms(0).data_budget)
    for flow in task["flows"]:
        party = flow["address"].lower()
        assert isinstance(flow["net"], str)
        assert int(flow["net"]) == market.after[party] - market.before[party]
    assert all(isinstance(r["pay"], str) for e in task["epochs"] for r in e["results"])


def test_the_live_page_follows_a_task_in_training_without_a_reload(
    browser: Any, server: Server, market: Market
) -> None:
    """Training pauses after epoch 0 closes; the page opened then must show epoch 1 closing
    and the task finishing by itself (the same document: a marker set in it survives)."""
    task = market.client.num_tasks()
    paused, resume = threading.Event(), threading.Event()
    outcome: dict[str, RunResult | BaseException] = {}

    def hook(event: str, data: dict[str, Any]) -> None:
        if event == "epoch" and data["epoch"] == 0:
            paused.set()
            resume.wait(60)

    def train() -> None:
        try:
            outcome["result"] = play(
                spec_for(2, {}, name="watched"), market.url, market.client.address,
                market.runs / "watched", hook,
            )  # fmt: skip
        except BaseException as exc:
            outcome["error"] = exc
            paused.set()

    worker = threading.Thread(target=train, daemon=True)
    worker.start()
    try:
        assert paused.wait(120), "the task never reached epoch 0"
        assert "error" not in outcome, outcome.get("error")
        assert market.client.clock_of(task).state == TaskState.TRAINING
        browser.get(server.url + f"/task/{task}/live")
        assert browser.find_element(By.ID, "task-state").text == "training"
        rows = browser.find_elements(By.CSS_SELECTOR, ".epochs-table tr[data-epoch]")
        assert [r.get_attribute("class") for r in rows] == ["", "open"]
        browser.execute_script("window.notReloaded = 42")
        WebDriverWait(browser, 10).until(
            lambda b: b.find_element(By.ID, "live-status").text.startswith("live")
        )
        shot(browser, "live", height=1000)
    finally:
        resume.set()
    worker.join(120)
    assert "result" in outcome, outcome.get("error")
    WebDriverWait(browser, 30).until(
        lambda b: b.find_element(By.ID, "task-state").text == "finished"
    )
    closes = market.client.logs(EpochClosed, task=task)
    rows = browser.find_elements(By.CSS_SELECTOR, ".epochs-table tr[data-epoch]")
    assert [int(r.get_attribute("data-epoch")) for r in rows] == [c.epoch for c in closes]
    assert "open" not in {r.get_attribute("class") for r in rows}
    assert browser.execute_script("return window.notReloaded") == 42
    assert int(browser.find_element(By.ID, "live-status").get_attribute("data-updates")) >= 1
    # the metric curve grew from the run's progress.json as the requester wrote it
    chart = browser.find_element(By.ID, "metric-chart")
    assert chart.get_attribute("data-points") == str(len(closes))
