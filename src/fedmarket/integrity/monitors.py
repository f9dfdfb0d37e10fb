"""Statistical monitors on block gradients: the paper's "variance method", generalised.

Every monitor reduces each block (or party) to one number and compares it with the other
blocks of the same epoch through a robust z-score, so a monitor needs no threshold tuned to
the data's scale. High z = suspicious. The scores are evidence, not verdicts: honest non-IID
data also produces outliers, which is why ``fedmarket.integrity.policy`` only flags repeats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedmarket.integrity.aggregators.base import check_reference, stack
from fedmarket.integrity.aggregators.fltrust import cosines
from fedmarket.integrity.types import BlockGradient

MAD_SCALE = 1.4826  # 1 / Phi^-1(3/4): makes the MAD estimate the standard deviation of normals
MAD_FLOOR_ABS = 1e-12  # the MAD is never taken below this ...
MAD_FLOOR_REL = 1e-3  # ... nor below this fraction of median(|x|)
MIN_BLOCKS = 3  # below this there is no "majority" to compare with: every z is 0
Z_THRESHOLD = 3.5  # a block counts as an outlier in ``party_scores`` above this


def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median(x)) / (1.4826 * MAD'), MAD' = max(MAD, 1e-12, 1e-3 * median(|x|)).

    MAD = median(|x - median(x)|). The floor keeps z finite when most values are identical
    (MAD = 0); a value then scores by how far it is relative to the values' own size. Takes a
    1-D finite array; returns the same shape (empty in, empty out).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"robust_z takes a 1-D array, got shape {x.shape}")
    if x.size == 0:
        return x.copy()
    if not np.all(np.isfinite(x)):
        raise ValueError("robust_z needs finite values")
    centre = float(np.median(x))
    mad = float(np.median(np.abs(x - centre)))
    scale = max(mad, MAD_FLOOR_ABS, MAD_FLOOR_REL * float(np.median(np.abs(x))))
    return (x - centre) / (MAD_SCALE * scale)


def _z(values: np.ndarray) -> np.ndarray:
    """``robust_z``, or zeros when there are fewer than ``MIN_BLOCKS`` values."""
    return robust_z(values) if values.size >= MIN_BLOCKS else np.zeros_like(values)


@dataclass(frozen=True)
class BlockScore:
    """One block against the robust centre c (coordinate-wise median of the block means)."""

    block: str
    distance: float  # ||mean_b - c||
    cosine: float  # cos(mean_b, c); 0 if either is zero
    norm: float  # ||mean_b||
    validation_cosine: float  # cos(mean_b, reference); nan without a reference
    z_distance: float  # robust z of distance across blocks
    z_cosine: float  # robust z of the angle arccos(cosine) across blocks (see block_scores)
    z_norm: float  # |robust z of norm|: two-sided, zero updates are as suspicious as huge ones

    @property
    def max_z(self) -> float:
        """The block's worst z."""
        return max(self.z_distance, self.z_cosine, self.z_norm)


def block_scores(
    blocks: Sequence[BlockGradient], reference: np.ndarray | None = None
) -> dict[str, BlockScore]:
    """Distance, cosine and norm of every block's mean, with robust z-scores across blocks.

    The centre is the unweighted coordinate-wise median of the block means (a block cannot
    pull it by claiming many samples). With fewer than 3 blocks every z is 0. ``reference``
    (the requester's validation gradient, same shape) only fills ``validation_cosine``.

    ``z_cosine`` scores the angle arccos(cosine), not 1 - cosine: the two rank blocks alike,
    but 1 - cosine ~ angle**2 / 2 is strongly right-skewed, which roughly doubled the honest
    rate of z > 3.5 in our tests (IID Gaussian blocks: 0.9% vs 0.4% per block).
    """
    s = stack(blocks)
    centre = np.median(s.means, axis=0)
    distance = np.linalg.norm(s.means - centre, axis=1)
    cosine = cosines(s.means, centre)
    norm = np.linalg.norm(s.means, axis=1)
    if reference is None:
        validation = np.full(len(s.ids), math.nan)
    else:
        validation = cosines(s.means, check_reference(reference, s.shape).ravel())
    angle = np.arccos(np.clip(cosine, -1.0, 1.0))
    z_distance, z_cosine, z_norm = _z(distance), _z(angle), np.abs(_z(norm))
    return {
        bid: BlockScore(
            bid,
            float(distance[i]),
            float(cosine[i]),
            float(norm[i]),
            float(validation[i]),
            float(z_distance[i]),
            float(z_cosine[i]),
            float(z_norm[i]),
        )
        for i, bid in enumerate(s.ids)
    }


