"""How the requester spreads data blocks over processors, with secret replication, and the
commitment to it that goes on chain.

Each processor gets blocks by longest-processing-time greedy, most room left relative to its
fill first. Then a fraction ``replication`` of the blocks, chosen at random and never
announced, also goes to a second processor, so two processors must return the same digest
for it (the HE program is deterministic). The contract holds every processor to at most
``MAX_LOAD`` (2) times its fill. A processor that skips a fraction s of its blocks is caught
with probability 1 - (1 - q)^(s * blocks) per epoch.

The plan is committed as a Merkle tree (``fedmarket.chain.merkle.AssignmentTree``): each
processor receives only its own entries (``AssignmentShare``) with the proof that its record
is in the committed root, and each owner only where its own blocks go (``RoutingShare``), so a
processor cannot tell which of its blocks also stand elsewhere.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedmarket.chain.merkle import AssignmentTree, Entry
from fedmarket.roles.messages import (
    AssignmentShare,
    BlockRef,
    BlockRouting,
    EntryMsg,
    Holder,
    RecordMsg,
    RoutingShare,
)

MAX_LOAD = 2  # the contract's: a processor holds at most this many times its fill


@dataclass(frozen=True)
class BlockInfo:
    """A block as the requester knows it from the owner's manifest: no data, just its size
    and its id on chain (owner bid << 32 | index)."""

    ref: BlockRef
    size: int
    block: int


@dataclass
class Plan:
    """The requester's private view: every processor's entries (in the order its results come
    back), which blocks are replicated, and the tree that is committed on chain."""

    task_id: int
    entries: dict[str, list[BlockInfo]]  # processor address -> its entries
    index: dict[str, int]  # processor address -> its processing bid
    replicated: frozenset[BlockRef] = frozenset()
    left_out: list[BlockRef] = field(default_factory=list)  # blocks no processor had room for
    tree: AssignmentTree = field(init=False)

    def __post_init__(self) -> None:
        self.tree = AssignmentTree(
            self.task_id,
            {self.index[p]: [Entry(b.block, b.size) for b in es] for p, es in self.entries.items()},
        )

    def holders(self, ref: BlockRef) -> list[str]:
        return [p for p, es in sorted(self.entries.items()) if any(b.ref == ref for b in es)]

    def share(self, processor: str) -> AssignmentShare:
        """What ``processor`` learns: its own record, entries and proof, nothing else."""
        i = self.index[processor]
        entries = self.entries.get(processor, [])
        if not entries:
            record = RecordMsg(count=1, points=0, subroot=bytes(32))
            return AssignmentShare(
                task_id=self.task_id, processor=processor, processor_index=i, record=record,
                position=0, top_proof=[], entries=[],
            )  # fmt: skip
        r = self.tree.record(i)
        return AssignmentShare(
            task_id=self.task_id,
            processor=processor,
            processor_index=i,
            record=RecordMsg(count=r.count, points=r.points, subroot=r.subroot),
            position=self.tree.position[i],
            top_proof=list(self.tree.record_proof(i)),
            entries=[EntryMsg(ref=b.ref, block=b.block, size=b.size) for b in entries],
        )

    def routing(self, owner: str) -> RoutingShare:
        """What ``owner`` learns: for each of its blocks, its holders with their proofs."""
        mine: dict[BlockRef, BlockInfo] = {}
        for es in self.entries.values():
            for b in es:
                if b.ref.owner.lower() == owner.lower():
                    mine[b.ref] = b
        out = []
        for ref, b in sorted(mine.items(), key=lambda kv: kv[0].index):
            holders = []
            for p in self.holders(ref):
                i = self.index[p]
                k = next(n for n, x in enumerate(self.entries[p]) if x.ref == ref)
                proof = self.tree.entry_proof(i, k)
                r = proof.record
                holders.append(
                    Holder(
                        processor=p,
                        processor_index=i,
                        record=RecordMsg(count=r.count, points=r.points, subroot=r.subroot),
                        position=proof.record_index,
                        top_proof=list(proof.record_proof),
                        entry_index=k,
                        entry_proof=list(proof.entry_proof),
                    )
                )
            out.append(BlockRouting(index=ref.index, block=b.block, size=b.size, holders=holders))
        return RoutingShare(task_id=self.task_id, owner=owner, blocks=out)


def plan_assignment(
    task_id: int,
    blocks: Sequence[BlockInfo],
    fills: Mapping[str, int],
    index: Mapping[str, int],
    *,
    replication: float,
    rng: random.Random,
) -> Plan:
    """Assign every block to one processor by fill, then replicate a secret fraction, never
    above ``MAX_LOAD`` times a processor's fill."""
    if not fills:
        raise ValueError("no processors to assign blocks to")
    if not 0.0 <= replication <= 1.0:
        raise ValueError(f"replication must be within [0, 1], got {replication}")
    load = dict.fromkeys(fills, 0)
    out: dict[str, list[BlockInfo]] = {p: [] for p in fills}
    primary: dict[BlockRef, str] = {}
    left_out: list[BlockRef] = []
    for block in sorted(blocks, key=lambda b: (-b.size, b.ref.owner, b.ref.index)):
        fits = [p for p in sorted(fills) if load[p] + block.size <= MAX_LOAD * fills[p]]
        if not fits:
            left_out.append(block.ref)
            continue
        # most room left relative to its fill; ties to the first processor by address
        target = max(fits, key=lambda p: fills[p] - load[p])
        primary[block.ref] = target
        out[target].append(block)
        load[target] += block.size
    replicated: set[BlockRef] = set()
    if len(fills) >= 2 and replication > 0:
        info = {b.ref: b for b in blocks}
        count = round(replication * len(blocks))
        for ref in rng.sample(
            sorted(primary, key=lambda r: (r.owner, r.index)), min(count, len(primary))
        ):
            b = info[ref]
            others = [
                p
                for p in sorted(fills)
                if p != primary[ref] and load[p] + b.size <= MAX_LOAD * fills[p]
            ]
            if not others:
                continue
            second = min(others, key=lambda p: load[p] / max(fills[p], 1))
            out[second].append(b)
            load[second] += b.size
            replicated.add(ref)
    for refs in out.values():
        rng.shuffle(refs)  # the order must not betray which blocks are copies
    return Plan(task_id, out, dict(index), frozenset(replicated), left_out)


