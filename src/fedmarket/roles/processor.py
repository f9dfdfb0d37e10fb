"""The processor: stakes, receives sealed encrypted blocks, runs the program every epoch.

It never sees plaintext data or the plaintext model. Everything it receives is checked
against the chain before use: its share of the assignment against the committed root, each
block against its owner's committed digests, each model against the digest released on
chain. It reports blocks it never got (before its first root), commits one Merkle root per
epoch over its per-block result digests (signed; the requester relays it), keeps its leaves
to open any of them if accused, and audits others' blocks when a dispute draws it. In a task
with differential privacy it adds each block owner's noise (sealed to it, signed by the
owner's account) to that block's totals, and computes no block whose owner released none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedmarket.attacks.processor import ProcessorAttack
from fedmarket.chain import merkle
from fedmarket.chain.client import Side, TaskState
from fedmarket.chain.events import DataCommitted
from fedmarket.chain.signing import SignedRoot, noise_signer, sign_channel_key, sign_root
from fedmarket.errors import UntrustedInputError
from fedmarket.protocol.crypto import Pool, PublicKeys
from fedmarket.roles.assignment import check_share
from fedmarket.roles.channel import ChannelKeys, block_digest, open_sealed
from fedmarket.roles.messages import (
    AssignmentShare,
    BlockRef,
    ChannelKey,
    DataManifest,
    DisputeBlock,
    EncryptedModel,
    EpochResult,
    NoiseRelease,
    SealedBlock,
    TaskAnnouncement,
    VoteReveal,
    leaf_digest,
)
from fedmarket.roles.owner import block_id, check_layout, check_model
from fedmarket.roles.party import Party

SEAL_OVERHEAD = 64  # a sealed box's ephemeral key and tag (48 bytes), rounded up


@dataclass
class Processor(Party):
    """Offers ``capacity`` points per epoch at ``price`` per point; uses ``workers`` cores.

    ``attack`` makes it a cheater (``fedmarket.attacks``; simulations and tests only): it then
    computes honestly only when its attack needs the honest results, and sends what the attack
    makes of them - forged with the public keys, committed under its signed root like any
    result. It still audits honestly when drawn (a fee for the work; its cheating is on its
    own blocks).
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
    share: AssignmentShare | None = field(default=None, init=False)
    delivered: set[BlockRef] = field(default_factory=set, init=False)
    blocks: dict[BlockRef, bytes] = field(default_factory=dict, init=False)  # opened, checked
    reported: set[BlockRef] = field(default_factory=set, init=False)  # undelivered, on chain
    leaves: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict, init=False)
    # the last epoch computed: (sha256 of its model message, the signed result), so a repeated
    # request gets the same answer and nothing can make us compute an epoch twice
    last: tuple[int, bytes, EpochResult] | None = field(default=None, init=False)
    fill: int = field(default=0, init=False)
    bid: int | None = field(default=None, init=False)

    @property
    def expected(self) -> list[BlockRef]:
        return [e.ref for e in self.share.entries] if self.share is not None else []

    def on_announcement(self, message: TaskAnnouncement) -> None:
        """Check the task against the chain, approve the stake, and bid."""
        spec = self.read_announcement(message)
        self.keys = self.crypto.public(message.public_context, party="requester")
        check_layout(spec, self.keys.layout)
        stake = self.capacity * self.price * spec.task.max_epochs
        self.token.approve(self.market.address, stake)
        self.bid = self.market.bid_processing(message.task_id, self.capacity, self.price).value
        self.paid_in += stake
        self.transfers.append(("stake", -stake))

    def won(self) -> int:
        """Points per epoch this processor was allocated (0 if it lost)."""
        assert self.task_id is not None
        if self.bid is None:
            index = self.market.bid_index(self.task_id, Side.PROCESSING, self.address)
            if index == 0:
                return 0
            self.bid = index - 1
        bid = self.market.get_bid(self.task_id, Side.PROCESSING, self.bid)
        self.fill = bid.fill if bid.winner and bid.bidder.lower() == self.address.lower() else 0
        return self.fill

    def channel_key(self) -> ChannelKey:
        assert self.task_id is not None
        domain = self.market.domain_separator()
        return ChannelKey(
            task_id=self.task_id,
            processor=self.address,
            public_key=self.channel.public,
            signature=sign_channel_key(self.account, domain, self.task_id, self.channel.public),
        )

    def on_manifest(self, manifest: DataManifest) -> None:
        """Keep an owner's block digests once they match what it committed on chain."""
        self.check_manifest(manifest)
        self.manifests[manifest.owner.lower()] = manifest

    def on_share(self, share: AssignmentShare) -> None:
        """Learn which blocks to expect, once the share proves against the committed root."""
        assert self.task_id is not None
        if share.processor.lower() != self.address.lower() or share.processor_index != self.bid:
            raise UntrustedInputError("sent another processor's share", party="requester")
        root = self.market.terms(self.task_id).assignment_root
        problem = check_share(self.task_id, share, root, self.owner_bids())
        if problem:
            raise UntrustedInputError(
                f"sent a share of the assignment that {problem}", party="requester"
            )
        self.share = share

    def _digests(self, owner: str) -> list[bytes]:
        manifest = self.manifests.get(owner.lower())
        if manifest is not None:
            return list(manifest.digests)
        assert self.task_id is not None
        committed = [
            e
            for e in self.market.logs(DataCommitted, task=self.task_id)
            if e.owner.lower() == owner.lower()
        ]
        if not committed:
            raise UntrustedInputError("committed no data on chain", party=f"owner {owner}")
        return [bytes(d) for d in committed[-1].digests]

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
        if self.keys is None:
            raise UntrustedInputError("sent a block before the task's keys", party=party)
        block = open_sealed(
            message.sealed,
            self.channel,
            party=party,
            max_bytes=self.keys.max_block_bytes + SEAL_OVERHEAD,
        )
        digests = self._digests(ref.owner)
        if not 0 <= ref.index < len(digests) or block_digest(block) != digests[ref.index]:
            raise UntrustedInputError(
                f"block {ref.index} does not match its committed digest (altered in transit?)",
                party=party,
            )
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

    def report_missing(self) -> list[BlockRef]:
        """Report on chain every block of ours never delivered (or that failed its digest),
        before our first root: its owner is not paid for it, and neither are we."""
        assert self.task_id is not None and self.bid is not None
        missing = [r for r in self.missing_blocks() if r not in self.reported]
        if not missing or self.share is None:
            return []
        entries = self.share.entries
        tree = merkle.Tree([merkle.entry_leaf(self.task_id, e.block, e.size) for e in entries])
        record = merkle.Record(
            self.bid, self.share.record.count, self.share.record.points, self.share.record.subroot
        )
        report = []
        for ref in missing:
            i = next(n for n, e in enumerate(entries) if e.ref == ref)
            proof = merkle.EntryProof(
                record,
                self.share.position,
                tuple(self.share.top_proof),
                i,
                entries[i].size,
                tuple(tree.proof(i)),
            )
            owner_bid, index = merkle.split_block_id(entries[i].block)
            report.append((owner_bid, index, proof))
        for k in range(0, len(report), 32):  # MAX_REPORT per call
            self.market.report_undelivered(self.task_id, self.bid, report[k : k + 32])
        self.reported.update(missing)
        return missing

    def open_noise(
        self, ref: BlockRef, epoch: int, sealed: bytes, signature: bytes, *, via: str
    ) -> bytes:
        """A block owner's noise for ``ref`` in ``epoch``: opened with our channel key and
        signed by the owner's own account (noise the requester made, which it could subtract,
        is refused)."""
        assert self.task_id is not None and self.keys is not None
        party = f"owner {ref.owner} (via {via})"
        noise = open_sealed(
            sealed, self.channel, party=party, max_bytes=self.keys.max_block_bytes + SEAL_OVERHEAD
        )
        signer = noise_signer(
            self.market.domain_separator(),
            self.task_id,
            epoch,
            ref.owner,
            ref.index,
            hashlib.sha256(noise).digest(),
            signature,
        )
        if (signer or "").lower() != ref.owner.lower():
            raise UntrustedInputError(
                f"noise for block {ref.index} in epoch {epoch} is not signed by its owner",
                party=party,
            )
        return noise

    def _noise(self, epoch: int, releases: list[NoiseRelease]) -> dict[str, bytes] | None:
        """Block id -> the owner's opened, checked noise, for a private task (None otherwise):
        noise that is not for one of our delivered blocks and this epoch is refused."""
        assert self.keys is not None
        if not self.keys.layout.private:
            if releases:
                raise UntrustedInputError("sent noise in a task without it", party="requester")
            return None
        out: dict[str, bytes] = {}
        for release in releases:
            ref = release.ref
            if release.task_id != self.task_id or release.epoch != epoch:
                raise UntrustedInputError(
                    f"sent noise for task {release.task_id}, epoch {release.epoch}",
                    party="requester",
                )
            if ref not in self.delivered or block_id(ref) in out:
                raise UntrustedInputError(
                    f"sent noise for block {block_id(ref)}, not one we hold (or twice)",
                    party="requester",
                )
            out[block_id(ref)] = self.open_noise(
                ref, epoch, release.sealed, release.signature, via="requester"
            )
        return out

    def compute(
        self, message: EncryptedModel, noise: list[NoiseRelease] | None = None
    ) -> EpochResult:
        """Run the program on every delivered block (or what the attack makes of it); build,
        keep and sign the root over the entries' digests. In a private task only the blocks
        whose owners' ``noise`` came are computed (the others' payloads stay empty)."""
        assert self.task_id is not None and self.share is not None
        if message.task_id != self.task_id:
            raise UntrustedInputError(f"sent a model for task {message.task_id}", party="requester")
        check_model(self, message)
        digest = hashlib.sha256(message.payload).digest()
        if self.last is not None and self.last[0] == message.epoch and self.last[1] == digest:
            return self.last[2]  # asked again (a retry): the very result already signed
        if message.epoch in self.leaves:
            # Computing an epoch again (e.g. with part of the noise withheld) would overwrite
            # the leaves behind the root we signed, and we could not open them if accused.
            raise UntrustedInputError(
                f"sent the model of epoch {message.epoch} again, which we already computed",
                party="requester",
            )
        clock = self.market.clock_of(self.task_id)
        if clock.state != TaskState.TRAINING or clock.epoch != message.epoch:
            raise UntrustedInputError(
                f"sent the model of epoch {message.epoch}; the task on chain is "
                f"{clock.state.name.lower()} at epoch {clock.epoch}",
                party="requester",
            )
        noises = self._noise(message.epoch, list(noise or []))
        refs = [r for r in self.expected if r in self.delivered]
        results: dict[str, bytes] | None = {}
        attack = self.attack
        if (
            refs
            and self.pool is not None
            and (attack is None or attack.needs_honest(message.epoch, self.memory))
        ):
            results = self.pool.run_epoch(message.payload, party="requester", noise=noises)
        elif refs:
            results = None  # a cheater that does not need them skips the work
        if attack is not None and refs:
            assert self.keys is not None
            sizes = {block_id(e.ref): e.size for e in self.share.entries if e.ref in self.delivered}
            rng = np.random.default_rng([self.seed, message.epoch])
            results = dict(
                attack.apply(
                    self.keys, message.epoch, results, sizes, rng, self.memory, party="self"
                )
            )
        if results is None:
            raise UntrustedInputError(
                "sent a model before any block could be computed", party="self"
            )
        payloads = [results.get(block_id(e.ref), b"") for e in self.share.entries]
        leaves = [
            (e.block, leaf_digest(p)) for e, p in zip(self.share.entries, payloads, strict=True)
        ]
        self.leaves[message.epoch] = leaves
        root = (
            merkle.result_root(self.task_id, message.epoch, leaves)
            if leaves
            else _token_root(self.task_id, self.address)
        )
        signed = sign_root(
            self.account, self.market.domain_separator(), self.task_id, message.epoch, root
        )
        result = EpochResult(
            task_id=self.task_id,
            epoch=message.epoch,
            processor=self.address,
            blocks=[e.ref for e in self.share.entries],
            payloads=payloads,
            root=root,
            signature=bytes([signed.v]) + signed.r + signed.s,
        )
        self.last = (message.epoch, digest, result)
        return result

    def commit(self, result: EpochResult) -> None:
        """Record the root on chain itself (late, or when the requester did not relay it)."""
        assert self.task_id is not None and self.bid is not None
        self.market.submit_root(
            self.task_id, result.epoch, self.bid, SignedRoot.unsigned(result.root)
        )

    def on_model(
        self, message: EncryptedModel, noise: list[NoiseRelease] | None = None
    ) -> EpochResult:
        """One epoch: compute and sign; the requester relays the root with everyone's."""
        if message.epoch == 0 and self.share is not None:
            self.report_missing()
        return self.compute(message, noise)

    def show(self, dispute: int) -> bool:
        """Accused: open our committed leaf for the disputed block (we kept every leaf)."""
        assert self.task_id is not None
        d = self.market.dispute_of(dispute)
        if d.task != self.task_id or d.accused != self.bid or d.state != 2 or d.shown != bytes(32):
            return False
        leaves = self.leaves.get(d.epoch)
        if leaves is None:
            return False
        proof = merkle.result_proof(self.task_id, d.epoch, leaves, d.entry_index)
        self.market.show_leaf(dispute, leaves[d.entry_index][1], proof)
        return True

    def audit(self, message: DisputeBlock, model: EncryptedModel) -> VoteReveal:
        """Drawn auditor: check the block against its owner's commitment and the model against
        the released digest, run the program, commit the digest on chain, reveal it."""
        assert self.task_id is not None and self.keys is not None
        d = self.market.dispute_of(message.dispute)
        party = f"owner {message.ref.owner}"
        if d.task != self.task_id or self.bid not in d.panel:
            raise UntrustedInputError(
                f"dispute {message.dispute} did not draw us", party="requester"
            )
        owner = self.market.get_bid(self.task_id, Side.DATA, d.owner_bid).bidder
        if message.ref != BlockRef(owner=owner, index=d.block_index):
            raise UntrustedInputError("sent a block other than the disputed one", party=party)
        check_model(self, model)
        if model.epoch != d.epoch:
            raise UntrustedInputError("sent the model of another epoch", party="requester")
        block = open_sealed(
            message.sealed,
            self.channel,
            party=party,
            max_bytes=self.keys.max_block_bytes + SEAL_OVERHEAD,
        )
        digests = self._digests(owner)
        if not 0 <= d.block_index < len(digests) or block_digest(block) != digests[d.block_index]:
            raise UntrustedInputError(
                "the disputed block does not match its committed digest", party=party
            )
        noise = None
        if self.keys.layout.private:
            noise = self.open_noise(
                message.ref, d.epoch, message.noise, message.noise_signature, via="requester"
            )
        result = self.keys.run_program(
            model.payload, block, noise=noise, model_party="requester", block_party=party
        )
        digest = hashlib.sha256(result).digest()
        self.market.commit_vote(
            message.dispute, merkle.vote_commitment(message.dispute, self.address, digest)
        )
        return VoteReveal(
            task_id=self.task_id, dispute=message.dispute, voter=self.address, digest=digest
        )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def _token_root(task: int, processor: str) -> bytes:
    """The root of a processor with no blocks (it signs something; nothing can be disputed)."""
    return hashlib.sha256(f"fedmarket/no-blocks/{task}/{processor.lower()}".encode()).digest()
