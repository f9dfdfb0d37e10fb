"""How the requester spreads data blocks over processors, with secret replication.

Each processor gets blocks up to its fill (points per epoch) by longest-processing-time
greedy. Then a fraction ``replication`` of the blocks, chosen at random and never
announced, also goes to a second processor, so two processors must return the same
digest for it (the HE program is deterministic). A processor that skips a fraction s
of its blocks is caught with probability 1 - (1 - q)^(s * blocks) per epoch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eth_utils import keccak

from fedmarket.roles.messages import Assignment, BlockRef, encode


@dataclass(frozen=True)
class BlockInfo:
    """A block as the requester knows it from the owner's manifest: no data, just its size."""

    ref: BlockRef
    size: int


@dataclass(frozen=True)
class Plan:
    """The requester's private view: the assignment and which blocks are replicated."""

    assignment: Assignment
    replicated: frozenset[BlockRef]

    @property
    def hash(self) -> bytes:
        """``keccak256`` of the assignment's wire bytes: what ``commit_assignment`` records."""
        return assignment_hash(self.assignment)


def assignment_hash(assignment: Assignment) -> bytes:
    """The on-chain commitment to an assignment (processor order and block order normalised)."""
    canonical = Assignment(
        task_id=assignment.task_id,
        blocks={
            p: sorted(refs, key=lambda r: (r.owner, r.index))
            for p, refs in sorted(assignment.blocks.items())
        },
    )
    return bytes(keccak(encode(canonical)))


def plan_assignment(
    task_id: int,
    blocks: Sequence[BlockInfo],
    fills: Mapping[str, int],
    *,
    replication: float,
    rng: random.Random,
) -> Plan:
    """Assign every block to one processor by fill, then replicate a secret fraction."""
    if not fills:
        raise ValueError("no processors to assign blocks to")
    if not 0.0 <= replication <= 1.0:
        raise ValueError(f"replication must be within [0, 1], got {replication}")
    load = dict.fromkeys(fills, 0)
    owner_of: dict[BlockRef, str] = {}
    for block in sorted(blocks, key=lambda b: (-b.size, b.ref.owner, b.ref.index)):
        # most room left relative to its fill; ties to the first processor by address
        target = max(sorted(fills), key=lambda p: fills[p] - load[p])
        owner_of[block.ref] = target
        load[target] += block.size
    out: dict[str, list[BlockRef]] = {p: [] for p in fills}
    for ref, p in owner_of.items():
        out[p].append(ref)
    replicated: set[BlockRef] = set()
    if len(fills) >= 2 and replication > 0:
        count = round(replication * len(blocks))
        size_of = {b.ref: b.size for b in blocks}
        for ref in rng.sample(sorted(owner_of, key=lambda r: (r.owner, r.index)), count):
            others = [p for p in sorted(fills) if p != owner_of[ref]]
            second = min(others, key=lambda p: load[p] / max(fills[p], 1))
            out[second].append(ref)
            load[second] += size_of[ref]
            replicated.add(ref)
    for refs in out.values():
        rng.shuffle(refs)  # the order must not betray which blocks are copies
    return Plan(Assignment(task_id=task_id, blocks=out), frozenset(replicated))
