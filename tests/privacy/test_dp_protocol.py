"""Differential privacy on the whole protocol, against a requester who deviates (issue 14).

The adversary is the requester: it holds the secret key, writes the spec, and relays every
message between owners and processors (here a transport that rewrites them). Each epoch of a
private task it must reveal its model (weights and seed) to the block owners, who check it and
release their noise sealed to the processors that hold their blocks, signed by their accounts.
What it tries, and what must happen:

- skip the owners' noise (send the model alone): processors compute nothing, so it decrypts
  no total at all;
- substitute its own noise (zero, or noise it knows and can subtract), under the owner's
  signature or its own: processors refuse it, no total;
- reveal other weights than it encrypted (a crafted ciphertext behind a benign model), or
  weights outside the kind's certified region (huge weights amplify one sample): owners
  release no noise, no total;
- ask twice in one epoch with different models, or past the epoch cap: owners refuse;
- a task looser than an owner's own epsilon: that owner does not sell.

The twin (``Plaintext``) differs from CKKS only in its crypto; one test runs real CKKS.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from eth_account import Account

from fedmarket.chain.signing import noise_digest, noise_signer, sign_noise
from fedmarket.errors import UntrustedInputError
from fedmarket.privacy.accounting import epsilon_spent
from fedmarket.protocol.crypto import PublicKeys
from fedmarket.protocol.party import PartyNode
from fedmarket.protocol.plaintext import Plaintext
from fedmarket.protocol.transport import Envelope
from fedmarket.roles.channel import seal
from fedmarket.roles.messages import (
    ChannelKey,
    ModelReveal,
    NoiseRelease,
    TaskAnnouncement,
    decode,
    encode,
)
from fedmarket.runtime.local import LocalTransport
from fedmarket.spec import SpecFile

from ._protocol import play, used
from ._protocol import private_spec as shared_spec

EPOCHS = 4


def private_spec(epsilon: float = 8.0, epochs: int = EPOCHS) -> SpecFile:
    return shared_spec(epochs, epsilon=epsilon)


class Adversary(LocalTransport):
    """A requester relaying messages, which learns what it relays (the public keys, the
    processors' channel keys) and rewrites what it chooses (``rewrite``)."""

    def __init__(self, nodes: list[PartyNode]) -> None:
        super().__init__(nodes)
        self.public: PublicKeys | None = None
        self.keys: dict[str, ChannelKey] = {}
        self.replies: dict[str, list[Envelope]] = {}

    def ask(
        self, action: str, requests: Mapping[str, Envelope], *, timeout: float | None = None
    ) -> dict[str, Envelope]:
        if action == "announce" and self.public is None:
            first = next(iter(requests.values()))
            announcement = decode(first.frames[0], TaskAnnouncement, party="test")
            self.public = Plaintext().public(announcement.public_context, party="test")
        requests = {a: self.rewrite(action, a, e) for a, e in requests.items()}
        replies = super().ask(action, requests, timeout=timeout)
        if action == "channel_key":
            for env in replies.values():
                if env.frames:
                    key = decode(env.frames[0], ChannelKey, party="test")
                    self.keys[key.processor.lower()] = key
        self.replies.setdefault(action, []).extend(replies.values())
        self.after(action, requests, replies)
        return replies

    def rewrite(self, action: str, address: str, envelope: Envelope) -> Envelope:
        return envelope

    def after(
        self, action: str, requests: Mapping[str, Envelope], replies: Mapping[str, Envelope]
    ) -> None:
        return None


def test_a_private_task_trains_on_noisy_totals_and_reports_each_owners_epsilon() -> None:
    capture: list[tuple[str, str, str, bytes]] = []
    first = play(private_spec(), capture=capture)
    report = first.report
    assert report.privacy is not None and len(report.epochs) == EPOCHS
    assert all(n > 0 for n in used(first))
    # every epoch, every owner released one signed noise message per held block copy
    releases = []
    for _, _, action, frame in capture:
        if action == "model":
            try:
                releases.append(decode(frame, NoiseRelease, party="test"))
            except UntrustedInputError:
                continue  # the model itself

    assert {r.epoch for r in releases} == set(range(EPOCHS))
    owners = {r.ref.owner.lower() for r in releases}
    assert len(owners) == 2
    sigma = report.privacy["noise_multiplier"]
    spent = epsilon_spent(sigma, 1e-5, EPOCHS)
    assert spent == pytest.approx(8.0, abs=1e-3)  # the cap spends exactly the promise
    assert sorted(report.privacy["spent"]) == ["owner1", "owner2"]
    assert all(v == pytest.approx(spent) for v in report.privacy["spent"].values())
    # the noise is there: the same task again ends elsewhere (a task without DP is replayed
    # to the bit), and still learns (validation accuracy well above the majority class)
    second = play(private_spec())
    assert not np.array_equal(first.model.weight_matrix, second.model.weight_matrix)
    plain = private_spec().model_dump()
    plain["privacy"]["enabled"] = False
    a, b = (play(SpecFile.model_validate(plain)) for _ in range(2))
    assert np.array_equal(a.model.weight_matrix, b.model.weight_matrix)
    assert report.epochs[-1].metric > 0.85


def test_without_the_owners_noise_processors_compute_nothing() -> None:
    class Strip(Adversary):
        def rewrite(self, action: str, address: str, envelope: Envelope) -> Envelope:
            if action == "model":
                return Envelope(envelope.fields, envelope.frames[:1])  # the model alone
            return envelope

    result = play(private_spec(), transport=Strip)
    assert used(result) == [0] * EPOCHS  # not one total decrypted


@pytest.mark.parametrize("signer", ["owner", "requester"])
def test_noise_the_requester_substitutes_is_refused(signer: str) -> None:
    """Zero noise sealed to each processor's real channel key, under the owner's signature of
    its own noise, or signed by the requester's account: no processor adds it."""
    thief = Account.create()

    class Substitute(Adversary):
        swapped = 0

        def rewrite(self, action: str, address: str, envelope: Envelope) -> Envelope:
            if action != "model" or len(envelope.frames) < 2:
                return envelope
            assert self.public is not None
            frames = [envelope.frames[0]]
            for frame in envelope.frames[1:]:
                release = decode(frame, NoiseRelease, party="test")
                zero = self.public.encrypt_noise(
                    block_id=f"{release.ref.owner.lower()}/{release.ref.index}",
                    epoch=release.epoch,
                    std=0.0,
                    rng=random.Random(0),
                )
                signature = release.signature
                if signer == "requester":
                    domain = next(iter(self.nodes.values())).parties[0].market.domain_separator()
                    signature = sign_noise(
                        thief,
                        domain,
                        release.task_id,
                        release.epoch,
                        release.ref.index,
                        hashlib.sha256(zero).digest(),
                    )
                key = self.keys[address.lower()].public_key
                forged = release.model_copy(
                    update={"sealed": seal(zero, key), "signature": signature}
                )
                frames.append(encode(forged))
                self.swapped += 1
            return Envelope(envelope.fields, tuple(frames))

    made: list[Substitute] = []

    def transport(nodes: list[PartyNode]) -> Substitute:
        made.append(Substitute(nodes))
        return made[-1]

    result = play(private_spec(epochs=2), transport=transport)
    assert made[0].swapped > 0
    assert used(result) == [0, 0]
    notes = " ".join(result.report.notes)
    assert "not signed by its owner" in notes, notes


def test_a_revealed_model_that_is_not_the_one_processors_got_gets_no_noise() -> None:
    """The requester shows owners a benign model while processors get another ciphertext (its
    digest is on chain): the re-encryption differs, so owners release nothing."""

    class Lie(Adversary):
        def rewrite(self, action: str, address: str, envelope: Envelope) -> Envelope:
            if action != "noise":
                return envelope
            reveal = decode(envelope.frames[0], ModelReveal, party="test")
            w = np.frombuffer(reveal.weights, dtype="<f8") + 0.01
            return Envelope.of(reveal.model_copy(update={"weights": w.tobytes()}))

    result = play(private_spec(epochs=2), transport=Lie)
    assert used(result) == [0, 0]
    assert "does not re-encrypt" in " ".join(result.report.notes)
    assert all(v == 0.0 for v in (result.report.privacy or {})["spent"].values())


def test_weights_outside_the_certified_region_get_no_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Huge weights push samples far into the sigmoid's polynomial, where one sample can
    dominate a total; the requester reveals them honestly (digest and seed match), and owners
    still refuse to release noise for them."""
    kind = type(private_spec().spec.kind)
    honest = kind.certify
    calls: list[int] = []

    def huge(self: Any, weights: np.ndarray, *args: Any, **kw: Any) -> np.ndarray:
        # the requester's own projection, replaced from epoch 1 on by weights of 50
        calls.append(1)
        return honest(self, weights, *args, **kw) if len(calls) == 1 else np.full_like(weights, 50)

    monkeypatch.setattr(kind, "certify", huge)
    result = play(private_spec(epochs=3))
    counts = used(result)
    assert counts[0] > 0 and counts[1] == 0
    assert "certified" in " ".join(result.report.notes)


def test_one_noise_release_per_epoch_and_none_past_the_cap() -> None:
    second: list[Envelope] = []
    late: list[Envelope] = []

    class Again(Adversary):
        def after(
            self, action: str, requests: Mapping[str, Envelope], replies: Mapping[str, Envelope]
        ) -> None:
            if action != "noise" or second:
                return
            address, envelope = next(iter(requests.items()))
            reveal = decode(envelope.frames[0], ModelReveal, party="test")
            other = reveal.model_copy(update={"seed": bytes(32)})
            node = self.nodes[address.lower()]
            second.append(node.handle("noise", Envelope.of(other)) or Envelope())
            same = node.handle("noise", Envelope.of(reveal)) or Envelope()
            assert len(same.frames) == len(replies[address].frames) > 0  # a retry is served
            past = reveal.model_copy(update={"epoch": EPOCHS})
            late.append(node.handle("noise", Envelope.of(past)) or Envelope())

    result = play(private_spec(), transport=Again)
    assert len(result.report.epochs) == EPOCHS
    assert "second model for epoch 0" in second[0].text("error")
    assert "past the task's" in late[0].text("error")


def test_an_owner_sells_only_within_its_own_epsilon() -> None:
    spec = private_spec(epsilon=8.0)
    data = spec.model_dump()
    data["run"]["owners"][0]["max_epsilon"] = 3.0
    data["task"]["num_points"] = data["run"]["owners"][1]["points"]  # owner2 can fill it
    result = play(SpecFile.model_validate(data))
    notes = " ".join(result.report.notes)
    assert "epsilon <= 3" in notes, notes
    assert sorted((result.report.privacy or {})["spent"]) == ["owner2"]
    # and a task without DP at all
    data["privacy"]["enabled"] = False
    notes = " ".join(play(SpecFile.model_validate(data)).report.notes)
    assert "offers no DP" in notes, notes


def test_a_noise_signature_binds_task_epoch_owner_block_and_bytes() -> None:
    owner, other = Account.create(), Account.create()
    domain = bytes(range(32))
    noise = hashlib.sha256(b"noise").digest()
    signature = sign_noise(owner, domain, 7, 3, 1, noise)
    assert noise_signer(domain, 7, 3, owner.address, 1, noise, signature) == owner.address
    for args in [(8, 3, 1, noise), (7, 4, 1, noise), (7, 3, 2, noise), (7, 3, 1, bytes(32))]:
        task, epoch, block, digest = args
        assert noise_signer(domain, task, epoch, owner.address, block, digest, signature) != (
            owner.address
        )
    assert noise_signer(domain, 7, 3, other.address, 1, noise, signature) != other.address
    assert noise_signer(domain, 7, 3, owner.address, 1, noise, bytes(65)) is None
    with pytest.raises(ValueError):
        noise_digest(domain, 7, 3, owner.address, 1, b"short")


def test_a_forging_processor_in_a_private_task_is_convicted_by_auditors_using_the_noise() -> None:
    """Disputes still work with noise: the owner recomputes with the noise it released, the
    drawn auditors get it sealed with the block; the honest are not accused."""
    data = private_spec(epochs=3).model_dump()
    data["he"]["block_points"] = 128  # two or so blocks per owner
    data["integrity"]["replication"] = 1.0  # every block on two processors
    data["run"]["processors"] = [
        {"name": f"processor{i + 1}", "capacity": 200, "price": 10**14 + i, "strategy": "fixed"}
        | ({"attack": "random"} if i == 0 else {})
        for i in range(3)
    ]
    result = play(SpecFile.model_validate(data))
    flagged = {(f["party"], f["proven"]) for f in result.report.flags}
    assert flagged == {("processor1", True)}, result.report.notes
    assert [d["outcome"] for d in result.report.disputes] == ["convicted"]
    assert all(n > 0 for n in used(result))


def test_owner_state_survives_a_restart_with_its_noise() -> None:
    """A node restarted mid-task keeps what it released (audits need the same noise)."""
    nodes: list[PartyNode] = []

    def keep(ns: list[PartyNode]) -> LocalTransport:
        nodes.extend(ns)
        return LocalTransport(ns)

    play(private_spec(epochs=2), transport=keep)
    owner_node = next(n for n in nodes if n.owner is not None and n.owner.noise)
    assert owner_node.owner is not None
    saved = owner_node.state()
    fresh = PartyNode(owner_node.name, owner_node.new_roles)
    fresh.restore(saved)
    assert fresh.owner is not None
    assert fresh.owner.noise == owner_node.owner.noise
    assert fresh.owner.released == owner_node.owner.released
    assert {i: [p for p, _ in hs] for i, hs in fresh.owner.holders.items()} == {
        i: [p for p, _ in hs] for i, hs in owner_node.owner.holders.items()
    }


def test_processors_refuse_noise_for_blocks_they_do_not_hold() -> None:
    """Noise for another processor's block (the requester redirects a release): refused as a
    whole, with the reason named."""

    class Redirect(Adversary):
        def rewrite(self, action: str, address: str, envelope: Envelope) -> Envelope:
            if action != "model" or len(envelope.frames) < 2:
                return envelope
            release = decode(envelope.frames[1], NoiseRelease, party="test")
            moved = release.model_copy(
                update={"ref": release.ref.model_copy(update={"index": release.ref.index + 50})}
            )
            return Envelope(envelope.fields, (envelope.frames[0], encode(moved)))

    result = play(private_spec(epochs=2), transport=Redirect)
    assert used(result) == [0, 0]
    assert "not one we hold" in " ".join(result.report.notes)


def test_untrusted_noise_bytes_are_refused_cleanly() -> None:
    with pytest.raises(UntrustedInputError):
        decode(b"FMK1" + bytes(40), NoiseRelease, party="requester")


def test_a_private_task_on_real_ckks_spends_its_epsilon_and_learns() -> None:
    """The same protocol on real CKKS ciphertexts: noise encrypted by the owners, added under
    encryption by the processors, decrypted within the bound; two epochs of breast cancer."""
    from fedmarket.he.crypto import CKKS

    result = play(private_spec(epochs=2), crypto=CKKS())
    report = result.report
    assert [o.blocks_used for o in result.outcomes] == [2, 2]
    assert report.privacy is not None
    assert all(v == pytest.approx(8.0, abs=1e-3) for v in report.privacy["spent"].values())
    assert not result.run.notes if result.run is not None else True
    assert report.epochs[-1].metric > 0.8


def test_an_owner_recomputes_only_the_model_released_on_chain() -> None:
    """An audit asks a block's owner to recompute it. At weights of the requester's choosing
    that would be one more query of the block, and in a private task one with noise the
    requester has already seen: two such answers would cancel the noise. Refused."""
    from fedmarket.roles.messages import EncryptedModel

    nodes: list[PartyNode] = []
    capture: list[tuple[str, str, str, bytes]] = []

    def keep(ns: list[PartyNode]) -> LocalTransport:
        nodes.extend(ns)
        transport = LocalTransport(ns)
        transport.capture = capture
        return transport

    play(private_spec(epochs=2), transport=keep)
    sent = [f for _, _, action, f in capture if action == "model"]
    model = decode(sent[0], EncryptedModel, party="test")
    owner = next(n for n in nodes if n.owner is not None and n.owner.noise)
    honest = owner.handle("recompute", Envelope.of(model, index=0))
    assert honest is not None and "error" not in honest.fields  # the released model: served
    keys = Plaintext().public(owner.owner.keys.data, party="test")  # type: ignore[union-attr]
    crafted = model.model_copy(
        update={"payload": keys.encrypt_model(np.full((1, 31), 0.1), epoch=model.epoch)}
    )
    refused = owner.handle("recompute", Envelope.of(crafted, index=0))
    assert refused is not None and "does not match the digest" in refused.text("error")
