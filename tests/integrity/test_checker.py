"""The requester's epoch checks on real gradients: audits, attribution, flags, aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from fedmarket.integrity.checker import EpochChecker, IntegrityConfig
from fedmarket.integrity.types import BlockGradient
from fedmarket.models.training import gradient_sums

PROCS = [f"0xp{i}" for i in range(5)]
OWNERS = [f"0xo{i}" for i in range(5)]


def honest_blocks(epoch: int) -> list[BlockGradient]:
    """Breast cancer, scaled to [-1, 1], 25 blocks of ~20 points: owner i's blocks are spread
    over the processors; weights move a little each epoch like a training run's."""
    data = load_breast_cancer()
    X = data.data[:500]
    X = np.clip((X - X.mean(0)) / (2.5 * X.std(0)), -1, 1)
    y = data.target[:500].astype(float)[:, None]
    w = np.full((1, X.shape[1] + 1), 0.05 * (epoch + 1))
    out = []
    for k, idx in enumerate(np.array_split(np.arange(500), 25)):
        owner, proc = OWNERS[k // 5], PROCS[k % 5]
        sums = gradient_sums("logistic", w, X[idx], y[idx])
        out.append(BlockGradient(f"{owner}/{k}", proc, owner, len(idx), sums))
    return out


def forge(blocks: list[BlockGradient], who: str, rng: np.random.Generator) -> list[BlockGradient]:
    return [
        BlockGradient(
            b.block,
            b.processor,
            b.owner,
            b.n_samples,
            rng.uniform(-0.5, 0.5, b.sums.shape) * b.n_samples,
        )
        if b.processor == who
        else b
        for b in blocks
    ]


def run(checker: EpochChecker, epochs: int, cheat: str | None, audit: bool) -> list[list[str]]:
    rng = np.random.default_rng(0)
    flagged: list[list[str]] = []
    active = set(PROCS)
    for epoch in range(epochs):
        truth = {b.block: b.sums for b in honest_blocks(epoch)}
        blocks = [b for b in honest_blocks(epoch) if b.processor in active]
        if cheat:
            blocks = forge(blocks, cheat, rng)

        def auditor(b: BlockGradient, truth: dict[str, np.ndarray] = truth) -> bool:
            return bool(np.array_equal(b.sums, truth[b.block]))

        verdict = checker.check(
            epoch, blocks, proven=[], active=active, audit=auditor if audit else None
        )
        flagged.append(verdict.flagged)
        active -= set(verdict.flagged)
        if cheat in verdict.flagged:
            used = {b for b, w in verdict.weights.items() if w > 0}
            assert not any(b.processor == cheat and b.block in used for b in blocks)
    return flagged


def test_a_forger_is_audited_proven_and_flagged_in_its_first_epoch() -> None:
    checker = EpochChecker(IntegrityConfig(aggregator="mean"))
    assert run(checker, 3, cheat=PROCS[2], audit=True) == [[PROCS[2]], [], []]


def test_without_an_auditor_statistics_alone_flag_only_on_repetition() -> None:
    checker = EpochChecker(IntegrityConfig(aggregator="mean", repeat=2, window=3))
    assert run(checker, 3, cheat=PROCS[2], audit=False) == [[], [PROCS[2]], []]


def test_honest_processors_are_never_flagged() -> None:
    for audit in (True, False):
        checker = EpochChecker(IntegrityConfig(aggregator="trimmed-mean"))
        assert run(checker, 10, cheat=None, audit=audit) == [[]] * 10


def test_an_owners_poisoned_blocks_are_not_held_against_the_processors() -> None:
    """Owner 0x o1 flips its labels: its blocks are outliers whoever computes them."""
    checker = EpochChecker(IntegrityConfig(aggregator="median"))
    for epoch in range(4):
        blocks = [
            BlockGradient(b.block, b.processor, b.owner, b.n_samples, -3 * b.sums)
            if b.owner == OWNERS[1]
            else b
            for b in honest_blocks(epoch)
        ]
        verdict = checker.check(epoch, blocks, proven=[], active=set(PROCS))
        assert verdict.flags == []
        accused = {(e.role, e.party) for e in verdict.evidence}
        assert ("owner", OWNERS[1]) in accused
        assert not any(role == "processor" for role, _ in accused)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown monitors"):
        IntegrityConfig(monitors=("distance", "telepathy"))
