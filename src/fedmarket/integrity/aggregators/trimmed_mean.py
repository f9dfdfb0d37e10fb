"""Coordinate-wise trimmed mean of the block means (Yin et al., ICML 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedmarket.integrity.aggregators.base import (
    Aggregate,
    check_fraction,
    floor_count,
    shares,
    stack,
)
from fedmarket.integrity.types import BlockGradient

DEFAULT_BETA = 0.2


def trim_count(beta: float, n: int) -> int:
    """Blocks dropped from each side: k = floor(beta * n), at least 1 when beta > 0 and n >= 3,
    at most (n - 1) // 2 so at least one block is kept. beta = 0 or n < 3 trims nothing."""
    if beta == 0 or n < 3:
        return 0
    return min(max(floor_count(beta, n), 1), (n - 1) // 2)


@dataclass(frozen=True)
class TrimmedMean:
    """Per coordinate: drop the k largest and k smallest block means (k = ``trim_count``), then
    take the sample-weighted mean of the rest.

    Trimming counts blocks (not samples), so it removes up to k corrupted blocks per side
    whatever sizes they claim; it tolerates a corrupted fraction of at most ``beta``. With
    nothing trimmed it equals ``Mean`` up to rounding.
    """

    beta: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        check_fraction(self.beta, "trimmed-mean beta")

    @property
    def name(self) -> str:
        return f"trimmed-mean:{float(self.beta)!r}"

    def __call__(
        self, blocks: Sequence[BlockGradient], *, reference: np.ndarray | None = None
    ) -> Aggregate:
        s = stack(blocks)
        n, d = s.means.shape
        k = trim_count(self.beta, n)
        order = np.argsort(s.means, axis=0, kind="stable")[k : n - k]  # kept rows, per column
        kept = np.take_along_axis(s.means, order, axis=0)
        w = s.counts[order].astype(np.float64)
        w /= w.sum(axis=0)
        share = np.zeros((n, d))
        np.put_along_axis(share, order, w, axis=0)
        gradient = (w * kept).sum(axis=0)
        return Aggregate(gradient.reshape(s.shape), shares(s.ids, share), self.name)
