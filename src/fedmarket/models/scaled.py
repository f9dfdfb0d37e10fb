"""A trained model with the task's scaling: raw features in, predictions in the label's units.

Training happens in the spec's scaled space (features in [-1, 1], regression targets too); this
wrapper applies the same published feature scaling before every prediction and, for
regression, undoes the target scaling after it. Saved as ``model.npz`` (the model) plus
``model.scaling.json`` beside it.
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
    """``predict(X)`` = ``model.predict(scaler.transform(X))``; likewise ``predict_proba``.
    ``clip_norm`` > 0: each scaled row is clipped to that L2 norm first, as a private task's
    owners clip theirs (the model was trained on clipped rows)."""

    def __init__(
        self,
        model: Model,
        scaler: FeatureScaler,
        *,
        target_center: float = 0.0,
        target_scale: float = 1.0,
        clip_norm: float = 0.0,
    ) -> None:
        if not (math.isfinite(clip_norm) and clip_norm >= 0):
            raise ValueError("clip_norm must be a finite number >= 0")
        if len(scaler.mean) != model.n_features:
            raise ValueError(
                f"scaler has {len(scaler.mean)} features, the model {model.n_features}"
            )
        if not (math.isfinite(target_center) and math.isfinite(target_scale)) or not (
            target_scale > 0
        ):
            raise ValueError("target scaling must be finite with a positive scale")
        self.model = model
        self.scaler = scaler
        self.target_center = float(target_center)
        self.target_scale = float(target_scale)
        self.clip_norm = float(clip_norm)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Rows as the model sees them: scaled, and clipped where the task clipped."""
        out: np.ndarray = self.scaler.transform(X)
        if self.clip_norm > 0:
            from fedmarket.privacy.owner import clip_rows

            out = clip_rows(out, self.clip_norm)
        return out

    @property
    def classes_(self) -> np.ndarray:
        return self.model.classes_

    @property
    def n_features(self) -> int:
        return self.model.n_features

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self.model.predict(self.transform(X))
        if self.model.kind == "linear":  # back to the label's units
            return self.target_center + self.target_scale * np.asarray(out, dtype=np.float64)
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        proba = getattr(self.model, "predict_proba", None)
        if proba is None:
            raise AttributeError("a regression model has no predict_proba")
        result: np.ndarray = proba(self.transform(X))
        return result

    def save(self, path: str | os.PathLike[str]) -> None:
        self.model.save(path)
        scaling_path(path).write_text(
            json.dumps(
                {
                    "mean": list(self.scaler.mean),
                    "scale": list(self.scaler.scale),
                    "target_center": self.target_center,
                    "target_scale": self.target_scale,
                    "clip_norm": self.clip_norm,
                }
            )
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
            center = float(data.get("target_center", 0.0))
            spread = float(data.get("target_scale", 1.0))
            clip = float(data.get("clip_norm", 0.0))
        except ModelFormatError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFormatError(f"{sp}: not a readable scaling file: {exc}") from None
        if not all(math.isfinite(v) for v in mean + scale) or any(s <= 0 for s in scale):
            raise ModelFormatError(f"{sp}: scaling must be finite with positive scales")
        try:
            return cls(
                model,
                FeatureScaler(mean, scale),
                target_center=center,
                target_scale=spread,
                clip_norm=clip,
            )
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
