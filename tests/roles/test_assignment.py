"""Block assignment: every block placed, loads within twice the fills, replication secret and
exact; each processor's share proves against the committed root and shows only its entries."""

from __future__ import annotations

import random

import pytest

from fedmarket.chain import merkle
from fedmarket.roles.assignment import (
    BlockInfo,
    check_holder,
    check_share,
    own_compute_plan,
    plan_assignment,
)
from fedmarket.roles.messages import BlockRef, encode

OWNER_B, OWNER_C = "0x" + "bb" * 20, "0x" + "cc" * 20
P1, P2, P3 = ("0x" + c * 20 for c in ("d1", "e1", "f1"))
BIDS = {OWNER_B.lower(): 0, OWNER_C.lower(): 1}
INDEX = {P1: 0, P2: 1, P3: 2}


def blocks(n: int, size: int = 100) -> list[BlockInfo]:
    out = []
    for i in range(n):
        owner = (OWNER_B, OWNER_C)[i % 2]
        out.append(
            BlockInfo(BlockRef(owner=owner, index=i // 2), size, merkle.block_id(i % 2, i // 2))
        )
    return out


def placed(plan: object) -> list[BlockRef]:
    return [b.ref for es in plan.entries.values() for b in es]  # type: ignore[attr-defined]


def test_every_block_goes_to_one_processor_in_proportion_to_fills() -> None:
    plan = plan_assignment(
        7, blocks(40), {P1: 3000, P2: 1000}, INDEX, replication=0.0, rng=random.Random(1)
    )
    assert sorted(placed(plan), key=lambda r: (r.owner, r.index)) == sorted(
        (b.ref for b in blocks(40)), key=lambda r: (r.owner, r.index)
    )
    assert len(plan.entries[P1]) == 30 and len(plan.entries[P2]) == 10
    assert plan.replicated == frozenset() and plan.left_out == []


def test_a_fraction_of_blocks_goes_to_exactly_two_processors_within_twice_the_fill() -> None:
    fills = {P1: 2000, P2: 1000, P3: 1000}
    plan = plan_assignment(7, blocks(40), fills, INDEX, replication=0.25, rng=random.Random(2))
    assert len(plan.replicated) == 10
    for ref in plan.replicated:
        assert len(plan.holders(ref)) == 2
    for ref in {b.ref for b in blocks(40)} - plan.replicated:
        assert len(plan.holders(ref)) == 1
    for p, es in plan.entries.items():
        assert sum(b.size for b in es) <= 2 * fills[p]  # the contract's bound


def test_a_block_no_processor_has_room_for_is_left_out() -> None:
    plan = plan_assignment(
        7, blocks(3, size=300), {P1: 100, P2: 100}, INDEX, replication=0.0, rng=random.Random(1)
    )
    assert len(plan.left_out) == 3 and not placed(plan)


def test_replication_choice_depends_on_the_secret_rng() -> None:
    fills = {P1: 2000, P2: 2000}
    a = plan_assignment(
        7, blocks(40), fills, INDEX, replication=0.2, rng=random.Random(1)
    ).replicated
    b = plan_assignment(
        7, blocks(40), fills, INDEX, replication=0.2, rng=random.Random(99)
    ).replicated
    assert a != b


def test_each_share_proves_against_the_root_and_holds_only_its_entries() -> None:
    plan = plan_assignment(
        7, blocks(20), {P1: 1000, P2: 1000, P3: 1000}, INDEX, replication=0.3, rng=random.Random(3)
    )
    root = plan.tree.root
    for p in (P1, P2, P3):
        share = plan.share(p)
        assert check_share(7, share, root, BIDS) is None
        assert [e.ref for e in share.entries] == [b.ref for b in plan.entries[p]]
        # nothing in it says which of its blocks stand elsewhere: no other processor is named
        wire = encode(share)
        for other in {P1, P2, P3} - {p}:
            assert bytes.fromhex(other[2:]) not in wire and other.encode() not in wire
        assert check_share(8, share, root, BIDS) is not None  # another task
        forged = share.model_copy(update={"entries": share.entries[1:]})
        assert check_share(7, forged, root, BIDS) is not None


def test_owners_see_where_their_blocks_go_with_proofs() -> None:
    plan = plan_assignment(
        7, blocks(10), {P1: 1000, P2: 1000}, INDEX, replication=0.5, rng=random.Random(4)
    )
    routing = plan.routing(OWNER_B)
    assert {b.index for b in routing.blocks} == {
        b.ref.index for b in blocks(10) if b.ref.owner == OWNER_B
    }
    for b in routing.blocks:
        assert {h.processor for h in b.holders} == set(
            plan.holders(BlockRef(owner=OWNER_B, index=b.index))
        )
        for h in b.holders:
            assert check_holder(7, b, h, plan.tree.root)
            moved = h.model_copy(update={"entry_index": h.entry_index + 1})
            assert not check_holder(7, b, moved, plan.tree.root)


def test_own_compute_gives_each_owner_its_own_blocks() -> None:
    plan = own_compute_plan(7, blocks(6), {OWNER_B: 0, OWNER_C: 1})
    assert all(b.ref.owner == p for p, es in plan.entries.items() for b in es)
    with pytest.raises(ValueError, match="does not process"):
        own_compute_plan(7, blocks(6), {OWNER_B: 0})


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="no processors"):
        plan_assignment(1, blocks(2), {}, {}, replication=0.1, rng=random.Random())
    with pytest.raises(ValueError, match="within"):
        plan_assignment(1, blocks(2), {P1: 1}, INDEX, replication=1.5, rng=random.Random())
