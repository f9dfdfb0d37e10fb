"""The data owner: bids points, encrypts them under the requester's key, seals them to processors.

Its plaintext never leaves this object: what goes out are ciphertexts sealed to a processor's
channel key, their digests, and block sizes. It keeps its own ciphertexts, so it can recompute
any of its blocks when the requester settles a dispute or audits a processor.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmarket.attacks.owner import NoDelivery, OwnerAttack
from fedmarket.backbone import task_features
from fedmarket.chain.client import Side
from fedmarket.data import scale
from fedmarket.errors import UntrustedInputError
from fedmarket.protocol.crypto import PublicKeys
from fedmarket.roles.assignment import assignment_hash
from fedmarket.roles.channel import block_digest, data_root, seal
from fedmarket.roles.messages import (
    Assignment,
    BlockRef,
    ChannelKey,
    DataManifest,
    EncryptedModel,
    SealedBlock,
    TaskAnnouncement,
)
from fedmarket.roles.party import Party
from fedmarket.spec import TaskSpec


def block_id(ref: BlockRef) -> str:
    """The id an encrypted block carries inside its envelope."""
    return f"{ref.owner.lower()}/{ref.index}"


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
    spec: TaskSpec | None = field(default=None, init=False)
    clean: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False)
    keys: PublicKeys | None = field(default=None, init=False)
    fill: int = field(default=0, init=False)
    blocks: list[bytes] = field(default_factory=list, init=False)

    @property
    def withhold(self) -> bool:
        """Wins and never delivers (the ``no-delivery`` attack)."""
        return isinstance(self.attack, NoDelivery)

    def on_announcement(self, message: TaskAnnouncement) -> None:
        """Check the task against the chain, parse the public keys, and bid."""
        spec = self.read_announcement(message)
        self.learn(spec, message.public_context)
        points = min(self.points, len(self.y))
        self.market.bid_data(message.task_id, points, self.price)

    def learn(self, spec: TaskSpec, public_keys: bytes) -> None:
        """Take the task's spec and keys (also after a restart, from disk); a poisoning attack
        changes the data now that the schema is known, the same way every time."""
        self.spec = spec
        self.keys = self.crypto.public(public_keys, party="requester")
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
        index = self.market.bid_index(self.task_id, Side.DATA, self.address)
        if index == 0:
            return 0
        bid = self.market.get_bid(self.task_id, Side.DATA, index - 1)
        self.fill = bid.fill if bid.winner else 0
        return self.fill

    def prepare(self) -> DataManifest | None:
        """Encrypt the points sold into blocks and commit their digests on chain."""
        if self.won() == 0 or self.withhold:
            return None
        assert self.spec is not None and self.keys is not None and self.task_id is not None
        features = self.spec.features
        raw = task_features(self.spec, self.X[: self.fill], base=self.base)
        X = scale(raw, features.mean, features.std, features.spread)
        t = self.spec.kind.targets(self.y[: self.fill], self.spec.labels)
        size = self.keys.layout.block_size
        if self.spec.he.block_points:
            size = min(size, self.spec.he.block_points)
        count = -(-self.fill // size)
        bounds = np.linspace(0, self.fill, count + 1).round().astype(int)
        self.blocks = [
            self.keys.encrypt_block(
                X[a:b], t[a:b], block_id=block_id(BlockRef(owner=self.address, index=i))
            )
            for i, (a, b) in enumerate(itertools.pairwise(bounds))
        ]
        digests = [block_digest(b) for b in self.blocks]
        self.market.commit_data(self.task_id, data_root(digests))
        return DataManifest(
            task_id=self.task_id,
            owner=self.address,
            block_sizes=[int(b - a) for a, b in itertools.pairwise(bounds)],
            digests=digests,
        )

    def seal_blocks(
        self,
        assignment: Assignment,
        keys: dict[str, ChannelKey],
        *,
        first: int = 0,
        count: int | None = None,
    ) -> list[tuple[str, SealedBlock]]:
        """(processor, sealed block) for every block of ours the on-chain assignment names, in
        the assignment's order (processor, then position); ``first``/``count`` pick a range of
        them so a large share crosses in several messages."""
        assert self.task_id is not None
        if self.market.tasks(self.task_id).assignment_hash != assignment_hash(assignment):
            raise UntrustedInputError(
                "the assignment does not match the hash committed on chain", party="requester"
            )
        ours = [
            (processor, ref)
            for processor, refs in sorted(assignment.blocks.items())
            for ref in refs
            if ref.owner.lower() == self.address.lower()
        ]
        out = []
        for processor, ref in ours[first : None if count is None else first + count]:
            key = keys.get(processor)
            if key is None:
                raise UntrustedInputError(
                    f"no channel key for assigned processor {processor}", party="requester"
                )
            if not 0 <= ref.index < len(self.blocks):
                raise UntrustedInputError(
                    f"assignment names block {ref.index}, we have {len(self.blocks)}",
                    party="requester",
                )
            sealed = seal(self.blocks[ref.index], key.public_key)
            out.append((processor, SealedBlock(task_id=self.task_id, ref=ref, sealed=sealed)))
        return out

    def recompute(self, ref: BlockRef, model: EncryptedModel) -> bytes:
        """Arbitrate a dispute or answer an audit: run the (deterministic) program on our own
        copy of a block, so we compute exactly what an honest processor must have returned."""
        assert self.keys is not None and self.task_id is not None
        if ref.owner.lower() != self.address.lower() or not 0 <= ref.index < len(self.blocks):
            raise UntrustedInputError(
                f"asked to recompute block {ref.index}, not ours", party="requester"
            )
        if model.task_id != self.task_id:
            raise UntrustedInputError("asked to recompute for another task", party="requester")
        return self.keys.run_program(
            model.payload, self.blocks[ref.index], model_party="requester", block_party="self"
        )
