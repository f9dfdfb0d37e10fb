"""Whole tasks end to end: accuracy, exact integer payments, refunds, conservation, faults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmarket import load_model
from fedmarket.chain.backends import Anvil, dev_keys
from fedmarket.data import load_dataset, split_validation
from fedmarket.roles.messages import SealedBlock, decode
from fedmarket.run import RunResult, run_task
from fedmarket.spec import SpecFile, load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def small_spec(**run_changes: object) -> SpecFile:
    """breast_cancer.toml with 3 epochs, no plateau stop, small blocks (so cross-checks happen)."""
    spec = load_spec(EXAMPLES / "breast_cancer.toml")
    data = spec.model_dump()
    data["task"]["max_epochs"] = 3
    data["stopping"]["patience"] = 0
    data["he"]["block_points"] = 64
    data["integrity"]["replication"] = 0.25
    data["budget"]["processing"] = data["budget"]["processing"] * 3 // 10
    for key, value in run_changes.items():
        data["run"][key] = value
    return SpecFile.model_validate(data)


def run(spec: SpecFile, tmp_path: Path, **kwargs: object) -> RunResult:
    return run_task(spec, base=EXAMPLES, out=tmp_path / "out", workers=1, **kwargs)  # type: ignore[arg-type]


def flows(result: RunResult) -> dict[str, int]:
    return {t.party: t.net for t in result.report.tokens}


def expected_pay(spec: SpecFile, epochs_paid: dict[str, int]) -> dict[str, int]:
    """What the contract must pay: owners fill x price, processors fill x price per epoch."""
    assert spec.run is not None
    owners = {o.name: o.points * o.price for o in spec.run.owners}
    fills, left = {}, spec.task.num_points
    for p in sorted(spec.run.processors, key=lambda p: p.price):
        fills[p.name] = min(p.capacity, left)
        left -= fills[p.name]
    procs = {p.name: fills[p.name] * p.price * epochs_paid[p.name] for p in spec.run.processors}
    return {**owners, **procs}


def check_settlement(spec: SpecFile, result: RunResult, epochs_paid: dict[str, int]) -> None:
    pay = expected_pay(spec, epochs_paid)
    net = flows(result)
    for name, amount in pay.items():
        assert net[name] == amount, name
    # the requester paid exactly what everyone else received; nothing else moved
    assert net["requester"] == -sum(pay.values())
    assert sum(net.values()) == -result.report.dust == 0


def test_full_task_on_the_embedded_chain(tmp_path: Path) -> None:
    spec = small_spec()
    result = run(spec, tmp_path)
    report = result.report
    assert [e.epoch for e in report.epochs] == [0, 1, 2]
    assert report.stop_reason == "max_epochs reached"
    final = report.epochs[-1]
    assert final.metric >= 0.92
    assert final.baseline is not None and abs(final.metric - final.baseline) <= 0.01
    check_settlement(spec, result, {"processor1": 3, "processor2": 3})
    assert all(e.on_time == ["processor1", "processor2"] for e in report.epochs)
    # every token movement is in the report, and they add up to each party's net
    transfers = {t.party: t.transfers for t in report.tokens}
    assert [what for what, _ in transfers["requester"]] == ["escrow", "collect"]
    assert [what for what, _ in transfers["processor1"]] == ["stake", "collect"]
    for flow in report.tokens:
        assert sum(amount for _, amount in flow.transfers) == flow.net
    # everything a run promises lands on disk and the model loads back
    out = tmp_path / "out"
    for name in ("report.json", "report.md", "metric.png", "tokens.png", "phases.png", "model.npz"):
        assert (out / name).stat().st_size > 0
    # the saved model takes raw features: it scores like the requester's last validation
    model = load_model(out)
    data = load_dataset("sklearn:breast_cancer")
    _, val = split_validation(data, spec.run.validation_fraction, seed=spec.run.seed)  # type: ignore[union-attr]
    assert float(np.mean(model.predict(val.X) == val.y)) == pytest.approx(final.metric)
    # the requester received model and results only, never a data ciphertext
    by_name = {p.name: p for p in report.parties}
    assert by_name["processor1"].bytes_received > by_name["requester"].bytes_received / 10


def test_back_off_mid_task_pays_for_work_done_and_refunds_the_rest(tmp_path: Path) -> None:
    spec = small_spec()
    closed: list[int] = []

    def progress(event: str, data: dict[str, object]) -> None:
        if event == "epoch":
            closed.append(int(data["epoch"]))  # type: ignore[call-overload]

    result = run(spec, tmp_path, progress=progress, stop_requested=lambda: len(closed) >= 1)
    assert [e.epoch for e in result.report.epochs] == [0]
    assert "interrupted" in result.report.stop_reason
    check_settlement(spec, result, {"processor1": 1, "processor2": 1})


def test_a_processor_that_crashes_is_paid_less_and_the_task_completes(tmp_path: Path) -> None:
    spec = small_spec()
    assert spec.run is not None
    processors = [p.model_dump() for p in spec.run.processors]
    processors[1]["attack"] = "crash@1"
    spec = small_spec(processors=processors)
    result = run(spec, tmp_path)
    epochs = result.report.epochs
    assert len(epochs) == 3
    assert epochs[1].missing == ["processor2"] and epochs[2].missing == ["processor2"]
    assert epochs[-1].metric >= 0.9
    check_settlement(spec, result, {"processor1": 3, "processor2": 1})


def test_an_owner_that_never_delivers_is_not_paid(tmp_path: Path) -> None:
    spec = small_spec()
    assert spec.run is not None
    owners = [o.model_dump() for o in spec.run.owners]
    owners[1]["attack"] = "no-delivery"
    spec = small_spec(owners=owners)
    result = run(spec, tmp_path)
    net = flows(result)
    assert net["owner2"] == 0
    pay = expected_pay(spec, {"processor1": 3, "processor2": 3})
    assert net["owner1"] == pay["owner1"]
    assert net["requester"] == -(pay["owner1"] + pay["processor1"] + pay["processor2"])
    assert result.report.epochs[-1].metric >= 0.9


@pytest.mark.anvil
def test_full_task_on_anvil(tmp_path: Path) -> None:
    spec = small_spec()
    with Anvil() as node:
        url = node.url
        result = run_task(spec, base=EXAMPLES, chain_url=url, workers=1)
    assert result.report.chain == url
    assert result.report.epochs[-1].metric >= 0.92
    check_settlement(spec, result, {"processor1": 3, "processor2": 3})


def scenario_spec(name: str) -> SpecFile:
    data = load_spec(EXAMPLES / name).model_dump()
    data["task"]["max_epochs"] = 2
    data["stopping"]["patience"] = 0
    return SpecFile.model_validate(data)


def test_own_data_scenario_the_requester_pays_itself_nothing(tmp_path: Path) -> None:
    spec = scenario_spec("own_data.toml")
    result = run(spec, tmp_path)
    net = flows(result)
    assert spec.run is not None
    outside = spec.run.owners[0]
    assert net["owner1"] == outside.points * outside.price
    paid_processors = net["processor1"] + net["processor2"]
    assert net["requester"] == -(net["owner1"] + paid_processors)
    assert result.report.epochs[-1].metric >= 0.9


def test_own_compute_scenario_owners_process_only_their_own_data(tmp_path: Path) -> None:
    spec = scenario_spec("own_compute.toml")
    capture: list[tuple[str, str, str, bytes]] = []
    result = run(spec, tmp_path, capture=capture)
    # every block an owner seals goes (through the requester's relay) to that same owner
    sealed_by = {
        s for s, _, _, data in capture if decode_kind(data) == SealedBlock.kind and s != "requester"
    }
    received_by = {
        r for _, r, _, data in capture if decode_kind(data) == SealedBlock.kind and r != "requester"
    }
    assert sealed_by and sealed_by == received_by == {"owner1", "owner2"}
    for _, r, _, data in capture:
        if decode_kind(data) == SealedBlock.kind and r != "requester":
            block = decode(data, SealedBlock, party="test")
            owner = {"owner1": 2, "owner2": 3}[r]  # dev account index of each owner
            assert block.ref.owner == dev_address(owner)
    assert spec.run is not None
    roles = {p.name: p.role for p in result.report.parties}
    assert roles == {
        "requester": "requester",
        "owner1": "owner+processor",
        "owner2": "owner+processor",
    }
    net = flows(result)
    for o in spec.run.owners:
        assert net[o.name] == o.points * o.price + o.points * spec.run.processing_price * 2
    assert result.report.epochs[-1].metric >= 0.9


def dev_address(index: int) -> str:
    from eth_account import Account

    return str(Account.from_key(dev_keys(index + 1)[index]).address)


def decode_kind(frame: bytes) -> int:
    return int.from_bytes(frame[4:6], "big")


def test_no_plaintext_leaves_an_owner_and_the_requester_decrypts_only_block_sums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedmarket.data import partition, scale
    from fedmarket.he.crypto import CKKSKeys

    decrypted: list[int] = []
    real = CKKSKeys.decrypt_result

    def spy(self: CKKSKeys, *args: object, **kwargs: object) -> object:
        sums = real(self, *args, **kwargs)  # type: ignore[arg-type]
        decrypted.append(sums.n_samples)
        return sums

    monkeypatch.setattr(CKKSKeys, "decrypt_result", spy)
    spec = small_spec()
    capture: list[tuple[str, str, str, bytes]] = []
    run(spec, tmp_path, capture=capture)
    assert spec.run is not None
    # rebuild the owners' plaintext exactly as the run dealt it
    data = load_dataset("sklearn:breast_cancer")
    train, _ = split_validation(data, spec.run.validation_fraction, seed=spec.run.seed)
    shares = partition(train, [o.points for o in spec.run.owners], seed=spec.run.seed + 1)
    f = spec.features
    wire = b"".join(frame for _, _, _, frame in capture)
    for share in shares:
        scaled = scale(share.X, f.mean, f.std, f.spread)
        for row in range(0, len(share.y), 25):
            for values in (share.X[row], scaled[row]):
                # any 3 consecutive feature values of a row, as the owner holds them
                assert values[:3].tobytes() not in wire
                assert values[:3].astype(np.float32).tobytes() not in wire
    # the requester received no encrypted data block it could open
    # sealed blocks pass through its relay, but only as sealed boxes: no encrypted block
    # (an FMHE envelope of kind BLOCK) is anywhere in what it received
    received = b"".join(f for _, r, _, f in capture if r == "requester")
    relayed = [
        f for _, r, _, f in capture if r == "requester" and decode_kind(f) == SealedBlock.kind
    ]
    assert relayed  # the relay did carry the blocks
    assert b"FMHE\x00\x01\x02\x00" not in received
    # every value it decrypted was a total over a whole block of samples
    assert decrypted and min(decrypted) >= 32


def test_a_book_that_does_not_fit_the_budget_cancels_and_refunds_everyone(tmp_path: Path) -> None:
    data = small_spec().model_dump()
    data["budget"]["data"] = 1000  # far below what the owners ask
    spec = SpecFile.model_validate(data)
    result = run(spec, tmp_path)
    assert result.report.stop_reason.startswith("cancelled: the cheapest data costs")
    assert result.report.epochs == []
    assert all(net == 0 for net in flows(result).values())


def test_a_user_callback_stops_the_task_with_its_reason(tmp_path: Path) -> None:
    from fedmarket.roles.stopping import Callback

    spec = small_spec()
    stop = Callback(lambda view: "good enough for me" if view.metrics[-1] > 0.5 else None)
    result = run(spec, tmp_path, rules=[stop])
    assert result.report.stop_reason == "good enough for me"
    assert len(result.report.epochs) == 1
    check_settlement(spec, result, {"processor1": 1, "processor2": 1})


def test_a_requester_that_vanishes_leaves_no_one_out_of_pocket(tmp_path: Path) -> None:
    data = small_spec().model_dump()
    data["run"]["requester_attack"] = "vanish@1"  # goes silent after epoch 0 closed
    spec = SpecFile.model_validate(data)
    result = run(spec, tmp_path)
    report = result.report
    assert report.stop_reason == "the requester vanished at epoch 1 (simulated)"
    assert [e.epoch for e in report.epochs] == [0]
    # every winner claimed the timeout (the first one ended the task) and collected
    claims = [n for n in report.notes if "claimed the timeout" in n]
    assert len(claims) == 1
    assert sum("collected" in n for n in report.notes) == 4
    # owners in full; processors for the epoch they finished (epoch 1 was never released)
    check = expected_pay(spec, {"processor1": 1, "processor2": 1})
    net = flows(result)
    for name in ("owner1", "owner2", "processor1", "processor2"):
        assert net[name] == check[name], name
    # the requester's refund waits in the market for it; nothing was created or lost
    assert net["requester"] == -(data["budget"]["data"] + data["budget"]["processing"])


def test_regression_follows_through_with_the_specs_target_scaling(tmp_path: Path) -> None:
    """`init` on diabetes writes the target scaling; owners apply it; the saved model undoes
    it; the report sets R^2 against scikit-learn's LinearRegression on the same points."""
    from fedmarket.starter import starter_spec

    spec = starter_spec("sklearn:diabetes", max_epochs=10)
    assert spec.task.model == "linear"
    assert spec.labels.target_scale > 100 and 100 < spec.labels.target_center < 200
    data = spec.model_dump()
    data["stopping"]["patience"] = 0
    result = run(SpecFile.model_validate(data), tmp_path)
    report = result.report
    assert report.metric_name == "R^2" and report.sklearn_metric is not None
    assert report.epochs[-1].metric >= report.sklearn_metric - 0.05
    # the saved model predicts in the label's units (diabetes progression, 25..346)
    diabetes = load_dataset("sklearn:diabetes")
    predicted = load_model(tmp_path / "out").predict(diabetes.X)
    assert 100 < float(np.mean(predicted)) < 200
    assert float(np.mean(np.abs(predicted - diabetes.y))) < 60
    assert "scikit-learn on the same points" in (tmp_path / "out" / "report.md").read_text()


