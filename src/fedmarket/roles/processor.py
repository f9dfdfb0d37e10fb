"""The processor: stakes, receives sealed encrypted blocks, runs the program every epoch.

It never sees plaintext data or the plaintext model. Everything it receives is checked
against the chain before use: the owners' data roots, the requester's assignment hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedmarket.attacks.processor import ProcessorAttack
from fedmarket.chain.client import Side
from fedmarket.errors import UntrustedInputError
from fedmarket.protocol.crypto import Pool, PublicKeys
from fedmarket.roles.assignment import assignment_hash
from fedmarket.roles.channel import ChannelKeys, check_block, data_root, open_sealed
from fedmarket.roles.messages import (
    Assignment,
    BlockRef,
    ChannelKey,
    DataManifest,
    EncryptedModel,
    EpochResult,
    SealedBlock,
    TaskAnnouncement,
)
from fedmarket.roles.owner import block_id
from fedmarket.roles.party import Party

SEAL_OVERHEAD = 64  # a sealed box's ephemeral key and tag (48 bytes), rounded up


@dataclass
class Processor(Party):
    """Offers ``capacity`` points per epoch at ``price`` per point; uses ``workers`` cores.

    ``attack`` makes it a cheater (``fedmarket.attacks``; simulations and tests only): it then
    computes honestly only when its attack needs the honest results, and sends what the attack
    makes of them - forged with the public keys, committed on chain like any result.
    """

    capacity: int = 0
    price: int = 0
    workers: int = 2
    attack: ProcessorAttack | None = None
    seed: int = 0
    memory: dict[str, Any] = field(default_factory=dict, init=False)
    channel: ChannelKeys = field(default_factory=ChannelKeys.generate, init=False)
    keys: PublicKeys | None = field(default=None, init=False)
    pool: Pool | None = field(default=None, init=False)
    manifests: dict[str, DataManifest] = field(default_factory=dict, init=False)
    expected: list[BlockRef] = field(default_factory=list, init=False)
    delivered: set[BlockRef] = field(default_factory=set, init=False)
    blocks: dict[BlockRef, bytes] = field(default_factory=dict, init=False)  # opened, checked
    fill: int = field(default=0, init=False)

    def on_announcement(self, message: TaskAnnouncement) -> None:
        """Check the task against the chain, approve the stake, and bid."""
        spec = self.read_announcement(message)
        self.keys = self.crypto.public(message.public_context, party="requester")
        stake = self.capacity * self.price * spec.task.max_epochs
        self.token.approve(self.market.address, stake)
        self.market.bid_processing(message.task_id, self.capacity, self.price)
        self.paid_in += stake
        self.transfers.append(("stake", -stake))

    def won(self) -> int:
        """Points per epoch this processor was allocated (0 if it lost)."""
        assert self.task_id is not None
        index = self.market.bid_index(self.task_id, Side.PROCESSING, self.address)
        if index == 0:
            return 0
        bid = self.market.get_bid(self.task_id, Side.PROCESSING, index - 1)
        self.fill = bid.fill if bid.winner else 0
        return self.fill

    def channel_key(self) -> ChannelKey:
        assert self.task_id is not None
        return ChannelKey(
            task_id=self.task_id, processor=self.address, public_key=self.channel.public
        )

    def on_manifest(self, manifest: DataManifest) -> None:
        """Keep an owner's block digests once they match the root it committed on chain."""
        self.check_manifest(manifest)
        self.manifests[manifest.owner.lower()] = manifest

    def on_assignment(self, assignment: Assignment) -> None:
        """Learn which blocks to expect, once the assignment matches its on-chain hash."""
        assert self.task_id is not None
        if self.market.tasks(self.task_id).assignment_hash != assignment_hash(assignment):
            raise UntrustedInputError(
                "the assignment does not match the hash committed on chain", party="requester"
            )
        self.expected = list(assignment.blocks.get(self.address, []))

    def on_block(self, message: SealedBlock) -> None:
        """Open a sealed block, check it against the owner's commitment, hand it to the pool."""
        ref = message.ref
        party = f"owner {ref.owner}"
        if message.task_id != self.task_id:
            raise UntrustedInputError(f"sent a block of task {message.task_id}", party=party)
        if ref not in self.expected:
            raise UntrustedInputError(
                f"sent block {ref.index}, which is not assigned to us", party=party
            )
        if ref in self.delivered:
            raise UntrustedInputError(f"sent block {ref.index} twice", party=party)
        manifest = self.manifests.get(ref.owner.lower())
        if manifest is None:
            raise UntrustedInputError("sent a block before its manifest", party=party)
        if self.keys is None:
            raise UntrustedInputError("sent a block before the task's keys", party=party)
        block = open_sealed(
            message.sealed,
            self.channel,
            party=party,
            max_bytes=self.keys.max_block_bytes + SEAL_OVERHEAD,
        )
        check_block(block, ref.index, manifest.digests, data_root(manifest.digests), party=party)
        self.restore_block(ref, block, party=party)

    def restore_block(self, ref: BlockRef, block: bytes, *, party: str = "local state") -> None:
        """Hand an opened, checked block to the pool (also after a restart, from disk)."""
        assert self.keys is not None
        if self.pool is None:
            self.pool = self.keys.pool(self.workers)
        self.pool.add_block(block, party=party)
        self.delivered.add(ref)
        self.blocks[ref] = block

    def missing_blocks(self) -> list[BlockRef]:
        return [r for r in self.expected if r not in self.delivered]

    def compute(self, message: EncryptedModel) -> EpochResult:
        """Run the program on every delivered block (or what the attack makes of it)."""
        assert self.task_id is not None
        if message.task_id != self.task_id:
            raise UntrustedInputError(f"sent a model for task {message.task_id}", party="requester")
        if self.pool is None or not self.expected:
            raise UntrustedInputError("no blocks were delivered to this processor", party="owners")
        refs = [r for r in self.expected if r in self.delivered]
        attack = self.attack
        if attack is None or attack.needs_honest(message.epoch, self.memory):
            results: dict[str, bytes] | None = self.pool.run_epoch(
                message.payload, party="requester"
            )
        else:
            results = None  # a cheater that does not need them skips the work
        if attack is not None:
            assert self.keys is not None
            sizes = {
                block_id(r): self.manifests[r.owner.lower()].block_sizes[r.index] for r in refs
            }
            rng = np.random.default_rng([self.seed, message.epoch])
            results = dict(
                attack.apply(
                    self.keys, message.epoch, results, sizes, rng, self.memory, party="self"
                )
            )
        assert results is not None
        return EpochResult(
            task_id=self.task_id,
            epoch=message.epoch,
            processor=self.address,
            blocks=refs,
            payloads=[results[block_id(r)] for r in refs],
        )

    def commit(self, result: EpochResult) -> None:
        """Commit the result's digest on chain (the contract records whether it is on time)."""
        assert self.task_id is not None
        self.market.submit_result(self.task_id, result.epoch, result.digest())

    def on_model(self, message: EncryptedModel) -> EpochResult:
        """One epoch: compute, commit the digest on chain, return the results."""
        result = self.compute(message)
        self.commit(result)
        return result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
