"""Red team: a deviating requester against the privacy design (docs/privacy.md, P1-P8).

The adversary is the requester: it holds the secret key, writes the spec and relays every
message, so it can send any action to any party, in any order, any number of times, with any
bytes. Each test plays one such strategy on the product's own code (``run_task`` on the
plaintext twin and the in-memory chain, or a ``PartyNode.handle`` with crafted envelopes) and
asserts that the defence holds. The holes this file found first (a replayed model that made
an honest processor lose its committed leaves and be slashed, a fake dispute that sent a block
to auditors who never held it, three crashes on hostile input) are closed; their tests stay.

What is listed as not protected in docs/privacy.md (a colluding processor, no DP without
``[privacy] enabled``, owners seeing the model, aggregates, composition across tasks) is not
attacked here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from fedmarket.chain import merkle
from fedmarket.chain.events import EpochRoots, RootSubmitted
from fedmarket.errors import FedmarketError
from fedmarket.protocol.party import ACTIONS, PartyNode
from fedmarket.protocol.plaintext import Plaintext
from fedmarket.protocol.transport import Envelope
from fedmarket.roles.messages import (
    BlockRef,
    DisputeBlock,
    EncryptedModel,
    EpochResult,
    ModelReveal,
    NoiseRelease,
    RoutingShare,
    decode,
    encode,
)
from fedmarket.run import RunResult
from fedmarket.runtime.local import LocalTransport
from fedmarket.spec import SpecFile

from ._protocol import play, used
from ._protocol import private_spec as shared_spec

EPOCHS = 2


def private_spec(
    epochs: int = EPOCHS, changes: Mapping[str, Mapping[str, Any]] | None = None
) -> SpecFile:
    """Breast cancer, private, two or so blocks per owner."""
    merged: dict[str, dict[str, Any]] = {"he": {"block_points": 128}}
    for section, values in (changes or {}).items():
        merged[section] = {**merged.get(section, {}), **values}
    return shared_spec(epochs, changes=merged)


class Relay(LocalTransport):
    """The requester's relay: keeps every request and reply by action, and lets a test rewrite
    a request (``rewrite``) or act between the requester's steps (``after``)."""

    def __init__(self, nodes: list[PartyNode]) -> None:
        super().__init__(nodes)
        self.requests: dict[str, list[tuple[str, Envelope]]] = {}
        self.replies: dict[str, list[tuple[str, Envelope]]] = {}

    def ask(
        self, action: str, requests: Mapping[str, Envelope], *, timeout: float | None = None
    ) -> dict[str, Envelope]:
        requests = {a: self.rewrite(action, a, e) for a, e in requests.items()}
        replies = super().ask(action, requests, timeout=timeout)
        self.requests.setdefault(action, []).extend(requests.items())
        self.replies.setdefault(action, []).extend(replies.items())
        self.after(action, requests, replies)
        return replies

    def rewrite(self, action: str, address: str, envelope: Envelope) -> Envelope:
        return envelope

    def after(
        self, action: str, requests: Mapping[str, Envelope], replies: Mapping[str, Envelope]
    ) -> None:
        return None

    def owner_nodes(self) -> list[PartyNode]:
        return [n for n in self.nodes.values() if n.owner is not None and n.owner.blocks]

    def processor_nodes(self) -> list[PartyNode]:
        return [n for n in self.nodes.values() if n.processor is not None and n.processor.leaves]


def factory(cls: type[Relay]) -> tuple[list[Relay], Callable[[list[PartyNode]], Relay]]:
    made: list[Relay] = []

    def make(nodes: list[PartyNode]) -> Relay:
        made.append(cls(nodes))
        return made[-1]

    return made, make


@dataclass
class Honest:
    """One honest private run, its relay kept for direct attacks on the nodes afterwards."""

    result: RunResult
    relay: Relay
    models: dict[int, EncryptedModel] = field(default_factory=dict)
    reveals: dict[int, ModelReveal] = field(default_factory=dict)


