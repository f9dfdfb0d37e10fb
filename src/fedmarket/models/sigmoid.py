"""The cubic that stands in for the sigmoid in encrypted training (and in its plaintext twin).

CKKS can only add and multiply, so the logistic function is replaced by its least-squares cubic
on a fixed interval, as in the iDASH 2017 winning solution (Kim, Song, Kim, Lee, Cheon, "Logistic
regression model training based on the approximate homomorphic encryption", BMC Med Genomics
11(Suppl 4):83, 2018). Plaintext training uses the same polynomial, so "the same algorithm in
plaintext" differs from the encrypted run only by CKKS noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Least-squares fit of sigmoid(x) - 1/2 by c1*x + c3*x**3 on [-8, 8] (uniform weight), computed
# once and frozen here: every party must derive bit-identical constants, and refitting with
# numpy on another platform could move the last bits and change every ciphertext downstream.
# It matches the iDASH polynomial 0.5 + 1.20096*(x/8) - 0.81562*(x/8)**3 to 5 digits.
_LSQ_INTERVAL = 8.0
_LSQ_C1 = 0.15012034628563223
_LSQ_C3 = -0.0015930149649542517


@dataclass(frozen=True)
class SigmoidPolynomial:
    """sigmoid(x) ~= 1/2 + c1*x + c3*x**3, accurate on [-interval, interval].

    Outside the interval the cubic turns back (it peaks at ``sqrt(c1 / (3|c3|))``), so training
    keeps the model's inputs inside it; see ``fedmarket.models.training.IntervalGuard``.
    """

    interval: float = _LSQ_INTERVAL
    c1: float = _LSQ_C1
    c3: float = _LSQ_C3

    def __post_init__(self) -> None:
        if not (self.interval > 0 and math.isfinite(self.interval)):
            raise ValueError(f"interval must be a positive number, got {self.interval}")
        if not (self.c1 > 0 and self.c3 < 0 and math.isfinite(self.c1 + self.c3)):
            raise ValueError("a sigmoid cubic needs c1 > 0 and c3 < 0")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return 0.5 + self.c1 * x + self.c3 * x**3

    @property
    def kappa(self) -> float:
        """The factor the requester multiplies the model by before encrypting it.

        With z~ = kappa*z and kappa**3 = c3 the cubic becomes z~ * (z~**2 + c1/kappa) + 1/2, so the
        processor needs no scalar multiplication (each would cost a CKKS level): it squares,
        adds the constant ``linear_term`` and multiplies once.
        """
        return -((-self.c3) ** (1.0 / 3.0))

    @property
    def linear_term(self) -> float:
        """c1 / kappa: the constant the processor adds to z~**2."""
        return self.c1 / self.kappa

    @classmethod
    def least_squares(cls, interval: float, *, samples: int = 200_001) -> SigmoidPolynomial:
        """Fit the cubic on another interval (the default instance is the [-8, 8] fit)."""
        x = np.linspace(-interval, interval, samples)
        target = 1.0 / (1.0 + np.exp(-x)) - 0.5
        c1, c3 = np.linalg.lstsq(np.stack([x, x**3], axis=1), target, rcond=None)[0]
        return cls(interval=float(interval), c1=float(c1), c3=float(c3))

    def max_abs_on(self, radius: float) -> float:
        """max |p(x)| for |x| <= radius: bounds what one sample can add to a gradient sum."""
        grid = np.linspace(-radius, radius, 4097)
        peak = math.sqrt(self.c1 / (3.0 * -self.c3))
        if peak < radius:
            grid = np.append(grid, [peak, -peak])
        return float(np.max(np.abs(self(grid))))


DEFAULT_SIGMOID = SigmoidPolynomial()
