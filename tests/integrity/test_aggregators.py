"""Robust aggregators: agree with the mean on honest blocks, resist a 30% minority of attackers."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer

from fedmarket.errors import ConfigError
from fedmarket.integrity.aggregators import (
    AGGREGATORS,
    FLTrust,
    Krum,
    Mean,
    Median,
    TrimmedMean,
    get_aggregator,
)
from fedmarket.integrity.aggregators.krum import byzantine_count
from fedmarket.integrity.aggregators.median import weighted_median
from fedmarket.integrity.aggregators.trimmed_mean import trim_count
from fedmarket.integrity.types import BlockGradient
from fedmarket.models.training import gradient_sums

ROBUST = ["median", "trimmed-mean:0.3", "krum", "fltrust"]
ALL = ["mean", "median", "trimmed-mean", "krum", "fltrust"]


def block(i: int, mean: np.ndarray, n: int, processor: str = "p") -> BlockGradient:
    return BlockGradient(f"o/{i}", processor, "o", n, mean * n)


def synthetic(
    rng: np.random.Generator,
    n_blocks: int = 20,
    shape: tuple[int, int] = (2, 16),
    noise: float = 0.05,
) -> tuple[list[BlockGradient], np.ndarray]:
    """Honest IID blocks: a common gradient plus small per-block noise; and a validation
    gradient drawn the same way (the requester's reference)."""
    common = rng.normal(0, 1, shape)
    sizes = rng.integers(20, 41, n_blocks)
    blocks = [
        block(i, common + rng.normal(0, noise, shape), int(sizes[i])) for i in range(n_blocks)
    ]
    return blocks, common + rng.normal(0, noise, shape)


@cache
def cancer() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    lo, hi = X.min(axis=0), X.max(axis=0)
    return 2 * (X - lo) / (hi - lo) - 1, y.astype(np.float64)


def cancer_blocks(seed: int, block_size: int = 30) -> tuple[list[BlockGradient], np.ndarray]:
    """Real logistic-regression gradients at w = 0: 17 blocks of 30 samples, and the requester's
    gradient on the remaining 59 samples."""
    X, y = cancer()
    order = np.random.default_rng(seed).permutation(len(y))
    X, y = X[order], y[order]
    w = np.zeros((1, X.shape[1] + 1))
    n_blocks = 17
    blocks = []
    for i in range(n_blocks):
        rows = slice(block_size * i, block_size * (i + 1))
        sums = gradient_sums("logistic", w, X[rows], y[rows][:, None])
        blocks.append(BlockGradient(f"o/{i}", f"p{i % 4}", "o", block_size, sums))
    rest = slice(block_size * n_blocks, None)
    reference = gradient_sums("logistic", w, X[rest], y[rest][:, None]) / len(y[rest])
    return blocks, reference


def attack(kind: str, b: BlockGradient, scale: float, rng: np.random.Generator) -> BlockGradient:
    """random: N(0, (10 * scale)^2) per coordinate; flip: -10 x the honest sums; zeros."""
    if kind == "random":
        sums = rng.normal(0, 10 * scale, b.sums.shape) * b.n_samples
    elif kind == "flip":
        sums = -10 * b.sums
    else:
        sums = np.zeros_like(b.sums)
    return BlockGradient(b.block, b.processor, b.owner, b.n_samples, sums)


def corrupt(
    blocks: list[BlockGradient], kind: str, fraction: float, rng: np.random.Generator
) -> tuple[list[BlockGradient], np.ndarray]:
    """Replace floor(fraction * n) random blocks; also return the mean of the honest rest."""
    n = len(blocks)
    bad = set(rng.choice(n, int(fraction * n + 1e-9), replace=False).tolist())
    honest = Mean()([b for i, b in enumerate(blocks) if i not in bad]).gradient
    scale = float(np.linalg.norm(honest))
    out = [attack(kind, b, scale, rng) if i in bad else b for i, b in enumerate(blocks)]
    return out, honest


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------ the plain mean


def test_mean_is_bit_identical_to_total_over_count() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 60, 13)
    blocks = [
        BlockGradient(f"b{i}", "p", "o", int(n), rng.normal(0, 3, (3, 9)))
        for i, n in enumerate(sizes)
    ]
    total = sum((b.sums for b in blocks), np.zeros_like(blocks[0].sums))
    count = sum(b.n_samples for b in blocks)
    result = Mean()(blocks)
    assert np.array_equal(result.gradient, total / count)
    assert result.weights == pytest.approx({b.block: b.n_samples / count for b in blocks})
    assert result.name == "mean"


