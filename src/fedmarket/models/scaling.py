"""Feature scaling into [-1, 1], which the encrypted program requires of every input.

Bounded features keep |z| = |w.x| under control (so the sigmoid cubic is used where it is
accurate and no ciphertext overflows its modulus). Standardising and dividing by ``spread``
standard deviations before clipping keeps most of the variance, unlike min-max scaling, which
lets a single outlier squeeze a whole feature into a small range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureScaler:
    """x -> clip((x - mean) / (spread * std), -1, 1), per feature."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def fit(cls, X: np.ndarray, *, spread: float = 2.5) -> FeatureScaler:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"expected a non-empty (n, d) matrix, got shape {X.shape}")
        if not spread > 0:
            raise ValueError("spread must be positive")
        std = X.std(axis=0)
        # A constant feature carries no information; map it to 0 instead of dividing by 0.
        std = np.where(std > 0, std, 1.0)
        return cls(tuple(map(float, X.mean(axis=0))), tuple(map(float, spread * std)))

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.mean):
            raise ValueError(f"expected shape (n, {len(self.mean)}), got {X.shape}")
        return np.clip((X - np.array(self.mean)) / np.array(self.scale), -1.0, 1.0)
