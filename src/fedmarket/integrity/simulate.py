"""The plaintext twin: the product's protocol, roles and checks with plaintext crypto, at scale.

Encrypted training decrypts to the block totals ``ModelKind.gradient_sums`` computes in
plaintext (CKKS noise, ~2^-20 of a total, aside) and the HE program is deterministic, so a run
with the plaintext crypto (``fedmarket.protocol.plaintext``) makes the same decisions the
encrypted run makes: the same assignment and replication, disputes settled by the owners, the
same monitors and audits, the same disputes on chain, drawn and judged by the contract's rules
(the in-memory ledger is the contract's reference model), the same slashes. ``simulate`` is
only a way to write such a task down (a data set, so many owners and processors, who attacks
and how) and to read the answers back (accuracy on held-out rows, alarms, convictions on
chain, refusals to pay); the run itself is ``fedmarket.run``,
the code users run, with ``fedmarket.protocol.plaintext.Plaintext`` as its crypto.
``benchmarks/integrity.py`` runs its attack x defence matrix on it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from fedmarket.attacks import parse_owner_attack
from fedmarket.attacks.owner import Backdoor
from fedmarket.attacks.processor import clear_side_channel
from fedmarket.data import scale
from fedmarket.integrity.checker import IntegrityConfig
from fedmarket.integrity.types import Evidence
from fedmarket.protocol.plaintext import Plaintext
from fedmarket.run import run_task
from fedmarket.spec import SpecFile
from fedmarket.starter import starter_spec


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
    test_fraction: float = 0.25
    val_fraction: float = 0.1  # of the rest: the requester's validation set


@dataclass
class SimResult:
    config: SimConfig
    accuracy: float  # of the final model on the held-out test rows
    backdoor_success: float | None  # triggered test points (not of the target) -> target
    trigger_rate: float  # the same measured on this run's model whatever the attack (baseline)
    adversaries: list[str]  # party names
    flagged: dict[str, int]  # processor -> epoch it was convicted (slashed on chain)
    flag_evidence: dict[str, list[dict[str, object]]]
    # processor -> first epoch the requester stopped paying it (proven wrong, or statistical
    # alarms no audit cleared): what it gets where nobody can convict it (no auditor)
    alarms: list[tuple[int, str, bool]]  # (epoch, processor, adversarial) for every alarm
    processor_epochs: dict[str, int]  # processor -> epochs it was active (judged)
    stakes_slashed: int
    epoch_seconds: float
    check_seconds: float
    audits: int = 0  # blocks recomputed by their owners over the whole run
    evidence: list[Evidence] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    disputes: int = 0  # opened on chain

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
            "false_refusals": float(sum(1 for p in self.refused if p not in adv)),
            "honest_processor_epochs": float(honest_epochs),
        }


def twin_spec(cfg: SimConfig) -> tuple[SpecFile, list[str]]:
    """The task a config describes, as a spec file; and the adversaries' names."""
    spec = starter_spec(
        f"sklearn:{cfg.dataset}",
        owners=cfg.owners,
        processors=cfg.processors,
        max_epochs=cfg.epochs,
        validation_fraction=cfg.val_fraction,
        seed=cfg.seed,
        test_fraction=cfg.test_fraction,
    )
    data = spec.model_dump()
    i = cfg.integrity
    data["he"]["block_points"] = cfg.block_points
    data["stopping"]["patience"] = 0
    data["integrity"] |= {
        "replication": cfg.replication,
        "aggregator": i.aggregator,
        "z_threshold": i.z_threshold,
        "repeat": i.repeat,
        "window": i.window,
        "monitors": list(i.monitors),
        "audits": i.audits,
    }
    run = data["run"]
    run["split"] = f"dirichlet:{cfg.alpha}" if cfg.split == "dirichlet" else "iid"
    rng = np.random.default_rng(cfg.seed + 17)
    adversaries: list[str] = []
    for side, attack in (("processors", cfg.processor_attack), ("owners", cfg.owner_attack)):
        if attack is None:
            continue
        parties = run[side]
        # at least one adversary when any is asked for (round(0.1 * 5) would be none)
        count = max(1, round(cfg.fraction * len(parties))) if cfg.fraction > 0 else 0
        for j in sorted(rng.choice(len(parties), count, replace=False)) if count else []:
            parties[j]["attack"] = attack
            adversaries.append(parties[j]["name"])
    return SpecFile.model_validate(data), adversaries


def simulate(cfg: SimConfig, *, chain_url: str | None = "memory") -> SimResult:
    """Play the task with the plaintext crypto; return accuracy, detections and flags."""
    spec, adversaries = twin_spec(cfg)
    clear_side_channel()
    start = time.perf_counter()
    result = run_task(spec, workers=0, crypto=Plaintext(), chain_url=chain_url)
    wall = time.perf_counter() - start
    report = result.report
    by_address = {p.address.lower(): p.name for p in report.parties}
    processors = [p.name for p in report.parties if "processor" in p.role.split("+")]
    outcomes = result.outcomes

    def name(address: str) -> str:
        return by_address.get(address.lower(), address)

    flagged: dict[str, int] = {}
    refused: dict[str, int] = {}
    evidence_of: dict[str, list[dict[str, object]]] = {}
    for o in outcomes:
        for p in o.flagged:
            flagged.setdefault(name(p), o.epoch)
        for p in o.not_received:
            refused.setdefault(name(p), o.epoch)
        for f in o.flags:
            evidence_of.setdefault(name(f.party), [e.to_json() for e in f.evidence])
    judged = {
        p: sum(1 for o in outcomes if p not in flagged or o.epoch <= flagged[p]) for p in processors
    }
    alarms = sorted(
        {
            (o.epoch, name(e.party), name(e.party) in adversaries)
            for o in outcomes
            for e in o.evidence
            if e.role == "processor"
        }
    )
    assert result.test is not None
    feats = spec.features
    model = result.model
    X_test = scale(result.test.X, feats.mean, feats.std, feats.spread)
    accuracy = spec.kind.evaluate(model, X_test, result.test.y, spec.labels)
    # The trigger's success on this model, whoever trained it: for a clean run it is the
    # baseline (a trigger can push points to the target class even in a clean model).
    owner_attack = parse_owner_attack(cfg.owner_attack)
    trigger = owner_attack if isinstance(owner_attack, Backdoor) else parse_owner_attack("backdoor")
    assert isinstance(trigger, Backdoor)
    target = trigger.target_class(list(spec.labels.classes))
    keep = result.test.y != target
    triggered = scale(
        trigger.apply_trigger(result.test.X[keep], feats), feats.mean, feats.std, feats.spread
    )
    rate = float(np.mean(model.predict(triggered) == target)) if keep.any() else 0.0
    epochs = max(len(outcomes), 1)
    return SimResult(
        config=cfg,
        accuracy=accuracy,
        backdoor_success=rate if isinstance(owner_attack, Backdoor) else None,
        trigger_rate=rate,
        adversaries=sorted(adversaries),
        flagged=flagged,
        flag_evidence=evidence_of,
        alarms=alarms,
        processor_epochs=judged,
        stakes_slashed=len(flagged),
        epoch_seconds=(sum(o.seconds for o in outcomes) / epochs) if outcomes else wall,
        check_seconds=sum(o.check_seconds for o in outcomes) / epochs,
        audits=sum(len(o.audited) for o in outcomes),
        evidence=[e for o in outcomes for e in o.evidence],
        refused=refused,
        disputes=sum(1 for o in outcomes for d in o.disputes if d.dispute is not None),
    )


__all__ = ["SimConfig", "SimResult", "simulate", "twin_spec"]
