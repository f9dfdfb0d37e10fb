"""FLTrust-style aggregation (Cao, Fang, Liu, Gong, NDSS 2021): trust from the requester's own
validation gradient."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedmarket.integrity.aggregators.base import Aggregate, check_reference, shares, stack
from fedmarket.integrity.types import BlockGradient


def cosines(rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """cos(row, vector) per row; 0 where either has zero norm."""
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(vector)
    dots = rows @ vector
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


@dataclass(frozen=True)
class FLTrust:
    """trust_b = max(0, cos(mean_b, reference)); each block mean is rescaled to the norm of
    ``reference``; result = sum(trust_b * rescaled_b) / sum(trust_b).

    Trust ignores sample counts, as in the paper. A block pointing away from the reference gets
    no weight, and rescaling caps every block's magnitude, so neither a flipped nor a huge
    gradient can dominate. If every trust is 0 (no block agrees with the reference, or the
    reference is zero), the result is the reference itself and every weight is 0.
    """

    @property
    def name(self) -> str:
        return "fltrust"

    def __call__(
        self, blocks: Sequence[BlockGradient], *, reference: np.ndarray | None = None
    ) -> Aggregate:
        s = stack(blocks)
        if reference is None:
            raise ValueError(
                "fltrust needs a reference gradient: the requester's own gradient on its "
                "validation set (per-sample mean, same shape as the block gradients)"
            )
        ref = check_reference(reference, s.shape)
        trust = np.maximum(cosines(s.means, ref.ravel()), 0.0)
        if trust.sum() <= 0:
            return Aggregate(ref.copy(), shares(s.ids, np.zeros(len(s.ids))), self.name)
        norms = np.linalg.norm(s.means, axis=1)
        scale = np.divide(np.linalg.norm(ref), norms, out=np.zeros_like(norms), where=norms > 0)
        weight = trust / trust.sum()
        gradient = (weight * scale) @ s.means
        return Aggregate(gradient.reshape(s.shape), shares(s.ids, weight), self.name)
