"""Plaintext training: the gradient the program computes, the optimiser, the interval guard."""

from __future__ import annotations

import numpy as np
import pytest

from fedmarket.models import (
    DEFAULT_SIGMOID,
    FeatureScaler,
    IntervalGuard,
    NesterovConfig,
    NesterovGD,
    TrainConfig,
    fit_plaintext,
    gradient_sums,
)

RNG = np.random.default_rng(0)


def implied_loss(kind: str, weights: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """The loss whose gradient the program's sums are: d/dz = p(z) - y, or z - y."""
    z = np.hstack([X, np.ones((len(X), 1))]) @ weights.T
    if kind == "linear":
        return float(np.sum((z - y) ** 2) / 2)
    poly = DEFAULT_SIGMOID
    return float(np.sum(0.5 * z + poly.c1 * z**2 / 2 + poly.c3 * z**4 / 4 - y * z))


@pytest.mark.parametrize("kind", ["logistic", "linear"])
def test_gradient_sums_are_the_gradient_of_the_implied_loss(kind: str) -> None:
    X = RNG.uniform(-1, 1, (50, 3))
    y = RNG.integers(0, 2, (50, 1)).astype(float)
    weights = RNG.normal(size=(1, 4))
    numeric = np.zeros_like(weights)
    for j in range(4):
        step = np.zeros_like(weights)
        step[0, j] = 1e-6
        numeric[0, j] = (
            implied_loss(kind, weights + step, X, y) - implied_loss(kind, weights - step, X, y)
        ) / 2e-6
    np.testing.assert_allclose(gradient_sums(kind, weights, X, y), numeric, rtol=1e-5)  # type: ignore[arg-type]


def test_nesterov_beats_plain_gradient_descent_on_a_quadratic() -> None:
    scales = np.array([[1.0, 0.05, 0.2]])
    target = np.array([[1.0, -2.0, 0.5]])

    def run(momentum: bool) -> float:
        opt = NesterovGD(1, 2, NesterovConfig(learning_rate=0.9, l2=0.0))
        for _ in range(40):
            point = opt.lookahead if momentum else opt.weights
            grad = scales * (point - target)
            if momentum:
                opt.step(grad)
            else:
                opt.weights = opt.lookahead = opt.weights - 0.9 * grad
        return float(np.abs(opt.weights - target).max())

    assert run(True) < run(False) / 3


def test_l2_spares_the_bias() -> None:
    opt = NesterovGD(1, 2, NesterovConfig(learning_rate=1.0, l2=0.5))
    opt.weights = opt.lookahead = np.array([[2.0, 2.0, 2.0]])
    opt.step(np.zeros((1, 3)))
    np.testing.assert_allclose(opt.weights, [[1.0, 1.0, 2.0]])


def test_guard_keeps_validation_scores_inside_the_interval() -> None:
    X_val = RNG.uniform(-1, 1, (100, 5))
    guard = IntervalGuard(X_val, 8.0)
    weights = RNG.normal(0, 10, (3, 6))
    guarded = guard(weights)
    assert np.all(guard.max_abs_z(guarded) <= 8.0 + 1e-9)
    # Direction (and so every prediction) is kept.
    np.testing.assert_allclose(
        guarded / np.linalg.norm(guarded, axis=1, keepdims=True),
        weights / np.linalg.norm(weights, axis=1, keepdims=True),
    )


def test_plaintext_training_learns_a_separable_problem() -> None:
    X = RNG.normal(size=(400, 4))
    y = (X @ [1.0, -1.0, 0.5, 0.0] > 0).astype(int)
    scaler = FeatureScaler.fit(X)
    Xs = scaler.transform(X)
    result = fit_plaintext(Xs, y, kind="logistic", X_val=Xs, y_val=y, config=TrainConfig(epochs=20))
    assert result.history[-1].metric > 0.95
    assert max(h.max_abs_z for h in result.history) < 2 * DEFAULT_SIGMOID.interval


def test_scaler_maps_into_the_unit_box() -> None:
    X = np.hstack([RNG.normal(5, 3, (200, 2)), np.full((200, 1), 7.0)])
    scaled = FeatureScaler.fit(X).transform(X)
    assert scaled.min() >= -1 and scaled.max() <= 1
    np.testing.assert_array_equal(scaled[:, 2], 0.0)  # constant feature carries nothing
