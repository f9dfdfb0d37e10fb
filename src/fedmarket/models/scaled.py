"""A trained model with the task's feature scaling: it takes raw features, as users expect.

Training happens in the spec's scaled space (features in [-1, 1]); this wrapper applies the
same published scaling before every prediction. Saved as ``model.npz`` (the linear model)
plus ``model.scaling.json`` beside it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from fedmarket.models.linear import Model, load_model
from fedmarket.models.persist import ModelFormatError
from fedmarket.models.scaling import FeatureScaler

MAX_SCALING_BYTES = 16 << 20


def scaling_path(model_path: str | os.PathLike[str]) -> Path:
    p = Path(model_path)
    return p.with_name(p.stem + ".scaling.json")


class ScaledModel:
    """``predict(X)`` = ``model.predict(scaler.transform(X))``; likewise ``predict_proba``."""

    def __init__(self, model: Model, scaler: FeatureScaler) -> None:
        if len(scaler.mean) != model.n_features:
            raise ValueError(
                f"scaler has {len(scaler.mean)} features, the model {model.n_features}"
            )
        self.model = model
        self.scaler = scaler

    @property
    def classes_(self) -> np.ndarray:
        return self.model.classes_

    @property
    def n_features(self) -> int:
        return self.model.n_features

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(self.scaler.transform(X))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        proba = getattr(self.model, "predict_proba", None)
        if proba is None:
            raise AttributeError("a regression model has no predict_proba")
        result: np.ndarray = proba(self.scaler.transform(X))
        return result

    def save(self, path: str | os.PathLike[str]) -> None:
        self.model.save(path)
        scaling_path(path).write_text(
            json.dumps({"mean": list(self.scaler.mean), "scale": list(self.scaler.scale)})
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScaledModel:
        model = load_model(path)
        sp = scaling_path(path)
        try:
            if sp.stat().st_size > MAX_SCALING_BYTES:
                raise ModelFormatError(f"{sp} is too large to be a scaling file")
            data = json.loads(sp.read_text())
            mean = tuple(float(v) for v in data["mean"])
            scale = tuple(float(v) for v in data["scale"])
        except ModelFormatError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelFormatError(f"{sp}: not a readable scaling file: {exc}") from None
        if not all(math.isfinite(v) for v in mean + scale) or any(s <= 0 for s in scale):
            raise ModelFormatError(f"{sp}: scaling must be finite with positive scales")
        try:
            return cls(model, FeatureScaler(mean, scale))
        except ValueError as exc:
            raise ModelFormatError(f"{sp}: {exc}") from None


def load_any(path: str | os.PathLike[str]) -> Model | ScaledModel:
    """A run folder, or a model file; with its scaling file beside it, a :class:`ScaledModel`."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.npz"
    if scaling_path(p).exists():
        return ScaledModel.load(p)
    return load_model(p)