# ------------------------------------------------------------------ no attackers


@pytest.mark.parametrize("name", ALL)
def test_identical_blocks_give_that_gradient(name: str) -> None:
    g = np.random.default_rng(1).normal(0, 1, (2, 5))
    blocks = [block(i, g, n) for i, n in enumerate([10, 30, 20, 25, 40, 15])]
    result = get_aggregator(name)(blocks, reference=g)
    np.testing.assert_allclose(result.gradient, g, rtol=1e-12, atol=1e-12)
    assert sum(result.weights.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ALL)
def test_homogeneous_blocks_agree_with_the_mean(name: str) -> None:
    blocks, reference = synthetic(np.random.default_rng(2))
    mean = Mean()(blocks).gradient
    assert rel_error(get_aggregator(name)(blocks, reference=reference).gradient, mean) < 0.03


@pytest.mark.parametrize("name", ["median", "trimmed-mean", "trimmed-mean:0.3", "krum"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_gradients_close_to_the_mean(name: str, seed: int) -> None:
    # 30-sample blocks are noisy (block means spread ~40% of the mean's norm around it).
    blocks, _ = cancer_blocks(seed)
    assert rel_error(get_aggregator(name)(blocks).gradient, Mean()(blocks).gradient) < 0.25


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fltrust_on_real_gradients_points_like_the_mean(seed: int) -> None:
    # Its norm is the reference's (59 validation samples), so compare directions.
    blocks, reference = cancer_blocks(seed)
    g = FLTrust()(blocks, reference=reference).gradient
    assert cosine(g, Mean()(blocks).gradient) > 0.99
    assert 0.9 < np.linalg.norm(g) / np.linalg.norm(reference) <= 1 + 1e-12


# ------------------------------------------------------------------ 30% attackers


@pytest.mark.parametrize("kind", ["random", "flip", "zeros"])
@pytest.mark.parametrize("name", ROBUST)
def test_synthetic_attack(kind: str, name: str) -> None:
    rng = np.random.default_rng(3)
    blocks, reference = synthetic(rng)
    attacked, honest = corrupt(blocks, kind, 0.3, rng)
    assert rel_error(Mean()(attacked).gradient, honest) > 0.25  # the mean is dragged away ...
    got = get_aggregator(name)(attacked, reference=reference).gradient
    assert rel_error(got, honest) < 0.1  # ... the robust rule is not


@pytest.mark.parametrize("kind", ["random", "flip"])
@pytest.mark.parametrize("name", ROBUST)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_gradient_attack(kind: str, name: str, seed: int) -> None:
    blocks, reference = cancer_blocks(seed)
    rng = np.random.default_rng(seed)
    attacked, honest = corrupt(blocks, kind, 0.3, rng)  # 5 of 17 blocks
    assert rel_error(Mean()(attacked).gradient, honest) > 2.0
    got = get_aggregator(name)(attacked, reference=reference).gradient
    if name != "fltrust":
        assert rel_error(got, honest) < 0.45
        return
    # FLTrust's norm is the reference's (59 samples, off by up to ~50% from the honest mean's):
    # judge its direction, and what the attackers changed in its output.
    assert cosine(got, honest) > 0.99
    honest_only = [b for b, a in zip(blocks, attacked, strict=True) if a is b]
    assert rel_error(got, FLTrust()(honest_only, reference=reference).gradient) < 0.1


def test_krum_gives_attackers_zero_weight() -> None:
    rng = np.random.default_rng(4)
    blocks, _ = cancer_blocks(4)
    attacked, honest = corrupt(blocks, "flip", 0.3, rng)
    result = Krum()(attacked)
    bad = {b.block for b, a in zip(blocks, attacked, strict=True) if a is not b}
    assert all(result.weights[b] == 0 for b in bad)
    assert sum(w > 0 for w in result.weights.values()) == len(blocks) - len(bad)
    np.testing.assert_allclose(result.gradient, honest, rtol=1e-12)


def test_default_trimmed_mean_resists_its_own_fraction() -> None:
    rng = np.random.default_rng(5)
    blocks, _ = cancer_blocks(5)
    attacked, honest = corrupt(blocks, "flip", 0.2, rng)  # 3 of 17 <= floor(0.2 * 17)
    assert rel_error(TrimmedMean()(attacked).gradient, honest) < 0.45
    assert rel_error(Mean()(attacked).gradient, honest) > 1.0


# ------------------------------------------------------------------ rules in detail


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=12),
    st.data(),
)
def test_weighted_median_is_the_median_of_repeated_values(
    values: list[float], data: st.DataObject
) -> None:
    counts = data.draw(st.lists(st.integers(1, 5), min_size=len(values), max_size=len(values)))
    v = np.array(values)[:, None]
    median, share = weighted_median(v, np.array(counts))
    assert median[0] == pytest.approx(np.median(np.repeat(v[:, 0], counts)), abs=1e-9)
    assert share.sum() == pytest.approx(1.0)


