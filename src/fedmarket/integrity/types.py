"""What the integrity layer works on: decrypted block gradients and the evidence drawn from them.

A ``BlockGradient`` is one block's decrypted gradient totals (what ``fedmarket.he.decrypt_result``
returns) together with who computed it and whose data it is. Detectors and aggregators see only
these block-level totals, never a per-sample value, so every check here works under encryption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


@dataclass(frozen=True)
class BlockGradient:
    """One block's gradient totals: ``sums`` is (n_outputs, n_features + 1), bias last."""

    block: str  # block id, e.g. "0xowner/3"
    processor: str  # the processor whose result this is
    owner: str  # the data owner whose block it is
    n_samples: int
    sums: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """The per-sample mean gradient of the block (same shape as ``sums``)."""
        return self.sums / max(self.n_samples, 1)

    @property
    def flat(self) -> np.ndarray:
        """The per-sample mean as one vector: what distances and cosines are taken on."""
        return self.mean.ravel()


class Strength(StrEnum):
    """How sure a piece of evidence is."""

    PROVEN = "proven"  # reproducible by anyone with the same inputs (e.g. a recomputed digest)
    STATISTICAL = "statistical"  # an outlier score; must repeat before it becomes a flag


@dataclass(frozen=True)
class Evidence:
    """One observation against a party in one epoch."""

    party: str  # address (or name in simulations) of the accused
    role: str  # "processor" or "owner"
    epoch: int
    kind: str  # e.g. "digest-mismatch", "out-of-bound", "distance", "cosine", "validation"
    strength: Strength
    detail: str  # human-readable: what was measured, against what
    score: float = 0.0  # for statistical evidence: the robust z-score or similar
    blocks: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        return {
            "party": self.party,
            "role": self.role,
            "epoch": self.epoch,
            "kind": self.kind,
            "strength": self.strength.value,
            "detail": self.detail,
            "score": self.score,
            "blocks": list(self.blocks),
        }
