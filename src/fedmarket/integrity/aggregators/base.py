"""What every aggregator returns and accepts, and the input checks they share.

An aggregator turns an epoch's decrypted block gradients into the one per-sample mean gradient
the requester steps with. Robust aggregators bound what a minority of corrupted blocks can do
to that gradient; ``Aggregate.weights`` says how much each block counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedmarket.integrity.types import BlockGradient

# Added before flooring a fraction times a count, so that e.g. 0.29 * 100 = 28.999999999999996
# counts as 29 and not 28.
_FLOOR_SLACK = 1e-9


@dataclass(frozen=True)
class Aggregate:
    """The combined gradient and each block's share of it.

    ``weights[block]`` is the block's share of the result, averaged over coordinates for the
    coordinate-wise rules; shares sum to 1 (0 = the block was excluded everywhere), except for
    FLTrust's fallback, where every weight is 0 and the result is the reference itself.
    """

    gradient: np.ndarray  # per-sample mean gradient, shape (n_outputs, n_features + 1)
    weights: dict[str, float]  # block id -> weight it got (0 = excluded)
    name: str


class Aggregator(Protocol):
    """Combines block gradients; ``reference`` is the requester's own validation gradient."""

    @property
    def name(self) -> str: ...

    def __call__(
        self, blocks: Sequence[BlockGradient], *, reference: np.ndarray | None = None
    ) -> Aggregate: ...


@dataclass(frozen=True)
class Stacked:
    """The blocks as arrays: one row per block, in input order."""

    ids: list[str]
    means: np.ndarray  # (n_blocks, n_outputs * (n_features + 1)): the flattened block means
    counts: np.ndarray  # (n_blocks,) int64: samples per block
    shape: tuple[int, int]  # the shape of one block's gradient


def stack(blocks: Sequence[BlockGradient]) -> Stacked:
    """Checks the blocks and stacks their means.

    Raises ``ValueError`` on an empty list, duplicate block ids, a block with fewer than one
    sample, gradients that are not 2-D, differ in shape, or hold non-finite values.
    """
    if len(blocks) == 0:
        raise ValueError("no block gradients to aggregate")
    ids = [b.block for b in blocks]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate block ids among the block gradients")
    shape = np.shape(blocks[0].sums)
    if len(shape) != 2:
        raise ValueError(f"block gradients must be 2-D (n_outputs, n_features + 1), got {shape}")
    for b in blocks:
        if np.shape(b.sums) != shape:
            raise ValueError(f"block {b.block}: gradient shape {np.shape(b.sums)} != {shape}")
        if b.n_samples < 1:
            raise ValueError(f"block {b.block}: n_samples must be >= 1, got {b.n_samples}")
    means = np.stack([np.asarray(b.flat, dtype=np.float64) for b in blocks])
    if not np.all(np.isfinite(means)):
        raise ValueError("block gradients must be finite")
    counts = np.array([b.n_samples for b in blocks], dtype=np.int64)
    return Stacked(ids, means, counts, (int(shape[0]), int(shape[1])))


def check_reference(reference: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The reference as float64, after checking it matches the block gradients."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != shape:
        raise ValueError(f"reference gradient shape {ref.shape} != block gradient shape {shape}")
    if not np.all(np.isfinite(ref)):
        raise ValueError("reference gradient must be finite")
    return ref


def check_fraction(value: float, what: str) -> float:
    """``value`` as a float in [0, 0.5), else ``ValueError``."""
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value < 0.5):
        raise ValueError(f"{what} must be in [0, 0.5), got {value}")
    return value


def floor_count(fraction: float, n: int) -> int:
    """floor(fraction * n), robust to the rounding of the product."""
    return math.floor(fraction * n + _FLOOR_SLACK)


def weighted_mean(means: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sample-weighted mean of the rows of ``means``."""
    return np.asarray((counts[:, None] * means).sum(axis=0) / counts.sum(), dtype=np.float64)


def shares(ids: list[str], share: np.ndarray) -> dict[str, float]:
    """Block id -> its share; ``share`` is (n_blocks,) or (n_blocks, n_coords) (then averaged)."""
    per_block = share.mean(axis=1) if share.ndim == 2 else share
    return {bid: float(w) for bid, w in zip(ids, per_block, strict=True)}
