"""Python <-> contract vectors: what fedmarket.chain.merkle computes is what the market
recomputes (assignment roots of every width, epoch accumulators and history, the domain)."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from fedmarket.chain.merkle import AssignmentTree, Entry, block_id
from fedmarket.chain.signing import domain_separator

from .helpers import Rig, Task, TaskParams, h


@pytest.mark.parametrize("records", [1, 2, 3, 5, 6])
def test_the_contract_builds_the_python_assignment_root(
    rig: Rig,
    token: Any,
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    records: int,
) -> None:
    t = Task(
        rig,
        token,
        requester,
        [(owners[0], 64 * 6, 1)],
        [(p, 64, 1 + i) for i, p in enumerate(processors[:6])],
        TaskParams(num_points=64 * 6),
    )
    t.create().bid().resolve().commit_data()
    blocks = t.blocks()
    entries = {p: [Entry(blocks[p], 64), Entry(block_id(0, 99), 3)] for p in range(records)}
    t.assign(entries)
    (assigned,) = rig.logs("AssignmentCommitted")
    assert bytes(assigned.root) == AssignmentTree(t.task, entries).root


def test_the_contract_chains_epochs_like_the_epoch_book(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    t = Task(
        rig, token, requester, [(owners[0], 256, 1)], [(p, 128, 1) for p in processors[:2]]
    ).start()
    for e in range(3):
        t.relay(e) if e != 1 else [t.submit(p, e) for p in (1, 0)]
        acc, _ = rig.epoch_commitments(t.task)
        assert bytes(acc) == t.book.acc(e)
        t.close(e, go_on=e < 2, model=h(e))
        assert bytes(rig.epoch_commitments(t.task)[1]) == t.book.history()
    assert t.book.roots[1] == [(1, t.root(1, 1)), (0, t.root(0, 1))]  # recorded order


def test_the_domain_separator_is_the_python_one(rig: Rig) -> None:
    assert bytes(rig.DOMAIN_SEPARATOR()) == domain_separator(
        boa.env.evm.patch.chain_id, rig.address
    )
