"""Each kind's sensitivity bounds what one clipped sample can do to a block's totals, for every
model the kind certifies; the certification brings any model into that region."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmarket.models import DEFAULT_SIGMOID
from fedmarket.models.kinds import KINDS, get_kind
from fedmarket.models.kinds.base import CKKS_ERROR_ALLOWANCE
from fedmarket.models.kinds.mlp import MLP_HIDDEN_REACH, MLP_OUTPUT_NORM

LINEAR_KINDS = ("logistic", "multiclass", "linear")
OUTPUTS = {"logistic": 1, "multiclass": 4, "linear": 1, "mlp": 3}


def one_gradient(name: str, W: np.ndarray, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """One sample's contribution to a block's totals."""
    return get_kind(name).gradient_sums(W, x[None, :], t[None, :])


def on_ball(rng: np.random.Generator, n: int, d: int, C: float) -> np.ndarray:
    """Samples with ||x||_2 <= C, half of them on the sphere."""
    x = rng.normal(size=(n, d))
    radius = C * np.where(rng.random(n) < 0.5, 1.0, rng.random(n) ** (1 / d))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * radius[:, None]


def targets_for(name: str, K: int) -> list[np.ndarray]:
    if name == "linear":
        return [np.array([v]) for v in (-1.0, 0.0, 1.0)]
    if name == "logistic":
        return [np.array([0.0]), np.array([1.0])]
    return list(np.eye(K))  # one-hot


def random_weights(name: str, rng: np.random.Generator, d: int, scale: float) -> np.ndarray:
    kind = get_kind(name)
    shape = kind.weight_shape(d, OUTPUTS[name], 4 if name == "mlp" else 0)
    return rng.normal(0.0, scale, shape)


@pytest.mark.parametrize("name", LINEAR_KINDS)
def test_the_design_values(name: str) -> None:
    """2 H sqrt(K) sqrt(C^2 + 1) (+ the CKKS allowance): 3.00 for logistic at C = 1."""
    kind = get_kind(name)
    K = OUTPUTS[name]
    H = {"linear": 5.0}.get(name, 1.0609)
    for C in (0.5, 1.0, 2.0):
        allowance = 2 * CKKS_ERROR_ALLOWANCE * math.sqrt(K * 31)
        expected = 2 * H * math.sqrt(K) * math.hypot(C, 1.0) + allowance
        assert kind.sensitivity(30, K, C) == pytest.approx(expected, rel=1e-4)
    assert kind.residual_bound() == pytest.approx(H, abs=1e-4)


@pytest.mark.parametrize("name", sorted(KINDS))
@pytest.mark.parametrize("scale", [0.1, 3.0, 1000.0])
def test_certified_models_keep_every_clipped_sample_within_the_bound(
    name: str, scale: float
) -> None:
    rng = np.random.default_rng(7)
    kind = get_kind(name)
    d, C = 6, 1.0
    for trial in range(5):
        W = kind.certify(random_weights(name, rng, d, scale), d, C)
        assert kind.certify_problem(W, d, C) is None
        bound = kind.gradient_bound(W, d, C)
        half = (kind.sensitivity(d, OUTPUTS[name], C, hidden=W.shape[0]) / 2) * (1 + 1e-12)
        assert bound <= half
        X = on_ball(rng, 300, d, C)
        for t in targets_for(name, OUTPUTS[name]):
            norms = [np.linalg.norm(one_gradient(name, W, x, t)) for x in X]
            assert max(norms) <= bound * (1 + 1e-9), (trial, t)


@pytest.mark.parametrize("name", LINEAR_KINDS)
def test_the_linear_bound_is_attained(name: str) -> None:
    """Positive control: a sample aimed at the output's worst z reaches the bound (so the check
    above could fail, and the sensitivity is not larger than it needs to be)."""
    kind = get_kind(name)
    d, C = 6, 1.0
    rng = np.random.default_rng(3)
    W = kind.certify(random_weights(name, rng, d, 50.0), d, C)  # every output at the radius
    w, b = W[0, :d], W[0, d]
    u = w / np.linalg.norm(w)
    if name == "linear":  # z = reach sign(b), y = -sign(b): |h| = reach + 1
        sign = 1.0 if b >= 0 else -1.0
        x, t = C * u * sign, np.array([-sign])
    else:  # z = -5.60 (where the cubic peaks), y = 1: |h| = 1.0609
        peak = math.sqrt(DEFAULT_SIGMOID.c1 / (3 * -DEFAULT_SIGMOID.c3))
        x = (-peak - b) / np.linalg.norm(w) * u
        assert np.linalg.norm(x) <= C
        t = np.eye(OUTPUTS[name])[0]
    g = one_gradient(name, W, x, t)[0]
    single = kind.residual_bound() * math.hypot(np.linalg.norm(x), 1.0)
    assert np.linalg.norm(g) == pytest.approx(single, rel=1e-6)


def _ascend(W: np.ndarray, t: np.ndarray, x: np.ndarray, C: float, d: int) -> float:
    """Projected gradient ascent on ||one sample's gradient||^2 over the ball (numeric)."""

    def value(v: np.ndarray) -> float:
        return float(np.sum(one_gradient("mlp", W, v, t) ** 2))

    step = 0.1
    best = value(x)
    for _ in range(60):
        grad = np.array([(value(x + 1e-5 * e) - value(x - 1e-5 * e)) / 2e-5 for e in np.eye(d)])
        candidate = x + step * grad / max(np.linalg.norm(grad), 1e-12)
        candidate *= min(1.0, C / np.linalg.norm(candidate))
        if value(candidate) > best:
            x, best = candidate, value(candidate)
        else:
            step /= 2
    return math.sqrt(best)