def test_large_amounts_are_exact_integers_and_nothing_is_lost(tmp_path: Path) -> None:
    """Nets far beyond int64 (the 40,000 x 20 task died drawing them): the model, the report,
    the plots and `fedmarket report` all work, and every amount stays an exact integer."""
    from typer.testing import CliRunner

    from fedmarket.cli import app
    from fedmarket.protocol.plaintext import Plaintext

    data = small_spec().model_dump()
    for o in data["run"]["owners"]:
        o["price"] = 10**22 + 7  # per point: owners earn ~2.3e24 base units
    for p in data["run"]["processors"]:
        p["price"] = 10**20 + 3
    data["budget"]["data"] = 2 * 227 * (10**22 + 7)
    data["budget"]["processing"] = 2 * 227 * (10**20 + 3) * 3
    spec = SpecFile.model_validate(data)
    out = tmp_path / "out"
    result = run_task(spec, base=EXAMPLES, out=out, workers=0, crypto=Plaintext())
    net = flows(result)
    assert net["owner1"] == 227 * (10**22 + 7) and net["owner1"] > 2**63
    assert isinstance(net["owner1"], int)
    assert sum(net.values()) == -result.report.dust
    for name in ("model.npz", "report.json", "report.md", "tokens.png", "metric.png"):
        assert (out / name).stat().st_size > 0, name
    # report.json keeps the exact integers; `fedmarket report` re-renders from it
    import json

    saved = json.loads((out / "report.json").read_text())
    assert {t["party"]: t["net"] for t in saved["tokens"]} == net
    done = CliRunner().invoke(app, ["report", str(out)])
    assert done.exit_code == 0, done.output
    assert str(227 * (10**22 + 7)) in (out / "report.md").read_text()