def test_median_is_weighted_by_samples() -> None:
    blocks = [
        block(0, np.array([[0.0]]), 10),
        block(1, np.array([[1.0]]), 10),
        block(2, np.array([[5.0]]), 30),
    ]
    assert Median()(blocks).gradient[0, 0] == 5.0  # the 30-sample block holds 60% of the samples
    assert Median()(blocks).weights == {"o/0": 0.0, "o/1": 0.0, "o/2": 1.0}


@pytest.mark.parametrize(
    ("beta", "n", "k"),
    [
        (0.2, 2, 0),
        (0.2, 3, 1),
        (0.2, 4, 1),
        (0.2, 10, 2),
        (0.2, 17, 3),
        (0.3, 10, 3),
        (0.49, 4, 1),
        (0.0, 10, 0),
    ],
)
def test_trim_count(beta: float, n: int, k: int) -> None:
    assert trim_count(beta, n) == k


def test_trimmed_mean_without_trimming_is_the_mean() -> None:
    blocks, _ = synthetic(np.random.default_rng(6))
    np.testing.assert_allclose(
        TrimmedMean(0.0)(blocks).gradient, Mean()(blocks).gradient, rtol=1e-12
    )


@pytest.mark.parametrize(
    ("fraction", "n", "f"),
    [(0.3, 2, 0), (0.3, 3, 0), (0.3, 10, 3), (0.3, 20, 6), (0.49, 5, 2), (0.0, 9, 0)],
)
def test_byzantine_count(fraction: float, n: int, f: int) -> None:
    assert byzantine_count(fraction, n) == f


def test_krum_with_two_blocks_keeps_both() -> None:
    blocks = [block(0, np.array([[1.0, 2.0]]), 10), block(1, np.array([[3.0, 0.0]]), 30)]
    np.testing.assert_allclose(Krum()(blocks).gradient, Mean()(blocks).gradient)


def test_fltrust_needs_a_reference() -> None:
    blocks, _ = synthetic(np.random.default_rng(7))
    with pytest.raises(ValueError, match="validation set"):
        FLTrust()(blocks)
    with pytest.raises(ValueError, match="shape"):
        FLTrust()(blocks, reference=np.zeros((3, 3)))


def test_fltrust_falls_back_to_the_reference_when_no_block_agrees() -> None:
    blocks, reference = synthetic(np.random.default_rng(8))
    flipped = [attack("flip", b, 1.0, np.random.default_rng(0)) for b in blocks]
    result = FLTrust()(flipped, reference=reference)
    np.testing.assert_array_equal(result.gradient, reference)
    assert set(result.weights.values()) == {0.0}


def test_fltrust_bounds_the_norm_by_the_reference() -> None:
    rng = np.random.default_rng(9)
    blocks, reference = synthetic(rng, noise=2.0)
    g = FLTrust()(blocks, reference=reference).gradient
    assert np.linalg.norm(g) <= np.linalg.norm(reference) * (1 + 1e-12)


# ------------------------------------------------------------------ properties of every rule


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs(name: str) -> None:
    agg = get_aggregator(name)
    g = np.ones((1, 3))
    with pytest.raises(ValueError, match="no block"):
        agg([], reference=g)
    with pytest.raises(ValueError, match="shape"):
        agg([block(0, g, 5), block(1, np.ones((1, 4)), 5)], reference=g)
    with pytest.raises(ValueError, match="duplicate"):
        agg([block(0, g, 5), block(0, g, 5)], reference=g)
    with pytest.raises(ValueError, match="n_samples"):
        agg([block(0, g, 5), BlockGradient("x", "p", "o", 0, g)], reference=g)
    with pytest.raises(ValueError, match="finite"):
        agg([block(0, g, 5), block(1, g * np.nan, 5)], reference=g)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**32 - 1), st.sampled_from(ALL))
