"""What a model kind is: everything the protocol needs to know about one family of models.

A kind turns labels into the targets owners encrypt, states the per-block gradient totals the
processors' program computes (the plaintext reference every encrypted result is tested
against), bounds what one sample can add to a total (the requester rejects results above it),
and gives the requester its plaintext estimator, metric and validation loss (the integrity
layer's reference). The HE program of a kind lives in ``fedmarket.he`` (the only package that
imports TenSEAL), keyed by the kind's name.
"""

from __future__ import annotations

import math
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
# How far a decrypted total may move with the data beyond the totals themselves: CKKS rounds at
# every rescale, and a rounding mixes all of a block's samples, so replacing one record may move
# every total by up to this (measured: docs/he.md, "Owners' noise"). The sensitivity allows twice
# it per total, so the owners' noise also covers what the requester could read from CKKS noise.
CKKS_ERROR_ALLOWANCE = 0.05
# Float slack for an owner recomputing a requester's certification (scaled weights land on the
# bound up to rounding).
_CERTIFY_SLACK = 1e-9


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

    # ---- differential privacy (docs/privacy.md) --------------------------------------------
    # The requester certifies every model it sends: its weights lie in a region, fixed per kind,
    # where no sample whose scaled features have L2 norm <= clip_norm can move a block's totals
    # by more than the kind's sensitivity. Owners check the plaintext weights (certify_problem)
    # before they release their noise. For the linear kinds the region bounds each output's
    # reach, ||w[:d]||_2 C + |b| <= the guard radius, so |z| stays where the residual is bounded.

    def residual_bound(self, poly: SigmoidPolynomial = DEFAULT_SIGMOID) -> float:
        """max |h| = |p(z) - y| over |z| <= the guard radius and valid targets (y in {0, 1} for
        the sigmoid kinds: 1.0609 for the [-8, 8] cubic; |y| <= 1 for linear: radius + 1)."""
        radius = self.guard_radius(poly)
        return _sigmoid_residual(radius, poly) if self.sigmoid else radius + 1.0

    def reach(self, weights: np.ndarray, n_features: int, clip_norm: float) -> np.ndarray:
        """Per output, max |z| over ||x||_2 <= clip_norm: ||w[:d]||_2 C + |b|."""
        w = np.asarray(weights, dtype=np.float64)
        return np.linalg.norm(w[:, :n_features], axis=1) * clip_norm + np.abs(w[:, n_features])

    def gradient_bound(
        self,
        weights: np.ndarray,
        n_features: int,
        clip_norm: float,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
    ) -> float:
        """An upper bound on ||one sample's gradient||_2 (all outputs) at ``weights``, over every
        sample with ||x||_2 <= clip_norm and valid targets (inside the certified region)."""
        reach = np.minimum(self.reach(weights, n_features, clip_norm), self.guard_radius(poly))
        if self.sigmoid:
            worst = np.array([_sigmoid_residual(float(r), poly) for r in reach])
        else:
            worst = reach + 1.0
        return float(np.linalg.norm(worst) * math.hypot(clip_norm, 1.0))

    def n_totals(self, n_features: int, n_outputs: int, hidden: int = 0) -> int:
        """How many totals a block's result holds (each may carry CKKS error)."""
        rows, cols = self.weight_shape(n_features, n_outputs, hidden)
        return rows * cols

    def certified_gradient_bound(
        self, n_outputs: int, clip_norm: float, poly: SigmoidPolynomial = DEFAULT_SIGMOID
    ) -> float:
        """The largest ||one sample's gradient||_2 over every certified model and every sample
        with ||x||_2 <= clip_norm: ``H sqrt(K) sqrt(C^2 + 1)`` here, H = ``residual_bound``."""
        return self.residual_bound(poly) * math.sqrt(n_outputs) * math.hypot(clip_norm, 1.0)

    def sensitivity(
        self,
        n_features: int,
        n_outputs: int,
        clip_norm: float,
        hidden: int = 0,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
    ) -> float:
        """Replace-one L2 sensitivity of a block's totals, for every certified model: twice the
        largest per-sample gradient (``certified_gradient_bound``), plus
        ``CKKS_ERROR_ALLOWANCE`` twice per total. The owners' noise has standard deviation
        ``noise_multiplier * sensitivity``."""
        check_clip_norm(clip_norm)
        worst = self.certified_gradient_bound(n_outputs, clip_norm, poly)
        allowance = CKKS_ERROR_ALLOWANCE * math.sqrt(self.n_totals(n_features, n_outputs, hidden))
        return 2.0 * worst + 2.0 * allowance

    def certify(
        self,
        weights: np.ndarray,
        n_features: int,
        clip_norm: float,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
    ) -> np.ndarray:
        """The requester's projection into the certified region: each output row scaled down
        (never up) until its reach is the guard radius. Scaling keeps every sign of z, so a
        classifier's decisions on the ball do not change."""
        check_clip_norm(clip_norm)
        w = np.array(weights, dtype=np.float64)
        reach = self.reach(w, n_features, clip_norm)
        radius = self.guard_radius(poly)
        # rows already on the bound (up to rounding) stay as they are: certify is idempotent
        factor = np.where(reach > radius * (1.0 + 1e-12), radius / np.maximum(reach, 1e-300), 1.0)
        return w * factor[:, None]

    def certify_problem(
        self,
        weights: np.ndarray,
        n_features: int,
        clip_norm: float,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
    ) -> str | None:
        """The owners' check of a revealed model: None when ``weights`` lie in the certified
        region, else what is wrong (an owner then releases no noise for this epoch)."""
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != n_features + 1 or not np.all(np.isfinite(w)):
            return f"weights must be finite with shape (n_outputs, {n_features + 1})"
        reach = self.reach(w, n_features, clip_norm)
        radius = self.guard_radius(poly)
        worst = int(np.argmax(reach))
        if reach[worst] > radius * (1.0 + _CERTIFY_SLACK):
            return (
                f"output {worst} reaches |z| = {reach[worst]:.4g} on clipped samples, over the "
                f"certified {radius:g}"
            )
        return None

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


def _sigmoid_residual(reach: float, poly: SigmoidPolynomial) -> float:
    """max |p(z) - y| over |z| <= reach and y in {0, 1}: p's extremes are at the ends or where
    the cubic turns back."""
    points = [-reach, reach]
    peak = math.sqrt(poly.c1 / (3.0 * -poly.c3))
    if peak < reach:
        points += [-peak, peak]
    values = poly(np.array(points))
    return float(max(np.max(np.abs(values)), np.max(np.abs(1.0 - values))))


def check_clip_norm(clip_norm: float) -> None:
    if not (isinstance(clip_norm, int | float) and math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be a positive number, got {clip_norm!r}")