def test_held_out_rows_score_the_model_and_its_plaintext_twin(tmp_path: Path) -> None:
    """[run] test_fraction: the report scores the final model on rows no party saw, and the
    same algorithm in plaintext on the same points for as many epochs (the plain mean without
    monitors is that algorithm exactly, so the two agree)."""
    from fedmarket.protocol.plaintext import Plaintext
    from fedmarket.starter import starter_spec

    data = starter_spec("sklearn:breast_cancer", max_epochs=20, test_fraction=0.25).model_dump()
    data["stopping"]["patience"] = 2  # the run may stop early: the reference stops with it
    data["integrity"].update(aggregator="mean", monitors=[])
    spec = SpecFile.model_validate(data)
    result = run(spec, tmp_path, crypto=Plaintext(), chain_url="memory")
    report = result.report
    assert result.test is not None and len(result.test) == 143  # a quarter of 569, rounded up
    assert result.reference is not None
    assert len(result.reference.history) == len(report.epochs)
    assert report.test_metric is not None and report.test_metric >= 0.9
    assert report.baseline_test_metric is not None
    assert abs(report.test_metric - report.baseline_test_metric) <= 1 / 143
    text = (tmp_path / "out" / "report.md").read_text()
    assert "on rows no party saw" in text and "plaintext, same algorithm" in text
