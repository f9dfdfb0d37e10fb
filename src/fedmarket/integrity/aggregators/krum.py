"""Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017)."""

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
    weighted_mean,
)
from fedmarket.integrity.types import BlockGradient

DEFAULT_FRACTION = 0.3


def byzantine_count(fraction: float, n: int) -> int:
    """f = floor(fraction * n), clamped to [0, n - 3] so each block has n - f - 2 >= 1
    neighbours; 0 when n < 3."""
    return max(0, min(floor_count(fraction, n), n - 3))


def krum_scores(means: np.ndarray, neighbours: int) -> np.ndarray:
    """Per row: the sum of squared L2 distances to its ``neighbours`` nearest other rows."""
    n = means.shape[0]
    dist = np.empty((n, n))
    for i in range(n):  # row by row: O(n * d) memory however long the gradients are
        dist[i] = ((means - means[i]) ** 2).sum(axis=1)
    np.fill_diagonal(dist, np.inf)
    return np.asarray(np.sort(dist, axis=1)[:, :neighbours].sum(axis=1), dtype=np.float64)


@dataclass(frozen=True)
class Krum:
    """Multi-Krum: assume f = ``byzantine_count(fraction, n)`` corrupted blocks; score each
    block by the squared distances to its n - f - 2 nearest neighbours; keep the m = n - f
    lowest scores (ties: earlier block first) and return their sample-weighted mean. Blocks not
    kept get weight 0. With n < 3 nothing can be told apart and all blocks are kept.
    """

    fraction: float = DEFAULT_FRACTION

    def __post_init__(self) -> None:
        check_fraction(self.fraction, "krum byzantine fraction")

    @property
    def name(self) -> str:
        return f"krum:{float(self.fraction)!r}"

    def __call__(
        self, blocks: Sequence[BlockGradient], *, reference: np.ndarray | None = None
    ) -> Aggregate:
        s = stack(blocks)
        n = len(s.ids)
        keep = np.ones(n, dtype=bool)
        if n >= 3:
            f = byzantine_count(self.fraction, n)
            scores = krum_scores(s.means, n - f - 2)
            keep[:] = False
            keep[np.argsort(scores, kind="stable")[: n - f]] = True
        counts = np.where(keep, s.counts, 0)
        gradient = weighted_mean(s.means[keep], s.counts[keep])
        return Aggregate(gradient.reshape(s.shape), shares(s.ids, counts / counts.sum()), self.name)
