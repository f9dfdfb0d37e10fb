"""The data owner: bids points, encrypts them under the requester's key, seals them to processors.

Its plaintext never leaves this object: what goes out are ciphertexts sealed to a processor's
channel key, their digests, and block sizes. It commits its manifest (sizes and digests) on
chain, sends each block only to processors the committed assignment proves hold it, keeps
its own ciphertexts to recompute any of its blocks for an audit, and, when one of its blocks
is disputed, seals it to the drawn auditors and votes the digest it computes itself (a vote
that can veto a conviction of a processor that computed the same).

In a task with differential privacy (``[privacy] enabled``) it also clips every sample before
encrypting, and each epoch it is asked for its noise with the model revealed (weights and
seed): it re-encrypts them, compares with the digest released on chain, checks the weights
against the kind's certified region, and only then draws one noise message per block (at most
one release per epoch, never more epochs than the task's cap), signs it, and seals it to each
of the block's holders. No noise, no result: processors compute none of its blocks without it.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmarket.attacks.owner import NoDelivery, OwnerAttack
from fedmarket.backbone import task_features
from fedmarket.chain import merkle
from fedmarket.chain.client import Side
from fedmarket.chain.events import ModelReleased
from fedmarket.chain.ledger import Market
from fedmarket.chain.signing import channel_key_signer, sign_noise
from fedmarket.data import scale
from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.privacy.owner import check_revealed_model, clip_rows
from fedmarket.privacy.policy import crypto_privacy, noise_std
from fedmarket.protocol.crypto import Layout, PublicKeys
from fedmarket.roles.assignment import check_holder
from fedmarket.roles.channel import block_digest, seal
from fedmarket.roles.messages import (
    BlockRef,
    ChannelKey,
    DataManifest,
    DisputeBlock,
    EncryptedModel,
    LeafProof,
    ModelReveal,
    NoiseRelease,
    RoutingShare,
    SealedBlock,
    TaskAnnouncement,
)
from fedmarket.roles.party import Party
from fedmarket.spec import TaskSpec


def block_id(ref: BlockRef) -> str:
    """The id an encrypted block carries inside its envelope."""
    return f"{ref.owner.lower()}/{ref.index}"


def released_digest(party: Party, epoch: int, *, sender: str = "requester") -> bytes:
    """The model digest released on chain for ``epoch`` (refused if none was)."""
    assert party.task_id is not None
    released = [e for e in party.market.logs(ModelReleased, task=party.task_id) if e.epoch == epoch]
    if not released:
        raise UntrustedInputError(f"sent a model for epoch {epoch}, never released", party=sender)
    return bytes(released[-1].model_digest)


def check_model(party: Party, model: EncryptedModel, *, sender: str = "requester") -> None:
    """Refuse a model unless its sha256 is the digest released on chain for its epoch."""
    if released_digest(party, model.epoch, sender=sender) != hashlib.sha256(model.payload).digest():
        raise UntrustedInputError(
            f"the epoch {model.epoch} model does not match the digest released on chain",
            party=sender,
        )


def check_layout(spec: TaskSpec, layout: Layout) -> None:
    """Refuse published keys that do not hold every party to the spec's ``[privacy]``: a
    requester that announces a private task with keys that ask no noise, a looser clip or a
    lower floor would get totals the spec promised it would not."""
    wanted = crypto_privacy(spec)
    clip = wanted.clip_norm or float(np.sqrt(layout.n_features))
    got = (layout.private, layout.min_block_points, layout.clip)
    if got != (wanted.noise, wanted.min_block_points, clip):
        raise UntrustedInputError(
            f"published keys with privacy (noise, floor, clip) = {got}, the spec asks "
            f"{(wanted.noise, wanted.min_block_points, clip)}",
            party="requester",
        )


def block_bounds(fill: int, capacity: int, block_points: int, floor: int) -> list[int]:
    """Where an owner cuts its ``fill`` points into blocks, sizes as even as possible: as many
    as ``block_points`` asks (0: as few as the HE layout's ``capacity`` allows), but never a
    block above ``capacity`` and never one below the task's privacy ``floor`` (a block's
    decrypted totals sum its samples, so a small block exposes them to the requester; the
    floor wins over ``block_points``). With ``capacity >= 2 * floor - 1``
    (``check_block_floor``) every fill of at least ``floor`` points splits this way;
    otherwise the owner encrypts nothing."""
    if fill < floor:
        raise UntrustedInputError(
            f"a fill of {fill} points is below the task's floor of {floor}: nothing encrypted",
            party="requester",
        )
    fewest = -(-fill // capacity)
    wanted = -(-fill // block_points) if block_points else fewest
    count = max(fewest, min(wanted, fill // floor))
    bounds = [int(b) for b in np.linspace(0, fill, count + 1).round()]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    if min(sizes) < floor or max(sizes) > capacity:
        raise UntrustedInputError(
            f"a fill of {fill} points cannot be cut into blocks of {floor} (the task's privacy "
            f"floor) to {capacity} points (a block's capacity): nothing encrypted",
            party="requester",
        )
    return bounds


def check_block_floor(capacity: int, floor: int) -> None:
    """The requester's check before announcing: every fill the contract allows (``>= floor``)
    must split into blocks of at least ``floor`` points."""
    if capacity < 2 * floor - 1:
        raise ConfigError(
            f"a block holds at most {capacity} points, so a fill just above "
            f"privacy.min_block_points = {floor} would split into blocks below it",
            hint="choose an HE preset with more slots per block, fewer features, or a lower "
            "privacy.min_block_points (not below 64)",
        )


def check_channel_key(market: Market, task_id: int, processor: str, key: ChannelKey) -> None:
    """Refuse to seal anything to ``key`` unless ``processor``'s own account signed it for this
    task on this chain and market (a key the requester relays could be its own)."""
    signer = channel_key_signer(
        market.domain_separator(), task_id, processor, key.public_key, key.signature
    )
    if (
        key.task_id != task_id
        or key.processor.lower() != processor.lower()
        or (signer or "").lower() != processor.lower()
    ):
        raise UntrustedInputError(
            f"sent a channel key for {processor} that {processor} did not sign for task "
            f"{task_id} on this market: nothing is sealed to it",
            party="requester",
        )


@dataclass
class DataOwner(Party):
    """Holds ``X``, ``y`` in plaintext; offers ``points`` at ``price`` per point.

    ``attack`` makes it a dishonest owner (``fedmarket.attacks``; simulations and tests only):
    it poisons its data once it knows the task's schema (seeded by ``attack_seed``), or wins
    and never delivers (``no-delivery``).
    """

    X: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    points: int = 0
    price: int = 0
    attack: OwnerAttack | None = None
    attack_seed: int = 0
    base: Path | None = None  # where the spec's files (a backbone) are, on this owner's side
    # the most epsilon this owner sells its records at (None: any task, private or not)
    max_epsilon: float | None = None
    # where its noise comes from; None: the operating system's (tests pass a seeded one)
    noise_rng: random.Random | None = None
    spec: TaskSpec | None = field(default=None, init=False)
    clean: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False)
    keys: PublicKeys | None = field(default=None, init=False)
    fill: int = field(default=0, init=False)
    bid: int | None = field(default=None, init=False)  # its data bid's index
    blocks: list[bytes] = field(default_factory=list, init=False)
    # block index -> its holders' checked channel keys (from the committed assignment)
    holders: dict[int, list[tuple[str, ChannelKey]]] = field(default_factory=dict, init=False)
    # epoch -> sha256 of the model revealed for it (at most one per epoch)
    released: dict[int, bytes] = field(default_factory=dict, init=False)
    # (epoch, block index) -> (noise message, our signature of it): kept for audits, disputes
    noise: dict[tuple[int, int], tuple[bytes, bytes]] = field(default_factory=dict, init=False)

    @property
    def withhold(self) -> bool:
        """Wins and never delivers (the ``no-delivery`` attack)."""
        return isinstance(self.attack, NoDelivery)

    def on_announcement(self, message: TaskAnnouncement) -> None:
        """Check the task against the chain, parse the public keys, and bid (not below the
        task's privacy floor: such a bid would be refused)."""
        spec = self.read_announcement(message)
        self.learn(spec, message.public_context)
        if self.max_epsilon is not None and (
            not spec.privacy.enabled or spec.privacy.epsilon > self.max_epsilon
        ):
            offered = f"epsilon {spec.privacy.epsilon:g}" if spec.privacy.enabled else "no DP"
            raise UntrustedInputError(
                f"offers {offered}; we sell our records at epsilon <= {self.max_epsilon:g} "
                "only: no bid",
                party="self",
            )
        points = min(self.points, len(self.y))
        if points < spec.privacy.min_block_points:
            raise UntrustedInputError(
                f"has {points} points to sell, below the task's floor of "
                f"{spec.privacy.min_block_points}: no bid",
                party="self",
            )
        self.bid = self.market.bid_data(message.task_id, points, self.price).value

    def learn(self, spec: TaskSpec, public_keys: bytes) -> None:
        """Take the task's spec and keys (also after a restart, from disk); a poisoning attack
        changes the data now that the schema is known, the same way every time."""
        self.spec = spec
        self.keys = self.crypto.public(public_keys, party="requester")
        check_layout(spec, self.keys.layout)
        if self.attack is not None and self.attack.delivers:
            if self.clean is None:
                self.clean = (self.X, self.y)
            self.X, self.y = self.attack.apply(
                *self.clean,
                features=spec.features,
                classes=list(spec.labels.classes),
                rng=np.random.default_rng(self.attack_seed),
            )

    def won(self) -> int:
        """Points this owner sells (0 if it lost), read from the chain after resolution."""
        assert self.task_id is not None
        if self.bid is None:
            index = self.market.bid_index(self.task_id, Side.DATA, self.address)
            if index == 0:
                return 0
            self.bid = index - 1
        bid = self.market.get_bid(self.task_id, Side.DATA, self.bid)
        self.fill = bid.fill if bid.winner and bid.bidder.lower() == self.address.lower() else 0
        return self.fill

    def prepare(self) -> DataManifest | None:
        """Encrypt the points sold into blocks and commit their sizes and digests on chain."""
        if self.won() == 0 or self.withhold:
            return None
        assert self.spec is not None and self.keys is not None and self.task_id is not None
        assert self.bid is not None
        features = self.spec.features
        raw = task_features(self.spec, self.X[: self.fill], base=self.base)
        X = scale(raw, features.mean, features.std, features.spread)
        if self.spec.privacy.enabled:
            X = clip_rows(X, self.spec.privacy.clip_norm)
        t = self.spec.kind.targets(self.y[: self.fill], self.spec.labels)
        bounds = block_bounds(
            self.fill,
            self.keys.layout.block_size,
            self.spec.he.block_points,
            self.spec.privacy.min_block_points,
        )
        self.blocks = [
            self.keys.encrypt_block(
                X[a:b], t[a:b], block_id=block_id(BlockRef(owner=self.address, index=i))
            )
            for i, (a, b) in enumerate(itertools.pairwise(bounds))
        ]
        digests = [block_digest(b) for b in self.blocks]
        sizes = [int(b - a) for a, b in itertools.pairwise(bounds)]
        self.market.commit_data(self.task_id, self.bid, sizes, digests)
        return DataManifest(
            task_id=self.task_id, owner=self.address, block_sizes=sizes, digests=digests
        )

    def seal_blocks(
        self,
        routing: RoutingShare,
        keys: dict[str, ChannelKey],
        *,
        first: int = 0,
        count: int | None = None,
    ) -> list[tuple[str, SealedBlock]]:
        """(processor, sealed block) for every holder of our blocks the committed assignment
        proves, in the routing's order (block, then holder); a block routed to anyone the
        chain does not prove is refused. ``first``/``count`` pick a range of the pairs so a
        large share crosses in several messages."""
        assert self.task_id is not None and self.bid is not None
        party = "requester"
        if routing.task_id != self.task_id or routing.owner.lower() != self.address.lower():
            raise UntrustedInputError("sent another task's or owner's routing", party=party)
        root = self.market.terms(self.task_id).assignment_root
        pairs = []
        for b in routing.blocks:
            if not 0 <= b.index < len(self.blocks):
                raise UntrustedInputError(
                    f"routes block {b.index}, we have {len(self.blocks)}", party=party
                )
            if b.block != merkle.block_id(self.bid, b.index) or b.size != self._size(b.index):
                raise UntrustedInputError(
                    f"routes block {b.index} under a wrong id or size", party=party
                )
            for holder in b.holders:
                # The proof names the processor by its bid; the address (whose signed key we
                # seal to) must be that bid's winning bidder on chain, or a relay could rename
                # the holder to an account of its own.
                bid = self.market.get_bid(self.task_id, Side.PROCESSING, holder.processor_index)
                if not bid.winner or bid.bidder.lower() != holder.processor.lower():
                    raise UntrustedInputError(
                        f"routes block {b.index} to {holder.processor}, which is not the winning "
                        f"bidder of processing bid {holder.processor_index}",
                        party=party,
                    )
                if not check_holder(self.task_id, b, holder, root):
                    raise UntrustedInputError(
                        f"routes block {b.index} to {holder.processor}, whom the committed "
                        "assignment does not prove holds it",
                        party=party,
                    )
                key = keys.get(holder.processor)
                if key is None:
                    raise UntrustedInputError(
                        f"no channel key for assigned processor {holder.processor}", party=party
                    )
                check_channel_key(self.market, self.task_id, holder.processor, key)
                pairs.append((holder.processor, b.index, key))
        for processor, index, key in pairs:
            known = self.holders.setdefault(index, [])
            if all(p.lower() != processor.lower() for p, _ in known):
                known.append((processor, key))
        out = []
        for processor, index, key in pairs[first : None if count is None else first + count]:
            ref = BlockRef(owner=self.address, index=index)
            sealed = seal(self.blocks[index], key.public_key)
            out.append((processor, SealedBlock(task_id=self.task_id, ref=ref, sealed=sealed)))
        return out

    def _size(self, index: int) -> int:
        assert self.spec is not None and self.keys is not None
        bounds = block_bounds(
            self.fill,
            self.keys.layout.block_size,
            self.spec.he.block_points,
            self.spec.privacy.min_block_points,
        )
        return int(bounds[index + 1] - bounds[index])

    def recompute(self, ref: BlockRef, model: EncryptedModel) -> bytes:
        """Answer an audit: run the (deterministic) program on our own copy of a block, so we
        compute exactly what an honest processor must have returned."""
        assert self.keys is not None and self.task_id is not None
        if ref.owner.lower() != self.address.lower() or not 0 <= ref.index < len(self.blocks):
            raise UntrustedInputError(
                f"asked to recompute block {ref.index}, not ours", party="requester"
            )
        if model.task_id != self.task_id:
            raise UntrustedInputError("asked to recompute for another task", party="requester")
        # Only for the model released on chain for its epoch: a recomputation at weights of
        # the requester's choosing would be one more query of our block (and, in a private
        # task, one with noise it has already seen, which two such queries would cancel).
        check_model(self, model)
        released = self.noise.get((model.epoch, ref.index))
        if self.keys.layout.private and released is None:
            raise UntrustedInputError(
                f"asked to recompute block {ref.index} for epoch {model.epoch}, for which we "
                "released no noise",
                party="requester",
            )
        return self.keys.run_program(
            model.payload,
            self.blocks[ref.index],
            noise=None if released is None else released[0],
            model_party="requester",
            block_party="self",
        )

    def release_noise(self, reveal: ModelReveal) -> list[tuple[str, NoiseRelease]]:
        """A private task's epoch: check the model the requester revealed (it re-encrypts to
        the digest released on chain, and lies in the kind's certified region), then release
        one signed noise message per block, sealed to each of the block's holders: (processor,
        release) pairs. At most one model per epoch and no epoch past the task's cap; the same
        reveal asked again gets the same noise (a retry spends nothing more)."""
        assert self.spec is not None and self.keys is not None and self.task_id is not None
        party = "requester"
        spec = self.spec
        if not spec.privacy.enabled:
            raise UntrustedInputError(
                "asked for noise in a task without differential privacy", party=party
            )
        if reveal.task_id != self.task_id:
            raise UntrustedInputError("revealed a model of another task", party=party)
        epoch = reveal.epoch
        if epoch >= spec.task.max_epochs:
            raise UntrustedInputError(
                f"asked for noise in epoch {epoch}, past the task's {spec.task.max_epochs} "
                "epochs (the privacy budget is for those only)",
                party=party,
            )
        fingerprint = hashlib.sha256(reveal.weights + b"|" + reveal.seed).digest()
        if epoch in self.released and self.released[epoch] != fingerprint:
            raise UntrustedInputError(
                f"revealed a second model for epoch {epoch}: one noise release per epoch",
                party=party,
            )
        if epoch not in self.released:
            layout = self.keys.layout
            size = 8 * layout.totals_shape[0] * layout.totals_shape[1]
            if len(reveal.weights) != size:
                raise UntrustedInputError(
                    f"revealed {len(reveal.weights)} bytes of weights, {size} expected",
                    party=party,
                )
            weights = np.frombuffer(reveal.weights, dtype="<f8").reshape(layout.totals_shape)
            digest = released_digest(self, epoch)
            check_revealed_model(self.keys, digest, weights, epoch=epoch, seed=reveal.seed)
            self.released[epoch] = fingerprint
        out = []
        for index, holders in sorted(self.holders.items()):
            if (epoch, index) not in self.noise:
                self._draw_noise(epoch, index)  # (a block routed after the first release too)
            noise, signature = self.noise[(epoch, index)]
            ref = BlockRef(owner=self.address, index=index)
            for processor, key in holders:
                release = NoiseRelease(
                    task_id=self.task_id,
                    epoch=epoch,
                    ref=ref,
                    sealed=seal(noise, key.public_key),
                    signature=signature,
                )
                out.append((processor, release))
        return out

    def _draw_noise(self, epoch: int, index: int) -> None:
        """Our noise for one block and epoch (drawn once, signed, kept for audits)."""
        assert self.spec is not None and self.keys is not None and self.task_id is not None
        ref = BlockRef(owner=self.address, index=index)
        noise = self.keys.encrypt_noise(
            block_id=block_id(ref),
            epoch=epoch,
            std=noise_std(self.spec, self.keys.layout),
            rng=self.noise_rng or secrets.SystemRandom(),
        )
        digest = hashlib.sha256(noise).digest()
        domain = self.market.domain_separator()
        signature = sign_noise(self.account, domain, self.task_id, epoch, index, digest)
        self.noise[(epoch, index)] = (noise, signature)

    def panel(
        self,
        dispute: int,
        model: EncryptedModel,
        keys: dict[str, ChannelKey],
        leaf: LeafProof | None = None,
    ) -> list[tuple[str, DisputeBlock]]:
        """One of our blocks is disputed: commit our own vote (the digest we compute ourselves)
        and seal the block to each drawn auditor (read from the chain, not from the requester),
        but only when ``leaf`` proves that the accused committed another digest than ours: a
        false accusation (anyone may open one) must not send our block beyond its holders."""
        assert self.task_id is not None and self.bid is not None
        d = self.market.dispute_of(dispute)
        if d.task != self.task_id or d.owner_bid != self.bid or d.state != 2:
            raise UntrustedInputError(
                f"dispute {dispute} is not one on our blocks", party="requester"
            )
        ref = BlockRef(owner=self.address, index=d.block_index)
        check_model(self, model)
        if model.epoch != d.epoch:
            raise UntrustedInputError("sent the model of another epoch", party="requester")
        digest = hashlib.sha256(self.recompute(ref, model)).digest()
        accused = self.market.get_bid(self.task_id, Side.PROCESSING, d.accused).bidder
        if d.shown == bytes(32) and accused.lower() != self.address.lower():
            self.market.commit_vote(dispute, merkle.vote_commitment(dispute, self.address, digest))
        if leaf is None or leaf.task_id != self.task_id or leaf.dispute != dispute:
            raise UntrustedInputError(
                f"dispute {dispute}: no proof of the accused's leaf: our block goes to no auditor",
                party="requester",
            )
        block = merkle.block_id(d.owner_bid, d.block_index)
        root = self.market.epoch_book(self.task_id).root_of(d.epoch, d.accused)
        committed = merkle.climb(
            merkle.result_leaf(self.task_id, d.epoch, block, leaf.digest), d.entry_index, leaf.proof
        )
        if root is None or committed != root:
            raise UntrustedInputError(
                f"dispute {dispute}: the accused's leaf is not proven against its root on chain: "
                "our block goes to no auditor",
                party="requester",
            )
        if leaf.digest == digest:
            raise UntrustedInputError(
                f"dispute {dispute}: the accused committed the digest we compute ourselves (a "
                "false accusation; we voted for it): our block goes to no auditor",
                party="requester",
            )
        out: list[tuple[str, DisputeBlock]] = []
        for i in d.panel:
            auditor = self.market.get_bid(self.task_id, Side.PROCESSING, i).bidder
            key = keys.get(auditor)
            if key is None:
                continue
            check_channel_key(self.market, self.task_id, auditor, key)
            sealed = seal(self.blocks[d.block_index], key.public_key)
            noise, signature = self.noise.get((d.epoch, d.block_index), (b"", b""))
            message = DisputeBlock(
                task_id=self.task_id,
                dispute=dispute,
                ref=ref,
                sealed=sealed,
                noise=seal(noise, key.public_key) if noise else b"",
                noise_signature=signature,
            )
            out.append((auditor, message))
        return out