@pytest.fixture(scope="module")
def honest() -> Honest:
    made, make = factory(Relay)
    result = play(private_spec(), transport=make)
    relay = made[0]
    run = Honest(result, relay)
    for _, env in relay.requests["model"]:
        model = decode(env.frames[0], EncryptedModel, party="test")
        run.models[model.epoch] = model
    for _, env in relay.requests["noise"]:
        reveal = decode(env.frames[0], ModelReveal, party="test")
        run.reveals[reveal.epoch] = reveal
    assert sorted(run.models) == sorted(run.reveals) == list(range(EPOCHS))
    assert all(n > 0 for n in used(result))
    return run


def refused(reply: Envelope | None, *words: str) -> str:
    """The error text of a refusal (it must be one, naming ``words``)."""
    assert reply is not None and "error" in reply.fields, reply
    text = reply.text("error")
    for word in words:
        assert word in text, text
    return text


# ---------------------------------------------------------------- out of order, repeated


def test_noise_for_an_epoch_not_yet_released_is_refused() -> None:
    """Noise for epoch e+1 asked while epoch e runs (a model the chain has no digest for yet):
    refused, and the refusal spends nothing (the real epoch-1 reveal is still served)."""
    answers: list[Envelope | None] = []

    class Early(Relay):
        def after(
            self, action: str, requests: Mapping[str, Envelope], replies: Mapping[str, Envelope]
        ) -> None:
            if action != "noise" or answers:
                return
            for address, env in requests.items():
                reveal = decode(env.frames[0], ModelReveal, party="test")
                ahead = reveal.model_copy(update={"epoch": reveal.epoch + 1})
                answers.append(self.nodes[address].handle("noise", Envelope.of(ahead)))

    result = play(private_spec(), transport=factory(Early)[1])
    assert answers and all("never released" in refused(a) for a in answers)
    assert all(n > 0 for n in used(result))  # epoch 1 was still served its noise


def test_a_repeated_noise_request_returns_the_same_noise(honest: Honest) -> None:
    """The same reveal asked again (a retry, or a relay hoping for a fresh draw to average
    away the noise): the same noise bytes, sealed again; nothing new is drawn."""
    node = honest.relay.owner_nodes()[0]
    assert node.owner is not None
    before = dict(node.owner.noise)
    again = node.handle("noise", Envelope.of(honest.reveals[0]))
    assert again is not None and again.frames and "error" not in again.fields
    assert node.owner.noise == before
    releases = [decode(f, NoiseRelease, party="test") for f in again.frames]
    assert {r.signature for r in releases} <= {sig for _, sig in before.values()}


def test_a_second_model_per_epoch_is_refused_whatever_the_float_encoding(honest: Honest) -> None:
    """A second reveal for a served epoch that differs only in a float's encoding (-0.0, a
    denormal, one ulp) is a second model: refused (under CKKS -0.0 and 0.0 encrypt alike, so a
    check on the ciphertext alone would let it through; the owner's ledger does not)."""
    node = honest.relay.owner_nodes()[0]
    reveal = honest.reveals[1]
    w = np.frombuffer(reveal.weights, dtype="<f8").copy()
    variants = []
    for change in (
        lambda v: np.where(v == 0.0, -0.0, v),
        lambda v: v + np.where(np.arange(v.size) == 0, 5e-324, 0.0),
        lambda v: np.nextafter(v, np.inf),
    ):
        variant = change(w.copy())
        if variant.tobytes() != w.tobytes():
            variants.append(variant)
    assert variants
    for variant in variants:
        crafted = reveal.model_copy(update={"weights": variant.astype("<f8").tobytes()})
        refused(node.handle("noise", Envelope.of(crafted)), "second model for epoch 1")


