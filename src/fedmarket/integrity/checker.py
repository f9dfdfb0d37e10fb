"""One epoch of integrity checks on decrypted block gradients: evidence, aggregate, flags.

``EpochChecker`` is what the requester runs after decrypting an epoch's block totals (and what
the simulation benchmark runs on the plaintext twin of the same totals):

1. blocks of processors already proven dishonest this epoch (replication disputes, results no
   honest block can decrypt to) are dropped;
2. the statistical monitors score every block (distance, cosine and norm against the robust
   centre; stability against its own previous epoch) and every party; a processor is scored
   only on blocks whose owner is not itself an outlier, so an honest processor that happened
   to compute a poisoned owner's blocks is not blamed for them;
3. the validation effect (Zeno-like): each processor's gradient applied alone must not raise
   the requester's validation loss far more than the others';
4. **audits** turn suspicion into proof: each processor with an alarm has its most anomalous
   block recomputed by the block's owner (who kept its ciphertexts; the program is
   deterministic), plus up to ``audits`` more of the most anomalous blocks overall. A
   mismatch is proven evidence; a match clears that processor's alarm for the epoch (the
   anomaly is the data's, e.g. a non-IID owner). Without an auditor the alarms stand;
5. the flag policy turns evidence into flags (proven at once, statistical only when repeated);
6. the robust aggregator named in the task spec combines the blocks of the unflagged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedmarket.integrity.aggregators import get_aggregator
from fedmarket.integrity.monitors import StabilityMonitor, block_scores, robust_z, validation_effect
from fedmarket.integrity.policy import Flag, FlagPolicy
from fedmarket.integrity.types import BlockGradient, Evidence, Strength

MONITORS = ("distance", "cosine", "norm", "stability", "validation")


@dataclass(frozen=True)
class IntegrityConfig:
    """The requester's checks, as announced in the task spec's ``[integrity]`` section."""

    aggregator: str = "fltrust"
    z_threshold: float = 4.0
    repeat: int = 2
    window: int = 3
    monitors: tuple[str, ...] = MONITORS
    audits: int = 2  # extra recomputations per epoch beyond one per alarmed processor
    # Blocks above this robust z are audit candidates: lower than z_threshold, because an
    # audit cannot slash an honest processor (its result matches), it only costs a recompute.
    audit_threshold: float = 2.5
    # Owners whose blocks are outliers in `repeat` of `window` epochs stop counting (the
    # contract cannot slash an owner; leaving its data out is what the requester can do).
    quarantine: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.monitors) - set(MONITORS)
        if unknown:
            raise ValueError(f"unknown monitors {sorted(unknown)}; choose from {MONITORS}")
        if not self.z_threshold > 0:
            raise ValueError("z_threshold must be positive")
        get_aggregator(self.aggregator)  # fails early on a bad name


@dataclass(frozen=True)
class EpochVerdict:
    """What the checks decided for one epoch."""

    epoch: int
    gradient: np.ndarray | None  # the aggregated per-sample mean gradient (None: no blocks)
    weights: dict[str, float]  # block -> weight the aggregator gave it
    evidence: list[Evidence]
    flags: list[Flag]
    used_blocks: int
    audited: dict[str, bool] = field(default_factory=dict)  # block -> did the recomputation match
    quarantined: frozenset[str] = frozenset()  # owners whose blocks no longer count

    @property
    def flagged(self) -> list[str]:
        return [f.party for f in self.flags]


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else 0.0


@dataclass
class EpochChecker:
    """Stateful across a task's epochs (the stability monitor and the flag policy remember)."""

    config: IntegrityConfig = field(default_factory=IntegrityConfig)
    policy: FlagPolicy = field(init=False)
    stability: StabilityMonitor = field(default_factory=StabilityMonitor, init=False)
    owner_alarms: dict[str, set[int]] = field(default_factory=dict, init=False)
    quarantined: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.policy = FlagPolicy(repeat=self.config.repeat, window=self.config.window)

    def check(
        self,
        epoch: int,
        blocks: list[BlockGradient],
        *,
        proven: list[Evidence],
        active: set[str],
        reference: np.ndarray | None = None,
        loss: Callable[[np.ndarray], float] | None = None,
        weights: np.ndarray | None = None,
        step: float = 1.0,
        audit: Callable[[BlockGradient], bool | None] | None = None,
    ) -> EpochVerdict:
        """``reference``: the requester's own validation gradient; ``loss``/``weights``/``step``
        feed the validation monitor (the loss at some weights, the weights the gradients were
        taken at, the learning rate); ``audit`` recomputes a block and says whether the
        processor's result matches (None: could not be done)."""
        liars = {e.party for e in proven if e.role == "processor"}
        kept = [b for b in blocks if b.processor not in liars]
        statistical, block_z = self._statistics(epoch, kept, reference, loss, weights, step)
        audited: dict[str, bool] = {}
        if audit is not None:
            statistical, found, audited = self._audit(epoch, kept, statistical, block_z, audit)
            proven = list(proven) + found
            liars |= {e.party for e in found}
        evidence = list(proven) + statistical
        flags = self.policy.decide(epoch, evidence, active)
        convicted = liars | {f.party for f in flags}
        if self.config.quarantine:
            self._quarantine(epoch, statistical)
        used = [b for b in kept if b.processor not in convicted and b.owner not in self.quarantined]
        quarantined = frozenset(self.quarantined)
        if not used:
            return EpochVerdict(epoch, None, {}, evidence, flags, 0, audited, quarantined)
        aggregate = get_aggregator(self.config.aggregator)(used, reference=reference)
        return EpochVerdict(
            epoch,
            aggregate.gradient,
            aggregate.weights,
            evidence,
            flags,
            len(used),
            audited,
            quarantined,
        )

    def _quarantine(self, epoch: int, statistical: list[Evidence]) -> None:
        for e in statistical:
            if e.role == "owner":
                self.owner_alarms.setdefault(e.party, set()).add(epoch)
        window = self.config.window
        for owner, epochs in self.owner_alarms.items():
            if len([t for t in epochs if epoch - window < t <= epoch]) >= self.config.repeat:
                self.quarantined.add(owner)

    def _audit(
        self,
        epoch: int,
        blocks: list[BlockGradient],
        statistical: list[Evidence],
        block_z: dict[str, float],
        audit: Callable[[BlockGradient], bool | None],
    ) -> tuple[list[Evidence], list[Evidence], dict[str, bool]]:
        """Recompute suspicious blocks: (remaining statistical, proven, block -> matched)."""
        by_id = {b.block: b for b in blocks}
        alarmed = [e for e in statistical if e.role == "processor"]
        order: list[str] = []
        for e in sorted(alarmed, key=lambda e: -e.score):
            mine = [b for b in e.blocks if b in by_id]
            if mine:
                order.append(max(mine, key=lambda b: block_z.get(b, 0.0)))
        extra = [
            b
            for b, z in sorted(block_z.items(), key=lambda kv: -kv[1])
            if z > self.config.audit_threshold and b not in order
        ]
        order += extra[: self.config.audits]
        audited: dict[str, bool] = {}
        proven: list[Evidence] = []
        for block in order:
            if by_id[block].processor in {e.party for e in proven}:
                continue
            answer = audit(by_id[block])
            if answer is None:
                continue
            audited[block] = answer
            if not answer:
                proven.append(
                    Evidence(
                        party=by_id[block].processor,
                        role="processor",
                        epoch=epoch,
                        kind="audit",
                        strength=Strength.PROVEN,
                        detail=(
                            f"block {block} (robust z {block_z.get(block, 0.0):.1f}) was "
                            "recomputed by its owner and the results differ"
                        ),
                        score=1.0,
                        blocks=(block,),
                    )
                )
        cleared = {by_id[b].processor for b, ok in audited.items() if ok}
        liars = {e.party for e in proven}
        remaining = [
            e
            for e in statistical
            if not (e.role == "processor" and (e.party in cleared or e.party in liars))
        ]
        return remaining, proven, audited

    # ------------------------------------------------------------------ monitors

    def _statistics(
        self,
        epoch: int,
        blocks: list[BlockGradient],
        reference: np.ndarray | None,
        loss: Callable[[np.ndarray], float] | None,
        weights: np.ndarray | None,
        step: float,
    ) -> tuple[list[Evidence], dict[str, float]]:
        on = set(self.config.monitors)
        threshold = self.config.z_threshold
        if len(blocks) < 3:
            return [], {}
        scores = block_scores(blocks, reference)
        z: dict[str, dict[str, float]] = {b.block: {} for b in blocks}
        for b in blocks:
            s = scores[b.block]
            if "distance" in on:
                z[b.block]["distance"] = s.z_distance
            if "cosine" in on:
                z[b.block]["cosine"] = s.z_cosine
            if "norm" in on:
                z[b.block]["norm"] = abs(s.z_norm)
        if "stability" in on:
            for block, value in self.stability.observe(epoch, blocks).items():
                z[block]["stability"] = value
        out: list[Evidence] = []
        # Owners first: an owner whose blocks are outliers whoever computes them is the cause.
        by_owner: dict[str, list[BlockGradient]] = defaultdict(list)
        by_processor: dict[str, list[BlockGradient]] = defaultdict(list)
        for b in blocks:
            by_owner[b.owner].append(b)
            by_processor[b.processor].append(b)
        suspicious_owners: set[str] = set()
        for owner, owned in sorted(by_owner.items()):
            kind, score = self._party_z(owned, z)
            if score > threshold:
                out.append(self._evidence(owner, "owner", epoch, kind, score, owned))
                # Only outliers computed by two or more processors exonerate the processors;
                # otherwise the audit decides whose fault it is.
                hot = {
                    b.processor for b in owned if max(z[b.block].values(), default=0) > threshold
                }
                if len(hot) >= 2:
                    suspicious_owners.add(owner)
        for processor, mine in sorted(by_processor.items()):
            clean = [b for b in mine if b.owner not in suspicious_owners]
            kind, score = self._party_z(clean, z)
            if score > threshold:
                out.append(self._evidence(processor, "processor", epoch, kind, score, clean))
        if "validation" in on and loss is not None and weights is not None:
            out += self._validation(epoch, by_processor, loss, weights, step, threshold)
        block_z = {b: max(zs.values(), default=0.0) for b, zs in z.items()}
        return out, block_z

    @staticmethod
    def _party_z(blocks: list[BlockGradient], z: dict[str, dict[str, float]]) -> tuple[str, float]:
        """The party's strongest monitor: the median over its blocks of each monitor's z."""
        if not blocks:
            return "", 0.0
        kinds = sorted({k for b in blocks for k in z[b.block]})
        medians = {k: _median([z[b.block][k] for b in blocks if k in z[b.block]]) for k in kinds}
        if not medians:
            return "", 0.0
        kind = max(medians, key=lambda k: medians[k])
        return kind, medians[kind]

    @staticmethod
    def _evidence(
        party: str, role: str, epoch: int, kind: str, score: float, blocks: list[BlockGradient]
    ) -> Evidence:
        return Evidence(
            party=party,
            role=role,
            epoch=epoch,
            kind=kind,
            strength=Strength.STATISTICAL,
            detail=f"median robust z of {kind} over its {len(blocks)} blocks is {score:.1f}",
            score=score,
            blocks=tuple(b.block for b in blocks),
        )

    def _validation(
        self,
        epoch: int,
        by_processor: dict[str, list[BlockGradient]],
        loss: Callable[[np.ndarray], float],
        weights: np.ndarray,
        step: float,
        threshold: float,
    ) -> list[Evidence]:
        if len(by_processor) < 3:
            return []
        effect = validation_effect(dict(by_processor), weights, loss, step)
        parties = sorted(effect)
        # Low (harmful) effect is suspicious: z of the negated effect.
        scores = robust_z(-np.array([effect[p] for p in parties]))
        return [
            Evidence(
                party=p,
                role="processor",
                epoch=epoch,
                kind="validation",
                strength=Strength.STATISTICAL,
                detail=(
                    f"its gradient alone changes the validation loss by {-effect[p]:+.4g}; "
                    f"robust z {score:.1f} against the other processors"
                ),
                score=float(score),
                blocks=tuple(b.block for b in by_processor[p]),
            )
            for p, score in zip(parties, scores, strict=True)
            if score > threshold
        ]
