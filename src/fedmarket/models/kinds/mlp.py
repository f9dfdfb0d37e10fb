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

from fedmarket.models.kinds.base import Labels, ModelKind, check_clip_norm
from fedmarket.models.kinds.logistic import one_hot
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
# The certified region of an mlp (docs/privacy.md): the hidden layer's L2 reach
# P = ||W1[:, :d]||_2 C + ||b1||_2 (spectral norm; P >= ||a||_2 for every clipped sample) and the
# output weights' spectral norm S = ||W2||_2. Digits (61 -> 32 -> 10, rows clipped to C = 1)
# trains to P ~ 2, S ~ 1; the region leaves twice that.
MLP_HIDDEN_REACH = 4.0
MLP_OUTPUT_NORM = 2.0
_CERTIFY_SLACK = 1e-9


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
        return one_hot(y, list(labels.classes))

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

    # ---- differential privacy -----------------------------------------------------------------
    # One sample (||x||_2 <= C, one-hot y, R = sqrt(C^2 + 1)), with A = max_h |a_h| bound
    # ||W1[h, :d]||_2 C + |b1[h]| <= P:
    #   ||u||_2 = ||a*a||_2 <= ||a||_inf ||a||_2 <= A P;   ||o||_2 <= S A P;
    #   E = ||o - y||_2 <= S A P + 1;   ||delta1||_2 = 2 ||a * (W2^T delta2)||_2 <= 2 A S E;
    #   ||G1||_F <= 2 A S E R;   ||G2||_F = ||delta2|| ||u|| <= E A P;
    # so ||(G1, G2)||_F <= E A sqrt(4 S^2 R^2 + P^2). Worst case over the region (A <= P <= P_max,
    # S <= S_max) gives the sensitivity; tests/models/test_privacy_bounds.py attacks the bound.

    @staticmethod
    def norms(weights: np.ndarray, n_features: int, clip_norm: float) -> tuple[float, float, float]:
        """(P, A, S): the hidden layer's L2 reach, the largest unit's reach, ||W2||_2."""
        W1, W2 = split_weights(weights, n_features)
        inputs, bias = W1[:, :n_features], W1[:, n_features]
        P = float(np.linalg.norm(inputs, 2) * clip_norm + np.linalg.norm(bias))
        A = float(np.max(np.linalg.norm(inputs, axis=1) * clip_norm + np.abs(bias)))
        return P, A, float(np.linalg.norm(W2, 2))

    def gradient_bound(
        self,
        weights: np.ndarray,
        n_features: int,
        clip_norm: float,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
    ) -> float:
        P, A, S = self.norms(weights, n_features, clip_norm)
        R = math.hypot(clip_norm, 1.0)
        E = S * A * P + 1.0
        return E * A * math.sqrt(4.0 * S * S * R * R + P * P)

    def certified_gradient_bound(
        self, n_outputs: int, clip_norm: float, poly: SigmoidPolynomial = DEFAULT_SIGMOID
    ) -> float:
        """``gradient_bound``'s worst case over the region: A = P = P_max, S = S_max."""
        P, S = MLP_HIDDEN_REACH, MLP_OUTPUT_NORM
        R = math.hypot(clip_norm, 1.0)
        return (S * P * P + 1.0) * P * math.sqrt(4.0 * S * S * R * R + P * P)

    def certify(
        self,
        weights: np.ndarray,
        n_features: int,
        clip_norm: float,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
    ) -> np.ndarray:
        """W1 (with its biases) scaled so P <= P_max, W2 so S <= S_max (never scaled up)."""
        check_clip_norm(clip_norm)
        out = np.array(weights, dtype=np.float64)
        P, _, S = self.norms(out, n_features, clip_norm)
        d = n_features
        if P > MLP_HIDDEN_REACH * (1.0 + 1e-12):  # on the bound up to rounding: unchanged
            out[:, : d + 1] *= MLP_HIDDEN_REACH / P
        if S > MLP_OUTPUT_NORM * (1.0 + 1e-12):
            out[:, d + 1 :] *= MLP_OUTPUT_NORM / S
        return out

    def certify_problem(
        self,
        weights: np.ndarray,
        n_features: int,
        clip_norm: float,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
    ) -> str | None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] <= n_features + 2 or not np.all(np.isfinite(w)):
            return f"weights must be finite with shape (hidden, {n_features + 1} + n_outputs)"
        P, _, S = self.norms(w, n_features, clip_norm)
        if P > MLP_HIDDEN_REACH * (1.0 + _CERTIFY_SLACK):
            return (
                f"the hidden layer reaches ||a||_2 = {P:.4g} on clipped samples, over the "
                f"certified {MLP_HIDDEN_REACH:g}"
            )
        if S > MLP_OUTPUT_NORM * (1.0 + _CERTIFY_SLACK):
            return f"the output weights have norm {S:.4g}, over the certified {MLP_OUTPUT_NORM:g}"
        return None

    # ---- the requester's plaintext side --------------------------------------------------
    def estimator(self, weights: np.ndarray, classes: np.ndarray) -> Model:
        return MLPClassifier.from_weights(weights, classes)

    def loss(self, weights: np.ndarray, X: np.ndarray, targets: np.ndarray) -> float:
        """1/2 ||o - y||^2 per sample, averaged: the loss whose gradient the program sums."""
        X = np.asarray(X, dtype=np.float64)
        W1, W2 = split_weights(weights, X.shape[1])
        _, o = forward(W1, W2, X)
        return float(0.5 * np.mean(np.sum((o - targets) ** 2, axis=1)))
