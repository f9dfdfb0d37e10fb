"""The requester: announces the task, holds the secret key, updates the model, pays.

It never receives data ciphertexts (they are sealed to processors) and only ever decrypts
block-level gradient totals (``TaskKeys.decrypt_result``), so no per-sample value reaches it.
Every result must come with its processor's signed root over the per-block digests; the
requester relays every accepted root on chain in one transaction. Replicated blocks must give
byte-identical results; a disagreement is settled by the block's owner recomputing it
(``recompute``, which the driver wires to the owner through the transport). The decrypted
totals go through ``fedmarket.integrity``: statistical monitors, audits (the owner recomputes
suspicious blocks), the robust aggregator and the policy. Nothing the requester sees slashes
anyone: a *proven* wrong result becomes a bonded dispute on chain (a panel of auditors drawn
after it decides), and results it never got, proved wrong or does not trust are marked "not
received" at the close (their pay goes to the market's reserve, never back to the requester).
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmarket.backbone import task_features
from fedmarket.chain import merkle
from fedmarket.chain.client import Floors, Outcome, Side, TaskState
from fedmarket.chain.events import RootSubmitted
from fedmarket.chain.signing import SignedRoot
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
from fedmarket.privacy.accounting import epsilon_spent
from fedmarket.privacy.owner import clip_rows
from fedmarket.privacy.policy import crypto_privacy, noise_allowance, noise_std
from fedmarket.protocol.crypto import TaskKeys
from fedmarket.roles.assignment import BlockInfo, Plan, own_compute_plan, plan_assignment
from fedmarket.roles.messages import (
    BlockRef,
    DataManifest,
    EncryptedModel,
    EpochResult,
    LeafProof,
    ModelReveal,
    TaskAnnouncement,
    leaf_digest,
)
from fedmarket.roles.owner import block_id, check_block_floor
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


@dataclass
class DisputeRecord:
    """A dispute the requester opened: whom, on which block and epoch, why, how it ended."""

    processor: str
    block: BlockRef
    epoch: int
    evidence: Evidence
    dispute: int | None = None  # its id on chain, once opened
    outcome: Outcome | None = None
    panel: list[str] = field(default_factory=list)
    reveals: dict[str, bytes] = field(default_factory=dict)  # auditor -> digest
    note: str = ""


@dataclass
class EpochOutcome:
    """What the requester saw and decided in one epoch."""

    epoch: int
    metric: float
    on_time: list[str]
    late: list[str]
    missing: list[str]
    flagged: list[str]  # processors convicted (slashed on chain) by this epoch's disputes
    mismatches: list[Mismatch]
    rejected: dict[str, str]  # processor -> why its result was refused
    blocks_used: int
    stop_reason: str | None
    seconds: float
    evidence: list[Evidence] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)  # what the policy acted on
    check_seconds: float = 0.0  # replication, decryption checks, monitors and aggregation
    audited: dict[str, bool] = field(default_factory=dict)  # block -> the owner's recompute matched
    disputes: list[DisputeRecord] = field(default_factory=list)  # opened after this close
    not_received: list[str] = field(default_factory=list)  # their pay went to the reserve

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
    floors: Floors = field(default_factory=Floors)
    # Wired by the driver to the block's owner; None: no dispute can be settled, no audit run.
    recompute: Recompute | None = None
    base: Path | None = None  # where the spec's files (a backbone) are
    _features: np.ndarray | None = field(default=None, init=False)  # X_val as the task sees it
    keys: TaskKeys | None = field(default=None, init=False)
    optimizer: Trainer | None = field(default=None, init=False)
    owners: dict[str, int] = field(default_factory=dict, init=False)  # address -> points
    processors: dict[str, int] = field(default_factory=dict, init=False)  # address -> fill
    data_bid: dict[str, int] = field(default_factory=dict, init=False)  # address -> bid index
    proc_bid: dict[str, int] = field(default_factory=dict, init=False)  # address -> bid index
    epoch_cost: int = field(default=0, init=False)
    manifests: dict[str, DataManifest] = field(default_factory=dict, init=False)
    plan: Plan | None = field(default=None, init=False)
    epoch: int = field(default=0, init=False)
    models: dict[int, EncryptedModel] = field(default_factory=dict, init=False)  # released
    results: dict[str, EpochResult] = field(default_factory=dict, init=False)
    rejected: dict[str, str] = field(default_factory=dict, init=False)
    # (processor, epoch) -> its accepted leaves: the requester can open them if accused
    leaves: dict[tuple[str, int], list[tuple[int, bytes]]] = field(default_factory=dict, init=False)
    history: list[float] = field(default_factory=list, init=False)
    outcomes: list[EpochOutcome] = field(default_factory=list, init=False)
    checker: EpochChecker | None = field(default=None, init=False)
    slashed: set[str] = field(default_factory=set, init=False)  # convicted on chain
    refused: set[str] = field(default_factory=set, init=False)  # distrusted: results unused, unpaid
    disputes: list[DisputeRecord] = field(default_factory=list, init=False)
    # private tasks: epoch -> (the weights encrypted, the seed), shown to block owners only
    reveals: dict[int, tuple[np.ndarray, bytes]] = field(default_factory=dict, init=False)
    # private tasks: epoch -> the blocks whose owners released noise (others have no result)
    noised: dict[int, set[BlockRef]] = field(default_factory=dict, init=False)
    _epoch_start: float = field(default=0.0, init=False)

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
        X = scale(self._features, f.mean, f.std, f.spread)
        # a private task's owners clip every sample: the model is trained (and checked) there
        return clip_rows(X, self.spec.privacy.clip_norm) if self.private else X

    @property
    def private(self) -> bool:
        """The task has differential privacy: owners' noise in every total."""
        return self.spec is not None and self.spec.privacy.enabled

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
            privacy=crypto_privacy(spec),
        )
        check_block_floor(self.keys.public.layout.block_size, spec.privacy.min_block_points)
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
            spec.task.dispute_bond_bps,
            spec.budget.audit_fee,
            spec.privacy.min_block_points,
            self.floors,
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
        for side, fills, points, index in (
            (Side.DATA, allocation.data, self.owners, self.data_bid),
            (Side.PROCESSING, allocation.processing, self.processors, self.proc_bid),
        ):
            for f in fills:
                who = self.market.get_bid(self.task_id, side, f.bid).bidder
                points[who] = f.amount
                index[who] = f.bid
        self.epoch_cost = allocation.processing_cost_per_epoch

    def on_manifest(self, manifest: DataManifest) -> None:
        """Record an owner's blocks (sizes only) once they match what it committed on chain."""
        self.check_manifest(manifest)
        self.manifests[manifest.owner.lower()] = manifest

    def _encrypt_model(self, epoch: int) -> EncryptedModel:
        assert self.keys is not None and self.optimizer is not None and self.task_id is not None
        weights = self.optimizer.lookahead
        seed = None
        if self.private:
            # Owners release noise only for a model in the certified region: the look-ahead
            # (an extrapolation) is brought into it, and the gradient is then taken there.
            assert self.spec is not None
            layout = self.keys.public.layout
            weights = self.kind.certify(weights, layout.n_features, layout.clip)
            self.optimizer.state.lookahead = weights
            # owners re-encrypt (weights, seed) to check what processors get (docs/privacy.md)
            seed = secrets.token_bytes(32)
            self.reveals[epoch] = (np.array(weights, dtype="<f8"), seed)
        payload = self.keys.encrypt_model(weights, epoch=epoch, seed=seed)
        self.models[epoch] = EncryptedModel(task_id=self.task_id, epoch=epoch, payload=payload)
        return self.models[epoch]

    def assign(self) -> Plan:
        """Spread the delivered blocks over the processors, and commit the assignment with the
        digest of epoch 0's model (its release starts epoch 0 on chain)."""
        assert self.spec is not None and self.task_id is not None
        bid_of = {a.lower(): i for a, i in self.data_bid.items()}
        blocks = [
            BlockInfo(
                BlockRef(owner=m.owner, index=i), size, merkle.block_id(bid_of[m.owner.lower()], i)
            )
            for m in self.manifests.values()
            for i, size in enumerate(m.block_sizes)
        ]
        if not blocks:
            raise FedmarketError(
                "no winning data owner delivered a manifest; nothing to train on",
                hint="the task can be ended with `claim_timeout` once its deadline passes",
            )
        if self.self_processing:
            try:
                self.plan = own_compute_plan(self.task_id, blocks, self.proc_bid)
            except ValueError as exc:
                raise FedmarketError(
                    str(exc), hint="in own-compute every winning owner must also win processing"
                ) from None
        else:
            self.plan = plan_assignment(
                self.task_id,
                blocks,
                self.processors,
                self.proc_bid,
                replication=self.spec.integrity.replication,
                rng=random.Random(self.seed),
            )
        model = self._encrypt_model(0)
        self.market.commit_assignment(
            self.task_id, self.plan.tree.records, hashlib.sha256(model.payload).digest()
        )
        return self.plan

    # ------------------------------------------------------------ privacy

    def reveal(self) -> ModelReveal:
        """The current epoch's model in plaintext with its seed, for the block owners of a
        private task (who re-encrypt and check it before they release their noise)."""
        assert self.task_id is not None
        weights, seed = self.reveals[self.epoch]
        return ModelReveal(
            task_id=self.task_id, epoch=self.epoch, weights=weights.tobytes(), seed=seed
        )

    def on_noise(self, refs: set[BlockRef]) -> None:
        """The blocks whose owners released noise this epoch (the driver saw it relayed)."""
        self.noised.setdefault(self.epoch, set()).update(refs)

    def privacy_spent(self) -> dict[str, float]:
        """Each winning owner's epsilon (at the spec's delta) after the epochs in which it
        released noise, by the accountant (empty for a task without DP)."""
        if not self.private or self.keys is None:
            return {}
        assert self.spec is not None
        sigma = self.spec.privacy.noise_multiplier(self.spec.task.max_epochs)
        released: dict[str, int] = {o.lower(): 0 for o in self.manifests}
        for refs in self.noised.values():
            for owner in {r.owner.lower() for r in refs}:
                released[owner] = released.get(owner, 0) + 1
        return {
            o: epsilon_spent(sigma, self.spec.privacy.delta, n) for o, n in sorted(released.items())
        }

    # ------------------------------------------------------------ epochs

    def model_message(self) -> EncryptedModel:
        """The encrypted look-ahead weights of the current epoch (released on chain)."""
        self._epoch_start = time.perf_counter()
        self.results = {}
        self.rejected = {}
        return self.models[self.epoch]

    @property
    def active(self) -> set[str]:
        """Winning processors still in the task (a convicted one has left it)."""
        return {p for p in self.processors if p not in self.slashed}

    def on_result(self, result: EpochResult) -> None:
        """Accept a processor's results if they are for now, from a winner, in the order of
        its entries, with the root over their digests signed by its chain account."""
        assert self.plan is not None and self.task_id is not None
        party = f"processor {result.processor}"
        who = result.processor
        if who not in self.processors:
            raise UntrustedInputError("is not a winning processor of this task", party=party)
        if result.task_id != self.task_id or result.epoch != self.epoch:
            raise UntrustedInputError(
                f"sent results for epoch {result.epoch}, not {self.epoch}", party=party
            )
        entries = self.plan.entries.get(who, [])
        if [b.ref for b in entries] != list(result.blocks) or len(result.payloads) != len(entries):
            raise UntrustedInputError("sent results that are not its entries in order", party=party)
        leaves = [(b.block, leaf_digest(p)) for b, p in zip(entries, result.payloads, strict=True)]
        root = merkle.result_root(self.task_id, self.epoch, leaves) if leaves else result.root
        signed = self._signed(result)
        domain = self.market.domain_separator()
        if (
            root != result.root
            or signed is None
            or (signed.signer(domain, self.task_id, self.epoch) or "").lower() != who.lower()
        ):
            self.rejected[who] = "its root is not the tree over its results, or not signed by it"
            raise UntrustedInputError(self.rejected[who], party=party)
        self.results[who] = result
        self.leaves[(who, self.epoch)] = leaves

    @staticmethod
    def _signed(result: EpochResult) -> SignedRoot | None:
        if len(result.signature) != 65:
            return None
        sig = result.signature
        return SignedRoot(result.root, sig[0], sig[1:33], sig[33:])

    def record_roots(self) -> None:
        """Put every accepted root on chain: all in one relay when every active processor's
        came in time, else one by one (a processor may also have sent its own)."""
        assert self.task_id is not None
        clock = self.market.clock_of(self.task_id)
        active = sorted(self.active, key=lambda p: self.proc_bid[p])
        signed = {p: self._signed(self.results[p]) for p in active if p in self.results}
        if (
            len(signed) == len(active)
            and active
            and clock.submitted == 0
            and self.market.now() <= clock.deadline
        ):
            self.market.relay_epoch(self.task_id, self.epoch, [s for s in signed.values() if s])
            return
        for p, s in signed.items():
            if (
                s is None
                or self.market.get_bid(
                    self.task_id, Side.PROCESSING, self.proc_bid[p]
                ).last_submitted_epoch
                == self.epoch + 1
            ):
                continue
            self.market.submit_root(self.task_id, self.epoch, self.proc_bid[p], s)

    def _recomputed(self, ref: BlockRef, epoch: int | None = None) -> bytes | None:
        """sha256 of the owner's own recomputation of a block for an epoch's model."""
        model = self.models.get(self.epoch if epoch is None else epoch)
        if self.recompute is None or model is None:
            return None
        answer = self.recompute(ref, model)
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
            if who in self.refused:
                continue
            digests[who] = {}
            for ref, payload in zip(result.blocks, result.payloads, strict=True):
                ref_of[block_id(ref)] = ref
                if not payload:
                    continue  # reported undelivered: nothing to compare
                chosen.setdefault(ref, (who, payload))
                payload_of[(who, ref)] = payload
                digests[who][block_id(ref)] = hashlib.sha256(payload).digest()
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
        """Decrypt block totals, check, audit, aggregate, update, validate, close on chain with
        the next model's digest and the results not received; the proven faults become the
        disputes the driver then runs (``outcome.disputes``)."""
        assert self.spec is not None and self.keys is not None and self.optimizer is not None
        assert self.task_id is not None and self.checker is not None and self.plan is not None
        check_start = time.perf_counter()
        chosen, mismatches, proven, ref_of = self._cross_check()
        sizes = {
            BlockRef(owner=m.owner, index=i): s
            for m in self.manifests.values()
            for i, s in enumerate(m.block_sizes)
        }
        reported = {
            (p, b.ref)
            for p in self.results
            for b in self.plan.entries.get(p, [])
            if self.market.is_reported(self.task_id, self.proc_bid[p], b.block)
        }
        for who, result in sorted(self.results.items()):
            for ref, payload in zip(result.blocks, result.payloads, strict=True):
                if self.private:
                    # No noise, no result: whether the owner released none, or noise the
                    # processor could not open or verify, nobody can prove which.
                    continue
                if not payload and (who, ref) not in reported:
                    proven.append(self._bad_result(who, ref, "no result and no undelivered report"))
        weights = self.optimizer.lookahead
        allowance = noise_allowance(noise_std(self.spec, self.keys.public.layout))
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
                    )
                    + allowance,
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
            active=self.active - self.refused,
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

        clock = self.market.clock_of(self.task_id)
        names = sorted(self.active)  # a convicted processor has left the task
        on_time, late, missing = self._timeliness(names)
        # Proven faults become disputes (the contract judges them); statistical flags that no
        # audit cleared make the requester stop trusting (and paying for) a processor's results.
        disputes = self._disputes_to_open(
            [e for e in verdict.evidence if e.strength is Strength.PROVEN], ref_of
        )
        for flag in verdict.flags:
            if not flag.proven:
                self.refused.add(flag.party)
        proven_now = {d.processor for d in disputes}
        # roots on chain whose results we did not get, proved wrong, or no longer trust
        unpaid = [
            p
            for p in names
            if p in self.active
            and p not in missing
            and (p in self.refused or p in proven_now or p not in self.results)
        ]
        view = EpochView(
            epoch=self.epoch,
            metrics=self.history,
            higher_is_better=True,
            budget_left=self.spec.budget.processing - clock.spent,
            epoch_cost=self.epoch_cost,
            epochs_left=self.spec.task.max_epochs - self.epoch - 1,
        )
        reason = first_reason(self.rules, view)
        go_on = reason is None and self.epoch + 1 < self.spec.task.max_epochs
        next_digest = bytes(32)
        if go_on:
            next_digest = hashlib.sha256(self._encrypt_model(self.epoch + 1).payload).digest()
        self._wait_for_deadline_if_needed(clock.submitted, clock.active, clock.deadline)
        bitmap = sum(1 << self.proc_bid[p] for p in unpaid)
        self.market.close_epoch(self.task_id, self.epoch, next_digest, go_on, bitmap)
        if reason is None and self.market.clock_of(self.task_id).state != TaskState.TRAINING:
            reason = "no processor left" if not self.active else "the last epoch"
        outcome = EpochOutcome(
            epoch=self.epoch,
            metric=metric,
            on_time=on_time,
            late=late,
            missing=missing,
            flagged=[],
            mismatches=mismatches,
            rejected=dict(self.rejected),
            blocks_used=verdict.used_blocks,
            stop_reason=reason,
            seconds=time.perf_counter() - self._epoch_start,
            evidence=verdict.evidence,
            flags=verdict.flags,
            check_seconds=check_seconds,
            audited=dict(verdict.audited),
            disputes=disputes,
            not_received=sorted(unpaid),
        )
        self.outcomes.append(outcome)
        self.disputes += disputes
        self.epoch += 1
        return outcome

    def _timeliness(self, names: list[str]) -> tuple[list[str], list[str], list[str]]:
        """(on time, late, missing) by the roots on chain for this epoch."""
        assert self.task_id is not None
        book_roots = dict(self.market.epoch_book(self.task_id).roots.get(self.epoch, []))
        late_ones = {e.processor for e in self._root_events() if not e.on_time}
        on_time, late, missing = [], [], []
        for p in names:
            i = self.proc_bid[p]
            if i not in book_roots:
                missing.append(p)
            elif i in late_ones:
                late.append(p)
            else:
                on_time.append(p)
        return on_time, late, missing

    def _root_events(self) -> list[RootSubmitted]:
        assert self.task_id is not None
        return [
            e for e in self.market.logs(RootSubmitted, task=self.task_id) if e.epoch == self.epoch
        ]

    def _disputes_to_open(
        self, proven: list[Evidence], ref_of: dict[str, BlockRef]
    ) -> list[DisputeRecord]:
        """One dispute per (processor, block) proven wrong this epoch, on a block of its own
        committed entries (where the contract can check its leaf)."""
        out: list[DisputeRecord] = []
        seen: set[tuple[str, BlockRef]] = set()
        for e in proven:
            if e.role != "processor" or e.party not in self.active or e.party not in self.results:
                continue
            if self._eligible_auditors(e.party) < 2:
                # No panel can be drawn: a leaf it can open would only be dismissed (and the
                # bond paid to it). It is not paid instead.
                self.refused.add(e.party)
                continue
            if any(d.processor == e.party for d in out):
                continue  # one dispute per processor and epoch is enough to decide
            for b in e.blocks:
                ref = ref_of.get(b)
                if ref is None or (e.party, ref) in seen:
                    continue
                seen.add((e.party, ref))
                out.append(DisputeRecord(e.party, ref, self.epoch, e))
                break
        return out

    def _eligible_auditors(self, accused: str) -> int:
        """Processors a panel against ``accused`` could draw (active, paid, not the accused)."""
        assert self.task_id is not None
        bitmap, _ = self.market.active_of(self.task_id)
        me = self.proc_bid[accused]
        return sum(
            1
            for i in range(128)
            if bitmap >> i & 1
            and i != me
            and self.market.get_bid(self.task_id, Side.PROCESSING, i).epoch_pay > 0
        )

    # ------------------------------------------------------------ disputes

    def open_dispute(self, record: DisputeRecord) -> int:
        """Accuse on chain, posting the bond (approved here)."""
        assert self.task_id is not None and self.plan is not None
        i = self.proc_bid[record.processor]
        entries = self.plan.entries[record.processor]
        k = next(n for n, b in enumerate(entries) if b.ref == record.block)
        entry = self.plan.tree.entry_proof(i, k)
        where = self.market.epoch_book(self.task_id).proof(record.epoch)
        terms = self.market.terms(self.task_id)
        stake = self.market.get_bid(self.task_id, Side.PROCESSING, i)
        bond = max(
            stake.fill * stake.stake_price * terms.max_epochs * terms.dispute_bond_bps // 10_000,
            3 * terms.audit_fee,
        )
        self.token.approve(self.market.address, bond)
        owner_bid, index = merkle.split_block_id(entries[k].block)
        record.dispute = self.market.open_dispute(
            self.task_id, record.epoch, i, owner_bid, index, entry, where
        ).value
        self.transfers.append(("bond", -bond))
        self.paid_in += bond
        return record.dispute

    def show_leaf(self, record: DisputeRecord) -> bool:
        """Open the accused's leaf from the results we received (if it does not itself)."""
        assert self.task_id is not None and record.dispute is not None
        d = self.market.dispute_of(record.dispute)
        leaves = self.leaves.get((record.processor, record.epoch))
        if d.shown != bytes(32) or leaves is None:
            return False
        proof = merkle.result_proof(self.task_id, record.epoch, leaves, d.entry_index)
        self.market.show_leaf(record.dispute, leaves[d.entry_index][1], proof)
        return True

    def leaf_proof(self, record: DisputeRecord) -> LeafProof | None:
        """The accused's leaf for the disputed block and its proof (from the results we
        received), for the block's owner, who seals the block to the panel only against it."""
        assert self.task_id is not None and record.dispute is not None
        d = self.market.dispute_of(record.dispute)
        leaves = self.leaves.get((record.processor, record.epoch))
        if leaves is None or not 0 <= d.entry_index < len(leaves):
            return None
        return LeafProof(
            task_id=self.task_id,
            dispute=record.dispute,
            digest=leaves[d.entry_index][1],
            proof=merkle.result_proof(self.task_id, record.epoch, leaves, d.entry_index),
        )

    def resolve_dispute(self, record: DisputeRecord) -> Outcome:
        """Resolve with the digest most auditors revealed (else the owner's recomputation)."""
        assert record.dispute is not None
        values = list(record.reveals.values())
        if values:
            value = max(set(values), key=values.count)
        else:
            value = self._recomputed(record.block, record.epoch) or bytes(32)
        outcome = self.market.resolve_dispute(record.dispute, value).value
        record.outcome = outcome
        if outcome in (Outcome.CONVICTED, Outcome.UNOPENED):
            self.slashed.add(record.processor)
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
            self.market.close_epoch(self.task_id, clock.epoch, bytes(32), False, 0)
            return f"backed off at epoch {clock.epoch}"
        return f"nothing to back off from (task is {clock.state.name.lower()})"

    def abandon(self) -> str:
        """Nothing to train on: commit an empty assignment and close epoch 0 without going on,
        so the budget and every stake return now instead of after a timeout."""
        assert self.task_id is not None
        self.market.commit_assignment(self.task_id, [], hashlib.sha256(b"no data").digest())
        return self.back_off()

    def settle(self) -> int:
        """What is left of the budgets once the task is over, and every credit."""
        amount = 0
        if self.task_id is not None and self.market.requester_owed(self.task_id) > 0:
            amount += self.market.collect_requester(self.task_id).value
            self.transfers.append(("collect", amount))
            self.received += amount
        return amount + super().settle()

    def model(self) -> Model:
        """The current model (plaintext weights, in the requester's hands only)."""
        assert self.optimizer is not None
        return self.kind.estimator(self.optimizer.weights, self.classes)