def test_weights_and_invariances(n: int, seed: int, name: str) -> None:
    rng = np.random.default_rng(seed)
    blocks = [block(i, rng.normal(0, 1, (2, 3)), int(rng.integers(1, 50))) for i in range(n)]
    reference = rng.normal(0, 1, (2, 3))
    agg = get_aggregator(name)
    result = agg(blocks, reference=reference)
    assert result.gradient.shape == (2, 3)
    assert result.name == agg.name
    assert set(result.weights) == {b.block for b in blocks}
    assert all(0 <= w <= 1 + 1e-12 for w in result.weights.values())
    total = sum(result.weights.values())
    if name == "fltrust":
        # per output row; a row no block agrees with falls back to the reference, weightless
        assert total <= 1 + 1e-9
    else:
        assert total == pytest.approx(1.0) or set(result.weights.values()) == {0.0}
    shuffled = [blocks[i] for i in rng.permutation(n)]
    np.testing.assert_allclose(
        agg(shuffled, reference=reference).gradient, result.gradient, atol=1e-12
    )
    if name != "fltrust":  # every other rule is translation-equivariant and stays in the hull
        shift = rng.normal(0, 1, (2, 3))
        moved = [block(i, b.mean + shift, b.n_samples) for i, b in enumerate(blocks)]
        np.testing.assert_allclose(agg(moved).gradient, result.gradient + shift, atol=1e-9)
        means = np.stack([b.mean for b in blocks])
        assert np.all(result.gradient >= means.min(axis=0) - 1e-12)
        assert np.all(result.gradient <= means.max(axis=0) + 1e-12)


# ------------------------------------------------------------------ get_aggregator


@pytest.mark.parametrize(
    ("name", "kind", "canonical"),
    [
        ("mean", Mean, "mean"),
        ("median", Median, "median"),
        ("trimmed-mean", TrimmedMean, "trimmed-mean:0.2"),
        ("trimmed-mean:0.1", TrimmedMean, "trimmed-mean:0.1"),
        ("  Trimmed-Mean : 0.25 ", TrimmedMean, "trimmed-mean:0.25"),
        ("krum", Krum, "krum:0.3"),
        ("krum:0.2", Krum, "krum:0.2"),
        ("krum:0", Krum, "krum:0.0"),
        ("fltrust", FLTrust, "fltrust"),
    ],
)
def test_get_aggregator(name: str, kind: type, canonical: str) -> None:
    agg = get_aggregator(name)
    assert isinstance(agg, kind)
    assert agg.name == canonical
    assert get_aggregator(agg.name) == agg  # names round-trip


def test_registry_names() -> None:
    assert set(AGGREGATORS) == {"mean", "median", "trimmed-mean", "krum", "fltrust"}


@pytest.mark.parametrize(
    ("name", "message", "hint"),
    [
        ("average", "unknown aggregator 'average'", "trimmed-mean[:BETA]"),
        ("", "unknown aggregator", "krum[:F]"),
        ("median:0.1", "takes no parameter", "trimmed-mean and krum"),
        ("fltrust:1", "takes no parameter", "trimmed-mean and krum"),
        ("krum:abc", "bad parameter 'abc'", "krum:0.2"),
        ("krum:0.5", "bad parameter '0.5'", "[0, 0.5)"),
        ("trimmed-mean:-0.1", "bad parameter", "trimmed-mean:0.2"),
        ("trimmed-mean:nan", "bad parameter", "fraction trimmed"),
        ("trimmed-mean:", "bad parameter ''", "[0, 0.5)"),
    ],
)
def test_get_aggregator_errors(name: str, message: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        get_aggregator(name)
    assert message in info.value.message
    assert info.value.hint is not None and hint in info.value.hint


@pytest.mark.parametrize(
    "make", [lambda: TrimmedMean(0.5), lambda: Krum(-0.1), lambda: Krum(float("inf"))]
)
def test_constructors_check_their_parameter(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        make()