def test_malformed_reveals_are_refused_and_do_not_burn_the_epoch() -> None:
    """Before the honest reveal of each epoch the requester sends each owner NaN, infinite,
    huge-finite, denormal-shifted and wrongly sized weights and an 8-byte seed: every one
    refused, none counted as the epoch's release (the honest reveal is served after them)."""
    seen: list[str] = []

    class Junk(Relay):
        def rewrite(self, action: str, address: str, envelope: Envelope) -> Envelope:
            if action != "noise":
                return envelope
            node = self.nodes[address]
            reveal = decode(envelope.frames[0], ModelReveal, party="test")
            w = np.frombuffer(reveal.weights, dtype="<f8")
            for bad in (
                np.where(np.arange(w.size) == 0, np.nan, w),
                np.where(np.arange(w.size) == 0, np.inf, w),
                np.full_like(w, 1e300),
                w + 5e-324,
            ):
                if bad.tobytes() == w.tobytes():
                    continue
                crafted = reveal.model_copy(update={"weights": bad.astype("<f8").tobytes()})
                seen.append(refused(node.handle("noise", Envelope.of(crafted))))
            short = reveal.model_copy(update={"weights": reveal.weights[:-8]})
            seen.append(refused(node.handle("noise", Envelope.of(short)), "bytes of weights"))
            short_seed = reveal.model_copy(update={"seed": b"s" * 8})
            seen.append(refused(node.handle("noise", Envelope.of(short_seed))))
            return envelope

    result = play(private_spec(), transport=factory(Junk)[1])
    assert len(seen) >= 2 * 2 * 4  # owners x epochs x refusals
    assert all(n > 0 for n in used(result))
    assert all(
        v == pytest.approx(8.0, abs=1e-3) for v in (result.report.privacy or {})["spent"].values()
    )


def test_weights_just_outside_the_certified_region_get_no_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The requester's own projection moved a millionth past the certified boundary (a model
    as large as it may be, plus a hair): owners refuse that epoch's noise."""
    kind = type(private_spec().spec.kind)
    honest_certify = kind.certify
    calls: list[int] = []

    def past(self: Any, weights: np.ndarray, n_features: int, clip: float, *a: Any) -> Any:
        calls.append(1)
        w = honest_certify(self, weights, n_features, clip, *a)
        if len(calls) == 1:
            return w
        w = np.where(w == 0, 0.1, w)
        reach = self.reach(w, n_features, clip)
        return w * (self.guard_radius() * (1 + 1e-6) / reach)[:, None]

    monkeypatch.setattr(kind, "certify", past)
    result = play(private_spec())
    assert used(result)[0] > 0 and used(result)[1] == 0
    assert "certified" in " ".join(result.report.notes)


# ---------------------------------------------------------------- noise reuse


@pytest.mark.parametrize("restamp", [False, True])
def test_last_epochs_noise_with_this_epochs_model_is_refused(restamp: bool) -> None:
    """Noise cancellation: the epoch-0 releases (sealed to the right processors, signed by the
    owners) relayed again with the epoch-1 model, as they are and with their epoch field
    rewritten: processors add neither, so epoch 1 yields no total."""
    old: list[tuple[str, tuple[bytes, ...]]] = []

    class Reuse(Relay):
        def rewrite(self, action: str, address: str, envelope: Envelope) -> Envelope:
            if action != "model":
                return envelope
            model = decode(envelope.frames[0], EncryptedModel, party="test")
            if model.epoch == 0:
                old.append((address, envelope.frames[1:]))
                return envelope
            frames = []
            for a, fs in old:
                if a != address:
                    continue
                for f in fs:
                    r = decode(f, NoiseRelease, party="test")
                    frames.append(encode(r.model_copy(update={"epoch": 1})) if restamp else f)
            return Envelope(envelope.fields, (envelope.frames[0], *frames))

    result = play(private_spec(), transport=factory(Reuse)[1])
    assert used(result)[0] > 0 and used(result)[1] == 0
    notes = " ".join(result.report.notes)
    assert ("not signed by its owner" if restamp else "epoch 0") in notes, notes


