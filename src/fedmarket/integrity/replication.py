"""Cross-checks by replication: two processors, one block, byte-identical digests or a dispute.

The HE program is deterministic, so two honest processors given the same block and model return
the same bytes. A fraction ``q`` of the blocks secretly goes to a second processor
(``fedmarket.roles.assignment``); where their digests differ, a third party that holds the
block's ciphertexts (its owner, or a third processor) recomputes it, and whoever disagrees with
the recomputation is proven to have lied. A processor that skips or forges a fraction ``s`` of
its ``blocks`` is caught with probability at least ``1 - (1 - q) ** (s * blocks)`` per epoch
(``detection_probability``). It is in fact higher: a processor also holds the second copies
of others' blocks, all of them checked, so a fraction ``2q / (1 + q)`` of what it holds is
checked; ``tests/integrity/test_replication.py`` measures both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedmarket.integrity.types import Evidence, Strength


@dataclass(frozen=True)
class Dispute:
    """A replicated block whose processors returned different digests."""

    block: str
    digests: dict[str, bytes]  # processor -> digest of its result for this block


def find_disputes(digests: Mapping[str, Mapping[str, bytes]]) -> list[Dispute]:
    """``digests[processor][block]`` -> every block for which the processors disagree."""
    by_block: dict[str, dict[str, bytes]] = {}
    for processor, blocks in sorted(digests.items()):
        for block, digest in blocks.items():
            by_block.setdefault(block, {})[processor] = digest
    return [
        Dispute(block, copies)
        for block, copies in sorted(by_block.items())
        if len(set(copies.values())) > 1
    ]


@dataclass(frozen=True)
class Settlement:
    """The outcome of one dispute: who lied, and which copy (if any) is right."""

    dispute: Dispute
    liars: tuple[str, ...]
    truthful: str | None  # a processor whose digest matched the recomputation
    evidence: tuple[Evidence, ...]


def settle(dispute: Dispute, recomputed: bytes | None, *, epoch: int, arbiter: str) -> Settlement:
    """Compare every copy with the arbiter's recomputed digest (``None``: the arbiter failed).

    Without a recomputation nobody is proven wrong, and neither copy is used.
    """
    if recomputed is None:
        return Settlement(dispute, (), None, ())
    liars = tuple(p for p, d in sorted(dispute.digests.items()) if d != recomputed)
    truthful = next((p for p, d in sorted(dispute.digests.items()) if d == recomputed), None)
    evidence = tuple(
        Evidence(
            party=p,
            role="processor",
            epoch=epoch,
            kind="digest-mismatch",
            strength=Strength.PROVEN,
            detail=(
                f"block {dispute.block}: its digest {dispute.digests[p].hex()[:16]} differs from "
                f"the recomputation by {arbiter} ({recomputed.hex()[:16]})"
                + (f", which {truthful} matched" if truthful else "")
            ),
            score=1.0,
            blocks=(dispute.block,),
        )
        for p in liars
    )
    return Settlement(dispute, liars, truthful, evidence)


def detection_probability(q: float, s: float, blocks: int) -> float:
    """P(a processor forging a fraction ``s`` of ``blocks`` hits a replica) in one epoch."""
    if not (0 <= q <= 1 and 0 <= s <= 1 and blocks >= 0):
        raise ValueError("need 0 <= q, s <= 1 and blocks >= 0")
    return 1.0 - (1.0 - q) ** (s * blocks)


def replication_for(target: float, s: float, blocks: int, epochs: int = 1) -> float:
    """Smallest q that catches an ``s``-skipper with probability ``target`` within ``epochs``."""
    if not (0 < target < 1 and 0 < s <= 1 and blocks >= 1 and epochs >= 1):
        raise ValueError("need 0 < target < 1, 0 < s <= 1, blocks >= 1, epochs >= 1")
    return 1.0 - (1.0 - target) ** (1.0 / (s * blocks * epochs))
