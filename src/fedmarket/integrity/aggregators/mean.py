"""The plain sample-weighted mean: what the requester does without any robust aggregation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedmarket.integrity.aggregators.base import Aggregate, shares, stack
from fedmarket.integrity.types import BlockGradient


@dataclass(frozen=True)
class Mean:
    """sum(sums) / sum(n_samples): every sample counts once; block b gets weight n_b / N.

    The totals are added in input order onto float64 zeros and divided once, exactly as
    ``fedmarket.he.optimizer.combine`` followed by ``total / count`` does, so the result is
    bit-identical to the unprotected update.
    """

    @property
    def name(self) -> str:
        return "mean"

    def __call__(
        self, blocks: Sequence[BlockGradient], *, reference: np.ndarray | None = None
    ) -> Aggregate:
        s = stack(blocks)
        total = sum((b.sums for b in blocks), np.zeros(s.shape, dtype=np.float64))
        count = int(s.counts.sum())
        return Aggregate(total / count, shares(s.ids, s.counts / count), self.name)