def test_an_owners_recomputation_is_exactly_the_processors_result(honest: Honest) -> None:
    """An audit's recomputation carries the same noise as the processor's result (not a fresh
    draw, not none): the requester learns nothing it had not decrypted already."""
    owner_node = honest.relay.owner_nodes()[0]
    assert owner_node.owner is not None
    results = [
        decode(env.frames[0], EpochResult, party="test") for _, env in honest.relay.replies["model"]
    ]
    for epoch, model in honest.models.items():
        reply = owner_node.handle("recompute", Envelope.of(model, index=0))
        assert reply is not None and "error" not in reply.fields
        answer = decode(reply.frames[0], EpochResult, party="test")
        ref = BlockRef(owner=owner_node.owner.address, index=0)
        from_processors = {
            p
            for r in results
            if r.epoch == epoch
            for b, p in zip(r.blocks, r.payloads, strict=True)
            if b == ref and p
        }
        assert from_processors == {answer.payloads[0]}


# ---------------------------------------------------------------- crafted steps


def test_crafted_recompute_panel_audit_and_show_are_refused(honest: Honest) -> None:
    owner = honest.relay.owner_nodes()[0]
    processor = honest.relay.processor_nodes()[0]
    assert owner.owner is not None and processor.processor is not None
    model = honest.models[0]
    refused(owner.handle("recompute", Envelope.of(model, index=99)), "not ours")
    refused(
        owner.handle("recompute", Envelope.of(model.model_copy(update={"epoch": EPOCHS}), index=0)),
        "never released",
    )
    refused(
        owner.handle("recompute", Envelope.of(model.model_copy(update={"task_id": 999}), index=0)),
        "another task",
    )
    for dispute in (0, 999, 2**40):
        refused(owner.handle("panel", Envelope.of(model, dispute=dispute)))
        block = DisputeBlock(
            task_id=model.task_id,
            dispute=dispute,
            ref=BlockRef(owner=owner.owner.address, index=0),
            sealed=b"\x00" * 80,
        )
        refused(processor.handle("audit", Envelope.of(block, model)))
        shown = processor.handle("show", Envelope({"dispute": dispute}))
        assert shown is not None and shown.text("shown") == "no"


def test_crafted_routing_is_refused(honest: Honest) -> None:
    """Another owner's routing, a block index out of range, a block of the wrong size, a
    holder moved to another block: nothing sealed."""
    seals = honest.relay.requests["seal"]
    owners = honest.relay.owner_nodes()
    assert len(owners) >= 2
    first, second = owners[0], owners[1]
    env_first = next(e for a, e in seals if a == first.address.lower())
    env_second = next(e for a, e in seals if a == second.address.lower())
    routing = decode(env_first.frames[0], RoutingShare, party="test")

    def ask(node: PartyNode, share: RoutingShare, env: Envelope) -> Envelope | None:
        return node.handle("seal", Envelope(env.fields, (encode(share), *env.frames[1:])))

    refused(ask(second, routing, env_second), "another task's or owner's routing")
    b0 = routing.blocks[0]
    out_of_range = b0.model_copy(update={"index": 50})
    refused(ask(first, routing.model_copy(update={"blocks": [out_of_range]}), env_first))
    wrong_size = b0.model_copy(update={"size": b0.size - 1})
    refused(ask(first, routing.model_copy(update={"blocks": [wrong_size]}), env_first), "size")
    if len(routing.blocks) > 1:
        b1 = routing.blocks[1]
        moved = b1.model_copy(update={"holders": list(b0.holders)})
        refused(ask(first, routing.model_copy(update={"blocks": [moved]}), env_first))
    bad = {"first": -1}
    refused(first.handle("seal", Envelope(bad, env_first.frames)), "range")


def test_a_restarted_owner_still_refuses_a_second_model(honest: Honest) -> None:
    """A restart (PartyNode.state/restore) does not reset the owner's per-epoch ledger: a
    second model for a served epoch, or a fresh draw for the same one, is not to be had."""
    node = honest.relay.owner_nodes()[0]
    assert node.owner is not None
    fresh = PartyNode(node.name, node.new_roles)
    fresh.restore(node.state())
    other = honest.reveals[0].model_copy(update={"seed": bytes(32)})
    refused(fresh.handle("noise", Envelope.of(other)), "second model")
    again = fresh.handle("noise", Envelope.of(honest.reveals[0]))
    assert again is not None and "error" not in again.fields
    assert fresh.owner is not None and fresh.owner.noise == node.owner.noise


