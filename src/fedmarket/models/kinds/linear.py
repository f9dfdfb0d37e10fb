"""Linear regression: one output, residual z - y, R^2; targets scaled into [-1, 1] by the spec."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedmarket.models.kinds.base import Labels, ModelKind, design_matrix
from fedmarket.models.linear import LinearRegression, Model


class Linear(ModelKind):
    name = "linear"
    metric = "R^2"
    sigmoid = False
    learning_rate = 1.0

    def classes_problem(self, classes: Sequence[int]) -> str | None:
        return "a linear (regression) task takes no labels.classes" if classes else None

    def targets(self, y: np.ndarray, labels: Labels) -> np.ndarray:
        """``clip((y - target_center) / target_scale, -1, 1)``: the program needs |t| <= 1."""
        try:
            values = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("regression targets must be numbers") from None
        if not np.all(np.isfinite(values)):
            raise ValueError("regression targets must be finite numbers")
        scaled = (values - labels.target_center) / labels.target_scale
        return np.clip(scaled, -1.0, 1.0)[:, None]

    def estimator(self, weights: np.ndarray, classes: np.ndarray) -> Model:
        return LinearRegression.from_weights(weights)

    def score(self, model: Model, X: np.ndarray, y: np.ndarray) -> float:
        """R^2 (0 when the labels are constant)."""
        y = np.asarray(y, dtype=np.float64)
        residual = y - model.predict(X)
        total = np.sum((y - y.mean()) ** 2)
        return float(1.0 - np.sum(residual**2) / total) if total > 0 else 0.0

    def evaluate(self, model: Model, X: np.ndarray, y: np.ndarray, labels: Labels) -> float:
        """R^2 in the label's units: the model predicts scaled targets, and R^2 is the same
        for y and for (y - target_center) / target_scale."""
        scaled = (np.asarray(y, dtype=np.float64) - labels.target_center) / labels.target_scale
        return self.score(model, X, scaled)

    def loss(self, weights: np.ndarray, X: np.ndarray, targets: np.ndarray) -> float:
        z = design_matrix(X) @ np.asarray(weights).T
        return float(np.mean((z - targets) ** 2))
