"""Every party its own process: anvil, a SuperLink and `fedmarket node`s on loopback (real TLS).

Each test starts a whole federation (tens of seconds, most of it starting processes), so the
happy path and the faults share as few runs as possible.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fedmarket import cli, load_model
from fedmarket.chain.backends import rpc
from fedmarket.chain.client import MarketClient, Side, TaskState
from fedmarket.chain.events import (
    DisputeOpened,
    DisputeResolved,
    EpochClosed,
    EpochRoots,
    RootSubmitted,
)
from fedmarket.report import load_report
from fedmarket.runtime.flower import records
from fedmarket.runtime.flower.harness import Loopback, Party, parties, small_spec
from fedmarket.spec import SpecFile, dump_spec, load_spec

pytestmark = [pytest.mark.anvil, pytest.mark.xdist_group("deploy")]
TOOLS = Path(__file__).resolve().parents[2] / "tools"
START = 10**24  # what chain_up mints to each dev account


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    subprocess.run([str(TOOLS / "mkcerts.sh"), str(folder)], check=True, capture_output=True)
    return folder


def rooted(market: MarketClient, epoch: int, task: int = 0) -> set[str]:
    """The processors (addresses, lower case) whose root for ``epoch`` is on chain: relayed
    with the others, or sent by themselves."""
    bids = {e.processor for e in market.logs(RootSubmitted, task=task) if e.epoch == epoch}
    for e in market.logs(EpochRoots, task=task):
        if e.epoch == epoch:
            bids |= {i for i in range(128) if e.processors >> i & 1}
    return {market.get_bid(task, Side.PROCESSING, i).bidder.lower() for i in bids}


def settled_epoch(market: MarketClient, epoch: int, task: int = 0) -> bool:
    """``epoch`` is closed and every dispute opened so far has its verdict."""
    closed = any(e.epoch == epoch for e in market.logs(EpochClosed, task=task))
    opened = len(market.logs(DisputeOpened, task=task))
    return closed and len(market.logs(DisputeResolved, task=task)) == opened


def nets(result: dict[str, object]) -> dict[str, int]:
    """Token change per party; the market (which starts empty) is one of them."""
    balances = result["balances"]
    assert isinstance(balances, dict)
    return {name: int(b) - (0 if name == "market" else START) for name, b in balances.items()}


def test_a_task_across_processes_over_tls_pays_exactly_and_conserves_tokens(
    tmp_path: Path, certs: Path
) -> None:
    spec = small_spec(tmp_path, epochs=3)
    with Loopback(tmp_path, spec, parties(spec), tls=certs) as lb:
        result = lb.run()
    assert result["status"] == "finished", result
    assert result["stop_reason"] == "max_epochs reached"
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert all(sorted(e["on_time"]) == ["processor1", "processor2"] for e in epochs)
    assert epochs[-1]["metric"] >= 0.9
    # the node that asked too much won nothing, was never sent data, and lost nothing
    assert result["winners"] == {"processors": ["processor1", "processor2"],
                                 "owners": ["owner1", "owner2"]}  # fmt: skip
    assert result["bytes_received"]["processor3"] == 0
    s = load_spec(spec)
    assert s.run is not None
    net = nets(result)
    owed = {o.name: o.points * o.price for o in s.run.owners}
    owed |= {p.name: p.capacity * p.price * 3 for p in s.run.processors}
    for name, amount in owed.items():
        assert net[name] == amount, name
    assert net["processor3"] == 0
    assert net["requester"] == -sum(owed.values())
    assert net["market"] == 0 and result["unsettled"] == {}
    assert sum(net.values()) == 0  # every token accounted for, across five processes
    # the Flower requester leaves what `fedmarket run` leaves: the report and the model
    out = tmp_path / "out"
    for name in ("report.json", "report.md", "metric.png", "tokens.png", "model.npz"):
        assert (out / name).stat().st_size > 0, name
    report = load_report(out)
    assert [e.metric for e in report.epochs] == [e["metric"] for e in epochs]
    assert {t.party: t.net for t in report.tokens}["owner1"] == owed["owner1"]
    assert load_model(out).n_features == len(s.features.names)
    (out / "report.md").unlink()
    assert cli_exit(["report", str(out)]) == 0  # `fedmarket report DIR` on the Flower output
    assert (out / "report.md").stat().st_size > 0
    # progress came as it happened: a line per phase and per epoch
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if x["event"] == "epoch"] == [0, 1, 2]
    # and what `fedmarket run` keeps for `fedmarket explorer --runs`: progress.json, spec.toml
    live = json.loads((out / "progress.json").read_text())
    assert live["task"] == result["task_id"] and live["spec_hash"] == report.spec_hash
    assert [e["metric"] for e in live["epochs"]] == [e["metric"] for e in epochs]
    assert (out / "spec.toml").read_text() == spec.read_text()
    # the sealed blocks crossed as one message well past a ConfigRecord's 4 MiB (Flower's
    # 5 MiB chunks of an ArrayRecord), within the transport's bound
    largest = result["largest_message_bytes"]
    assert records.INLINE_BYTES < largest["blocks"] <= records.MAX_MESSAGE_BYTES // 2, largest
    assert largest["model"] <= records.INLINE_BYTES  # an epoch's messages stay inline
    # no fixed sleep on the message path: an epoch is nowhere near Flower's 3 s polls
    assert sorted(result["epoch_seconds"])[1] < 3.0, result["epoch_seconds"]


def cli_exit(args: list[str]) -> int:
    import sys

    argv = sys.argv
    sys.argv = ["fedmarket", *args]
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = argv
    return 0


def test_faults_a_killed_node_a_restarted_node_and_a_corrupt_ciphertext(tmp_path: Path) -> None:
    spec = small_spec(tmp_path, epochs=4)  # time for the restarted node to come back
    members = parties(spec, extra_processor=False, processor2="corrupt", owner2="no-delivery")
    for m in members:
        if m.role == "processor":
            m.options["capacity"] = 160
    members.append(Party("processor3", "processor", 2 + len(members), {
        "capacity": 160, "price": 102_000_000_000_000, "workers": 1,
    }))  # fmt: skip
    with Loopback(tmp_path, spec, members, tls=None) as lb:
        assert lb.chain is not None and lb.fed is not None
        chain = rpc(lb.chain.url, [])
        market = MarketClient.at(chain.w3, lb.chain.info["market"], None)  # type: ignore[arg-type]
        address = {m.name: a for m, a in zip(members, _addresses(lb, members), strict=True)}
        events: list[str] = []

        def saboteur() -> None:
            # once processor1 and processor3 have submitted epoch 0 and its disputes are
            # judged (they sit on the panel): processor3 dies for good (kill -9, mid-task),
            # processor1 is killed and restarted from its state file
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    done = rooted(market, 0)
                    ready = settled_epoch(market, 0)
                except Exception as exc:  # the chain read failed: say so, not a silent thread
                    events.append(f"saboteur: {exc!r}")
                    return
                if {address["processor1"], address["processor3"]} <= done and ready:
                    lb.fed.stop("processor3", kill=True)  # type: ignore[union-attr]
                    lb.fed.stop("processor1", kill=True)  # type: ignore[union-attr]
                    lb.fed.start_node("processor1", lb.fed.configs["processor1"])  # type: ignore[union-attr]
                    events.append("done")
                    return
                time.sleep(0.5)

        thread = threading.Thread(target=saboteur, daemon=True)
        thread.start()
        result = lb.run(timeout=45.0)  # a round under load (a CKKS panel) can take 20 s
        thread.join(timeout=5)
    assert events == ["done"]
    assert result["status"] == "finished", result
    epochs = result["epochs"]
    assert len(epochs) == 4  # the task went on
    # the corrupt ciphertext was rejected and its sender not paid for it at once; the proof
    # became a dispute its panel (processor1 and processor3) convicted it in
    assert any(e["kind"] == "bad-result" and e["party"].lower() == address["processor2"]
               for e in epochs[0]["evidence"])  # fmt: skip
    assert epochs[0]["not_received"] == ["processor2"]
    assert epochs[0]["flagged"] == ["processor2"]
    # the killed node (killed once epoch 0's dispute was judged, so it may have finished
    # epoch 1 already) missed the last epoch; the restarted one resumed from its state file
    assert "processor3" in epochs[-1]["missing"]
    assert "processor1" in epochs[-1]["on_time"]
    assert epochs[-1]["metric"] >= 0.85
    net = nets(result)
    assert net["processor2"] < 0 and net["processor1"] > 0 and net["requester"] < 0
    # won, never delivered: never paid, and no share of anything (a conviction's stake goes
    # to the market's reserve, never to the task's parties)
    s = load_spec(spec)
    assert s.run is not None
    assert net["owner2"] == 0 and net["owner1"] == 227 * s.run.owners[0].price
    assert any("owner2 won but delivered nothing" in e for e in result["events"])
    # the dead node never came to collect: what it is owed waits in the market for it
    assert set(result["unsettled"]) == {"processor3"}
    assert net["market"] == result["unsettled"]["processor3"] + result["dust"]
    assert sum(net.values()) == 0


def _addresses(lb: Loopback, members: list) -> list[str]:  # type: ignore[type-arg]
    from fedmarket.deploy_cli import load_key

    return [
        str(load_key(lb.keys[m.name], lb.workdir / "password").address).lower() for m in members
    ]


def test_when_the_requester_dies_the_winners_claim_the_timeout_and_collect(
    tmp_path: Path,
) -> None:
    """The nodes watch the chain on their own: once the requester (its ServerApp, with the
    SuperLink) is gone past the deadline plus the grace period, one of them claims the timeout
    and every winner collects."""
    from fedmarket.chain.client import TokenClient
    from fedmarket.deploy_cli import load_key

    spec = small_spec(tmp_path, epochs=3)
    members = parties(spec, extra_processor=False)
    with Loopback(tmp_path, spec, members, tls=None, **{"watch-seconds": 0.5}) as lb:
        assert lb.chain is not None and lb.fed is not None
        chain = rpc(lb.chain.url, [])
        market = MarketClient.at(chain.w3, lb.chain.info["market"], None)  # type: ignore[arg-type]
        token = TokenClient.at(chain.w3, market.token(), None)  # type: ignore[arg-type]
        lb.fed.submit(lb.config())
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if len(rooted(market, 0)) == 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("epoch 0 never completed")
        lb.fed.stop("superlink", kill=True)  # the requester (its ServerApp) dies with it
        task = 0
        clock = market.clock_of(task)
        addresses = dict(zip([m.name for m in members], _addresses(lb, members), strict=True))
        time.sleep(2.0)  # the nodes look (every 0.5 s) and find nothing to claim yet
        assert market.clock_of(task).state == clock.state
        chain.time_travel(clock.deadline + market.grace_seconds() + 1 - chain.timestamp())
        # the first node to look ends the task; stakes return once its dispute window has
        # passed, and every node then collects on its own
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if market.clock_of(task).state == TaskState.FINISHED:
                break
            time.sleep(0.25)
        else:
            pytest.fail("no node claimed the timeout")
        chain.time_travel(market.grace_seconds() + 1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(token.balance_of(a) > START for a in addresses.values()) and not any(
                market.owed(task, a) + market.claimable(a) for a in addresses.values()
            ):
                break
            time.sleep(0.25)
        balances = {name: token.balance_of(a) for name, a in addresses.items()}
        requester = str(load_key(lb.keys["requester"], lb.workdir / "password").address)
        owed_requester = market.owed(task, requester) + market.claimable(requester)
        in_market = token.balance_of(market.address)
        requester_balance = token.balance_of(requester)
        dust = market.dust(task)
        logs = {m.name: (tmp_path / f"{m.name}.log").read_text() for m in members}
    # the first to look ended the task; everyone collected on their own
    assert sum("claimed the timeout" in text for text in logs.values()) == 1, logs
    assert all("collected" in text for text in logs.values()), logs
    s = load_spec(spec)
    assert s.run is not None
    # processors are paid for the epoch they finished (it counts as closed), owners in full
    for p in s.run.processors:
        assert balances[p.name] - START >= p.capacity * p.price, p.name
    for o in s.run.owners:
        assert balances[o.name] - START == o.points * o.price, o.name
    # what is left in the market is the requester's refund, waiting for it
    assert in_market == owed_requester + dust
    total = sum(b - START for b in balances.values()) + (requester_balance - START) + in_market
    assert total == 0


def _rewrite(path: Path, **changes: object) -> Path:
    data = load_spec(path).model_dump()
    for key, value in changes.items():
        section, _, field = key.partition("__")
        data[section][field] = value
    path.write_text(dump_spec(SpecFile.model_validate(data)))
    return path


def test_own_data_with_a_late_and_a_crashing_processor(tmp_path: Path) -> None:
    """The requester sells its own points (a node under its own key, price 0); processor1
    stops answering from epoch 1 (simulated crash), processor2 answers every epoch late."""
    spec = small_spec(tmp_path, epochs=3, example="own_data.toml")
    s = load_spec(spec)
    assert s.run is not None
    owners = [o.model_dump() | {"points": 227} for o in s.run.owners]
    spec = _rewrite(spec, run__requester_points=227, run__owners=owners)
    members = parties(spec, extra_processor=False, processor1="crash@1", processor2="late")
    with Loopback(tmp_path, spec, members, tls=None) as lb:
        result = lb.run()
    assert result["status"] == "finished", result
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert [e["late"] for e in epochs] == [["processor2"]] * 3
    assert epochs[0]["on_time"] == ["processor1"]
    assert all(e["missing"] == ["processor1"] for e in epochs[1:])
    assert "requester" in result["winners"]["owners"]  # its own points won, at price 0
    net = nets(result)
    late = 227 * 101_000_000_000_000 * (10_000 - s.task.late_penalty_bps) // 10_000
    owed = {"owner1": 227 * 1_000_000_000_000_000,
            "processor1": 227 * 100_000_000_000_000,  # one epoch
            "processor2": 3 * late}  # fmt: skip
    for name, amount in owed.items():
        assert net[name] == amount, name
    # it paid itself nothing, and the late penalties went to the market's reserve, not back
    # to it (a requester that sent the model late would keep them otherwise)
    full = 227 * 101_000_000_000_000
    assert net["market"] == 3 * (full - late)
    assert net["requester"] == -(owed["owner1"] + owed["processor1"] + 3 * full)
    assert sum(net.values()) == 0


def test_own_compute_then_a_book_that_does_not_fit_is_cancelled_and_refunded(
    tmp_path: Path,
) -> None:
    """Each owner processes its own data (one owner+processor node each); then a second task
    on the same federation whose budget no book fits: cancelled, everyone refunded."""
    spec = small_spec(tmp_path, epochs=2, example="own_compute.toml")
    members = parties(spec, extra_processor=False)
    assert {m.role for m in members} == {"owner+processor"}
    infeasible = tmp_path / "poor.toml"
    infeasible.write_text(spec.read_text())
    _rewrite(infeasible, budget__data=1000)
    with Loopback(tmp_path, spec, members, tls=None) as lb:
        first = lb.run()
        second = lb.run(spec=str(infeasible))
    assert first["status"] == "finished", first
    assert all(sorted(e["on_time"]) == ["owner1", "owner2"] for e in first["epochs"])
    s = load_spec(spec)
    assert s.run is not None
    net = nets(first)
    for o in s.run.owners:  # sold its points and was paid to process them, 2 epochs
        assert net[o.name] == o.points * o.price + o.points * s.run.processing_price * 2
    assert sum(net.values()) == 0
    assert second["status"] == "finished", second
    assert second["stop_reason"].startswith("cancelled: the cheapest data costs")
    assert second["epochs"] == []
    assert second["balances"] == first["balances"]  # every stake and the budget came back


def test_a_private_task_across_processes_spends_each_owners_epsilon(
    tmp_path: Path, certs: Path
) -> None:
    """Differential privacy on the Flower runtime: every epoch the requester process reveals the
    model to the owner nodes, which check it and release their signed noise sealed to the
    processor nodes (relayed with the model); the report shows each owner's epsilon."""
    path = small_spec(tmp_path, epochs=2)
    data = load_spec(path).model_dump()
    data["privacy"].update(enabled=True, epsilon=4.0)
    data["he"]["block_points"] = 0  # one block per owner at the floor's default
    path.write_text(dump_spec(SpecFile.model_validate(data)))
    with Loopback(tmp_path, path, parties(path), tls=certs) as lb:
        result = lb.run()
    assert result["status"] == "finished", result
    report = load_report(tmp_path / "out")
    assert report.privacy is not None
    spent = report.privacy["spent"]
    assert sorted(spent) == ["owner1", "owner2"]
    assert all(v == pytest.approx(4.0, abs=1e-3) for v in spent.values())
    assert all(sorted(e["on_time"]) == ["processor1", "processor2"] for e in result["epochs"])
    assert "Privacy" in (tmp_path / "out" / "report.md").read_text()
