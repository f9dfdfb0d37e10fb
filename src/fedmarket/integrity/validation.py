"""The requester's own yardsticks: its validation loss and its validation-set gradient.

The requester holds a small labelled validation set in plaintext. Its loss is what the
validation monitor (Zeno-like) measures each processor's gradient against, and its gradient
at the current weights is FLTrust's trusted reference direction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedmarket.models.sigmoid import DEFAULT_SIGMOID
from fedmarket.models.training import ModelKind, gradient_sums


def validation_loss(
    kind: ModelKind, X: np.ndarray, targets: np.ndarray
) -> Callable[[np.ndarray], float]:
    """The requester's loss on its validation set: cross-entropy (logistic) or squared error."""
    F = np.hstack([X, np.ones((X.shape[0], 1))])

    def loss(weights: np.ndarray) -> float:
        z = F @ weights.T
        if kind == "linear":
            return float(np.mean((z - targets) ** 2))
        # log(1 + e^-z) for y=1, log(1 + e^z) for y=0, stably
        return float(np.mean(np.logaddexp(0.0, z) - targets * z))

    return loss


def reference_gradient(
    kind: ModelKind, weights: np.ndarray, X: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """The requester's own per-sample gradient on its validation set (FLTrust's root data)."""
    return gradient_sums(kind, weights, X, targets, DEFAULT_SIGMOID) / max(len(X), 1)
