"""Block assignment: every block placed, loads follow fills, replication is secret and exact."""

from __future__ import annotations

import random

import pytest

from fedmarket.roles.assignment import BlockInfo, assignment_hash, plan_assignment
from fedmarket.roles.messages import Assignment, BlockRef

OWNER_B, OWNER_C = "0x" + "bb" * 20, "0x" + "cc" * 20
P1, P2, P3 = ("0x" + c * 20 for c in ("d1", "e1", "f1"))


def blocks(n: int, size: int = 100) -> list[BlockInfo]:
    return [
        BlockInfo(BlockRef(owner=(OWNER_B, OWNER_C)[i % 2], index=i // 2), size) for i in range(n)
    ]


def test_every_block_goes_to_one_processor_in_proportion_to_fills() -> None:
    plan = plan_assignment(
        7, blocks(40), {P1: 3000, P2: 1000}, replication=0.0, rng=random.Random(1)
    )
    placed = [r for refs in plan.assignment.blocks.values() for r in refs]
    assert sorted(placed, key=lambda r: (r.owner, r.index)) == sorted(
        (b.ref for b in blocks(40)), key=lambda r: (r.owner, r.index)
    )
    assert len(plan.assignment.blocks[P1]) == 30 and len(plan.assignment.blocks[P2]) == 10
    assert plan.replicated == frozenset()


def test_a_fraction_of_blocks_goes_to_exactly_two_processors() -> None:
    plan = plan_assignment(
        7, blocks(40), {P1: 2000, P2: 1000, P3: 1000}, replication=0.25, rng=random.Random(2)
    )
    assert len(plan.replicated) == 10
    for ref in plan.replicated:
        holders = [p for p, refs in plan.assignment.blocks.items() if ref in refs]
        assert len(holders) == 2
    singles = {b.ref for b in blocks(40)} - plan.replicated
    for ref in singles:
        assert sum(ref in refs for refs in plan.assignment.blocks.values()) == 1


def test_replication_choice_depends_on_the_secret_rng() -> None:
    fills = {P1: 2000, P2: 2000}
    a = plan_assignment(7, blocks(40), fills, replication=0.2, rng=random.Random(1)).replicated
    b = plan_assignment(7, blocks(40), fills, replication=0.2, rng=random.Random(99)).replicated
    assert a != b


def test_hash_ignores_order_but_not_content() -> None:
    refs = [BlockRef(owner=OWNER_B, index=i) for i in range(3)]
    one = Assignment(task_id=1, blocks={P1: refs, P2: []})
    two = Assignment(task_id=1, blocks={P2: [], P1: refs[::-1]})
    three = Assignment(task_id=1, blocks={P1: refs[:2], P2: refs[2:]})
    assert assignment_hash(one) == assignment_hash(two) != assignment_hash(three)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="no processors"):
        plan_assignment(1, blocks(2), {}, replication=0.1, rng=random.Random())
    with pytest.raises(ValueError, match="within"):
        plan_assignment(1, blocks(2), {P1: 1}, replication=1.5, rng=random.Random())
