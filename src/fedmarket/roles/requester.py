"""The requester: announces the task, holds the secret key, updates the model, pays.

It never receives data ciphertexts (they are sealed to processors) and only ever decrypts
block-level gradient totals (``TaskKeys.decrypt_result``), so no per-sample value reaches it.
Every result is checked against the digest its processor committed on chain, and replicated
blocks must give byte-identical results; a disagreement is settled by the block's owner
recomputing it (``recompute``, which the driver wires to the owner through the transport).
The decrypted totals then go through ``fedmarket.integrity``: statistical monitors, audits
(the owner recomputes suspicious blocks, so an outlier that is the data's and not the
processor's is cleared), the robust aggregator and the flag policy, whose flags
``close_epoch`` slashes on chain.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmarket.backbone import task_features
from fedmarket.chain.client import Side, TaskState
from fedmarket.chain.events import ResultSubmitted
from fedmarket.data import scale
from fedmarket.errors import FedmarketError, UntrustedInputError
from fedmarket.integrity.checker import EpochChecker, IntegrityConfig
from fedmarket.integrity.policy import Flag
from fedmarket.integrity.replication import find_disputes, settle
from fedmarket.integrity.types import BlockGradient, Evidence, Strength
from fedmarket.integrity.validation import reference_gradient, validation_loss
from fedmarket.models.kinds import ModelKind
from fedmarket.models.linear import Model
from fedmarket.models.training import TrainConfig, Trainer
from fedmarket.protocol.crypto import TaskKeys
from fedmarket.roles.assignment import BlockInfo, Plan, assignment_hash, plan_assignment
from fedmarket.roles.messages import (
    Assignment,
    BlockRef,
    DataManifest,
    EncryptedModel,
    EpochResult,
    TaskAnnouncement,
)
from fedmarket.roles.owner import block_id
from fedmarket.roles.party import Party
from fedmarket.roles.stopping import EpochView, StoppingRule, first_reason
from fedmarket.spec import TaskSpec

# Asks a block's owner to recompute it from its own ciphertexts: the result bytes, or None.
Recompute = Callable[[BlockRef, EncryptedModel], bytes | None]


@dataclass(frozen=True)
class Mismatch:
    """Two processors returned different results for the same replicated block."""

    block: BlockRef
    processors: tuple[str, str]


@dataclass(frozen=True)
class EpochOutcome:
    """What the requester saw and decided in one epoch."""

    epoch: int
    metric: float
    on_time: list[str]
    late: list[str]
    missing: list[str]
    flagged: list[str]
    mismatches: list[Mismatch]
    rejected: dict[str, str]  # processor -> why its result was refused
    blocks_used: int
    stop_reason: str | None
    seconds: float
    evidence: list[Evidence] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    check_seconds: float = 0.0  # replication, decryption checks, monitors and aggregation
    audited: dict[str, bool] = field(default_factory=dict)  # block -> the owner's recompute matched

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None


@dataclass
class Requester(Party):
    """Owns the problem, the validation set and the secret key."""

    spec: TaskSpec | None = None
    X_val: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    y_val: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rules: list[StoppingRule] = field(default_factory=list)
    seed: int = 0
    # The runtime's clock: moves a development chain forward, or sleeps on a real one.
    wait_until: Callable[[int], None] | None = None
    # own-compute: every owner processes its own blocks (no replication is possible)
    self_processing: bool = False
    # Wired by the driver to the block's owner; None: no dispute can be settled, no audit run.
    recompute: Recompute | None = None
    base: Path | None = None  # where the spec's files (a backbone) are
    _features: np.ndarray | None = field(default=None, init=False)  # X_val as the task sees it
    keys: TaskKeys | None = field(default=None, init=False)
    optimizer: Trainer | None = field(default=None, init=False)
    owners: dict[str, int] = field(default_factory=dict, init=False)  # address -> points
    processors: dict[str, int] = field(default_factory=dict, init=False)  # address -> fill
    epoch_cost: int = field(default=0, init=False)
    manifests: dict[str, DataManifest] = field(default_factory=dict, init=False)
    plan: Plan | None = field(default=None, init=False)
    epoch: int = field(default=0, init=False)
    results: dict[str, EpochResult] = field(default_factory=dict, init=False)
    rejected: dict[str, str] = field(default_factory=dict, init=False)
    history: list[float] = field(default_factory=list, init=False)
    outcomes: list[EpochOutcome] = field(default_factory=list, init=False)
    checker: EpochChecker | None = field(default=None, init=False)
    slashed: set[str] = field(default_factory=set, init=False)
    _model_msg: EncryptedModel | None = field(default=None, init=False)
    _epoch_start: float = field(default=0.0, init=False)
    _epoch_block: int = field(default=0, init=False)  # logs of this epoch start here

    # ------------------------------------------------------------ setup

    @property
    def kind(self) -> ModelKind:
        assert self.spec is not None
        return self.spec.kind

    @property
    def classes(self) -> np.ndarray:
        assert self.spec is not None
        return np.asarray(self.spec.labels.classes)

    def _scaled_val(self) -> np.ndarray:
        # The model lives in the spec's scaled feature space, like the owners' ciphertexts
        # (a backbone's embeddings first, when the spec names one).
        assert self.spec is not None
        if self._features is None:
            self._features = task_features(self.spec, self.X_val, base=self.base)
        f = self.spec.features
        return scale(self._features, f.mean, f.std, f.spread)

    def announce(self) -> TaskAnnouncement:
        """Make the task's keys, escrow both budgets, create the task on chain."""
        spec = self.spec
        assert spec is not None
        n_features = len(spec.features.names)
        n_outputs = self.kind.n_outputs(spec.labels.classes)
        self.keys = self.crypto.keygen(
            kind=self.kind,
            n_features=n_features,
            n_outputs=n_outputs,
            preset=spec.he.preset,
            expected_samples=spec.task.num_points,
            hidden=spec.task.hidden,
        )
        context = self.keys.public.data
        budget = spec.budget.data + spec.budget.processing
        self.token.approve(self.market.address, budget)
        receipt = self.market.create_task(
            spec.spec_hash(),
            hashlib.sha256(context).digest(),
            spec.task.num_points,
            spec.task.epoch_seconds,
            spec.task.max_epochs,
            spec.budget.data,
            spec.budget.processing,
            spec.task.bidding_seconds,
            spec.task.late_penalty_bps,
        )
        self.paid_in += budget
        self.transfers.append(("escrow", -budget))
        self.task_id = receipt.value
        config = TrainConfig(epochs=spec.task.max_epochs)
        self.optimizer = Trainer(
            self.kind, n_features, n_outputs, config, self._scaled_val(),
            hidden=self.keys.public.layout.hidden,
        )  # fmt: skip
        i = spec.integrity
        self.checker = EpochChecker(
            IntegrityConfig(
                aggregator=i.aggregator,
                z_threshold=i.z_threshold,
                repeat=i.repeat,
                window=i.window,
                monitors=tuple(i.monitors),
                audits=i.audits,
            )
        )
        return TaskAnnouncement(
            task_id=self.task_id,
            market=self.market.address,
            spec_json=spec.canonical_json(),
            public_context=context,
        )

    def resolve(self) -> None:
        """Submit the greedy allocation (after the bidding deadline) and learn the winners."""
        assert self.task_id is not None
        allocation = self.market.resolve_greedy(self.task_id).value
        self.owners = {
            self.market.get_bid(self.task_id, Side.DATA, f.bid).bidder: f.amount
            for f in allocation.data
        }
        self.processors = {
            self.market.get_bid(self.task_id, Side.PROCESSING, f.bid).bidder: f.amount
            for f in allocation.processing
        }
        self.epoch_cost = allocation.processing_cost_per_epoch

    def on_manifest(self, manifest: DataManifest) -> None:
        """Record an owner's blocks (sizes only) once they match its on-chain data root."""
        self.check_manifest(manifest)
        self.manifests[manifest.owner.lower()] = manifest

    def assign(self) -> Assignment:
        """Spread the delivered blocks over the processors and commit the assignment's hash."""
        assert self.spec is not None and self.task_id is not None
        blocks = [
            BlockInfo(BlockRef(owner=m.owner, index=i), size)
            for m in self.manifests.values()
            for i, size in enumerate(m.block_sizes)
        ]
        if not blocks:
            raise FedmarketError(
                "no winning data owner delivered a manifest; nothing to train on",
                hint="the task can be ended with `claim_timeout` once its deadline passes",
            )
        if self.self_processing:
            mine: dict[str, list[BlockRef]] = {p: [] for p in self.processors}
            for b in blocks:
                owner = next((p for p in mine if p.lower() == b.ref.owner.lower()), None)
                if owner is None:
                    raise FedmarketError(
                        f"owner {b.ref.owner} delivered data but does not process it",
                        hint="in own-compute every winning owner must also win processing",
                    )
                mine[owner].append(b.ref)
            self.plan = Plan(Assignment(task_id=self.task_id, blocks=mine), frozenset())
        else:
            self.plan = plan_assignment(
                self.task_id,
                blocks,
                self.processors,
                replication=self.spec.integrity.replication,
                rng=random.Random(self.seed),
            )
        self.market.commit_assignment(self.task_id, self.plan.hash)
        return self.plan.assignment

    # ------------------------------------------------------------ epochs

    def model_message(self) -> EncryptedModel:
        """The encrypted look-ahead weights for the current epoch."""
        assert self.keys is not None and self.optimizer is not None and self.task_id is not None
        self._epoch_start = time.perf_counter()
        # Reading logs only from here keeps each query proportional to one epoch, not the chain.
        self._epoch_block = self.market.block_number()
        self.results = {}
        self.rejected = {}
        payload = self.keys.encrypt_model(self.optimizer.lookahead, epoch=self.epoch)
        self._model_msg = EncryptedModel(task_id=self.task_id, epoch=self.epoch, payload=payload)
        return self._model_msg

    @property
    def active(self) -> set[str]:
        """Winning processors still in the task (a slashed one has left it)."""
        return {p for p in self.processors if p not in self.slashed}

    def on_result(self, result: EpochResult) -> None:
        """Accept a processor's results if they are for now, from a winner, and match the chain."""
        assert self.plan is not None and self.task_id is not None
        party = f"processor {result.processor}"
        who = result.processor
        if who not in self.processors:
            raise UntrustedInputError("is not a winning processor of this task", party=party)
        if result.task_id != self.task_id or result.epoch != self.epoch:
            raise UntrustedInputError(
                f"sent results for epoch {result.epoch}, not {self.epoch}", party=party
            )
        if len(result.blocks) != len(result.payloads):
            raise UntrustedInputError("sent a different number of blocks and results", party=party)
        assigned = set(self.plan.assignment.blocks.get(who, []))
        if not set(result.blocks) <= assigned or len(set(result.blocks)) != len(result.blocks):
            raise UntrustedInputError("sent results for blocks not assigned to it", party=party)
        committed = [e.digest for e in self._epoch_results() if e.processor.lower() == who.lower()]
        if not committed or committed[-1] != result.digest():
            self.rejected[who] = "results do not match the digest committed on chain"
            raise UntrustedInputError(self.rejected[who], party=party)
        self.results[who] = result

    def _epoch_results(self) -> list[ResultSubmitted]:
        """This epoch's ResultSubmitted events, read from the block the epoch's model went out."""
        assert self.task_id is not None
        logs = self.market.logs(ResultSubmitted, task=self.task_id, from_block=self._epoch_block)
        return [e for e in logs if e.epoch == self.epoch]

    def _recomputed(self, ref: BlockRef) -> bytes | None:
        """sha256 of the owner's own recomputation of a block for this epoch's model."""
        if self.recompute is None or self._model_msg is None:
            return None
        answer = self.recompute(ref, self._model_msg)
        return None if answer is None else hashlib.sha256(answer).digest()

    def _cross_check(
        self,
    ) -> tuple[
        dict[BlockRef, tuple[str, bytes]], list[Mismatch], list[Evidence], dict[str, BlockRef]
    ]:
        """One (processor, payload) per block; replicas must agree byte for byte.

        A disagreement goes to the block's owner, who recomputes it; whoever differs from the
        recomputation is proven to have lied. Unsettled blocks are used from nobody.
        """
        chosen: dict[BlockRef, tuple[str, bytes]] = {}
        payload_of: dict[tuple[str, BlockRef], bytes] = {}
        digests: dict[str, dict[str, bytes]] = {}
        ref_of: dict[str, BlockRef] = {}
        for who, result in sorted(self.results.items()):
            digests[who] = {}
            for ref, payload in zip(result.blocks, result.payloads, strict=True):
                chosen.setdefault(ref, (who, payload))
                payload_of[(who, ref)] = payload
                digests[who][block_id(ref)] = hashlib.sha256(payload).digest()
                ref_of[block_id(ref)] = ref
        mismatches: list[Mismatch] = []
        proven: list[Evidence] = []
        for dispute in find_disputes(digests):
            ref = ref_of[dispute.block]
            pair = sorted(dispute.digests)
            mismatches.append(Mismatch(ref, (pair[0], pair[-1])))
            s = settle(
                dispute, self._recomputed(ref), epoch=self.epoch, arbiter=f"owner {ref.owner}"
            )
            proven += s.evidence
            if s.truthful is not None:
                chosen[ref] = (s.truthful, payload_of[(s.truthful, ref)])
            else:
                chosen.pop(ref, None)
        return chosen, mismatches, proven, ref_of

    def _bad_result(self, who: str, ref: BlockRef, why: str) -> Evidence:
        """Proof against a processor: a result that no honest block and model can produce."""
        block = block_id(ref)
        return Evidence(
            who, "processor", self.epoch, "bad-result", Strength.PROVEN, f"block {block}: {why}",
            1.0, (block,),
        )  # fmt: skip

    def close_epoch(self) -> EpochOutcome:
        """Decrypt block totals, check, audit, aggregate, update, validate, flag, close."""
        assert self.spec is not None and self.keys is not None and self.optimizer is not None
        assert self.task_id is not None and self.checker is not None
        check_start = time.perf_counter()
        chosen, mismatches, proven, ref_of = self._cross_check()
        sizes = {
            BlockRef(owner=m.owner, index=i): s
            for m in self.manifests.values()
            for i, s in enumerate(m.block_sizes)
        }
        weights = self.optimizer.lookahead
        blocks: list[BlockGradient] = []
        sent: dict[str, bytes] = {}  # block id -> sha256 of the payload used
        for ref, (who, payload) in sorted(chosen.items(), key=lambda kv: block_id(kv[0])):
            try:
                sums = self.keys.decrypt_result(
                    payload,
                    party=f"processor {who}, block {block_id(ref)}",
                    epoch=self.epoch,
                    block_id=block_id(ref),
                    bound=self.kind.max_abs_total(
                        weights, sizes[ref], n_features=len(self.spec.features.names)
                    ),
                )
            except UntrustedInputError as exc:
                # No honest processor can produce this from the committed inputs.
                proven.append(self._bad_result(who, ref, exc.message))
                continue
            if sums.n_samples != sizes[ref]:
                claim = f"claims {sums.n_samples} samples, the owner's manifest says {sizes[ref]}"
                proven.append(self._bad_result(who, ref, claim))
                continue
            sent[block_id(ref)] = hashlib.sha256(payload).digest()
            blocks.append(BlockGradient(block_id(ref), who, ref.owner, sums.n_samples, sums.sums))

        def audit(block: BlockGradient) -> bool | None:
            """The owner recomputes the block: equal bytes clear the processor, else convict."""
            recomputed = self._recomputed(ref_of[block.block])
            return None if recomputed is None else recomputed == sent[block.block]

        X_val = self._scaled_val()
        t_val = self.kind.targets(self.y_val, self.spec.labels)
        verdict = self.checker.check(
            self.epoch,
            blocks,
            proven=proven,
            active=self.active,
            reference=reference_gradient(self.kind, weights, X_val, t_val),
            loss=validation_loss(self.kind, X_val, t_val),
            weights=weights,
            step=self.optimizer.learning_rate,
            audit=audit if self.recompute is not None else None,
        )
        if verdict.gradient is not None:
            self.optimizer.apply(verdict.gradient)
        check_seconds = time.perf_counter() - check_start
        metric = self.kind.evaluate(self.model(), X_val, self.y_val, self.spec.labels)
        self.history.append(metric)

        submitted = {e.processor.lower(): e.on_time for e in self._epoch_results()}
        names = sorted(self.processors)
        on_time = [p for p in names if submitted.get(p.lower()) is True]
        late = [p for p in names if submitted.get(p.lower()) is False]
        missing = [p for p in names if p.lower() not in submitted]
        clock = self.market.clock_of(self.task_id)
        view = EpochView(
            epoch=self.epoch,
            metrics=self.history,
            higher_is_better=True,
            budget_left=self.spec.budget.processing - clock.spent,
            epoch_cost=self.epoch_cost,
            epochs_left=self.spec.task.max_epochs - self.epoch - 1,
        )
        reason = first_reason(self.rules, view)
        flagged = verdict.flagged
        self.slashed.update(flagged)
        self._wait_for_deadline_if_needed(clock.submitted, clock.active, clock.deadline)
        self.market.close_epoch(self.task_id, self.epoch, flagged, reason is None)
        if reason is None and self.market.clock_of(self.task_id).state != TaskState.TRAINING:
            reason = "no processor left"
        outcome = EpochOutcome(
            epoch=self.epoch,
            metric=metric,
            on_time=on_time,
            late=late,
            missing=missing,
            flagged=flagged,
            mismatches=mismatches,
            rejected=dict(self.rejected),
            blocks_used=verdict.used_blocks,
            stop_reason=reason,
            seconds=time.perf_counter() - self._epoch_start,
            evidence=verdict.evidence,
            flags=verdict.flags,
            check_seconds=check_seconds,
            audited=dict(verdict.audited),
        )
        self.outcomes.append(outcome)
        self.epoch += 1
        return outcome

    def _wait_for_deadline_if_needed(self, submitted: int, active: int, deadline: int) -> None:
        if submitted < active:
            if self.wait_until is None:
                raise FedmarketError(
                    "an epoch cannot close before its deadline while a processor has not submitted",
                    hint="give the requester a wait_until (the runtime's clock)",
                )
            self.wait_until(deadline + 1)

    def back_off(self) -> str:
        """Stop now, cleanly on chain: cancel during bidding, end a task whose assignment was
        never committed, else close the open epoch."""
        assert self.task_id is not None
        clock = self.market.clock_of(self.task_id)
        if clock.state == TaskState.BIDDING:
            self.market.cancel(self.task_id)
            return "cancelled during bidding"
        if clock.state == TaskState.ASSIGNING:
            return "ended before training: " + self.abandon()
        if clock.state == TaskState.TRAINING:
            self._wait_for_deadline_if_needed(clock.submitted, clock.active, clock.deadline)
            self.market.close_epoch(self.task_id, clock.epoch, [], False)
            return f"backed off at epoch {clock.epoch}"
        return f"nothing to back off from (task is {clock.state.name.lower()})"

    def abandon(self) -> str:
        """Nothing to train on: commit an empty assignment and close epoch 0 without going on,
        so the budget and every stake return now instead of after a timeout."""
        assert self.task_id is not None
        self.market.commit_assignment(
            self.task_id, assignment_hash(Assignment(task_id=self.task_id, blocks={}))
        )
        return self.back_off()

    def model(self) -> Model:
        """The current model (plaintext weights, in the requester's hands only)."""
        assert self.optimizer is not None
        return self.kind.estimator(self.optimizer.weights, self.classes)
