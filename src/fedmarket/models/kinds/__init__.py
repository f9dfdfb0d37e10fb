"""The model kinds a task may name in ``task.model``: one module each, one line here.

A new kind is a ``ModelKind`` subclass in its own module (targets, gradient totals, bounds,
estimator, metric, loss), one line in ``_REGISTRY``, and its HE program in ``fedmarket.he``.
"""

from __future__ import annotations

from fedmarket.errors import ConfigError
from fedmarket.models.kinds.base import (
    LINEAR_GUARD_RADIUS,
    Guard,
    Labels,
    ModelKind,
    TaskLabels,
    design_matrix,
)
from fedmarket.models.kinds.linear import Linear
from fedmarket.models.kinds.logistic import Logistic
from fedmarket.models.kinds.mlp import MLP
from fedmarket.models.kinds.multiclass import Multiclass

_REGISTRY: tuple[ModelKind, ...] = (
    Logistic(),
    Multiclass(),
    Linear(),
    MLP(),
)
KINDS: dict[str, ModelKind] = {k.name: k for k in _REGISTRY}
KIND_NAMES: tuple[str, ...] = tuple(KINDS)


def get_kind(kind: str | ModelKind) -> ModelKind:
    """The registered kind of this name (a kind object passes through)."""
    if isinstance(kind, ModelKind):
        return kind
    found = KINDS.get(kind)
    if found is None:
        raise ConfigError(
            f"unknown model kind {kind!r}", hint=f"task.model is one of: {', '.join(KIND_NAMES)}"
        )
    return found


__all__ = [
    "KINDS",
    "KIND_NAMES",
    "LINEAR_GUARD_RADIUS",
    "Guard",
    "Labels",
    "ModelKind",
    "TaskLabels",
    "design_matrix",
    "get_kind",
]
