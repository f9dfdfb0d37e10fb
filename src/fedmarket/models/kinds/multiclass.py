"""Multiclass classification as one-vs-rest: one cubic-sigmoid output per class, accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedmarket.models.kinds.base import Labels, ModelKind
from fedmarket.models.kinds.logistic import one_hot
from fedmarket.models.linear import Model, OneVsRest


class Multiclass(ModelKind):
    name = "multiclass"

    def classes_problem(self, classes: Sequence[int]) -> str | None:
        return None if len(classes) >= 3 else "a multiclass task needs at least 3 labels.classes"

    def n_outputs(self, classes: Sequence[int]) -> int:
        return len(classes)

    def outputs_problem(self, n_outputs: int) -> str | None:
        return None if n_outputs >= 3 else f"multiclass needs >= 3 outputs, got {n_outputs}"

    def targets(self, y: np.ndarray, labels: Labels) -> np.ndarray:
        return one_hot(y, list(labels.classes))

    def estimator(self, weights: np.ndarray, classes: np.ndarray) -> Model:
        return OneVsRest.from_weights(weights, classes)
