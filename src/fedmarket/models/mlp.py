"""A one-hidden-layer network with a square activation: what encrypted MLP training produces.

``o = W2 (W1 [x, 1])**2``: ``W1`` is (hidden, n_features + 1) with the bias last, ``W2`` is
(n_outputs, hidden) with no output bias (a hidden unit with zero input weights is a constant,
so the network can still learn one). It predicts the class with the largest output. The
optimiser's weight matrix is hidden-unit major, (hidden, n_features + 1 + n_outputs): row h is
``[W1[h], W2[:, h]]`` (see ``fedmarket.models.kinds.mlp``).
"""

from __future__ import annotations

import os
from typing import ClassVar, Self

import numpy as np

from fedmarket.models.persist import ModelFormatError, load_arrays, save_arrays


def split_weights(weights: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(W1, W2) from the hidden-unit-major matrix (hidden, n_features + 1 + n_outputs)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] <= n_features + 1:
        raise ValueError(f"MLP weights of shape {weights.shape} do not hold {n_features} features")
    return weights[:, : n_features + 1], weights[:, n_features + 1 :].T


def join_weights(W1: np.ndarray, W2: np.ndarray) -> np.ndarray:
    """The hidden-unit-major matrix from (W1, W2)."""
    return np.hstack([np.asarray(W1, dtype=np.float64), np.asarray(W2, dtype=np.float64).T])


def forward(W1: np.ndarray, W2: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pre-activations a, outputs o) for samples X: a = [X, 1] W1^T, o = a**2 W2^T."""
    X = np.asarray(X, dtype=np.float64)
    a = X @ W1[:, :-1].T + W1[:, -1]
    return a, (a * a) @ W2.T


class MLPClassifier:
    """A trained square-activation MLP; ``classes_`` names the outputs."""

    kind: ClassVar[str] = "mlp"

    def __init__(self, W1: np.ndarray, W2: np.ndarray, classes: np.ndarray | None = None) -> None:
        self.W1 = np.asarray(W1, dtype=np.float64)
        self.W2 = np.asarray(W2, dtype=np.float64)
        if self.W1.ndim != 2 or self.W2.ndim != 2 or self.W2.shape[1] != self.W1.shape[0]:
            raise ValueError("W1 must be (hidden, n_features + 1) and W2 (n_outputs, hidden)")
        self.classes_ = np.arange(self.W2.shape[0]) if classes is None else np.asarray(classes)
        if self.classes_.shape != (self.W2.shape[0],) or self.W2.shape[0] < 2:
            raise ValueError("an MLP classifier needs one output per class and >= 2 classes")

    @classmethod
    def from_weights(
        cls, weights: np.ndarray, classes: np.ndarray, n_features: int | None = None
    ) -> MLPClassifier:
        """From the optimiser's matrix; ``n_features`` defaults to what ``classes`` leaves."""
        weights = np.asarray(weights, dtype=np.float64)
        if n_features is None:
            n_features = weights.shape[1] - 1 - len(classes)
        W1, W2 = split_weights(weights, n_features)
        return cls(W1, W2, classes)

    @property
    def n_features(self) -> int:
        return int(self.W1.shape[1] - 1)

    @property
    def hidden(self) -> int:
        return int(self.W1.shape[0])

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The network's outputs, shape (n, n_outputs)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected an (n, {self.n_features}) feature matrix, got {X.shape}")
        return forward(self.W1, self.W2, X)[1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Outputs clipped at 0 and normalised (trained on one-hot targets, they approximate
        class probabilities; not calibrated)."""
        scores = np.clip(self.decision_function(X), 0.0, None)
        total = scores.sum(axis=1, keepdims=True)
        return np.divide(
            scores, total, out=np.full_like(scores, 1.0 / scores.shape[1]), where=total > 0
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        save_arrays(
            path, self.kind, {"w1": self.W1, "w2": self.W2, "classes": self.classes_.astype(str)}
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        kind, arrays = load_arrays(path, {"w1": "f", "w2": "f", "classes": "U"})
        if kind != cls.kind:
            raise ModelFormatError(f"{path} holds a {kind} model, not {cls.kind}")
        return cls.from_arrays(path, arrays)

    @classmethod
    def from_arrays(cls, path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Self:
        from fedmarket.models.linear import _restore_classes

        try:
            return cls(arrays["w1"], arrays["w2"], _restore_classes(arrays["classes"]))
        except ValueError as exc:
            raise ModelFormatError(f"{path}: {exc}") from exc
