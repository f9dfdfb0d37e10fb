"""Statistical monitors: clear attacks score high, honest IID blocks rarely cross 3.5."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_diabetes

from fedmarket.integrity.monitors import (
    MAD_SCALE,
    BlockScore,
    StabilityMonitor,
    block_scores,
    party_scores,
    robust_z,
    validation_effect,
)
from fedmarket.integrity.types import BlockGradient
from fedmarket.models.training import design_matrix, gradient_sums


def honest_blocks(
    rng: np.random.Generator, n: int = 20, shape: tuple[int, int] = (1, 31), noise: float = 0.1
) -> list[BlockGradient]:
    """IID honest blocks: a common N(0, 1) gradient plus N(0, noise^2) per coordinate;
    block i is computed by processor p{i % 5}."""
    common = rng.normal(0, 1, shape)
    return [
        BlockGradient(
            f"b{i}", f"p{i % 5}", f"o{i % 7}", 30, 30 * (common + rng.normal(0, noise, shape))
        )
        for i in range(n)
    ]


def replace(b: BlockGradient, mean: np.ndarray) -> BlockGradient:
    return BlockGradient(b.block, b.processor, b.owner, b.n_samples, mean * b.n_samples)


@cache
def cancer() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    lo, hi = X.min(axis=0), X.max(axis=0)
    order = np.random.default_rng(0).permutation(len(y))
    return (2 * (X - lo) / (hi - lo) - 1)[order], y[order].astype(np.float64)


def cancer_sums(weights: np.ndarray, n_blocks: int = 16) -> list[np.ndarray]:
    X, y = cancer()
    return [
        gradient_sums("logistic", weights, X[30 * i : 30 * (i + 1)], y[30 * i : 30 * (i + 1), None])
        for i in range(n_blocks)
    ]


# ------------------------------------------------------------------ robust_z


def test_robust_z_known_values() -> None:
    z = robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))  # median 3, MAD 1
    np.testing.assert_allclose(z, np.array([-2.0, -1.0, 0.0, 1.0, 97.0]) / MAD_SCALE)


def test_robust_z_floors_the_mad() -> None:
    assert np.array_equal(robust_z(np.full(7, 2.5)), np.zeros(7))
    z = robust_z(np.array([1.0, 1.0, 1.0, 1.0, 1.1]))  # MAD 0 -> floored at 1e-3 * median |x|
    assert np.all(np.isfinite(z))
    assert z[-1] == pytest.approx(0.1 / (MAD_SCALE * 1e-3))
    assert np.all(np.isfinite(robust_z(np.zeros(4))))


def test_robust_z_rejects_bad_input() -> None:
    assert robust_z(np.array([])).shape == (0,)
    with pytest.raises(ValueError, match="1-D"):
        robust_z(np.ones((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        robust_z(np.array([1.0, np.nan, 2.0]))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-100, 100), min_size=3, max_size=30, unique=True),
    st.floats(0.1, 10),
    st.floats(-50, 50),
)
def test_robust_z_is_affine_invariant(values: list[float], a: float, b: float) -> None:
    x = np.array(values)
    mad = np.median(np.abs(x - np.median(x)))
    floor_x = max(1e-12, 1e-3 * np.median(np.abs(x)))
    floor_y = max(1e-12, 1e-3 * np.median(np.abs(a * x + b)))
    if mad <= 10 * floor_x or a * mad <= 10 * floor_y:
        return  # the MAD floor binds (or nearly): no invariance promised
    np.testing.assert_allclose(robust_z(a * x + b), robust_z(x), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ block_scores


def test_random_update_block_stands_out() -> None:
    rng = np.random.default_rng(1)
    blocks = honest_blocks(rng)
    scale = np.linalg.norm(blocks[0].mean) / np.sqrt(blocks[0].mean.size)
    blocks[3] = replace(blocks[3], rng.normal(0, scale, blocks[3].mean.shape))  # same norm, random
    scores = block_scores(blocks)
    assert scores["b3"].z_distance > 5 and scores["b3"].z_cosine > 5
    # Honest blocks cross 3.5 about 1% of the time (see the false-positive test): with 20
    # blocks the MAD is itself noisy, so one may score 5 or 6; the attacker scores far more.
    assert scores["b3"].max_z > 5 * max(s.max_z for b, s in scores.items() if b != "b3")


def test_free_rider_and_sign_flip_stand_out() -> None:
    rng = np.random.default_rng(2)
    blocks = honest_blocks(rng)
    blocks[0] = replace(blocks[0], np.zeros_like(blocks[0].mean))
    blocks[1] = replace(blocks[1], -blocks[1].mean)
    scores = block_scores(blocks)
    assert scores["b0"].z_norm > 5 and scores["b0"].z_cosine > 5 and scores["b0"].cosine == 0
    assert scores["b1"].z_cosine > 5 and scores["b1"].z_distance > 5


def test_random_block_among_real_gradients() -> None:
    sums = cancer_sums(np.zeros((1, 31)))
    blocks = [BlockGradient(f"b{i}", "p", "o", 30, s) for i, s in enumerate(sums)]
    norm = np.median([np.linalg.norm(b.mean) for b in blocks])
    blocks[5] = replace(blocks[5], np.random.default_rng(3).normal(0, norm / np.sqrt(31), (1, 31)))
    scores = block_scores(blocks)
    # Real 30-sample blocks spread widely, so its distance may look ordinary; its direction not.
    assert scores["b5"].z_cosine > 5


def test_scores_fields() -> None:
    rng = np.random.default_rng(4)
    blocks = honest_blocks(rng, n=6)
    reference = rng.normal(0, 1, (1, 31))
    scores = block_scores(blocks, reference)
    centre = np.median([b.flat for b in blocks], axis=0)
    for b in blocks:
        s = scores[b.block]
        assert s.block == b.block
        assert s.norm == pytest.approx(np.linalg.norm(b.flat))
        assert s.distance == pytest.approx(np.linalg.norm(b.flat - centre))
        assert s.cosine == pytest.approx(
            b.flat @ centre / (np.linalg.norm(b.flat) * np.linalg.norm(centre))
        )
        cos_ref = b.flat @ reference.ravel() / (np.linalg.norm(b.flat) * np.linalg.norm(reference))
        assert s.validation_cosine == pytest.approx(cos_ref)
        assert s.z_norm >= 0
    assert all(np.isnan(s.validation_cosine) for s in block_scores(blocks).values())


def test_fewer_than_three_blocks_score_zero() -> None:
    blocks = honest_blocks(np.random.default_rng(5), n=2)
    blocks[1] = replace(blocks[1], -100 * blocks[1].mean)
    for s in block_scores(blocks).values():
        assert (s.z_distance, s.z_cosine, s.z_norm) == (0.0, 0.0, 0.0)
        assert s.distance > 0


def test_false_positive_rate_on_iid_blocks() -> None:
    """200 epochs of 20 honest IID blocks: how often does a block or a party cross 3.5?"""
    rng = np.random.default_rng(6)
    block_hits = party_hits = n_blocks = n_parties = 0
    for _ in range(200):
        blocks = honest_blocks(rng)
        scores = block_scores(blocks)
        parties = party_scores(scores, {b.block: b.processor for b in blocks})
        block_hits += sum(s.max_z > 3.5 for s in scores.values())
        party_hits += sum(p.z > 3.5 for p in parties.values())
        n_blocks, n_parties = n_blocks + len(scores), n_parties + len(parties)
    block_rate, party_rate = block_hits / n_blocks, party_hits / n_parties
    print(f"IID false positives at z > 3.5: blocks {block_rate:.2%}, processors {party_rate:.2%}")
    assert block_rate < 0.025  # any of 3 scores, 20 blocks per robust estimate
    assert party_rate < 0.002  # the median over a processor's 4 blocks


def test_false_positive_rate_on_real_blocks() -> None:
    """Real 30-sample blocks are heavier-tailed than Gaussian: single blocks cross 3.5 often,
    which is why evidence is taken per party (median over its blocks) and must repeat."""
    X, y = cancer()
    rng = np.random.default_rng(11)
    block_hits = party_hits = n_blocks = n_parties = 0
    for _ in range(100):
        order = rng.permutation(len(y))[:480].reshape(16, 30)
        blocks = [
            BlockGradient(
                f"b{i}",
                f"p{i % 4}",
                "o",
                30,
                gradient_sums("logistic", np.zeros((1, 31)), X[r], y[r, None]),
            )
            for i, r in enumerate(order)
        ]
        scores = block_scores(blocks)
        parties = party_scores(scores, {b.block: b.processor for b in blocks})
        block_hits += sum(s.max_z > 3.5 for s in scores.values())
        party_hits += sum(p.z > 3.5 for p in parties.values())
        n_blocks, n_parties = n_blocks + len(scores), n_parties + len(parties)
    block_rate, party_rate = block_hits / n_blocks, party_hits / n_parties
    print(
        f"real-block false positives at z > 3.5: blocks {block_rate:.2%}, "
        f"processors {party_rate:.2%}"
    )
    assert block_rate < 0.2
    assert party_rate < 0.03


# ------------------------------------------------------------------ party_scores


def test_party_scores_blame_the_processor_that_corrupts_everything() -> None:
    rng = np.random.default_rng(7)
    blocks = honest_blocks(rng, n=25)  # p0..p4 with 5 blocks each
    for i, b in enumerate(blocks):
        if b.processor == "p0":
            blocks[i] = replace(b, rng.normal(0, 1, b.mean.shape))
    blocks[1] = replace(blocks[1], -blocks[1].mean)  # one poisoned block computed by p1
    parties = party_scores(block_scores(blocks), {b.block: b.processor for b in blocks})
    assert parties["p0"].z > 5 and parties["p0"].flagged_fraction == 1.0
    assert parties["p1"].z < 3.5  # its median ignores the one bad block ...
    assert parties["p1"].max_z > 5 and parties["p1"].flagged_fraction == pytest.approx(
        0.2
    )  # ... seen here
    assert parties["p1"].blocks == tuple(b.block for b in blocks if b.processor == "p1")
    assert all(parties[p].z < 3.5 for p in ("p2", "p3", "p4"))


def test_party_scores_need_every_party() -> None:
    score = BlockScore("b0", 0.0, 1.0, 1.0, float("nan"), 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="b0"):
        party_scores({"b0": score}, {})


# ------------------------------------------------------------------ StabilityMonitor


def test_stability_catches_random_and_stale_blocks_during_training() -> None:
    """Gradient descent on breast cancer; block 0 answers random noise every epoch, block 1
    replays its epoch-0 gradient plus noise as large as the honest spread."""
    rng = np.random.default_rng(8)
    weights, monitor, stale = np.zeros((1, 31)), StabilityMonitor(), None
    honest_max = []
    for epoch in range(10):
        sums = cancer_sums(weights)
        stale = sums[1] if stale is None else stale
        means = np.array([s.ravel() / 30 for s in sums])
        spread = float(np.median(np.linalg.norm(means - np.median(means, axis=0), axis=1)))
        sums[0] = rng.normal(0, np.linalg.norm(means[2]) / np.sqrt(31), (1, 31)) * 30
        sums[1] = stale + rng.normal(0, spread / np.sqrt(31), (1, 31)) * 30
        blocks = [BlockGradient(f"b{i}", "p", "o", 30, s) for i, s in enumerate(sums)]
        z = monitor.observe(epoch, blocks)
        if epoch == 0:
            assert set(z.values()) == {0.0}
        else:
            assert z["b0"] > 5 and z["b1"] > 5
            honest_max.append(max(v for b, v in z.items() if b not in ("b0", "b1")))
        weights = weights - sum(sums[2:]) / (30 * 14)
    assert np.median(honest_max) < 3.5


def test_stability_bookkeeping() -> None:
    rng = np.random.default_rng(9)
    monitor = StabilityMonitor()
    first, second = honest_blocks(rng, n=8), honest_blocks(rng, n=8)
    monitor.observe(3, first)
    again = monitor.observe(5, second)
    assert monitor.observe(5, second) == again  # re-observing an epoch compares with epoch 3
    newcomer = [*second[:5], BlockGradient("new", "p", "o", 30, second[5].sums)]
    assert monitor.observe(6, newcomer)["new"] == 0.0
    assert set(monitor.observe(7, second[:2]).values()) == {0.0}  # fewer than 3 with history
    with pytest.raises(ValueError, match="after epoch 7"):
        monitor.observe(6, second)


# ------------------------------------------------------------------ validation_effect


def test_validation_effect_on_linear_regression() -> None:
    """Least squares on diabetes: gradient_sums is the exact gradient of the loss used here."""
    X, y = load_diabetes(return_X_y=True)
    X = X / np.abs(X).max(axis=0)
    y = (y - y.mean()) / y.std()
    X_val, y_val = X[:100], y[:100, None]

    def loss(w: np.ndarray) -> float:
        return float(np.mean((design_matrix(X_val) @ w.T - y_val) ** 2) / 2)

    weights = np.zeros((1, X.shape[1] + 1))
    blocks = [
        BlockGradient(
            f"b{i}", f"p{i % 3}", "o", 30, gradient_sums("linear", weights, X[rows], y[rows, None])
        )
        for i, rows in enumerate(slice(100 + 30 * k, 130 + 30 * k) for k in range(9))
    ]
    by_party = {p: [b for b in blocks if b.processor == p] for p in ("p0", "p1")}
    by_party["flipper"] = [replace(b, -b.mean) for b in blocks if b.processor == "p2"]
    by_party["idle"] = [replace(b, np.zeros_like(b.mean)) for b in blocks if b.processor == "p2"]
    effect = validation_effect(by_party, weights, loss, step=0.5)
    assert effect["p0"] > 0 and effect["p1"] > 0
    assert effect["flipper"] < 0
    assert effect["idle"] == 0.0
    g = sum(b.sums for b in by_party["p0"]) / 90
    penalised = validation_effect(by_party, weights, loss, step=0.5, rho=0.1)
    assert penalised["p0"] == pytest.approx(effect["p0"] - 0.1 * float(np.sum(g**2)))


def test_validation_effect_checks_its_input() -> None:
    blocks = honest_blocks(np.random.default_rng(10), n=3)
    with pytest.raises(ValueError, match="no blocks"):
        validation_effect({"p": []}, np.zeros((1, 31)), lambda w: 0.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        validation_effect({"p": blocks}, np.zeros((1, 5)), lambda w: 0.0, 1.0)
