"""A one-hidden-layer network: square activation, squared error on one-hot targets, accuracy.

CKKS evaluates polynomials only, so the activation is ``a**2`` and the loss is
``1/2 ||o - y||**2`` with ``o = W2 (W1 [x, 1])**2``: every block total is then a polynomial of
the weights and the data that the HE program computes exactly (``fedmarket.he.mlp``). The
weight matrix is hidden-unit major, (hidden, n_features + 1 + n_outputs): row h holds unit h's
input weights (bias last) then its output weights, so one 2-D array carries both layers for the
optimiser and the integrity layer, and its shape gives the hidden width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedmarket.models.kinds.base import Labels, ModelKind
from fedmarket.models.kinds.logistic import unknown_labels
from fedmarket.models.linear import Model
from fedmarket.models.mlp import MLPClassifier, forward, split_weights
from fedmarket.models.sigmoid import DEFAULT_SIGMOID, SigmoidPolynomial

# |a| the guard keeps hidden pre-activations inside on the validation set. Training on digits
# stays near 2-3; the guard is a safety net that does not change the network's function.
MLP_GUARD_RADIUS = 8.0
# Standard deviation of the initial input weights times sqrt(n_features + 1): pre-activations
# start near 1 for features scaled into [-1, 1].
INIT_SCALE = 0.8
DEFAULT_HIDDEN = 32


def gradient_parts(
    weights: np.ndarray, X: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(G1, G2): the summed gradients of 1/2 ||o - y||^2 for W1 (hidden, d + 1) and W2
    (n_outputs, hidden)."""
    X = np.asarray(X, dtype=np.float64)
    W1, W2 = split_weights(weights, X.shape[1])
    a, o = forward(W1, W2, X)
    delta2 = o - np.asarray(targets, dtype=np.float64)
    G2 = delta2.T @ (a * a)
    delta1 = 2.0 * a * (delta2 @ W2)
    G1 = delta1.T @ np.hstack([X, np.ones((X.shape[0], 1))])
    return G1, G2


class MLPGuard:
    """Keeps |a| <= radius on the requester's validation features without changing the
    network: unit h's input weights are scaled by c <= 1 and its output weights by 1/c**2."""

    def __init__(self, X_val: np.ndarray, radius: float) -> None:
        if not radius > 0:
            raise ValueError("radius must be positive")
        self._X = np.asarray(X_val, dtype=np.float64)
        self.radius = radius

    def max_abs_z(self, weights: np.ndarray) -> np.ndarray:
        """max |a| over the validation set, per hidden unit."""
        W1, W2 = split_weights(weights, self._X.shape[1])
        return np.abs(forward(W1, W2, self._X)[0]).max(axis=0)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        peak = self.max_abs_z(weights)
        factor = np.minimum(1.0, self.radius / np.maximum(peak, 1e-300))
        out = np.array(weights, dtype=np.float64)
        d = self._X.shape[1]
        out[:, : d + 1] *= factor[:, None]
        out[:, d + 1 :] /= (factor * factor)[:, None]
        return out


class MLP(ModelKind):
    name = "mlp"
    sigmoid = True  # 0/1 (one-hot) targets, as the sigmoid kinds; the residual is the MLP's own
    network = True
    learning_rate = 0.4

    def classes_problem(self, classes: Sequence[int]) -> str | None:
        return None if len(classes) >= 2 else "an mlp task needs at least 2 labels.classes"

    def n_outputs(self, classes: Sequence[int]) -> int:
        return len(classes)

    def outputs_problem(self, n_outputs: int) -> str | None:
        return (
            None if n_outputs >= 2 else f"mlp needs >= 2 outputs (one per class), got {n_outputs}"
        )

    def targets(self, y: np.ndarray, labels: Labels) -> np.ndarray:
        """One-hot: column k is 1 where the label is the k-th class."""
        classes = np.asarray([float(c) for c in labels.classes])
        bad = unknown_labels(y, list(labels.classes))
        if bad:
            raise ValueError(
                f"labels {bad} are not among the task's classes {list(labels.classes)}"
            )
        return (np.asarray(y, dtype=np.float64)[:, None] == classes[None, :]).astype(np.float64)

    # ---- the training algorithm ----------------------------------------------------------
    def weight_shape(
        self, n_features: int, n_outputs: int, hidden: int = DEFAULT_HIDDEN
    ) -> tuple[int, int]:
        return (hidden or DEFAULT_HIDDEN, n_features + 1 + n_outputs)

    def init_weights(
        self, n_features: int, n_outputs: int, hidden: int = DEFAULT_HIDDEN, seed: int = 0
    ) -> np.ndarray:
        """Input weights ~ N(0, (0.8 / sqrt(d + 1))^2) with zero biases, output weights 0
        (a zero hidden layer would have zero gradient; zero outputs do not)."""
        shape = self.weight_shape(n_features, n_outputs, hidden)
        weights = np.zeros(shape)
        rng = np.random.default_rng(seed)
        std = INIT_SCALE / math.sqrt(n_features + 1)
        weights[:, :n_features] = rng.normal(0.0, std, (shape[0], n_features))
        return weights

    def l2_mask(self, n_features: int, shape: tuple[int, int]) -> np.ndarray:
        """Every weight but the hidden biases (column d of the input part)."""
        mask = np.ones(shape)
        mask[:, n_features] = 0.0
        return mask

    def guard(self, X_val: np.ndarray, radius: float) -> MLPGuard:
        return MLPGuard(X_val, radius)

    def guard_radius(self, poly: SigmoidPolynomial = DEFAULT_SIGMOID) -> float:
        return MLP_GUARD_RADIUS

    def gradient_sums(
        self,
        weights: np.ndarray,
        X: np.ndarray,
        targets: np.ndarray,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
    ) -> np.ndarray:
        """Hidden-unit major, like the weights: row h = [G1[h], G2[:, h]]."""
        G1, G2 = gradient_parts(weights, X, targets)
        return np.hstack([G1, G2.T])

    def max_abs_total(
        self,
        weights: np.ndarray,
        n_samples: int,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
        n_features: int | None = None,
    ) -> float:
        """From |x| <= 1 and 0/1 targets: |a_h| <= ||W1[h]||_1 = A_h, |o_i| <= sum_h
        |W2[i, h]| A_h^2, and each total is at most n times its per-sample bound."""
        if n_features is None:
            raise ValueError("an mlp bound needs n_features (the weights do not imply it)")
        W1, W2 = split_weights(weights, n_features)
        reach = np.sum(np.abs(W1), axis=1)  # A_h
        residual = float(np.max(np.abs(W2) @ (reach * reach))) + 1.0
        g2 = residual * float(np.max(reach * reach, initial=0.0))
        g1 = float(np.max(2.0 * reach * (np.abs(W2).T @ np.full(W2.shape[0], residual))))
        return n_samples * max(g1, g2, 1.0)

    # ---- the requester's plaintext side --------------------------------------------------
    def estimator(self, weights: np.ndarray, classes: np.ndarray) -> Model:
        return MLPClassifier.from_weights(weights, classes)

    def loss(self, weights: np.ndarray, X: np.ndarray, targets: np.ndarray) -> float:
        """1/2 ||o - y||^2 per sample, averaged: the loss whose gradient the program sums."""
        X = np.asarray(X, dtype=np.float64)
        W1, W2 = split_weights(weights, X.shape[1])
        _, o = forward(W1, W2, X)
        return float(0.5 * np.mean(np.sum((o - targets) ** 2, axis=1)))
