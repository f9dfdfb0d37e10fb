"""The plaintext twin of a task's epochs, for measuring attacks against defences at scale.

Encrypted training decrypts to the block totals ``fedmarket.models.training.gradient_sums``
computes in plaintext (same cubic sigmoid, same optimiser, same guard; the CKKS noise is ~2^-20
of a total and is left out), and the HE program is deterministic, so replicas agree byte for
byte exactly when their totals agree. This module replays a task at that level - owners, blocks,
the secret-replication assignment, processors honest or attacking, the owner as arbiter of
disputes, the requester's ``EpochChecker`` - thousands of times faster than under encryption.
``benchmarks/integrity.py`` runs the attack x defence matrix on it; ``tests/test_run.py``
checks the same checks catch the same attackers on the real encrypted protocol.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from fedmarket.attacks import parse_owner_attack, parse_processor_attack
from fedmarket.attacks.owner import Backdoor
from fedmarket.data import Dataset, load_dataset, partition, scale, scaling_constants
from fedmarket.integrity.checker import EpochChecker, IntegrityConfig
from fedmarket.integrity.replication import find_disputes, settle
from fedmarket.integrity.types import BlockGradient, Evidence, Strength
from fedmarket.integrity.validation import reference_gradient, validation_loss
from fedmarket.models.optim import NesterovGD
from fedmarket.models.sigmoid import DEFAULT_SIGMOID
from fedmarket.models.training import (
    IntervalGuard,
    TrainConfig,
    encode_labels,
    gradient_sums,
    model_from_weights,
    score,
)
from fedmarket.roles.assignment import BlockInfo, plan_assignment
from fedmarket.roles.messages import BlockRef

SPREAD = 2.5  # the spec's default


def address(role: str, index: int) -> str:
    """A stable fake address per simulated party (the assignment code wants addresses)."""
    digest = hashlib.sha256(f"{role}/{index}".encode()).hexdigest()[:40]
    return "0x" + digest


@dataclass(frozen=True)
class SimConfig:
    dataset: str = "digits"  # a scikit-learn data set
    split: str = "iid"  # or "dirichlet"
    alpha: float = 0.5
    owners: int = 10
    processors: int = 10
    block_points: int = 32
    replication: float = 0.1
    epochs: int = 20
    seed: int = 0
    processor_attack: str | None = None
    owner_attack: str | None = None
    fraction: float = 0.0  # of processors (processor attack) or owners (owner attack)
    integrity: IntegrityConfig = field(default_factory=IntegrityConfig)
    audit: bool = True  # owners recompute suspicious blocks (False: no auditor reachable)
    test_fraction: float = 0.25
    val_fraction: float = 0.1  # of the rest: the requester's validation set


@dataclass
class SimResult:
    config: SimConfig
    accuracy: float
    backdoor_success: float | None  # triggered test points (not of the target) -> target
    trigger_rate: float  # the same measured on this run's model whatever the attack (baseline)
    adversaries: list[str]
    flagged: dict[str, int]  # processor -> epoch flagged
    flag_evidence: dict[str, list[Evidence]]
    alarms: list[tuple[int, str, bool]]  # (epoch, processor, adversarial) for every alarm
    processor_epochs: dict[str, int]  # processor -> epochs it was active (judged)
    stakes_slashed: int
    epoch_seconds: float
    check_seconds: float
    audits: int = 0  # blocks recomputed by their owners over the whole run

    def rates(self) -> dict[str, float]:
        """Alarm TPR/FPR per processor-epoch, and false slashes per honest processor-epoch."""
        adv = set(self.adversaries)
        adv_epochs = sum(n for p, n in self.processor_epochs.items() if p in adv)
        honest_epochs = sum(n for p, n in self.processor_epochs.items() if p not in adv)
        hits = {(e, p) for e, p, a in self.alarms if a}
        false = {(e, p) for e, p, a in self.alarms if not a}
        return {
            "tpr": len(hits) / adv_epochs if adv_epochs else math.nan,
            "fpr": len(false) / honest_epochs if honest_epochs else math.nan,
            "false_slashes": float(sum(1 for p in self.flagged if p not in adv)),
            "honest_processor_epochs": float(honest_epochs),
        }


def _matches(honest: dict[str, np.ndarray], block: BlockGradient) -> bool:
    """The owner's audit in the twin: the program is deterministic, so equal or not."""
    return bool(np.array_equal(block.sums, honest[block.block]))


