"""The protocol, written once: the requester's side of a task, over a transport.

announce -> bid -> resolve -> channel keys -> manifests -> assign (each processor its own share,
each owner its routing) -> seal and relay -> epochs (model out, signed results back, roots
relayed, replicas and audits through the owners, close on chain with the next model's digest;
in a private task each epoch first reveals the model to the block owners, who check it and
release their noise sealed to the holders, relayed with the model)
-> disputes on what is proven wrong (open, draw, the block to the auditors, votes, the
accused's leaf, resolve) -> settle once the dispute window has passed.

Every runtime runs this: ``fedmarket run`` (in process, ``fedmarket.runtime.local``), the
Flower ServerApp (``fedmarket.runtime.flower``) and the plaintext twin of the integrity
benchmark (the same, with the plaintext crypto). It knows the parties only by chain address,
reaches them only through ``Transport.ask``, and treats every reply as untrusted: a party that
fails, refuses or stays silent is noted and left out, and the task goes on without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from fedmarket.chain.allocation import InfeasibleAllocation
from fedmarket.chain.client import TaskState
from fedmarket.errors import ContractRevert, FedmarketError, UntrustedInputError
from fedmarket.protocol.interrupts import Interrupts
from fedmarket.protocol.transport import Envelope, Peer, Transport
from fedmarket.roles.assignment import Plan
from fedmarket.roles.messages import (
    BlockRef,
    ChannelKey,
    DataManifest,
    DisputeBlock,
    EncryptedModel,
    EpochResult,
    NoiseRelease,
    SealedBlock,
    VoteReveal,
    decode,
)
from fedmarket.roles.requester import DisputeRecord, EpochOutcome, Requester

ProgressFn = Callable[[str, dict[str, object]], None]


def _silent(event: str, data: dict[str, object]) -> None:
    return None


def _no_blocks(blocks: int) -> None:
    raise FedmarketError("this runtime cannot wait for blocks", hint="give the driver wait_blocks")


@dataclass
class TaskRun:
    """What the driver did: how the task ended, how long each phase took, what went wrong."""

    peers: list[Peer]
    stop_reason: str = "not started"
    phases: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    winners: dict[str, list[str]] = field(default_factory=dict)  # role -> addresses
    start_block: int = 0  # the chain's block when the task began (events are read from here)
    # protocol bytes during the epochs, per party name (requester -> party, party -> requester)
    epoch_sent: dict[str, int] = field(default_factory=dict)
    epoch_received: dict[str, int] = field(default_factory=dict)


class _TaskOver(Exception):
    """The task ended before training (cancelled, nothing delivered); go on to settle."""


class _Vanished(Exception):
    """A simulated requester fault: it stops answering (no close, no settle)."""


@dataclass
class Driver:
    """Plays one task for ``requester`` over ``transport``.

    ``wait_until`` is the chain's clock (a development chain moves forward, a real one is
    waited for); ``stop_requested`` is polled at every phase and epoch boundary: the requester
    then backs off cleanly on chain (cancel during bidding, close the open epoch otherwise).
    """

    requester: Requester
    transport: Transport
    wait_until: Callable[[int], None]
    progress: ProgressFn = _silent
    stop_requested: Callable[[], bool] = lambda: False
    vanish_at: int | None = None  # simulated fault: the requester goes silent at this epoch
    # the chain's blocks: a development chain mines empty ones, a real one is waited for
    wait_blocks: Callable[[int], None] = _no_blocks
    interrupts: Interrupts = field(default_factory=Interrupts)  # a user's Ctrl-C (see there)

    def __post_init__(self) -> None:
        self.requester.wait_until = self.wait_until
        self.requester.recompute = self._recompute
        self._names: dict[str, str] = {}
        self._keys: dict[str, ChannelKey] = {}
        self.run_: TaskRun | None = None

    # ---------------------------------------------------------------- helpers

    def name(self, address: str) -> str:
        return self._names.get(address.lower(), address)

    def _note(self, text: str) -> None:
        assert self.run_ is not None
        self.run_.notes.append(text)

    def _ask(self, action: str, requests: Mapping[str, Envelope]) -> dict[str, Envelope]:
        """The transport's replies by lower-case address; refusals become notes."""
        if not requests:
            return {}
        before = len(self.transport.problems)
        replies = self.transport.ask(action, requests)
        for line in self.transport.problems[before:]:
            self._note(line)
        return {a.lower(): env for a, env in replies.items()}

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        assert self.run_ is not None
        self.progress("phase", {"phase": name})
        start = time.perf_counter()
        try:
            yield
        finally:
            self.run_.phases[name] = self.run_.phases.get(name, 0.0) + time.perf_counter() - start

    def _stop_if_asked(self) -> None:
        if self.stop_requested() or self.interrupts.requested:
            with self.interrupts.shielded():
                raise _TaskOver(self.requester.back_off() + " (interrupted)")

    def _recompute(self, ref: BlockRef, model: EncryptedModel) -> bytes | None:
        """A block's owner recomputes it (dispute or audit): the result bytes, or None."""
        owner = ref.owner.lower()
        reply = self._ask("recompute", {owner: Envelope.of(model, index=ref.index)}).get(owner)
        if reply is None:
            return None
        party = f"owner {self.name(owner)}"
        try:
            answer = reply.one(EpochResult, party=party)
            if answer.blocks != [ref] or len(answer.payloads) != 1 or answer.epoch != model.epoch:
                raise UntrustedInputError("answered for another block or epoch", party=party)
        except UntrustedInputError as exc:
            self._note(f"recompute: {exc}")
            return None
        return answer.payloads[0]

    # ---------------------------------------------------------------- the protocol

    def run(self) -> TaskRun:
        r = self.requester
        peers = self.transport.peers()
        self._names = {p.address.lower(): p.name for p in peers}
        self._names.setdefault(r.address.lower(), r.name)
        self.run_ = run = TaskRun(peers, start_block=r.market.block_number())
        everyone = {p.address.lower(): Envelope() for p in peers}
        vanished = False
        try:
            try:
                self._announce(everyone)
                keys = self._resolve()
                self._distribute(keys)
                self._epochs()
            except _TaskOver as over:
                run.stop_reason = str(over)
            except _Vanished:
                vanished = True
                run.stop_reason = f"the requester vanished at epoch {r.epoch} (simulated)"
            except KeyboardInterrupt:
                # A second Ctrl-C (or one outside a runner's handler): stop now, cleanly.
                with self.interrupts.shielded():
                    run.stop_reason = self._stopped_now()
        finally:
            if not vanished:
                with self.interrupts.shielded(), self._phase("settle"):
                    self._wait_for_the_dispute_window()
                    r.settle()
                    self._ask("settle", everyone)
        return run

    def _wait_for_the_dispute_window(self) -> None:
        """Stakes return once the task is over and its dispute window has passed."""
        r = self.requester
        if r.task_id is None:
            return
        clock = r.market.clock_of(r.task_id)
        if clock.state == TaskState.FINISHED:
            self.wait_until(clock.deadline + r.market.grace_seconds() + 1)

    def _stopped_now(self) -> str:
        r = self.requester
        if r.task_id is None:
            return "stopped before the task was announced (interrupted)"
        return r.back_off() + " (stopped at once: interrupted twice)"

    def _announce(self, everyone: dict[str, Envelope]) -> None:
        r = self.requester
        with self._phase("announce+bid"):
            announcement = r.announce()
            bids = self._ask(
                "announce",
                {
                    a: Envelope(e.fields, Envelope.of(announcement).frames)
                    for a, e in everyone.items()
                },
            )
            self.progress(
                "task", {"task": r.task_id, "market": r.market.address, "bids": len(bids)}
            )
        self._stop_if_asked()

    def _resolve(self) -> dict[str, ChannelKey]:
        r = self.requester
        assert r.task_id is not None and self.run_ is not None
        with self._phase("resolve"):
            self.wait_until(r.market.terms(r.task_id).bidding_deadline + 1)
            try:
                r.resolve()
            except InfeasibleAllocation as exc:
                # The requester takes its budget back; every stake is refunded in full.
                r.market.cancel(r.task_id)
                raise _TaskOver(f"cancelled: {exc.message}") from None
            self.run_.winners = {"owners": sorted(r.owners), "processors": sorted(r.processors)}
            keys = self._channel_keys()
        self._stop_if_asked()
        return keys

    def _channel_keys(self) -> dict[str, ChannelKey]:
        """Each winning processor's channel key (where owners seal its blocks)."""
        r = self.requester
        keys: dict[str, ChannelKey] = {}
        asked = {p.lower(): Envelope() for p in r.processors}
        for address, reply in self._ask("channel_key", asked).items():
            party = f"processor {self.name(address)}"
            if reply.text("status") != "won":
                self._note(f"channel key: {party} says it did not win")
                continue
            try:
                key = reply.one(ChannelKey, party=party)
                if key.processor.lower() != address or key.task_id != r.task_id:
                    raise UntrustedInputError("sent a key for another party or task", party=party)
            except UntrustedInputError as exc:
                self._note(f"channel key: {exc}")
                continue
            keys[key.processor] = key
        self._keys = keys
        return keys

    def _distribute(self, keys: dict[str, ChannelKey]) -> None:
        r = self.requester
        with self._phase("encrypt+distribute"):
            asked = {o.lower(): Envelope() for o in r.owners}
            for address, reply in self._ask("prepare", asked).items():
                party = f"owner {self.name(address)}"
                status = reply.text("status")
                if status != "won":
                    if status == "withheld":
                        self._note(f"{party} won but delivered nothing")
                    continue
                try:
                    manifest = reply.one(DataManifest, party=party)
                    if manifest.owner.lower() != address:
                        raise UntrustedInputError("sent another owner's manifest", party=party)
                    r.on_manifest(manifest)
                except UntrustedInputError as exc:
                    self._note(f"manifest: {exc}")
            if not r.manifests:
                raise _TaskOver(self._no_data())
            plan = r.assign()
            if plan.left_out:
                self._note(f"assign: {len(plan.left_out)} blocks fit no processor's load")
            manifests = list(r.manifests.values())
            processors = sorted(p.lower() for p in r.processors)
            by_lower = {p.lower(): p for p in r.processors}
            self._ask(
                "setup",
                {p: Envelope.of(plan.share(by_lower[p]), *manifests) for p in processors},
            )
            sealed = self._seal(plan, keys, processors)
            # relayed as is (the requester cannot open them), in messages of bounded size
            budget = self.transport.max_bytes // 2
            batches = {p: _batches(frames, budget) for p, frames in sealed.items() if frames}
            for round_ in range(max((len(b) for b in batches.values()), default=0)):
                self._ask(
                    "blocks",
                    {
                        p: Envelope(frames=tuple(b[round_]))
                        for p, b in batches.items()
                        if round_ < len(b)
                    },
                )
        self._stop_if_asked()

    def _seal(
        self, plan: Plan, keys: dict[str, ChannelKey], processors: list[str]
    ) -> dict[str, list[bytes]]:
        """Each owner seals its assigned blocks to their processors' channel keys (its routing
        share proves each holder against the committed assignment), a few per message (the
        first alone, to learn its size): the frames by processor."""
        r = self.requester
        sealed: dict[str, list[bytes]] = {p: [] for p in processors}
        owners = {o.lower(): o for o in r.owners}
        to_owners = {
            o: Envelope.of(plan.routing(owners.get(o, o)), *keys.values()) for o in r.manifests
        }
        share = {
            o: sum(len(b.holders) for b in plan.routing(owners.get(o, o)).blocks)
            for o in r.manifests
        }
        left = {o: n for o, n in share.items() if n}
        done = dict.fromkeys(left, 0)
        size: dict[str, int] = {}  # an owner's largest sealed block so far
        budget = self.transport.max_bytes // 2
        while left:
            counts = {
                o: min(n, max(1, budget // size[o]) if o in size else 1) for o, n in left.items()
            }
            requests = {
                o: Envelope({"first": done[o], "count": c}, to_owners[o].frames)
                for o, c in counts.items()
            }
            replies = self._ask("seal", requests)
            for address, count in counts.items():
                reply = replies.get(address)
                party = f"owner {self.name(address)}"
                targets = (
                    []
                    if reply is None
                    else [t.lower() for t in reply.text("processors").split(",") if t]
                )
                if reply is None or len(targets) != len(reply.frames) or len(targets) != count:
                    if reply is not None:
                        self._note(
                            f"seal: {party} sent {len(reply.frames)} blocks for "
                            f"{len(targets)} processors, {count} asked"
                        )
                    del left[address]  # what it sealed before stays delivered
                    continue
                for target, frame in zip(targets, reply.frames, strict=True):
                    try:
                        block = decode(frame, SealedBlock, party=party)
                        holders = [h.lower() for h in plan.holders(block.ref)]
                        if (
                            block.ref.owner.lower() != address
                            or target not in holders
                            or target not in sealed
                        ):
                            raise UntrustedInputError("sealed a block it may not send", party=party)
                    except UntrustedInputError as exc:
                        self._note(f"seal: {exc}")
                        continue
                    sealed[target].append(frame)
                    size[address] = max(size.get(address, 1), len(frame))
                done[address] += count
                left[address] -= count
                if left[address] <= 0:
                    del left[address]
        return sealed

    def _no_data(self) -> str:
        """Nobody delivered: end the task at once so the budget and the stakes return."""
        return "no winning data owner delivered any data: " + self.requester.abandon()

    def _epochs(self) -> None:
        traffic = self.transport.traffic
        sent, received = dict(traffic.received), dict(traffic.sent)
        try:
            self._epoch_loop()
        finally:
            assert self.run_ is not None
            self.run_.epoch_sent = {
                k: v - sent.get(k, 0) for k, v in traffic.received.items() if v > sent.get(k, 0)
            }
            self.run_.epoch_received = {
                k: v - received.get(k, 0) for k, v in traffic.sent.items() if v > received.get(k, 0)
            }

    def _results(self, replies: dict[str, Envelope]) -> None:
        r = self.requester
        for address, reply in sorted(replies.items()):
            party = f"processor {self.name(address)}"
            if "deferred" in reply.fields:
                continue  # asked to resume and did not answer
            try:
                result = reply.one(EpochResult, party=party)
                if result.processor.lower() != address:
                    raise UntrustedInputError("sent another processor's results", party=party)
                r.on_result(result)
            except UntrustedInputError as exc:
                self._note(f"epoch {r.epoch}: rejected {exc}")

    def _record_roots(self) -> None:
        try:
            self.requester.record_roots()
        except ContractRevert as exc:
            self._note(f"epoch {self.requester.epoch}: roots: {exc}")

    def _epoch_loop(self) -> None:
        r = self.requester
        with self._phase("epochs"):
            while True:
                self._stop_if_asked()
                if r.epoch == self.vanish_at:
                    raise _Vanished
                model = r.model_message()
                active = sorted(p.lower() for p in r.active)
                noise = self._noise() if r.private else {}
                replies = self._ask(
                    "model",
                    {
                        p: Envelope(frames=(*Envelope.of(model).frames, *noise.get(p, [])))
                        for p in active
                    },
                )
                self._results(replies)
                self._record_roots()
                deferred = {a: env for a, env in replies.items() if "deferred" in env.fields}
                if deferred:
                    # Late processors answer after the deadline (on a development chain the
                    # clock moves there at once): they record their roots late, paid less.
                    until = max(
                        env.integer("deferred", party=self.name(a)) for a, env in deferred.items()
                    )
                    self.wait_until(until)
                    self._results(
                        self._ask("resume", dict.fromkeys(deferred, Envelope({"epoch": r.epoch})))
                    )
                    self._record_roots()
                outcome = r.close_epoch()
                self._disputes(outcome)
                self.progress("epoch", {"epoch": outcome.epoch, "metric": outcome.metric})
                if outcome.finished:
                    assert self.run_ is not None
                    self.run_.stop_reason = outcome.stop_reason or ""
                    return

    def _noise(self) -> dict[str, list[bytes]]:
        """A private task's epoch: every owner with blocks is shown the model (weights and
        seed) and answers with its noise, sealed to each holder; the frames by processor.
        An owner that refuses or stays silent holds back its blocks' results this epoch."""
        r = self.requester
        assert r.plan is not None
        reveal = Envelope.of(r.reveal())
        owners = {o.lower() for o in r.manifests}
        out: dict[str, list[bytes]] = {}
        noised: set[BlockRef] = set()
        for address, reply in self._ask("noise", dict.fromkeys(sorted(owners), reveal)).items():
            party = f"owner {self.name(address)}"
            targets = [t.lower() for t in reply.text("processors").split(",") if t]
            if len(targets) != len(reply.frames):
                self._note(f"noise: {party} sent {len(reply.frames)} releases for {len(targets)}")
                continue
            for target, frame in zip(targets, reply.frames, strict=True):
                try:
                    release = decode(frame, NoiseRelease, party=party)
                    holders = [h.lower() for h in r.plan.holders(release.ref)]
                    if release.ref.owner.lower() != address or target not in holders:
                        raise UntrustedInputError("sent noise it may not send", party=party)
                    if release.epoch != r.epoch:
                        raise UntrustedInputError("sent noise for another epoch", party=party)
                except UntrustedInputError as exc:
                    self._note(f"noise: {exc}")
                    continue
                out.setdefault(target, []).append(frame)
                noised.add(release.ref)
        r.on_noise(noised)
        return out

    # ---------------------------------------------------------------- disputes

    def _disputes(self, outcome: EpochOutcome) -> None:
        """Run each dispute the epoch's proven faults call for, to its verdict."""
        if not outcome.disputes:
            return
        r = self.requester
        opened = []
        for record in outcome.disputes:
            try:
                r.open_dispute(record)
                opened.append(record)
            except (ContractRevert, FedmarketError) as exc:
                record.note = f"not opened: {exc}"
                self._note(f"dispute on {self.name(record.processor)}: {record.note}")
        if not opened:
            return
        self.wait_blocks(r.market.draw_delay_blocks() + 1)
        for record in opened:
            try:
                self._dispute(record)
            except (ContractRevert, FedmarketError) as exc:
                record.note = str(exc)
                self._note(f"dispute {record.dispute} on {self.name(record.processor)}: {exc}")
            if record.processor in r.slashed and record.processor not in outcome.flagged:
                outcome.flagged.append(record.processor)
            self.progress(
                "dispute",
                {
                    "dispute": record.dispute,
                    "processor": self.name(record.processor),
                    "outcome": record.outcome.name.lower() if record.outcome else record.note,
                },
            )

    def _dispute(self, record: DisputeRecord) -> None:
        r = self.requester
        market = r.market
        assert record.dispute is not None
        d = record.dispute
        market.draw(d)
        view = market.dispute_of(d)
        if view.state == 1:  # drawn too late, re-targeted: wait for the new block and draw
            self.wait_blocks(market.draw_delay_blocks() + 1)
            market.draw(d)
            view = market.dispute_of(d)
        auditors = {market.get_bid(r.task_id or 0, 1, i).bidder.lower(): i for i in view.panel}
        record.panel = sorted(auditors)
        model = r.models[record.epoch]
        if auditors:
            owner = record.block.owner.lower()
            keys = [k for a, k in self._keys.items() if a.lower() in auditors]
            leaf = r.leaf_proof(record)
            frames = Envelope.of(model, *([leaf] if leaf is not None else []), *keys, dispute=d)
            reply = self._ask("panel", {owner: frames}).get(owner)
            blocks: dict[str, bytes] = {}
            if reply is not None:
                targets = [t.lower() for t in reply.text("auditors").split(",") if t]
                if len(targets) == len(reply.frames):
                    blocks = dict(zip(targets, reply.frames, strict=True))
            asked = {}
            for auditor in auditors:
                frame = blocks.get(auditor)
                if frame is None:
                    continue
                try:
                    decode(frame, DisputeBlock, party=f"owner {self.name(owner)}")
                except UntrustedInputError as exc:
                    self._note(f"dispute {d}: {exc}")
                    continue
                asked[auditor] = Envelope(frames=(frame, *Envelope.of(model).frames))
            for auditor, env in self._ask("audit", asked).items():
                try:
                    reveal = env.one(VoteReveal, party=f"auditor {self.name(auditor)}")
                    if reveal.dispute == d and reveal.voter.lower() == auditor:
                        record.reveals[auditor] = reveal.digest
                except UntrustedInputError as exc:
                    self._note(f"dispute {d}: {exc}")
        view = market.dispute_of(d)
        voted = len(record.reveals) == len(view.panel)
        if not voted:
            self.wait_until(view.vote_deadline + 1)
        accused = record.processor.lower()
        self._ask("show", {accused: Envelope({"dispute": d})})
        if market.dispute_of(d).shown == bytes(32):
            r.show_leaf(record)
        try:
            r.resolve_dispute(record)
        except ContractRevert:
            # no verdict yet (or nobody showed the leaf): the show deadline settles it
            self.wait_until(market.dispute_of(d).show_deadline + 1)
            r.resolve_dispute(record)


def _batches(frames: list[bytes], budget: int) -> list[list[bytes]]:
    """``frames`` in order, cut into runs of at most ``budget`` bytes (one frame at least)."""
    out: list[list[bytes]] = []
    total = budget + 1
    for frame in frames:
        if total + len(frame) > budget or not out:
            out.append([])
            total = 0
        out[-1].append(frame)
        total += len(frame)
    return out
