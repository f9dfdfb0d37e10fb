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

    With several outputs (one-vs-rest) all of this is done per output row, and a block's
    weight is its average share over the rows (a row no block is trusted for falls back to
    the reference and gives no block weight). Trust ignores sample counts, as in the paper.
    A block pointing away from the reference gets no weight, and rescaling caps every block's
    magnitude, so neither a flipped nor a huge gradient can dominate. If every trust is 0 (no
    block agrees with the reference, or the reference is zero), the result is the reference
    itself and every weight is 0.
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
        # One-vs-rest trains one binary model per class: trust is judged per output row, so
        # a block poisoning one class's model (a backdoor aimed at that class) loses its say
        # there without silencing its honest rows. For one output this is plain FLTrust.
        means = s.means.reshape(len(s.ids), *s.shape)
        gradient = np.zeros(s.shape)
        weights = np.zeros(len(s.ids))
        for k in range(s.shape[0]):
            rows, target = means[:, k, :], ref[k]
            trust = np.maximum(cosines(rows, target), 0.0)
            if trust.sum() <= 0:
                gradient[k] = target
                continue
            norms = np.linalg.norm(rows, axis=1)
            scale = np.divide(
                np.linalg.norm(target), norms, out=np.zeros_like(norms), where=norms > 0
            )
            weight = trust / trust.sum()
            gradient[k] = (weight * scale) @ rows
            weights += weight / s.shape[0]
        return Aggregate(gradient, shares(s.ids, weights), self.name)