def _load(cfg: SimConfig) -> tuple[Dataset, Dataset, Dataset]:
    data = load_dataset(f"sklearn:{cfg.dataset}")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(data))
    n_test = round(cfg.test_fraction * len(data))
    n_val = round(cfg.val_fraction * (len(data) - n_test))
    test = data.take(order[:n_test])
    val = data.take(order[n_test : n_test + n_val])
    train = data.take(order[n_test + n_val :])
    return train, val, test


def simulate(cfg: SimConfig) -> SimResult:
    """Play ``cfg.epochs`` epochs; return accuracy, detections and flags."""
    train, val, test = _load(cfg)
    kind: str = "logistic" if np.unique(train.y).size == 2 else "multiclass"
    classes, _ = encode_labels(kind, train.y)
    mean, std = scaling_constants(train)
    features = SimpleNamespace(mean=mean, std=std, spread=SPREAD)

    def scaled(X: np.ndarray) -> np.ndarray:
        return scale(X, mean, std, SPREAD)

    def targets(y: np.ndarray) -> np.ndarray:
        return (
            (y[:, None] == classes[None, :]).astype(np.float64)[:, -1:]
            if kind == ("logistic")
            else (y[:, None] == classes[None, :]).astype(np.float64)
        )

    rng = np.random.default_rng(cfg.seed + 17)
    size = len(train) // cfg.owners
    alpha = cfg.alpha if cfg.split == "dirichlet" else None
    shares = partition(train, [size] * cfg.owners, seed=cfg.seed + 1, alpha=alpha)
    owners = [address("owner", i) for i in range(cfg.owners)]
    processors = [address("processor", i) for i in range(cfg.processors)]
    owner_attack = parse_owner_attack(cfg.owner_attack)
    proc_attack = parse_processor_attack(cfg.processor_attack)
    n_bad_owners = round(cfg.fraction * cfg.owners) if owner_attack else 0
    n_bad_procs = round(cfg.fraction * cfg.processors) if proc_attack else 0
    bad_owners = set(rng.choice(owners, n_bad_owners, replace=False)) if n_bad_owners else set()
    bad_procs = set(rng.choice(processors, n_bad_procs, replace=False)) if n_bad_procs else set()

    # Owners' blocks (plaintext here; what they would encrypt).
    block_X: dict[str, np.ndarray] = {}
    block_t: dict[str, np.ndarray] = {}
    block_owner: dict[str, str] = {}
    infos = []
    for owner, share in zip(owners, shares, strict=True):
        X, y = share.X, share.y
        if owner in bad_owners and owner_attack is not None:
            X, y = owner_attack.apply(X, y, features=features, classes=list(classes), rng=rng)
        Xs, t = scaled(X), targets(y)
        count = -(-len(y) // cfg.block_points)
        bounds = np.linspace(0, len(y), count + 1).round().astype(int)
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            ref = BlockRef(owner=owner, index=i)
            bid = f"{owner}/{i}"
            block_X[bid], block_t[bid], block_owner[bid] = Xs[a:b], t[a:b], owner
            infos.append(BlockInfo(ref, int(b - a)))
    fill = -(-sum(i.size for i in infos) // cfg.processors)
    plan = plan_assignment(
        1,
        infos,
        dict.fromkeys(processors, fill),
        replication=cfg.replication,
        rng=random.Random(cfg.seed),
    )
    assigned = {
        p: [f"{r.owner}/{r.index}" for r in refs] for p, refs in plan.assignment.blocks.items()
    }

    X_val, t_val = scaled(val.X), targets(val.y)
    config = TrainConfig(epochs=cfg.epochs)
    n_out = t_val.shape[1]
    opt = NesterovGD(n_out, X_val.shape[1], config.optimizer(kind))
    guard = IntervalGuard(X_val, config.radius(kind))
    loss = validation_loss(kind, X_val, t_val)
    checker = EpochChecker(cfg.integrity)
    active = set(processors)
    memories: dict[str, dict[Any, Any]] = {p: {} for p in processors}
    proc_rng = {p: np.random.default_rng(cfg.seed * 7919 + i) for i, p in enumerate(processors)}
    flagged: dict[str, int] = {}
    evidence_of: dict[str, list[Evidence]] = {}
    alarms: list[tuple[int, str, bool]] = []
    judged = dict.fromkeys(processors, 0)
    epoch_seconds = check_seconds = 0.0
    audits = 0
    stake = 1  # one unit per processor; scaled by the benchmark

    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        W = opt.lookahead
        honest = {b: gradient_sums(kind, W, block_X[b], block_t[b]) for b in block_X}
        n_samples = {b: len(block_t[b]) for b in block_X}
        totals: dict[str, dict[str, np.ndarray]] = {}
        for p in sorted(active):
            mine = assigned[p]
            if p in bad_procs and proc_attack is not None:
                need = proc_attack.needs_honest(epoch)
                out = proc_attack.plain(
                    epoch,
                    {b: honest[b] for b in mine} if need else None,
                    {b: n_samples[b] for b in mine},
                    proc_rng[p],
                    memories[p],
                    shape=(n_out, X_val.shape[1] + 1),
                )
                totals[p] = {b: out[b] for b in mine}
            else:
                totals[p] = {b: honest[b] for b in mine}
        check_start = time.perf_counter()
        digests = {
            p: {b: hashlib.sha256(np.ascontiguousarray(v).tobytes()).digest() for b, v in d.items()}
            for p, d in totals.items()
        }
        proven: list[Evidence] = []
        chosen: dict[str, tuple[str, np.ndarray]] = {}
        for p in sorted(totals):
            for b, v in totals[p].items():
                chosen.setdefault(b, (p, v))
        reach = float(np.max(np.sum(np.abs(W), axis=1)))
        residual_bound = DEFAULT_SIGMOID.max_abs_on(reach) + 1.0
        for dispute in find_disputes(digests):
            truth = hashlib.sha256(honest[dispute.block].tobytes()).digest()
            s = settle(dispute, truth, epoch=epoch, arbiter=f"owner {block_owner[dispute.block]}")
            proven += s.evidence
            if s.truthful is not None:
                chosen[dispute.block] = (s.truthful, totals[s.truthful][dispute.block])
            else:
                chosen.pop(dispute.block, None)
        for b, (p, v) in list(chosen.items()):
            if not np.all(np.isfinite(v)) or np.max(np.abs(v)) > n_samples[b] * residual_bound:
                proven.append(
                    Evidence(
                        p,
                        "processor",
                        epoch,
                        "out-of-bound",
                        Strength.PROVEN,
                        f"block {b}: totals exceed what any honest block can produce",
                        1.0,
                        (b,),
                    )
                )
        bad = {e.party for e in proven if e.kind == "out-of-bound"}
        blocks = [
            BlockGradient(b, p, block_owner[b], n_samples[b], v)
            for b, (p, v) in chosen.items()
            if p not in bad
        ]
        verdict = checker.check(
            epoch,
            blocks,
            proven=proven,
            active=set(active),
            reference=reference_gradient(kind, W, X_val, t_val),
            loss=loss,
            weights=W,
            step=config.optimizer(kind).learning_rate,
            audit=functools.partial(_matches, honest) if cfg.audit else None,
        )
        check_seconds += time.perf_counter() - check_start
        audits += len(verdict.audited)
        for p in active:
            judged[p] += 1
        accused = {e.party for e in verdict.evidence if e.role == "processor"}
        alarms += [(epoch, p, p in bad_procs) for p in sorted(accused)]
        for f in verdict.flags:
            flagged[f.party] = epoch
            evidence_of[f.party] = list(f.evidence)
            active.discard(f.party)
        if verdict.gradient is not None:
            opt.step(verdict.gradient, project=guard)
        epoch_seconds += time.perf_counter() - start
        if not active:
            break

    model = model_from_weights(kind, opt.weights, classes)
    X_test = scaled(test.X)
    accuracy = score(model, X_test, test.y)
    # The trigger's success on this model, whoever trained it: for a clean run it is the
    # baseline (a trigger can push points to the target class even in a clean model).
    trigger = owner_attack if isinstance(owner_attack, Backdoor) else parse_owner_attack("backdoor")
    assert isinstance(trigger, Backdoor)
    target = trigger.target_class(list(classes))
    keep = test.y != target
    triggered = scaled(trigger.apply_trigger(test.X[keep], features))
    rate = float(np.mean(model.predict(triggered) == target)) if keep.any() else 0.0
    return SimResult(
        config=cfg,
        accuracy=accuracy,
        backdoor_success=rate if isinstance(owner_attack, Backdoor) else None,
        trigger_rate=rate,
        adversaries=sorted(bad_procs | bad_owners),
        flagged=flagged,
        flag_evidence=evidence_of,
        alarms=alarms,
        processor_epochs=judged,
        stakes_slashed=stake * len(flagged),
        epoch_seconds=epoch_seconds / max(cfg.epochs, 1),
        check_seconds=check_seconds / max(cfg.epochs, 1),
        audits=audits,
    )
