"""The party side of the protocol: one dispatcher from action to role handler.

A ``PartyNode`` is one chain account with the roles it plays in a task (a data owner, a
processor, or both in the own-compute scenario). Every runtime delivers the requester's
actions to it through ``handle(action, envelope)``; the in-process runtime calls it directly,
the Flower runtime from a ClientApp. Disputes are three more actions: ``panel`` (a disputed
block's owner seals it to the drawn auditors and votes), ``audit`` (a drawn auditor computes
the block and commits its vote) and ``show`` (the accused opens its committed leaf). A
handler parses what it receives as untrusted input, acts through its role (on chain with the
party's own key), and replies with an ``Envelope``; a refusal is an error envelope naming the
problem, and ``None`` is no answer at all (a simulated crash). Simulated misbehaviour lives in
the roles (``attack``, ``withhold``) and in the two runtime-independent faults handled here:
``crash@N`` (silent from epoch N) and ``late`` (answers after the epoch's deadline: the reply
says when to ask again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from fedmarket.chain.client import Side, TaskState
from fedmarket.errors import FedmarketError, UntrustedInputError
from fedmarket.protocol.transport import Envelope
from fedmarket.roles.channel import ChannelKeys
from fedmarket.roles.messages import (
    AssignmentShare,
    BlockRef,
    ChannelKey,
    DataManifest,
    DisputeBlock,
    EncryptedModel,
    EpochResult,
    LeafProof,
    ModelReveal,
    NoiseRelease,
    RoutingShare,
    SealedBlock,
    TaskAnnouncement,
    decode,
    encode,
)
from fedmarket.roles.owner import DataOwner
from fedmarket.roles.party import Party
from fedmarket.roles.processor import Processor
from fedmarket.spec import TaskSpec

log = logging.getLogger("fedmarket.party")
REQUESTER = "requester"
# the actions a party answers, in protocol order (the driver sends them in this order)
ACTIONS = (
    "announce",
    "channel_key",
    "prepare",
    "setup",
    "seal",
    "blocks",
    "noise",
    "model",
    "resume",
    "recompute",
    "panel",
    "audit",
    "show",
    "settle",
)

Roles = tuple[DataOwner | None, Processor | None]


@dataclass
class PartyNode:
    """A chain account's roles behind a transport; ``new_roles`` makes them for a new task."""

    name: str
    new_roles: Callable[[], Roles]
    owner: DataOwner | None = field(default=None, init=False)
    processor: Processor | None = field(default=None, init=False)
    settled: bool = field(default=False, init=False)
    # epoch -> the computed result a late processor has not committed yet
    held: dict[int, EpochResult] = field(default_factory=dict, init=False)
    silent: bool = field(default=False, init=False)  # a simulated crash happened

    def __post_init__(self) -> None:
        self.owner, self.processor = self.new_roles()
        if self.owner is None and self.processor is None:
            raise ValueError("a party needs at least one role")

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(
            name
            for name, role in (("owner", self.owner), ("processor", self.processor))
            if role is not None
        )

    @property
    def parties(self) -> list[Party]:
        return [r for r in (self.owner, self.processor) if r is not None]

    @property
    def address(self) -> str:
        return self.parties[0].address

    @property
    def task_id(self) -> int | None:
        return self.parties[0].task_id

    def close(self) -> None:
        if self.processor is not None:
            self.processor.close()

    # ---------------------------------------------------------------- dispatch

    def handle(self, action: str, request: Envelope) -> Envelope | None:
        """The reply to one action; a refused or failed action is an error envelope."""
        handler = getattr(self, f"on_{action}", None) if action in ACTIONS else None
        if handler is None:
            return Envelope.error(f"unknown action {action!r}")
        try:
            reply: Envelope | None = handler(request)
        except FedmarketError as exc:
            log.warning("%s: %s: %s", self.name, action, exc)
            return Envelope.error(str(exc))
        except ValidationError as exc:  # a field that makes no message (e.g. index -1)
            problem = UntrustedInputError(f"sent an invalid {action}: {exc.errors()[0]['msg']}",
                                          party=REQUESTER)  # fmt: skip
            log.warning("%s: %s: %s", self.name, action, problem)
            return Envelope.error(str(problem))
        return reply

    def _owner(self) -> DataOwner:
        if self.owner is None:
            raise UntrustedInputError(
                "asked an owner's step of a party that owns no data", party=REQUESTER
            )
        return self.owner

    def _processor(self) -> Processor:
        if self.processor is None:
            raise UntrustedInputError(
                "asked a processor's step of a party that processes none", party=REQUESTER
            )
        return self.processor

    # ---------------------------------------------------------------- handlers

    def on_announce(self, request: Envelope) -> Envelope:
        message = request.one(TaskAnnouncement, party=REQUESTER)
        if self.task_id == message.task_id:
            return Envelope({"status": "already bid"})  # a repeated or restarted announcement
        if self.task_id is not None:
            # a new task: the roles of the last one are done (settled or never won)
            self.close()
            self.owner, self.processor = self.new_roles()
            self.settled = False
            self.silent = False
            self.held.clear()
        if self.owner is not None:
            self.owner.on_announcement(message)
        if self.processor is not None:
            self.processor.on_announcement(message)
        return Envelope({"status": "bid"})

    def on_channel_key(self, request: Envelope) -> Envelope:
        processor = self._processor()
        if processor.won() == 0:
            return Envelope({"status": "lost"})
        return Envelope.of(processor.channel_key(), status="won")

    def on_prepare(self, request: Envelope) -> Envelope:
        owner = self._owner()
        manifest = owner.prepare()
        if manifest is None:
            return Envelope({"status": "withheld" if owner.fill and owner.withhold else "lost"})
        return Envelope.of(manifest, status="won")

    def on_setup(self, request: Envelope) -> Envelope:
        processor = self._processor()
        share = request.one(AssignmentShare, party=REQUESTER)
        for manifest in request.many(DataManifest, party=REQUESTER, start=1):
            processor.on_manifest(manifest)
        processor.on_share(share)
        return Envelope({"status": "ready", "blocks": len(processor.expected)})

    def on_seal(self, request: Envelope) -> Envelope:
        owner = self._owner()
        routing = request.one(RoutingShare, party=REQUESTER)
        keys = {k.processor: k for k in request.many(ChannelKey, party=REQUESTER, start=1)}
        first = request.fields.get("first", 0)
        count = request.fields.get("count")
        if type(first) is not int or first < 0 or not (count is None or type(count) is int):
            raise UntrustedInputError("a bad range of blocks to seal", party=REQUESTER)
        sealed = owner.seal_blocks(
            routing, keys, first=first, count=None if count is None else max(0, count)
        )
        return Envelope(
            {"processors": ",".join(p for p, _ in sealed)},
            Envelope.of(*(s for _, s in sealed)).frames,
        )

    def on_blocks(self, request: Envelope) -> Envelope:
        processor = self._processor()
        for message in request.many(SealedBlock, party=REQUESTER):
            processor.on_block(message)
        return Envelope({"status": "stored", "blocks": len(processor.delivered)})

    def on_noise(self, request: Envelope) -> Envelope:
        owner = self._owner()
        released = owner.release_noise(request.one(ModelReveal, party=REQUESTER))
        return Envelope(
            {"processors": ",".join(p for p, _ in released)},
            Envelope.of(*(r for _, r in released)).frames,
        )

    def on_model(self, request: Envelope) -> Envelope | None:
        processor = self._processor()
        message = request.one(EncryptedModel, party=REQUESTER)
        noise = request.many(NoiseRelease, party=REQUESTER, start=1)
        attack = processor.attack
        if self.silent or (attack is not None and not attack.answers(message.epoch)):
            self.silent = True
            return None  # simulated crash: silent from now on
        if attack is not None and attack.submits_late:
            # simulated lateness: computed now, committed and sent after the deadline
            assert processor.task_id is not None
            self.held[message.epoch] = processor.on_model(message, noise)
            deadline = processor.market.clock_of(processor.task_id).deadline
            return Envelope({"deferred": deadline + 1})
        return Envelope.of(processor.on_model(message, noise))

    def on_resume(self, request: Envelope) -> Envelope:
        processor = self._processor()
        epoch = request.integer("epoch", party=REQUESTER)
        result = self.held.pop(epoch, None)
        if result is None:
            raise UntrustedInputError(f"nothing held back for epoch {epoch}", party=REQUESTER)
        processor.commit(result)
        return Envelope.of(result)

    def on_recompute(self, request: Envelope) -> Envelope:
        owner = self._owner()
        model = request.one(EncryptedModel, party=REQUESTER)
        index = request.integer("index", party=REQUESTER)
        if index < 0:
            raise UntrustedInputError(f"asked to recompute block index {index}", party=REQUESTER)
        ref = BlockRef(owner=owner.address, index=index)
        payload = owner.recompute(ref, model)
        answer = EpochResult(
            task_id=model.task_id,
            epoch=model.epoch,
            processor=owner.address,
            blocks=[ref],
            payloads=[payload],
        )
        return Envelope.of(answer)

    def on_panel(self, request: Envelope) -> Envelope:
        owner = self._owner()
        dispute = request.integer("dispute", party=REQUESTER)
        model = request.one(EncryptedModel, party=REQUESTER)
        leaf = request.one(LeafProof, party=REQUESTER, index=1)
        keys = {k.processor: k for k in request.many(ChannelKey, party=REQUESTER, start=2)}
        sealed = owner.panel(dispute, model, keys, leaf)
        return Envelope(
            {"auditors": ",".join(p for p, _ in sealed)},
            Envelope.of(*(s for _, s in sealed)).frames,
        )

    def on_audit(self, request: Envelope) -> Envelope | None:
        if self.silent:
            return None
        processor = self._processor()
        block = request.one(DisputeBlock, party=REQUESTER)
        model = request.one(EncryptedModel, party=REQUESTER, index=1)
        return Envelope.of(processor.audit(block, model))

    def on_show(self, request: Envelope) -> Envelope | None:
        if self.silent:
            return None
        shown = self._processor().show(request.integer("dispute", party=REQUESTER))
        return Envelope({"shown": "yes" if shown else "no"})

    def on_settle(self, request: Envelope) -> Envelope:
        # One account, one claim: in own-compute both roles are one address and one credit.
        amount = self.parties[0].settle()
        self.settled = True
        return Envelope({"received": str(amount)})

    # ---------------------------------------------------------------- persistence

    def state(self) -> dict[str, Any]:
        """Everything the node has learnt in its task, for a runtime that must survive a
        restart (bytes and plain values; the party's own file, never sent anywhere)."""
        out: dict[str, Any] = {
            "settled": self.settled,
            "silent": self.silent,
            "held": {epoch: encode(result) for epoch, result in self.held.items()},
        }
        o, p = self.owner, self.processor
        if o is not None and o.task_id is not None and o.keys is not None and o.spec is not None:
            out["owner"] = {
                "task_id": o.task_id,
                "spec": o.spec.canonical_json(),
                "keys": o.keys.data,
                "fill": o.fill,
                "bid": o.bid,
                "blocks": list(o.blocks),
                "holders": {i: [(p, encode(k)) for p, k in hs] for i, hs in o.holders.items()},
                "released": dict(o.released),
                "noise": [(e, i, n, sig) for (e, i), (n, sig) in o.noise.items()],
            }
        if p is not None and p.task_id is not None and p.keys is not None:
            out["processor"] = {
                "task_id": p.task_id,
                "keys": p.keys.data,
                "channel": (p.channel.private, p.channel.public),
                "fill": p.fill,
                "bid": p.bid,
                "manifests": [encode(m) for m in p.manifests.values()],
                "share": encode(p.share) if p.share is not None else None,
                "blocks": [(r.owner, r.index, b) for r, b in p.blocks.items()],
                "reported": [(r.owner, r.index) for r in p.reported],
                "leaves": {e: [(b, d) for b, d in ls] for e, ls in p.leaves.items()},
                "memory": p.memory,
            }
        return out

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what ``state`` saved (fresh roles from ``new_roles`` first)."""
        local = "local state"
        self.settled = bool(state.get("settled", False))
        self.silent = bool(state.get("silent", False))
        self.held = {
            int(e): decode(r, EpochResult, party=local) for e, r in state.get("held", {}).items()
        }
        if self.owner is not None and "owner" in state:
            s, o = state["owner"], self.owner
            o.task_id = s["task_id"]
            o.learn(TaskSpec.model_validate_json(s["spec"]), s["keys"])
            o.fill = s["fill"]
            o.bid = s.get("bid")
            o.blocks = list(s["blocks"])
            o.holders = {
                int(i): [(p, decode(k, ChannelKey, party=local)) for p, k in hs]
                for i, hs in s.get("holders", {}).items()
            }
            o.released = {int(e): bytes(d) for e, d in s.get("released", {}).items()}
            o.noise = {(int(e), int(i)): (bytes(n), bytes(g)) for e, i, n, g in s.get("noise", [])}
        if self.processor is not None and "processor" in state:
            s, p = state["processor"], self.processor
            p.task_id = s["task_id"]
            p.keys = p.crypto.public(s["keys"], party=local)
            p.channel = ChannelKeys(*s["channel"])
            p.fill = s["fill"]
            p.bid = s.get("bid")
            for data in s["manifests"]:
                manifest = decode(data, DataManifest, party=local)
                p.manifests[manifest.owner.lower()] = manifest
            if s.get("share") is not None:
                p.share = decode(s["share"], AssignmentShare, party=local)
            p.reported = {BlockRef(owner=o, index=i) for o, i in s.get("reported", [])}
            p.leaves = {
                int(e): [(int(b), bytes(d)) for b, d in ls] for e, ls in s.get("leaves", {}).items()
            }
            p.memory = s["memory"]
            for owner, index, block in s["blocks"]:
                p.restore_block(BlockRef(owner=owner, index=index), block)

    # ---------------------------------------------------------------- no requester

    def watch(self, now: int) -> str | None:
        """If the requester is gone (its deadline plus the grace period has passed while the
        task is open), end the task with ``claim_timeout`` and collect what is owed. What a
        runtime calls now and then beside the actions; returns what it did, if anything."""
        task = self.task_id
        if task is None or self.settled:
            return None
        party = self.parties[0]
        market = party.market
        clock = market.clock_of(task)
        if clock.state == TaskState.BIDDING:
            return None
        what = "the task is over"
        if clock.state in (TaskState.ASSIGNING, TaskState.TRAINING):
            winning = [
                r for r in self.parties if isinstance(r, DataOwner | Processor) and r.won() > 0
            ]
            if now <= clock.deadline + market.grace_seconds() or not winning:
                return None
            role = winning[0]
            side = Side.DATA if isinstance(role, DataOwner) else Side.PROCESSING
            assert role.bid is not None
            market.claim_timeout(task, side, role.bid)
            # the task is over now; stakes return once its dispute window has passed, and we
            # collect everything then, once
            return f"the requester timed out at epoch {clock.epoch}: claimed the timeout"
        if clock.state == TaskState.FINISHED and now <= clock.deadline + market.grace_seconds():
            return None  # stakes return once the dispute window has passed
        amount = self.on_settle(Envelope()).fields["received"]
        return f"{what}; collected {amount}"
