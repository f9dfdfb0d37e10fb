"""Cheaters on the real encrypted protocol: caught, flagged, slashed on chain; the honest paid."""

from __future__ import annotations

from pathlib import Path

from fedmarket.run import RunResult, run_task
from fedmarket.spec import SpecFile, load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PRICES = (100_000_000_000_000, 101_000_000_000_000, 102_000_000_000_000)
EPOCHS = 3


def spec_with(attacks: dict[str, str], **integrity: object) -> SpecFile:
    """breast cancer, 3 processors, 3 epochs, 32-point blocks (14 blocks: statistics work)."""
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = EPOCHS
    data["stopping"]["patience"] = 0
    data["he"]["block_points"] = 32
    data["integrity"].update(integrity)
    data["run"]["processors"] = [
        {"name": f"processor{i + 1}", "capacity": 160, "price": price, "strategy": "fixed"}
        | ({"attack": attacks[f"processor{i + 1}"]} if f"processor{i + 1}" in attacks else {})
        for i, price in enumerate(PRICES)
    ]
    for owner in data["run"]["owners"]:
        if owner["name"] in attacks:
            owner["attack"] = attacks[owner["name"]]
    return SpecFile.model_validate(data)


def run(spec: SpecFile, tmp_path: Path) -> RunResult:
    return run_task(spec, base=EXAMPLES, out=tmp_path / "out", workers=1)


def nets(result: RunResult) -> dict[str, int]:
    return {t.party: t.net for t in result.report.tokens}


def fills(spec: SpecFile) -> dict[str, int]:
    assert spec.run is not None
    left, out = spec.task.num_points, {}
    for p in sorted(spec.run.processors, key=lambda p: p.price):
        out[p.name] = min(p.capacity, left)
        left -= out[p.name]
    return out


def test_a_random_update_processor_is_slashed_and_the_honest_are_paid_in_full(
    tmp_path: Path,
) -> None:
    spec = spec_with({"processor3": "random"})
    assert spec.run is not None
    result = run(spec, tmp_path)
    report = result.report
    # caught with proof in the first epoch, flagged once, gone afterwards
    assert [(f["party"], f["epoch"], f["proven"]) for f in report.flags] == [
        ("processor3", 0, True)
    ]
    assert report.flags[0]["evidence"][0]["kind"] in ("audit", "digest-mismatch")
    assert report.epochs[0].flagged == ["processor3"]
    assert all("processor3" not in e.on_time for e in report.epochs[1:])
    # money: the cheater loses its whole stake and is paid nothing
    fill = fills(spec)
    net = nets(result)
    # (the stake of a bid's unfilled capacity went back at resolution)
    stake = {p.name: fill[p.name] * p.price * EPOCHS for p in spec.run.processors}
    assert net["processor3"] == -stake["processor3"]
    # the honest are paid in full for every epoch, plus a share of the slashed stake
    owed = {o.name: o.points * o.price for o in spec.run.owners}
    honest = {"processor1": PRICES[0], "processor2": PRICES[1]}
    owed |= {p: fill[p] * price * EPOCHS for p, price in honest.items()}
    for name, amount in owed.items():
        assert net[name] >= amount, name
    shares = sum(net[name] - amount for name, amount in owed.items())
    # The slashed pool is the stake plus the flagged epoch's pay, which the requester still
    # pays (so a false flag would save it nothing); it all goes to the other participants.
    forfeited = fill["processor3"] * PRICES[2]
    assert shares == stake["processor3"] + forfeited - report.dust
    assert net["requester"] == -sum(owed.values()) - forfeited
    assert sum(net.values()) == -report.dust
    # and the model is still good: the forged blocks never reached the optimiser
    assert report.epochs[-1].metric >= 0.9
    # the report names the flag and its evidence
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "processor3 flagged in epoch 0" in markdown


def test_a_replicated_block_answered_differently_is_settled_by_its_owner(tmp_path: Path) -> None:
    # Every block replicated and the monitors off: only the byte-for-byte cross-check and the
    # owner's recomputation can catch the sign-flipper.
    spec = spec_with({"processor2": "sign-flip"}, replication=1.0, monitors=[], audits=0)
    result = run(spec, tmp_path)
    flags = result.report.flags
    assert [(f["party"], f["epoch"]) for f in flags] == [("processor2", 0)]
    assert {e["kind"] for e in flags[0]["evidence"]} == {"digest-mismatch"}
    assert result.outcomes[0].mismatches
    assert result.report.epochs[-1].metric >= 0.9


def test_honest_processors_are_not_flagged_when_an_owner_poisons_its_data(
    tmp_path: Path,
) -> None:
    spec = spec_with({"owner1": "label-flip", "processor3": "late"})
    result = run(spec, tmp_path)
    assert result.report.flags == []
    # the late one is still paid, less the announced penalty, and never accused
    assert all(e.late == ["processor3"] for e in result.report.epochs)
    assert nets(result)["processor3"] > 0
