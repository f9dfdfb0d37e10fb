"""The requester's own yardsticks: its validation loss and its validation-set gradient.

The requester holds a small labelled validation set in plaintext. Its loss is what the
validation monitor (Zeno-like) measures each processor's gradient against, and its gradient
at the current weights is FLTrust's trusted reference direction. Both come from the task's
model kind (``fedmarket.models.kinds``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedmarket.models.kinds import ModelKind, get_kind
from fedmarket.models.sigmoid import DEFAULT_SIGMOID


def validation_loss(
    kind: str | ModelKind, X: np.ndarray, targets: np.ndarray
) -> Callable[[np.ndarray], float]:
    """The requester's loss on its validation set, as a function of the weights."""
    k = get_kind(kind)

    def loss(weights: np.ndarray) -> float:
        return k.loss(weights, X, targets)

    return loss


def reference_gradient(
    kind: str | ModelKind, weights: np.ndarray, X: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """The requester's own per-sample gradient on its validation set (FLTrust's root data)."""
    return get_kind(kind).gradient_sums(weights, X, targets, DEFAULT_SIGMOID) / max(len(X), 1)
