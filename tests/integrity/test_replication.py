"""Replication cross-checks: disputes, settlement by recomputation, detection probability."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fedmarket.integrity.replication import (
    Dispute,
    detection_probability,
    find_disputes,
    replication_for,
    settle,
)
from fedmarket.integrity.types import Strength
from fedmarket.roles.assignment import BlockInfo, plan_assignment
from fedmarket.roles.messages import BlockRef

A, B, C = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40


def test_agreeing_replicas_are_no_dispute_and_disagreeing_ones_are() -> None:
    digests = {A: {"x/0": b"1", "x/1": b"2"}, B: {"x/1": b"2", "x/2": b"3"}}
    assert find_disputes(digests) == []
    digests[B]["x/1"] = b"9"
    assert find_disputes(digests) == [Dispute("x/1", {A: b"2", B: b"9"})]


def test_the_recomputation_names_the_liar_with_proof() -> None:
    dispute = Dispute("x/1", {A: b"good", B: b"bad"})
    s = settle(dispute, b"good", epoch=4, arbiter="owner x")
    assert s.liars == (B,) and s.truthful == A
    [e] = s.evidence
    assert (e.party, e.epoch, e.kind, e.strength) == (B, 4, "digest-mismatch", Strength.PROVEN)
    assert "owner x" in e.detail and e.blocks == ("x/1",)


def test_both_wrong_both_liars_and_no_copy_is_used() -> None:
    s = settle(Dispute("x/1", {A: b"p", B: b"q"}), b"r", epoch=0, arbiter="owner x")
    assert set(s.liars) == {A, B} and s.truthful is None


def test_without_a_recomputation_nobody_is_accused() -> None:
    s = settle(Dispute("x/1", {A: b"p", B: b"q"}), None, epoch=0, arbiter="owner x")
    assert s.liars == () and s.evidence == () and s.truthful is None


def test_detection_probability_formula_and_its_inverse() -> None:
    assert detection_probability(0.1, 0.0, 40) == 0.0
    assert detection_probability(0.1, 1.0, 1) == pytest.approx(0.1)
    q = replication_for(0.95, 0.5, 20, epochs=3)
    assert detection_probability(q, 0.5, 20 * 3) == pytest.approx(0.95)
    with pytest.raises(ValueError):
        detection_probability(1.5, 0.5, 3)


@pytest.mark.parametrize(("q", "s"), [(0.1, 0.5), (0.2, 0.25), (0.3, 1.0)])
def test_a_skipper_is_caught_at_least_as_often_as_the_formula_says(q: float, s: float) -> None:
    """Monte Carlo over assignments (which blocks are secretly replicated) and over the
    skipper's random choice of blocks each epoch.

    A processor holds its own blocks (a fraction q of them copied elsewhere) and copies of
    others' blocks (all of them checked), so more than a fraction q of what it holds is
    checked: 1 - (1-q)^(s*blocks) is a lower bound. Given the plan, the exact rate is
    1 - (1-s)^k for the k checked blocks it holds; the simulation must match that."""
    n_blocks, trials = 60, 3000
    processors = {A: 1000, B: 1000, C: 1000}
    blocks = [BlockInfo(BlockRef(owner=A, index=i), 10, i) for i in range(n_blocks)]
    index = {A: 0, B: 1, C: 2}
    rng = np.random.default_rng(1)
    caught, bound, exact = 0, [], []
    for t in range(trials):
        plan = plan_assignment(1, blocks, processors, index, replication=q, rng=random.Random(t))
        mine = [b.ref for b in plan.entries[A]]
        skipped = [ref for ref in mine if rng.random() < s]
        caught += any(ref in plan.replicated for ref in skipped)
        bound.append(detection_probability(q, s, len(mine)))
        exact.append(1 - (1 - s) ** sum(ref in plan.replicated for ref in mine))
    rate = caught / trials
    assert rate == pytest.approx(float(np.mean(exact)), abs=0.03)  # 3000 trials: sd <= 0.009
    assert rate >= float(np.mean(bound)) - 0.01
