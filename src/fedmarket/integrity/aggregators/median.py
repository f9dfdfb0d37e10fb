"""Coordinate-wise median of the block means, each block weighted by its sample count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedmarket.integrity.aggregators.base import Aggregate, shares, stack
from fedmarket.integrity.types import BlockGradient


def weighted_median(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``values`` (n, d): the median where row i counts ``counts[i]`` times.

    The median is the smallest sorted value whose cumulative count reaches half the total;
    when it reaches exactly half, the mean of that value and the next one (so with equal
    counts this is ``np.median``). Counts are integers, so the comparison is exact. Returns
    (median (d,), share (n, d)): each row's coefficient in its column's median (1, 0.5 or 0).
    """
    n, d = values.shape
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    cum = np.cumsum(counts[order], axis=0)
    total = int(counts.sum())
    lo = np.argmax(2 * cum >= total, axis=0)
    cols = np.arange(d)
    tie = 2 * cum[lo, cols] == total
    hi = np.where(tie, np.minimum(lo + 1, n - 1), lo)
    median = 0.5 * (ordered[lo, cols] + ordered[hi, cols])
    share = np.zeros((n, d))
    np.add.at(share, (order[lo, cols], cols), 0.5)
    np.add.at(share, (order[hi, cols], cols), 0.5)
    return median, share


@dataclass(frozen=True)
class Median:
    """Coordinate-wise median of block means, weighted by n_samples (see ``weighted_median``).

    Weighting by samples means a block of 60 samples counts like two blocks of 30, so the
    result does not depend on how an owner's data was cut into blocks. It tolerates corrupted
    blocks holding up to (just under) half of the samples in every coordinate.
    """

    @property
    def name(self) -> str:
        return "median"

    def __call__(
        self, blocks: Sequence[BlockGradient], *, reference: np.ndarray | None = None
    ) -> Aggregate:
        s = stack(blocks)
        median, share = weighted_median(s.means, s.counts)
        return Aggregate(median.reshape(s.shape), shares(s.ids, share), self.name)