def test_garbage_to_every_action_gets_a_clean_refusal(honest: Honest) -> None:
    """Random bytes, a valid frame header over junk, a real message of the wrong type, bad
    fields: every action on an owner and a processor answers (an error or a status), never an
    exception out of ``handle``."""
    rng = random.Random(7)
    model = encode(honest.models[0])
    frames: list[tuple[bytes, ...]] = [
        (),
        (b"",),
        (bytes(rng.getrandbits(8) for _ in range(200)),),
        (b"FMK1" + bytes(rng.getrandbits(8) for _ in range(64)),),
        (model[: len(model) // 2],),
        (model, b"\xff" * 33),
        (encode(honest.reveals[0]),),
    ]
    fields: list[dict[str, Any]] = [
        {},
        {"index": -1, "dispute": -5, "epoch": -1, "first": "x", "count": 2**70},
        {"index": 2**70, "dispute": "1", "epoch": 2**70},
    ]
    nodes = [honest.relay.owner_nodes()[0], honest.relay.processor_nodes()[0]]
    crashes: list[str] = []
    for node in nodes:
        for action in (*ACTIONS, "nope"):
            if action == "settle":
                continue  # not untrusted input: it collects what the chain owes
            for fs in frames:
                for fl in fields:
                    if action == "recompute" and fl.get("index") == -1:
                        continue  # the hole of test_a_negative_block_index_does_not_crash_...
                    try:
                        reply = node.handle(action, Envelope(fl, fs))
                    except Exception as exc:
                        crashes.append(f"{node.name} {action} {fl} {len(fs)}: {exc!r}"[:300])
                        continue
                    assert reply is None or isinstance(reply, Envelope)
    assert not crashes, "\n".join(crashes)


# ---------------------------------------------------------------- spec edge values


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("privacy", "epsilon", 0.0),
        ("privacy", "epsilon", -1.0),
        ("privacy", "epsilon", float("inf")),
        ("privacy", "epsilon", float("nan")),
        ("privacy", "epsilon", 17.0),
        ("privacy", "delta", 0.0),
        ("privacy", "delta", 0.5),
        ("privacy", "clip_norm", 0.0),
        ("privacy", "clip_norm", 1e6),
        ("privacy", "min_block_points", 1),
        ("task", "max_epochs", 0),
        ("task", "max_epochs", 10**9),
    ],
)
def test_a_spec_that_looks_private_but_is_not_is_refused(
    section: str, key: str, value: Any
) -> None:
    with pytest.raises(ValidationError):
        private_spec(changes={section: {key: value}})


def test_keys_that_ask_less_than_the_private_spec_are_refused() -> None:
    """Keys published for a private spec but generated without noise, with a lower floor or a
    looser clip: owners and processors refuse them before bidding."""
    from fedmarket.privacy.policy import crypto_privacy
    from fedmarket.protocol.crypto import Privacy
    from fedmarket.roles.owner import check_layout

    spec = private_spec().spec
    wanted = crypto_privacy(spec)
    n = len(spec.features.names)
    for privacy in (
        Privacy(min_block_points=wanted.min_block_points, clip_norm=wanted.clip_norm),
        Privacy(min_block_points=wanted.min_block_points - 1, clip_norm=1.0, noise=True),
        Privacy(min_block_points=wanted.min_block_points, clip_norm=2.0, noise=True),
    ):
        keys = Plaintext().keygen(
            kind=spec.kind,
            n_features=n,
            n_outputs=1,
            preset="test",
            expected_samples=100,
            privacy=privacy,
        )
        public = Plaintext().public(keys.public.data, party="requester")
        with pytest.raises(FedmarketError):
            check_layout(spec, public.layout)


# ---------------------------------------------------------------- holes


