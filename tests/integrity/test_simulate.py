"""The plaintext twin end to end: cheaters caught, the honest untouched, poison contained."""

from __future__ import annotations

from fedmarket.integrity.checker import IntegrityConfig
from fedmarket.integrity.simulate import SimConfig, simulate


def sim(**changes: object) -> SimConfig:
    # breast cancer: 5 owners of ~77 points each (the privacy floor is 64 per owner)
    base = {"dataset": "breast_cancer", "owners": 5, "block_points": 16, "epochs": 10, "seed": 0}
    return SimConfig(**(base | changes))  # type: ignore[arg-type]


def test_clean_runs_flag_nobody_iid_or_not() -> None:
    for split in ("iid", "dirichlet"):
        result = simulate(sim(split=split))
        assert result.flagged == {} and result.refused == {} and result.alarms == []
        assert result.accuracy >= 0.9


def test_every_forging_processor_is_convicted_in_its_first_forged_epoch() -> None:
    """Caught now means convicted on chain: proven by replicas or an owner's recomputation,
    accused with a bond, judged by a panel of the other processors drawn after it."""
    # owners cut no block below the privacy floor (64), so 5 owners of ~77 points have one
    # block each: 5 processors, so that every forger holds blocks to forge
    for attack in ("random", "zero", "sign-flip", "collude:pair:random"):
        result = simulate(sim(processor_attack=attack, fraction=0.4, processors=5))
        bad = set(result.adversaries)
        assert len(bad) == 2
        assert set(result.flagged) == bad, attack
        assert set(result.flagged.values()) == {0}, attack
        assert all(e["strength"] == "proven" for p in bad for e in result.flag_evidence[p])
        assert set(result.refused) <= bad  # nobody honest goes unpaid


def test_a_stale_replayer_is_caught_once_it_starts_replaying() -> None:
    result = simulate(
        sim(processor_attack="stale", fraction=0.1, dataset="digits", block_points=32)
    )
    [bad] = result.adversaries
    assert 1 <= result.flagged[bad] <= 3  # honest in epoch 0, replays from epoch 1


def test_fltrust_contains_label_flipping_owners_where_the_mean_does_not() -> None:
    def drop(aggregator: str) -> float:
        integrity = IntegrityConfig(aggregator=aggregator)
        cfg = {
            "dataset": "digits",
            "block_points": 32,
            "integrity": integrity,
            "split": "dirichlet",
            "epochs": 20,
        }
        clean = simulate(sim(**cfg)).accuracy
        return clean - simulate(sim(owner_attack="label-flip", fraction=0.3, **cfg)).accuracy

    robust, plain = drop("fltrust"), drop("mean")
    assert robust <= 0.015
    assert plain >= robust + 0.05
