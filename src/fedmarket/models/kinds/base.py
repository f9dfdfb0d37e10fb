"""What a model kind is: everything the protocol needs to know about one family of models.

A kind turns labels into the targets owners encrypt, states the per-block gradient totals the
processors' program computes (the plaintext reference every encrypted result is tested
against), bounds what one sample can add to a total (the requester rejects results above it),
and gives the requester its plaintext estimator, metric and validation loss (the integrity
layer's reference). The HE program of a kind lives in ``fedmarket.he`` (the only package that
imports TenSEAL), keyed by the kind's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from fedmarket.models.linear import Model
from fedmarket.models.sigmoid import DEFAULT_SIGMOID, SigmoidPolynomial

# |z| bound for linear regression: keeps residuals (and so every encrypted gradient sum) far
# from the ciphertext modulus; with features and targets in [-1, 1] it rarely binds.
LINEAR_GUARD_RADIUS = 4.0


class Labels(Protocol):
    """The part of a task spec's ``[labels]`` a kind reads (``fedmarket.spec.LabelsSection``)."""

    @property
    def classes(self) -> Sequence[int]: ...

    @property
    def target_center(self) -> float: ...

    @property
    def target_scale(self) -> float: ...


@dataclass(frozen=True)
class TaskLabels:
    """Labels without a spec (tests, benchmarks, plaintext training): classes and scaling."""

    classes: Sequence[int] = ()
    target_center: float = 0.0
    target_scale: float = 1.0


def design_matrix(X: np.ndarray) -> np.ndarray:
    """[X, 1]: the bias is a feature that is 1 for every real sample."""
    X = np.asarray(X, dtype=np.float64)
    return np.hstack([X, np.ones((X.shape[0], 1))])


class Guard(Protocol):
    """Maps weights back into the region the encrypted program handles; reports its measure."""

    def __call__(self, weights: np.ndarray) -> np.ndarray: ...

    def max_abs_z(self, weights: np.ndarray) -> np.ndarray: ...


class ModelKind(ABC):
    """One model family; subclasses are stateless singletons registered by ``name``."""

    name: ClassVar[str]  # the spec's task.model, the HE spec's kind, the saved model's kind
    metric: ClassVar[str] = "accuracy"  # what score() measures on the validation set
    sigmoid: ClassVar[bool] = True  # residual p(z) - y with the cubic p; else z - y
    learning_rate: ClassVar[float] = 4.0  # the requester's default step size
    network: ClassVar[bool] = False  # a hidden layer: the spec's hidden width applies

    # ---- labels --------------------------------------------------------------------------
    @abstractmethod
    def classes_problem(self, classes: Sequence[int]) -> str | None:
        """What is wrong with a spec's ``labels.classes`` for this kind (None: nothing)."""

    def n_outputs(self, classes: Sequence[int]) -> int:
        """Rows of the weight matrix (and of every block's gradient totals)."""
        return 1

    def outputs_problem(self, n_outputs: int) -> str | None:
        """What is wrong with this many outputs for this kind (None: nothing)."""
        return None if n_outputs == 1 else f"{self.name} has one output, not {n_outputs}"

    @abstractmethod
    def targets(self, y: np.ndarray, labels: Labels) -> np.ndarray:
        """(n, n_outputs) float targets as owners encrypt them; ``ValueError`` naming the first
        label this kind cannot take (not among the classes, not a number, out of range)."""

    # ---- the training algorithm ----------------------------------------------------------
    def weight_shape(self, n_features: int, n_outputs: int, hidden: int = 0) -> tuple[int, int]:
        """The optimiser's weight matrix: one row per output, bias last (``hidden`` is for
        kinds with a hidden layer)."""
        return (n_outputs, n_features + 1)

    def init_weights(
        self, n_features: int, n_outputs: int, hidden: int = 0, seed: int = 0
    ) -> np.ndarray:
        """Where training starts: zeros (a network overrides this: it cannot start there)."""
        return np.zeros(self.weight_shape(n_features, n_outputs, hidden))

    def l2_mask(self, n_features: int, shape: tuple[int, int]) -> np.ndarray:
        """1 where L2 penalises a weight, 0 where not (the bias column here)."""
        mask = np.ones(shape)
        mask[:, -1] = 0.0
        return mask

    def guard(self, X_val: np.ndarray, radius: float) -> Guard:
        """The projection the requester applies after each step (``IntervalGuard`` here)."""
        from fedmarket.models.training import IntervalGuard

        return IntervalGuard(X_val, radius)

    def residuals(
        self, z: np.ndarray, targets: np.ndarray, poly: SigmoidPolynomial = DEFAULT_SIGMOID
    ) -> np.ndarray:
        """h = p(z) - y (sigmoid kinds, with the cubic p) or z - y, shape (n, n_outputs)."""
        return (poly(z) if self.sigmoid else z) - targets

    def gradient_sums(
        self,
        weights: np.ndarray,
        X: np.ndarray,
        targets: np.ndarray,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
    ) -> np.ndarray:
        """What one block's decrypted result holds: the loss gradient summed over its samples,
        (n_outputs, n_features + 1)."""
        F = design_matrix(X)
        return self.residuals(F @ np.asarray(weights).T, targets, poly).T @ F

    def max_abs_residual(self, reach: float, poly: SigmoidPolynomial = DEFAULT_SIGMOID) -> float:
        """Largest |h| of one sample when |z| <= ``reach`` (|x| <= 1, targets as encoded)."""
        return poly.max_abs_on(reach) + 1.0 if self.sigmoid else reach + 1.0

    def max_abs_total(
        self,
        weights: np.ndarray,
        n_samples: int,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
        n_features: int | None = None,
    ) -> float:
        """Largest |total| an honest block of ``n_samples`` can produce at ``weights``
        (``n_features`` is needed by kinds whose weight matrix does not imply it)."""
        reach = float(np.max(np.sum(np.abs(weights), axis=1)))  # |z| <= ||w||_1
        return n_samples * self.max_abs_residual(reach, poly)

    def guard_radius(self, poly: SigmoidPolynomial = DEFAULT_SIGMOID) -> float:
        """The |z| the interval guard keeps the model inside (the cubic's fitted interval)."""
        return poly.interval if self.sigmoid else LINEAR_GUARD_RADIUS

    # ---- the requester's plaintext side --------------------------------------------------
    @abstractmethod
    def estimator(self, weights: np.ndarray, classes: np.ndarray) -> Model:
        """The plaintext model these weights are."""

    def score(self, model: Model, X: np.ndarray, y: np.ndarray) -> float:
        """The metric on labelled data (accuracy here), ``y`` in the model's own units."""
        return float(np.mean(model.predict(X) == np.asarray(y)))

    def evaluate(self, model: Model, X: np.ndarray, y: np.ndarray, labels: Labels) -> float:
        """The metric on raw labels, as the task's spec encodes them (see ``targets``)."""
        return self.score(model, X, y)

    def loss(self, weights: np.ndarray, X: np.ndarray, targets: np.ndarray) -> float:
        """The validation loss the integrity monitors compare against (cross-entropy here)."""
        z = design_matrix(X) @ np.asarray(weights).T
        # log(1 + e^-z) for y=1, log(1 + e^z) for y=0, stably
        return float(np.mean(np.logaddexp(0.0, z) - targets * z))

    def __repr__(self) -> str:
        return f"<model kind {self.name}>"