def own_compute_plan(task_id: int, blocks: Sequence[BlockInfo], index: Mapping[str, int]) -> Plan:
    """Own-compute: every owner processes its own blocks (nobody else may see them)."""
    out: dict[str, list[BlockInfo]] = {p: [] for p in index}
    for b in blocks:
        owner = next((p for p in index if p.lower() == b.ref.owner.lower()), None)
        if owner is None:
            raise ValueError(f"owner {b.ref.owner} delivered data but does not process it")
        out[owner].append(b)
    return Plan(task_id, out, dict(index))


def check_share(
    task_id: int, share: AssignmentShare, root: bytes, owner_bids: Mapping[str, int]
) -> str | None:
    """Why ``share`` is not the processor's line of the assignment committed as ``root``, or
    None when it is. ``owner_bids`` maps owner addresses (lower case) to their data bids."""
    from fedmarket.chain import merkle

    if share.task_id != task_id:
        return f"is for task {share.task_id}"
    if not share.entries:
        return None  # nothing assigned: nothing to check, nothing owed
    for e in share.entries:
        if owner_bids.get(e.ref.owner.lower()) is None:
            return f"names block {e.ref.index} of {e.ref.owner}, not a winning owner"
        if e.block != merkle.block_id(owner_bids[e.ref.owner.lower()], e.ref.index):
            return f"gives block {e.ref.index} of {e.ref.owner} the wrong id {e.block}"
    tree = merkle.Tree([merkle.entry_leaf(task_id, e.block, e.size) for e in share.entries])
    if tree.root != share.record.subroot:
        return "its entries do not match its record"
    if share.record.count != len(share.entries) or share.record.points != sum(
        e.size for e in share.entries
    ):
        return "its record does not count its entries"
    record = merkle.Record(
        share.processor_index, share.record.count, share.record.points, share.record.subroot
    )
    if merkle.climb(merkle.record_leaf(task_id, record), share.position, share.top_proof) != root:
        return "its record is not in the assignment committed on chain"
    return None


def check_holder(task_id: int, block: BlockRouting, holder: Holder, root: bytes) -> bool:
    """Whether ``holder`` is proven to hold ``block`` under the committed assignment ``root``."""
    from fedmarket.chain import merkle

    proof = merkle.EntryProof(
        merkle.Record(
            holder.processor_index, holder.record.count, holder.record.points, holder.record.subroot
        ),
        holder.position,
        tuple(holder.top_proof),
        holder.entry_index,
        block.size,
        tuple(holder.entry_proof),
    )
    return proof.check(task_id, block.block, root)