def test_a_replayed_model_cannot_rewrite_a_processors_committed_leaves() -> None:
    replayed: list[Envelope | None] = []

    class Replay(Relay):
        def after(
            self, action: str, requests: Mapping[str, Envelope], replies: Mapping[str, Envelope]
        ) -> None:
            if action != "model" or replayed:
                return
            model = decode(next(iter(requests.values())).frames[0], EncryptedModel, party="test")
            if model.epoch != 1:
                return
            # epoch 0 is closed and its roots are on chain: replay its model alone
            old = next(e for _, e in self.requests["model"] if e.frames[0] != encode(model))
            for address in requests:
                replayed.append(self.nodes[address].handle("model", Envelope({}, old.frames[:1])))

    made, make = factory(Replay)
    result = play(private_spec(), transport=make)
    assert replayed and all(n > 0 for n in used(result))
    for node in made[0].processor_nodes():
        p = node.processor
        assert p is not None and p.task_id is not None
        committed = _committed_roots(p.market, p.task_id, 0, p.bid)
        assert committed, node.name
        # the defence: what it keeps for epoch 0 still opens the root it committed
        assert merkle.result_root(p.task_id, 0, p.leaves[0]) in committed, (
            f"{node.name}'s leaves for epoch 0 no longer open the root it committed"
        )


@pytest.mark.parametrize("replay", [False, True])
def test_an_honest_processor_is_not_slashed_after_a_replayed_model(
    monkeypatch: pytest.MonkeyPatch, replay: bool
) -> None:
    """A requester accuses an honest processor of a block it computed right, and never shows
    the leaf itself: the processor shows its own and is not slashed (replay=False). The same
    after the requester replayed that epoch's model to it without noise (replay=True)."""
    from fedmarket.integrity.types import Evidence, Strength
    from fedmarket.roles.requester import DisputeRecord, Requester

    victim: list[str] = []

    class Replay(Relay):
        def after(
            self, action: str, requests: Mapping[str, Envelope], replies: Mapping[str, Envelope]
        ) -> None:
            if action != "model" or victim:
                return
            model = decode(next(iter(requests.values())).frames[0], EncryptedModel, party="test")
            if model.epoch != 1:
                return
            old = next(e for _, e in self.requests["model"] if e.frames[0] != encode(model))
            address = sorted(requests)[0]
            if replay:
                self.nodes[address].handle("model", Envelope({}, old.frames[:1]))
            victim.append(address)

    honest_close = Requester.close_epoch

    def close_and_accuse(self: Requester) -> Any:
        outcome = honest_close(self)
        if outcome.epoch == 1 and victim:
            assert self.plan is not None
            accused = next(a for a in self.plan.entries if a.lower() == victim[0])
            ref = self.plan.entries[accused][0].ref
            claim = Evidence(accused, "processor", 0, "made-up", Strength.PROVEN, "a lie")
            record = DisputeRecord(accused, ref, 0, evidence=claim)
            outcome.disputes.append(record)
            self.disputes.append(record)
        return outcome

    monkeypatch.setattr(Requester, "close_epoch", close_and_accuse)
    monkeypatch.setattr(Requester, "show_leaf", lambda self, record: False)  # it never shows
    result = play(private_spec(epochs=3), transport=factory(Replay)[1])
    assert victim
    outcomes = [d["outcome"] for d in result.report.disputes]
    assert outcomes, result.report.notes
    assert all(o not in ("unopened", "convicted") for o in outcomes), outcomes


def _committed_roots(market: Any, task: int, epoch: int, bid: int | None) -> set[bytes]:
    """The roots recorded on chain for processor ``bid`` in ``epoch`` (submitted by itself, or
    relayed with everyone's by the requester)."""
    out = {
        bytes(e.root)
        for e in market.logs(RootSubmitted, task=task)
        if e.epoch == epoch and e.processor == bid
    }
    for e in market.logs(EpochRoots, task=task):
        if e.epoch != epoch:
            continue
        bids = [i for i in range(128) if e.processors >> i & 1]
        out |= {bytes(r) for i, r in zip(bids, e.roots, strict=True) if i == bid}
    return out