@dataclass(frozen=True)
class PartyScore:
    """A party's blocks summarised: the medians resist a few bad blocks it did not cause."""

    party: str
    blocks: tuple[str, ...]
    z_distance: float  # median over its blocks
    z_cosine: float  # median over its blocks
    z_norm: float  # median over its blocks
    max_z: float  # the worst z of any of its blocks, any kind
    flagged_fraction: float  # fraction of its blocks whose max_z exceeds the threshold

    @property
    def z(self) -> float:
        """The party's headline score: its largest median z."""
        return max(self.z_distance, self.z_cosine, self.z_norm)


def party_scores(
    scores: Mapping[str, BlockScore],
    party_of: Mapping[str, str],
    threshold: float = Z_THRESHOLD,
) -> dict[str, PartyScore]:
    """Block scores grouped by party (``party_of``: block id -> processor or owner).

    Per party: the median of each z over its blocks, the max of any z, the fraction of its
    blocks with ``max_z > threshold``, and its block ids (in ``scores`` order). A processor that
    corrupts everything has high medians; an honest one handed a few poisoned blocks does not.
    Raises ``ValueError`` if a scored block has no party.
    """
    missing = [b for b in scores if b not in party_of]
    if missing:
        raise ValueError(f"no party given for blocks {missing}")
    groups: dict[str, list[BlockScore]] = {}
    for bid, score in scores.items():
        groups.setdefault(party_of[bid], []).append(score)
    return {party: _party(party, group, threshold) for party, group in groups.items()}


def _party(party: str, group: list[BlockScore], threshold: float) -> PartyScore:
    return PartyScore(
        party=party,
        blocks=tuple(s.block for s in group),
        z_distance=float(np.median([s.z_distance for s in group])),
        z_cosine=float(np.median([s.z_cosine for s in group])),
        z_norm=float(np.median([s.z_norm for s in group])),
        max_z=max(s.max_z for s in group),
        flagged_fraction=sum(s.max_z > threshold for s in group) / len(group),
    )


class StabilityMonitor:
    """How abruptly each block's residual changes between epochs.

    r_b(t) = mean_b(t) - c(t), c the coordinate-wise median of the epoch's block means.
    Honest residuals come from fixed data at slowly moving weights, so they drift; a block
    answered with fresh noise, random values or a stale gradient plus noise jumps.
    """

    def __init__(self) -> None:
        self._epoch: int | None = None
        self._current: dict[str, np.ndarray] = {}  # residuals seen at self._epoch
        self._previous: dict[str, np.ndarray] = {}  # residuals of the epoch before it

    def observe(self, epoch: int, blocks: Sequence[BlockGradient]) -> dict[str, float]:
        """Per block: robust z of ||r_b(t) - r_b(t')|| across blocks, t' the last earlier epoch
        observed (high = suspicious).

        Blocks not seen at t' score 0, as does every block when fewer than 3 have a history
        (in particular on the first epoch). Observing the same epoch again re-scores it against
        the same earlier epoch; an epoch before the last one raises ``ValueError``.
        """
        if self._epoch is not None and epoch < self._epoch:
            raise ValueError(f"epoch {epoch} observed after epoch {self._epoch}")
        if self._epoch is not None and epoch > self._epoch:
            self._previous = self._current
        s = stack(blocks)
        residuals = s.means - np.median(s.means, axis=0)
        self._epoch, self._current = epoch, dict(zip(s.ids, residuals, strict=True))
        seen = [i for i, b in enumerate(s.ids) if b in self._previous]
        change = np.array(
            [float(np.linalg.norm(residuals[i] - self._previous[s.ids[i]])) for i in seen]
        )
        out = dict.fromkeys(s.ids, 0.0)
        for i, z in zip(seen, _z(change), strict=True):
            out[s.ids[i]] = float(z)
        return out


def validation_effect(
    blocks_by_party: Mapping[str, Sequence[BlockGradient]],
    weights: np.ndarray,
    loss_fn: Callable[[np.ndarray], float],
    step: float,
    rho: float = 0.0,
) -> dict[str, float]:
    """Zeno-style usefulness per party (Xie, Koyejo, Gupta, ICML 2019):

    score = loss(w) - loss(w - step * g) - rho * ||g||^2, g = the party's sample-weighted mean
    gradient (its blocks' sums over their samples). Positive: its gradient alone lowers the
    requester's validation loss; negative: it makes it worse. ``rho`` penalises large
    gradients. A party without blocks raises ``ValueError``.
    """
    w = np.asarray(weights, dtype=np.float64)
    base = float(loss_fn(w))
    out: dict[str, float] = {}
    for party, blocks in blocks_by_party.items():
        if not blocks:
            raise ValueError(f"party {party} has no blocks")
        s = stack(blocks)
        if s.shape != w.shape:
            raise ValueError(f"party {party}: gradient shape {s.shape} != weights {w.shape}")
        g = (s.counts[:, None] * s.means).sum(axis=0) / s.counts.sum()
        moved = float(loss_fn(w - step * g.reshape(w.shape)))
        out[party] = base - moved - rho * float(g @ g)
    return out
