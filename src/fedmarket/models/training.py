"""Plaintext training with exactly the algorithm encrypted training runs.

The processor's program computes, per block, the gradient sums ``h.T @ [X, 1]`` where
``h = p(z) - y`` for logistic models (``p`` the sigmoid cubic) and ``h = z - y`` for linear
regression. ``gradient_sums`` is that computation in plaintext: it is the reference the
encrypted results are tested against, and ``fit_plaintext`` uses it with the same optimiser,
guard and schedule as ``fedmarket.he.trainer``, so the two differ only by CKKS noise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedmarket.models.linear import LinearRegression, LogisticRegression, Model, OneVsRest
from fedmarket.models.optim import NesterovConfig, NesterovGD
from fedmarket.models.sigmoid import DEFAULT_SIGMOID, SigmoidPolynomial

ModelKind = Literal["logistic", "one_vs_rest", "linear"]
MODEL_KINDS: tuple[ModelKind, ...] = ("logistic", "one_vs_rest", "linear")
# |z| bound for linear regression: keeps residuals (and so every encrypted gradient sum)
# far from the ciphertext modulus; with features and targets in [-1, 1] it rarely binds.
LINEAR_GUARD_RADIUS = 4.0


def design_matrix(X: np.ndarray) -> np.ndarray:
    """[X, 1]: the bias is a feature that is 1 for every real sample."""
    X = np.asarray(X, dtype=np.float64)
    return np.hstack([X, np.ones((X.shape[0], 1))])


def encode_labels(kind: ModelKind, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, targets): targets is (n, n_outputs) with 0/1 indicators or regression values."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if kind == "linear":
        values = y.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("regression targets must be finite")
        return np.array([], dtype=str), values[:, None]
    classes = np.unique(y)
    if kind == "logistic":
        if classes.size > 2:
            raise ValueError(f"binary logistic regression got {classes.size} classes")
        if classes.size == 1:
            raise ValueError("binary logistic regression needs samples of both classes")
        return classes, (y == classes[1]).astype(np.float64)[:, None]
    if classes.size < 3:
        raise ValueError("one-vs-rest needs at least 3 classes; use 'logistic' for two")
    return classes, (y[:, None] == classes[None, :]).astype(np.float64)


def residuals(
    kind: ModelKind, z: np.ndarray, targets: np.ndarray, poly: SigmoidPolynomial = DEFAULT_SIGMOID
) -> np.ndarray:
    """h = p(z) - y (logistic, with the cubic p) or z - y (linear), shape (n, n_outputs)."""
    return (z if kind == "linear" else poly(z)) - targets


def gradient_sums(
    kind: ModelKind,
    weights: np.ndarray,
    X: np.ndarray,
    targets: np.ndarray,
    poly: SigmoidPolynomial = DEFAULT_SIGMOID,
) -> np.ndarray:
    """Sum over the samples of the loss gradient at ``weights``: (n_outputs, n_features + 1)."""
    F = design_matrix(X)
    return residuals(kind, F @ np.asarray(weights).T, targets, poly).T @ F


class IntervalGuard:
    """Shrinks each output's weights so |z| <= radius on the requester's validation features.

    The requester cannot see the training data, so its own validation set is the proxy for
    where z lands; scaling a row of weights keeps its direction (and so its decisions).
    """

    def __init__(self, X_val: np.ndarray, radius: float) -> None:
        if not radius > 0:
            raise ValueError("radius must be positive")
        self._F = design_matrix(X_val)
        self.radius = radius

    def max_abs_z(self, weights: np.ndarray) -> np.ndarray:
        return np.abs(self._F @ np.asarray(weights).T).max(axis=0)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        peak = self.max_abs_z(weights)
        factor = np.minimum(1.0, self.radius / np.maximum(peak, 1e-300))
        return weights * factor[:, None]


@dataclass(frozen=True)
class TrainConfig:
    """How the requester trains; ``None`` fields take the per-kind defaults below."""

    epochs: int = 30
    learning_rate: float | None = None
    l2: float = 1e-3
    guard_radius: float | None = None
    poly: SigmoidPolynomial = field(default_factory=SigmoidPolynomial)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")

    def optimizer(self, kind: ModelKind) -> NesterovConfig:
        default_lr = 1.0 if kind == "linear" else 4.0
        lr = self.learning_rate if self.learning_rate is not None else default_lr
        return NesterovConfig(learning_rate=lr, l2=self.l2)

    def radius(self, kind: ModelKind) -> float:
        if self.guard_radius is not None:
            return self.guard_radius
        return LINEAR_GUARD_RADIUS if kind == "linear" else self.poly.interval


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    metric: float  # validation accuracy (classifiers) or R^2 (linear regression)
    max_abs_z: float  # on the validation set, for the look-ahead weights sent next
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    model: Model
    history: tuple[EpochRecord, ...]


def n_outputs_for(kind: ModelKind, classes: np.ndarray) -> int:
    return classes.size if kind == "one_vs_rest" else 1


def model_from_weights(kind: ModelKind, weights: np.ndarray, classes: np.ndarray) -> Model:
    if kind == "linear":
        return LinearRegression.from_weights(weights)
    if kind == "logistic":
        return LogisticRegression.from_weights(weights, classes)
    return OneVsRest.from_weights(weights, classes)


def score(model: Model, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy for classifiers, R^2 for linear regression."""
    y = np.asarray(y)
    if isinstance(model, LinearRegression):
        residual = y - model.predict(X)
        total = np.sum((y - y.mean()) ** 2)
        return float(1.0 - np.sum(residual**2) / total) if total > 0 else 0.0
    return float(np.mean(model.predict(X) == y))


def fit_plaintext(
    X: np.ndarray,
    y: np.ndarray,
    *,
    kind: ModelKind,
    X_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainConfig | None = None,
) -> TrainResult:
    """Train in plaintext with the encrypted algorithm (cubic sigmoid, Nesterov, L2, guard)."""
    config = config or TrainConfig()
    X = np.asarray(X, dtype=np.float64)
    classes, targets = encode_labels(kind, y)
    optimizer = NesterovGD(n_outputs_for(kind, classes), X.shape[1], config.optimizer(kind))
    guard = IntervalGuard(X_val, config.radius(kind))
    history = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        sums = gradient_sums(kind, optimizer.lookahead, X, targets, config.poly)
        optimizer.step(sums / X.shape[0], project=guard)
        model = model_from_weights(kind, optimizer.weights, classes)
        history.append(
            EpochRecord(
                epoch=epoch,
                metric=score(model, X_val, y_val),
                max_abs_z=float(np.max(guard.max_abs_z(optimizer.lookahead))),
                seconds=time.perf_counter() - start,
            )
        )
    final = model_from_weights(kind, optimizer.weights, classes)
    if not math.isfinite(float(np.sum(final.coef_))):
        raise ArithmeticError("training diverged")
    return TrainResult(final, tuple(history))
