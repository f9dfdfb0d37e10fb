"""Plaintext linear models: binary logistic regression, one-vs-rest, linear regression.

These are what encrypted training produces and what the requester evaluates on its validation
set. Weights are stored sklearn-style (``coef_``, ``intercept_``); ``weight_matrix`` gives the
(n_outputs, n_features + 1) matrix with the bias last, the shape the optimiser works on.
"""

from __future__ import annotations

import os
from typing import ClassVar, Self

import numpy as np

from fedmarket.models.mlp import MLPClassifier
from fedmarket.models.persist import ModelFormatError, load_arrays, peek_kind, save_arrays


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Split by sign so large |z| neither overflows exp nor loses precision.
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    expz = np.exp(z[~positive])
    out[~positive] = expz / (1.0 + expz)
    return out


def _as_features(X: np.ndarray, n_features: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"expected an (n, {n_features}) feature matrix, got shape {X.shape}")
    return X


class _LinearModel:
    kind: ClassVar[str]

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray) -> None:
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = np.asarray(intercept, dtype=np.float64)
        self.classes_ = np.asarray(classes)
        if self.coef_.ndim != 2 or self.intercept_.shape != (self.coef_.shape[0],):
            raise ValueError("coef must be (n_outputs, n_features) and intercept (n_outputs,)")

    @property
    def n_features(self) -> int:
        return int(self.coef_.shape[1])

    @property
    def weight_matrix(self) -> np.ndarray:
        """(n_outputs, n_features + 1): coefficients with the intercept as the last column."""
        return np.hstack([self.coef_, self.intercept_[:, None]])

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The linear scores z = X @ coef.T + intercept, shape (n, n_outputs)."""
        return _as_features(X, self.n_features) @ self.coef_.T + self.intercept_

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a model written by ``save``; the file must hold this kind of model."""
        model = load_model(path)
        if not isinstance(model, cls):
            raise ModelFormatError(f"{path} holds a {model.kind} model, not {cls.kind}")
        return model

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model as a small versioned .npz file."""
        classes = self.classes_.astype(str) if self.classes_.size else np.array([], dtype=str)
        save_arrays(
            path,
            self.kind,
            {"coef": self.coef_, "intercept": self.intercept_, "classes": classes},
        )


class LogisticRegression(_LinearModel):
    """Binary logistic regression; ``classes_`` holds the labels for outcome 0 and outcome 1."""

    kind = "logistic"

    def __init__(
        self, coef: np.ndarray, intercept: float, classes: np.ndarray | None = None
    ) -> None:
        coef = np.asarray(coef, dtype=np.float64).reshape(1, -1)
        super().__init__(
            coef, np.array([float(intercept)]), np.arange(2) if classes is None else classes
        )
        if self.classes_.shape != (2,):
            raise ValueError("a binary model needs exactly two classes")

    @classmethod
    def from_weights(
        cls, weights: np.ndarray, classes: np.ndarray | None = None
    ) -> LogisticRegression:
        weights = np.asarray(weights, dtype=np.float64).reshape(1, -1)
        return cls(weights[0, :-1], float(weights[0, -1]), classes)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, 2) probabilities with the exact sigmoid (the cubic is only a training device)."""
        p1 = _sigmoid(self.decision_function(X)[:, 0])
        return np.stack([1.0 - p1, p1], axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(self.decision_function(X)[:, 0] > 0).astype(int)]


class OneVsRest(_LinearModel):
    """K binary logistic regressions, one per class; predicts the class with the largest score."""

    kind = "multiclass"

    def __init__(
        self, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray | None = None
    ) -> None:
        coef = np.asarray(coef, dtype=np.float64)
        super().__init__(coef, intercept, np.arange(coef.shape[0]) if classes is None else classes)
        if self.classes_.shape != (self.coef_.shape[0],) or self.coef_.shape[0] < 3:
            raise ValueError("one-vs-rest needs one row of coefficients per class and >= 3 classes")

    @classmethod
    def from_weights(cls, weights: np.ndarray, classes: np.ndarray | None = None) -> OneVsRest:
        weights = np.asarray(weights, dtype=np.float64)
        return cls(weights[:, :-1], weights[:, -1], classes)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Per-class sigmoids normalised to sum to one (as scikit-learn's OneVsRestClassifier)."""
        scores = _sigmoid(self.decision_function(X))
        total = scores.sum(axis=1, keepdims=True)
        return np.divide(
            scores, total, out=np.full_like(scores, 1.0 / scores.shape[1]), where=total > 0
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]


class LinearRegression(_LinearModel):
    """Least-squares linear regression. It has no ``predict_proba``: it predicts numbers."""

    kind = "linear"

    def __init__(self, coef: np.ndarray, intercept: float) -> None:
        coef = np.asarray(coef, dtype=np.float64).reshape(1, -1)
        super().__init__(coef, np.array([float(intercept)]), np.array([], dtype=str))

    @classmethod
    def from_weights(
        cls, weights: np.ndarray, classes: np.ndarray | None = None
    ) -> LinearRegression:
        weights = np.asarray(weights, dtype=np.float64).reshape(1, -1)
        return cls(weights[0, :-1], float(weights[0, -1]))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision_function(X)[:, 0]


Model = LogisticRegression | OneVsRest | LinearRegression | MLPClassifier
_KINDS: dict[str, type[LogisticRegression] | type[OneVsRest] | type[LinearRegression]] = {
    "logistic": LogisticRegression,
    "multiclass": OneVsRest,
    "one_vs_rest": OneVsRest,  # files written before the kinds had one name each
    "linear": LinearRegression,
}


def _restore_classes(classes: np.ndarray) -> np.ndarray:
    # Labels are saved as text; give integer labels back as integers.
    try:
        as_int = classes.astype(np.int64)
    except ValueError:
        return classes
    return as_int if np.array_equal(as_int.astype(str), classes) else classes


def load_model(path: str | os.PathLike[str]) -> Model:
    """Load any model saved with ``save``; validates format, version, shapes and values."""
    if peek_kind(path) == MLPClassifier.kind:
        return MLPClassifier.load(path)
    kind, arrays = load_arrays(path, {"coef": "f", "intercept": "f", "classes": "U"})
    if kind not in _KINDS:
        raise ModelFormatError(f"{path}: unknown model kind {kind!r}; known: {sorted(_KINDS)}")
    coef, intercept, classes = arrays["coef"], arrays["intercept"], arrays["classes"]
    if coef.ndim != 2 or intercept.shape != (coef.shape[0],) or coef.shape[1] == 0:
        raise ModelFormatError(
            f"{path}: coef {coef.shape} and intercept {intercept.shape} disagree"
        )
    try:
        if kind == "linear":
            return LinearRegression.from_weights(np.hstack([coef, intercept[:, None]]))
        weights = np.hstack([coef, intercept[:, None]])
        return _KINDS[kind].from_weights(weights, _restore_classes(classes))
    except ValueError as exc:
        raise ModelFormatError(f"{path}: {exc}") from exc