def test_a_model_after_the_task_closed_is_refused_cleanly(honest: Honest) -> None:
    node = honest.relay.processor_nodes()[0]
    try:
        reply = node.handle("model", Envelope.of(honest.models[0]))
    except AssertionError as exc:
        pytest.fail(f"handle raised {exc!r}")
    assert reply is not None


def test_noise_asked_before_all_blocks_are_routed_does_not_crash_the_owner() -> None:
    crashes: list[BaseException] = []
    answers: list[Envelope | None] = []
    full: dict[str, Envelope] = {}

    class Partial(Relay):
        def rewrite(self, action: str, address: str, envelope: Envelope) -> Envelope:
            if action != "seal":
                return envelope
            full.setdefault(address, envelope)
            routing = decode(envelope.frames[0], RoutingShare, party="test")
            first_only = routing.model_copy(update={"blocks": routing.blocks[:1]})
            return Envelope(envelope.fields, (encode(first_only), *envelope.frames[1:]))

        def after(
            self, action: str, requests: Mapping[str, Envelope], replies: Mapping[str, Envelope]
        ) -> None:
            if action != "noise" or answers or crashes:
                return
            address, env = next(iter(requests.items()))
            node = self.nodes[address]
            node.handle("seal", Envelope({}, full[address].frames))  # now every block routed
            try:
                answers.append(node.handle("noise", env))  # the same reveal again
            except Exception as exc:
                crashes.append(exc)

    play(private_spec(), transport=factory(Partial)[1])
    assert answers or crashes
    assert not crashes, f"handle raised {crashes[0]!r}"


def test_a_negative_block_index_does_not_crash_the_owner(honest: Honest) -> None:
    owner = honest.relay.owner_nodes()[0]
    relay = LocalTransport([owner])
    replies = relay.ask("recompute", {owner.address: Envelope.of(honest.models[0], index=-1)})
    assert not replies and "index" in " ".join(relay.problems)


def test_a_fake_dispute_sends_no_block_beyond_its_routed_holders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedmarket.integrity.types import Evidence, Strength
    from fedmarket.roles.requester import DisputeRecord, Requester

    routed: dict[BlockRef, set[str]] = {}
    honest_close = Requester.close_epoch

    def close_and_accuse(self: Requester) -> Any:
        outcome = honest_close(self)
        assert self.plan is not None
        for processor, entries in self.plan.entries.items():
            for entry in entries:
                routed.setdefault(entry.ref, set()).add(processor.lower())
        if outcome.epoch == 0:
            accused = next(p for p, es in sorted(self.plan.entries.items()) if es)
            ref = self.plan.entries[accused][0].ref
            claim = Evidence(accused, "processor", 0, "made-up", Strength.PROVEN, "a lie")
            record = DisputeRecord(accused, ref, 0, evidence=claim)
            outcome.disputes.append(record)
            self.disputes.append(record)
        return outcome

    monkeypatch.setattr(Requester, "close_epoch", close_and_accuse)
    data = private_spec().model_dump()
    data["run"]["processors"] = [
        {"name": f"processor{i + 1}", "capacity": 130, "price": 10**14 + i, "strategy": "fixed"}
        for i in range(4)
    ]
    made, make = factory(Relay)
    result = play(SpecFile.model_validate(data), transport=make)
    relay = made[0]
    outcomes = [d["outcome"] for d in result.report.disputes]
    assert outcomes and "unopened" not in outcomes and "convicted" not in outcomes, outcomes
    # (auditor, block) of every disputed block the owner sealed and the requester relayed
    audit_targets = [
        (a.lower(), decode(env.frames[0], DisputeBlock, party="test").ref)
        for a, env in relay.requests.get("audit", [])
    ]
    beyond = [(a, ref) for a, ref in audit_targets if a not in routed[ref]]
    assert not beyond, f"blocks sealed to processors that do not hold them: {beyond}"
    # the owner saw the accused's proven leaf equal its own recomputation: no auditor got it
    assert not audit_targets
    assert "false accusation" in " ".join(result.report.notes), result.report.notes
