"""Plaintext training with exactly the algorithm encrypted training runs.

The processor's program computes, per block, the gradient totals of the task's model kind
(``ModelKind.gradient_sums``: ``h.T @ [X, 1]`` with ``h = p(z) - y`` for the sigmoid kinds, ``p``
the cubic, and ``h = z - y`` for linear regression). ``fit_plaintext`` runs the same totals with
the same optimiser, guard and schedule as ``fedmarket.he.trainer``, so the two differ only by
CKKS noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fedmarket.models.kinds import Labels, ModelKind, TaskLabels, design_matrix, get_kind
from fedmarket.models.linear import Model
from fedmarket.models.optim import NesterovConfig, NesterovGD
from fedmarket.models.sigmoid import DEFAULT_SIGMOID, SigmoidPolynomial

__all__ = [
    "EpochRecord",
    "IntervalGuard",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "design_matrix",
    "encode_labels",
    "fit_plaintext",
    "gradient_sums",
    "model_from_weights",
    "score",
]


def encode_labels(
    kind: str | ModelKind, y: np.ndarray, labels: Labels | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(classes, targets): a spec's ``labels`` (its classes, its target scaling), or for
    labelled data without a spec the classes present in ``y``."""
    k = get_kind(kind)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if labels is not None:
        return np.asarray(labels.classes), k.targets(y, labels)
    if not k.sigmoid:
        return np.array([], dtype=str), k.targets(y, TaskLabels())
    classes = np.unique(y)
    problem = k.classes_problem([int(c) for c in classes])
    if problem:
        raise ValueError(f"{problem} (the data has {classes.size})")
    return classes, k.targets(y, TaskLabels(tuple(int(c) for c in classes)))


def gradient_sums(
    kind: str | ModelKind,
    weights: np.ndarray,
    X: np.ndarray,
    targets: np.ndarray,
    poly: SigmoidPolynomial = DEFAULT_SIGMOID,
) -> np.ndarray:
    """Sum over the samples of the loss gradient at ``weights`` (the kind's block totals)."""
    return get_kind(kind).gradient_sums(weights, X, targets, poly)


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
    """How the requester trains; ``None`` fields take the kind's defaults."""

    epochs: int = 30
    learning_rate: float | None = None
    l2: float = 1e-3
    guard_radius: float | None = None
    poly: SigmoidPolynomial = field(default_factory=SigmoidPolynomial)
    hidden: int = 32  # hidden units of a network kind (plaintext runs; encrypted: the HE spec)
    seed: int = 0  # a network's initial weights

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")

    def optimizer(self, kind: str | ModelKind) -> NesterovConfig:
        k = get_kind(kind)
        lr = self.learning_rate if self.learning_rate is not None else k.learning_rate
        return NesterovConfig(learning_rate=lr, l2=self.l2)

    def start(
        self, kind: str | ModelKind, n_features: int, n_outputs: int, hidden: int | None = None
    ) -> NesterovGD:
        """The optimiser at the kind's initial weights (zeros, or a network's seeded start)."""
        k = get_kind(kind)
        hidden = self.hidden if hidden is None else hidden
        initial = k.init_weights(n_features, n_outputs, hidden, self.seed)
        return NesterovGD(
            n_outputs,
            n_features,
            self.optimizer(k),
            initial=initial,
            l2_mask=k.l2_mask(n_features, initial.shape),
        )

    def radius(self, kind: str | ModelKind) -> float:
        if self.guard_radius is not None:
            return self.guard_radius
        return get_kind(kind).guard_radius(self.poly)


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


def model_from_weights(kind: str | ModelKind, weights: np.ndarray, classes: np.ndarray) -> Model:
    return get_kind(kind).estimator(weights, classes)


def score(model: Model, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy for classifiers, R^2 for linear regression."""
    return get_kind(model.kind).score(model, X, y)


def fit_plaintext(
    X: np.ndarray,
    y: np.ndarray,
    *,
    kind: str | ModelKind,
    X_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainConfig | None = None,
    labels: Labels | None = None,
) -> TrainResult:
    """Train in plaintext with the encrypted algorithm (the kind's totals, Nesterov, L2, guard);
    ``labels`` (a spec's) fixes the classes and the regression target scaling."""
    config = config or TrainConfig()
    k = get_kind(kind)
    X = np.asarray(X, dtype=np.float64)
    classes, targets = encode_labels(k, y, labels)
    scoring = (
        labels
        if labels is not None
        else TaskLabels(tuple(int(c) for c in classes) if k.sigmoid else ())
    )
    optimizer = config.start(k, X.shape[1], targets.shape[1])
    guard = k.guard(X_val, config.radius(k))
    history = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        sums = k.gradient_sums(optimizer.lookahead, X, targets, config.poly)
        optimizer.step(sums / X.shape[0], project=guard)
        model = k.estimator(optimizer.weights, classes)
        history.append(
            EpochRecord(
                epoch=epoch,
                metric=k.evaluate(model, X_val, y_val, scoring),
                max_abs_z=float(np.max(guard.max_abs_z(optimizer.lookahead))),
                seconds=time.perf_counter() - start,
            )
        )
    if not np.all(np.isfinite(optimizer.weights)):
        raise ArithmeticError("training diverged")
    final = k.estimator(optimizer.weights, classes)
    return TrainResult(final, tuple(history))


class Trainer:
    """The requester's optimiser: Nesterov state plus the interval guard, stepped with the
    aggregated per-sample gradient of each epoch's decrypted block totals."""

    def __init__(
        self,
        kind: str | ModelKind,
        n_features: int,
        n_outputs: int,
        config: TrainConfig,
        X_val: np.ndarray,
        hidden: int | None = None,
    ) -> None:
        self.kind = get_kind(kind)
        self.config = config
        self.state = config.start(self.kind, n_features, n_outputs, hidden)
        self.guard = self.kind.guard(X_val, config.radius(self.kind))

    @property
    def lookahead(self) -> np.ndarray:
        """The weights to encrypt and send next (the gradient is taken there)."""
        return self.state.lookahead

    @property
    def weights(self) -> np.ndarray:
        return self.state.weights

    @property
    def learning_rate(self) -> float:
        return self.state.config.learning_rate

    def apply(self, mean_gradient: np.ndarray) -> None:
        """One step with an already-combined per-sample gradient (e.g. a robust aggregate)."""
        self.state.step(mean_gradient, project=self.guard)
