"""Binary logistic regression: one output, the cubic sigmoid, accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedmarket.models.kinds.base import Labels, ModelKind
from fedmarket.models.linear import LogisticRegression, Model


def unknown_labels(y: np.ndarray, classes: Sequence[int]) -> list[object]:
    """Labels of ``y`` that are not among ``classes`` (compared as numbers), sorted, first 5."""
    values = np.unique(np.asarray(y))
    known = {float(c) for c in classes}
    bad = []
    for v in values:
        try:
            ok = float(v) in known
        except (TypeError, ValueError):
            ok = False
        if not ok:
            bad.append(v.item() if hasattr(v, "item") else v)
    return bad[:5]


def require_known(y: np.ndarray, classes: Sequence[int]) -> None:
    """``ValueError`` naming the labels of ``y`` that are not among ``classes``."""
    bad = unknown_labels(y, classes)
    if bad:
        raise ValueError(f"labels {bad} are not among the task's classes {list(classes)}")


def one_hot(y: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """(n, len(classes)) 0/1 targets: column k is 1 where the label is the k-th class."""
    require_known(y, classes)
    values = np.asarray([float(c) for c in classes])
    return (np.asarray(y, dtype=np.float64)[:, None] == values[None, :]).astype(np.float64)


class Logistic(ModelKind):
    name = "logistic"

    def classes_problem(self, classes: Sequence[int]) -> str | None:
        return None if len(classes) == 2 else "a logistic task needs exactly 2 labels.classes"

    def targets(self, y: np.ndarray, labels: Labels) -> np.ndarray:
        classes = list(labels.classes)
        require_known(y, classes)
        return (np.asarray(y, dtype=np.float64) == float(classes[1])).astype(np.float64)[:, None]

    def estimator(self, weights: np.ndarray, classes: np.ndarray) -> Model:
        return LogisticRegression.from_weights(weights, classes)