def test_the_mlp_bound_survives_adversarial_weights_and_samples() -> None:
    """Weights aimed at the bound (every unit aligned with one direction, output weights rank
    one at the region's edge) and samples found by gradient ascent stay under it."""
    kind = get_kind("mlp")
    rng = np.random.default_rng(11)
    d, H, K, C = 5, 4, 3, 1.0
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    worst_ratio = 0.0
    for trial in range(6):
        if trial % 2 == 0:  # aligned: A = P for the units, rank-one W2
            W1 = np.hstack([np.outer(rng.uniform(0.5, 1.0, H), u), rng.normal(0, 0.3, (H, 1))])
            W2 = np.outer(rng.normal(size=K), rng.normal(size=H))
        else:
            W1 = rng.normal(0, 1.0, (H, d + 1))
            W2 = rng.normal(0, 1.0, (K, H))
        W = kind.certify(np.hstack([W1 * 100, W2.T * 100]), d, C)
        P, _, S = kind.norms(W, d, C)
        assert abs(P - MLP_HIDDEN_REACH) < 1e-9 and abs(S - MLP_OUTPUT_NORM) < 1e-9
        assert kind.certify_problem(W, d, C) is None
        bound = kind.gradient_bound(W, d, C)
        for t in np.eye(K):
            starts = [C * u, -C * u, *on_ball(rng, 3, d, C)]
            found = max(_ascend(W, t, x, C, d) for x in starts)
            assert found <= bound * (1 + 1e-9)
            worst_ratio = max(worst_ratio, found / bound)
    # the bound is not vacuous: adversarial samples get close to it on aligned weights
    assert worst_ratio > 0.3  # 0.60 when written: the bound is within 1.7x of the worst found


@pytest.mark.parametrize("name", sorted(KINDS))
def test_owners_refuse_models_outside_the_region(name: str) -> None:
    kind = get_kind(name)
    rng = np.random.default_rng(5)
    d, C = 6, 1.0
    W = kind.certify(random_weights(name, rng, d, 1.0), d, C)
    assert kind.certify_problem(W, d, C) is None
    assert "certified" in (kind.certify_problem(1000.0 * W, d, C) or "")
    # one output (or unit) alone pushed out is enough
    W2 = W.copy()
    W2[0] *= 1000.0
    assert kind.certify_problem(W2, d, C) is not None
    bad = W.copy()
    bad[0, 0] = np.nan
    assert kind.certify_problem(bad, d, C) is not None
    assert kind.certify_problem(W[:, :-2], d, C) is not None
    # a tighter clip makes the same weights acceptable, a looser one may not
    assert kind.certify_problem(kind.certify(W * 1000, d, 2.0), d, 1.0) is None


@pytest.mark.parametrize("name", ["logistic", "multiclass"])
def test_certification_keeps_the_classifier_decisions(name: str) -> None:
    kind = get_kind(name)
    rng = np.random.default_rng(2)
    d = 6
    W = random_weights(name, rng, d, 5.0)
    certified = kind.certify(W, d, 1.0)
    X = on_ball(rng, 500, d, 1.0)
    F = np.hstack([X, np.ones((500, 1))])
    assert np.array_equal(np.sign(F @ W.T), np.sign(F @ certified.T))
    assert np.all(np.abs(certified) <= np.abs(W) + 1e-15)  # never scaled up
    assert np.array_equal(kind.certify(certified, d, 1.0), certified)  # idempotent
