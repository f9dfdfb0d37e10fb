"""Market: data commitments, the assignment, model releases, roots (relayed and direct), closes
and "not received" marks, undelivered reports."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from fedmarket.chain import merkle
from fedmarket.chain.merkle import AssignmentTree, Entry, block_id
from fedmarket.chain.signing import SignedRoot, sign_root

from .conftest import standard
from .helpers import (
    DATA,
    FINISHED,
    MODEL,
    PROCESSING,
    R_LATE,
    R_NOT_RECEIVED,
    R_UNDELIVERED,
    TRAINING,
    Rig,
    Task,
    h,
    now,
    travel_to,
)


@pytest.fixture
def t(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> Task:
    return standard(rig, token, requester, owners, processors).create().bid().resolve()


def test_commit_data_publishes_the_manifest_and_counts_the_cost(
    rig: Rig, t: Task, owners: list[str]
) -> None:
    rig.commit_data(t.task, 0, [64, 64], [h(1), h(2)], sender=owners[0])
    (committed,) = rig.logs("DataCommitted")
    assert (committed.owner, committed.bid, list(committed.block_sizes)) == (owners[0], 0, [64, 64])
    assert [bytes(d) for d in committed.digests] == [h(1), h(2)]
    assert rig.get_bid(t.task, DATA, 0).committed
    assert rig.data_money_of(t.task) == (128 * 3, 0)


@pytest.mark.parametrize(
    ("bid", "sizes", "who", "reason"),
    [
        (2, [64, 64], 2, "market: not a winning data owner"),
        (0, [64, 64], 1, "market: not this bid's bidder"),
        (0, [128], 0, None),
        (0, [64, 63], 0, "market: manifest does not sum to the fill"),
        (0, [128, 0], 0, "market: empty block"),
        (0, [], 0, "market: bad manifest"),
        (200, [128], 0, "market: no such bid"),
    ],
)
def test_commit_data_checks_the_owner_and_its_manifest(
    rig: Rig, t: Task, owners: list[str], bid: int, sizes: list[int], who: int, reason: str | None
) -> None:
    digests = [h(i) for i in range(len(sizes))]
    if reason is None:
        rig.commit_data(t.task, bid, sizes, digests, sender=owners[who])
        with boa.reverts("market: data already committed"):
            rig.commit_data(t.task, bid, sizes, digests, sender=owners[who])
    else:
        with boa.reverts(reason):
            rig.commit_data(t.task, bid, sizes, digests, sender=owners[who])


def test_commit_data_closes_with_the_assignment(rig: Rig, t: Task, owners: list[str]) -> None:
    t.commit_data([owners[0]]).assign()
    with boa.reverts("market: data commitments are closed"):
        rig.commit_data(t.task, 1, [128], [h(1)], sender=owners[1])


def test_commit_assignment_builds_the_root_and_releases_epoch_zero(
    rig: Rig, t: Task, requester: str
) -> None:
    t.commit_data()
    entries = t.default_entries()
    start = now()
    t.assign(entries)
    assigned, released = rig.logs("AssignmentCommitted")[0], rig.logs("ModelReleased")[0]
    tree = AssignmentTree(t.task, entries)
    assert bytes(assigned.root) == tree.root == bytes(rig.terms(t.task).assignment_root)
    assert list(assigned.processors) == [0, 1] and list(assigned.points) == [128, 128]
    assert (released.epoch, bytes(released.model_digest)) == (0, MODEL)
    clock = rig.clock_of(t.task)
    # one epoch for delivery and one for the work
    assert (clock.state, clock.epoch, clock.deadline) == (TRAINING, 0, start + 2 * 600)
    assert released.deadline == clock.deadline
    acc, history = rig.epoch_commitments(t.task)
    assert bytes(acc) == merkle.epoch_start(t.task, 0, MODEL) and bytes(history) == bytes(32)


def test_commit_assignment_checks_its_records(
    rig: Rig, t: Task, requester: str, outsider: str
) -> None:
    t.commit_data()

    def rec(p: int, count: int = 1, points: int = 64) -> tuple[Any, ...]:
        return merkle.Record(p, count, points, h(p)).as_tuple()

    with boa.reverts("market: only the requester"):
        rig.commit_assignment(t.task, [rec(0)], MODEL, sender=outsider)
    with boa.reverts("market: empty model digest"):
        rig.commit_assignment(t.task, [rec(0)], bytes(32), sender=requester)
    with boa.reverts("market: record of no winning processor"):
        rig.commit_assignment(t.task, [rec(2)], MODEL, sender=requester)
    with boa.reverts("market: two records for one processor"):
        rig.commit_assignment(t.task, [rec(0), rec(0)], MODEL, sender=requester)
    with boa.reverts("market: bad entry count"):
        rig.commit_assignment(t.task, [rec(0, 0)], MODEL, sender=requester)
    # capacity on chain: a processor gets at most twice its fill (issue 14's routing bound)
    with boa.reverts("market: assignment over the processor's load"):
        rig.commit_assignment(t.task, [rec(0, 5, 257)], MODEL, sender=requester)
    rig.commit_assignment(t.task, [rec(0, 2, 128)], MODEL, sender=requester)
    with boa.reverts("market: task is not awaiting an assignment"):
        rig.commit_assignment(t.task, [rec(0)], MODEL, sender=requester)


def test_a_relay_records_every_root_on_time_and_marks_the_epoch_full(rig: Rig, t: Task) -> None:
    t.commit_data().assign()
    t.relay(0)
    (roots,) = rig.logs("EpochRoots")
    assert (roots.processors, [bytes(r) for r in roots.roots]) == (
        0b11,
        [t.root(0, 0), t.root(1, 0)],
    )
    clock = rig.clock_of(t.task)
    assert (clock.submitted, clock.active, clock.flags & 2) == (2, 2, 2)
    acc, _ = rig.epoch_commitments(t.task)
    assert bytes(acc) == merkle.epoch_acc(t.task, 0, MODEL, [(0, t.root(0, 0)), (1, t.root(1, 0))])


def test_a_relay_needs_every_active_processors_signature_in_order(
    rig: Rig, t: Task, outsider: str
) -> None:
    t.commit_data().assign()
    good = [sign_root(t.account_of(p), t.domain, t.task, 0, t.root(p, 0)) for p in (0, 1)]
    forged = sign_root(t.account_of(0), t.domain, t.task, 0, t.root(1, 0))  # 0 signs for 1
    with boa.reverts("market: an active processor is missing"):
        rig.relay_epoch(t.task, 0, [good[0].as_tuple()], sender=outsider)
    with boa.reverts("market: bad root signature"):
        rig.relay_epoch(t.task, 0, [good[1].as_tuple(), good[0].as_tuple()], sender=outsider)
    with boa.reverts("market: bad root signature"):
        rig.relay_epoch(t.task, 0, [good[0].as_tuple(), forged.as_tuple()], sender=outsider)
    with boa.reverts("market: bad root signature"):  # a root signed for another epoch
        rig.relay_epoch(
            t.task,
            0,
            [
                good[0].as_tuple(),
                sign_root(t.account_of(1), t.domain, t.task, 1, t.root(1, 0)).as_tuple(),
            ],
            sender=outsider,
        )
    with boa.reverts("market: more roots than active processors"):
        rig.relay_epoch(
            t.task, 0, [*[g.as_tuple() for g in good], good[0].as_tuple()], sender=outsider
        )
    rig.relay_epoch(t.task, 0, [g.as_tuple() for g in good], sender=outsider)  # anyone may relay


def test_a_late_relay_reverts_and_late_roots_go_one_by_one(rig: Rig, t: Task) -> None:
    t.commit_data().assign()
    travel_to(rig.clock_of(t.task).deadline + 1)
    with boa.reverts("market: late roots go one by one"):
        t.relay(0)
    t.submit(0, 0)
    (submitted,) = rig.logs("RootSubmitted")
    # 128 x 2 = 256, less 25 %: the penalty goes to the reserve, not back to the requester
    assert (submitted.on_time, submitted.pay) == (False, 192)
    (credited,) = rig.logs("ReserveCredited")
    assert (credited.amount, credited.reason) == (64, R_LATE)
    assert rig.reserve_balance() == 64
    assert rig.clock_of(t.task).spent == 256


def test_submit_root_by_the_processor_or_anyone_with_its_signature(
    rig: Rig, t: Task, outsider: str
) -> None:
    t.commit_data().assign()
    root = t.root(1, 0)
    with boa.reverts("market: bad root signature"):
        rig.submit_root(t.task, 0, 1, SignedRoot.unsigned(root).as_tuple(), sender=outsider)
    signed = sign_root(t.account_of(1), t.domain, t.task, 0, root)
    rig.submit_root(t.task, 0, 1, signed.as_tuple(), sender=outsider)
    (submitted,) = rig.logs("RootSubmitted")
    assert (submitted.processor, bytes(submitted.root), submitted.on_time, submitted.pay) == (
        1,
        root,
        True,
        384,
    )
    with boa.reverts("market: root already submitted"):
        t.submit(1, 0)
    with boa.reverts("market: roots already recorded, relay the rest one by one"):
        t.relay(0)
    t.submit(0, 0)
    assert rig.clock_of(t.task).submitted == 2


def test_submit_root_checks(rig: Rig, t: Task, processors: list[LocalAccount]) -> None:
    with boa.reverts("market: task is not training"):
        rig.submit_root(
            t.task, 0, 0, SignedRoot.unsigned(h(1)).as_tuple(), sender=processors[0].address
        )
    t.commit_data().assign()
    with boa.reverts("market: not the current epoch"):
        t.submit(0, 1)
    with boa.reverts("market: empty root"):
        rig.submit_root(
            t.task, 0, 0, SignedRoot.unsigned(bytes(32)).as_tuple(), sender=processors[0].address
        )
    with boa.reverts("market: not an active processor"):  # the loser
        rig.submit_root(
            t.task, 0, 2, SignedRoot.unsigned(h(1)).as_tuple(), sender=processors[2].address
        )
    t.relay(0)
    with boa.reverts("market: the epoch was relayed"):
        t.submit(0, 0)


def test_close_waits_for_every_root_or_the_deadline_and_releases_the_next_model(
    rig: Rig, t: Task, requester: str, outsider: str
) -> None:
    t.commit_data().assign()
    t.submit(0, 0)
    with boa.reverts("market: epoch still running"):
        t.close(0)
    with boa.reverts("market: only the requester"):
        rig.close_epoch(t.task, 0, MODEL, True, 0, sender=outsider)
    with boa.reverts("market: not the current epoch"):
        rig.close_epoch(t.task, 1, MODEL, True, 0, sender=requester)
    t.submit(1, 0)
    with boa.reverts("market: empty model digest"):
        rig.close_epoch(t.task, 0, bytes(32), True, 0, sender=requester)
    start = now()
    t.close(0, model=h(7))
    closed, released = rig.logs("EpochClosed")[0], rig.logs("ModelReleased")[0]
    assert (closed.epoch, closed.go_on, closed.not_received, closed.next_deadline) == (
        0,
        True,
        0,
        start + 600,
    )
    assert (released.epoch, bytes(released.model_digest), released.deadline) == (
        1,
        h(7),
        start + 600,
    )
    clock = rig.clock_of(t.task)
    assert (clock.epoch, clock.submitted, clock.flags & 1, clock.full_epochs) == (1, 0, 1, 0)
    acc, history = rig.epoch_commitments(t.task)
    assert bytes(acc) == merkle.epoch_start(t.task, 1, h(7))
    assert bytes(history) == t.book.history()


def test_a_full_epoch_is_paid_lazily_at_its_close(rig: Rig, t: Task) -> None:
    t.commit_data().assign()
    t.relay(0)
    assert rig.owed(t.task, PROCESSING, 0) == 0  # the open epoch is not final
    spent = rig.clock_of(t.task).spent
    t.close(0)
    clock = rig.clock_of(t.task)
    assert (clock.full_epochs, clock.spent - spent) == (1, 640)
    assert rig.owed(t.task, PROCESSING, 0) == 256  # excess stake: none for processor 0
    assert rig.owed(t.task, PROCESSING, 1) == 384 + 64 * 3 * 3


def test_close_after_the_deadline_needs_no_roots_and_stop_or_the_last_epoch_finishes(
    rig: Rig, t: Task
) -> None:
    t.commit_data().assign()
    travel_to(rig.clock_of(t.task).deadline + 1)
    t.close(0)
    t.run_epoch(1)
    t.run_epoch(2)  # go_on, but the last epoch
    assert rig.clock_of(t.task).state == FINISHED
    (finished,) = rig.logs("TaskFinished")
    assert (finished.epochs_closed, finished.timed_out) == (3, False)
    with boa.reverts("market: task is not training"):
        t.close(3)


def test_not_received_moves_the_epochs_pay_to_the_reserve(
    rig: Rig, t: Task, requester: str
) -> None:
    """A requester that says it never got a processor's results pays it nothing for the epoch,
    and gets nothing back either: the pay goes to the reserve. Full and direct epochs alike."""
    t.commit_data().assign()
    t.relay(0)
    t.close(0, not_received=0b10)
    (credited,) = [e for e in rig.logs("ReserveCredited") if e.reason == R_NOT_RECEIVED]
    assert credited.amount == 384
    assert rig.owed(t.task, PROCESSING, 1) == 64 * 3 * 3  # its excess stake only
    t.submit(0, 1)
    travel_to(rig.clock_of(t.task).deadline + 1)
    t.submit(1, 1)  # late: 384 less 25 % = 288, 96 to the reserve
    t.close(1, not_received=0b11)
    moved = [e.amount for e in rig.logs("ReserveCredited") if e.reason == R_NOT_RECEIVED]
    assert moved == [256 + 288]
    assert rig.clock_of(t.task).spent == 640 + 256 + 384
    travel_to(rig.clock_of(t.task).deadline + 1)
    with boa.reverts("market: not a winning processor"):
        rig.close_epoch(t.task, 2, MODEL, False, 0b100, sender=requester)


def undelivered_setup(rig: Rig, t: Task) -> tuple[int, merkle.EntryProof]:
    t.commit_data().assign()
    block = t.tree.entries[0][0].block
    return block, t.entry(0, block)


def test_a_processor_reports_blocks_it_never_received(rig: Rig, t: Task) -> None:
    block, proof = undelivered_setup(rig, t)
    owner_bid, index = merkle.split_block_id(block)
    acct = t.account_of(0)
    rig.report_undelivered(t.task, 0, [(owner_bid, index, proof.as_tuple())], sender=acct.address)
    (event,) = rig.logs("BlockUndelivered")
    assert (event.processor, event.owner_bid, event.block_index, event.points) == (
        0,
        owner_bid,
        index,
        64,
    )
    assert rig.is_reported(t.task, 0, block)
    assert rig.get_bid(t.task, PROCESSING, 0).epoch_pay == (128 - 64) * 2
    assert rig.get_bid(t.task, DATA, owner_bid).undelivered == 64
    assert rig.active_of(t.task)[1] == 640 - 128
    assert rig.data_money_of(t.task) == (1024, 64 * 3)
    with boa.reverts("market: block already reported"):
        rig.report_undelivered(
            t.task, 0, [(owner_bid, index, proof.as_tuple())], sender=acct.address
        )
    t.relay(0)
    t.close(0)
    (credited,) = [e for e in rig.logs("ReserveCredited") if e.reason == R_UNDELIVERED]
    assert credited.amount == 64 * 3  # the owner's pay for it, at the first close
    assert rig.owed(t.task, DATA, owner_bid) == (128 - 64) * 3
    assert rig.owed(t.task, PROCESSING, 0) == (128 - 64) * 2


def test_reports_need_the_assignment_proof_and_come_before_the_first_root(
    rig: Rig, t: Task, outsider: str
) -> None:
    block, proof = undelivered_setup(rig, t)
    owner_bid, index = merkle.split_block_id(block)
    acct = t.account_of(0)
    with boa.reverts("market: not this bid's bidder"):
        rig.report_undelivered(t.task, 0, [(owner_bid, index, proof.as_tuple())], sender=outsider)
    other = merkle.split_block_id(t.tree.entries[1][0].block)
    with boa.reverts("market: bad entry proof"):  # a block it does not hold
        rig.report_undelivered(
            t.task, 0, [(other[0], other[1], proof.as_tuple())], sender=acct.address
        )
    with boa.reverts("market: the record is another processor's"):
        rig.report_undelivered(
            t.task,
            0,
            [(other[0], other[1], t.entry(1, t.tree.entries[1][0].block).as_tuple())],
            sender=acct.address,
        )
    with boa.reverts("market: not a winning data bid"):
        rig.report_undelivered(t.task, 0, [(2, 0, proof.as_tuple())], sender=acct.address)
    t.submit(0, 0)
    with boa.reverts("market: report before your first root"):
        rig.report_undelivered(
            t.task, 0, [(owner_bid, index, proof.as_tuple())], sender=acct.address
        )


def test_a_block_held_twice_costs_its_owner_once(rig: Rig, t: Task) -> None:
    t.commit_data()
    block = block_id(0, 0)
    entries = t.default_entries(replicas=[(block, 1)])
    holder = next(p for p, es in entries.items() if any(e.block == block for e in es) and p != 1)
    # room for the replica: processor 1 holds 128 points of 128 already, so move one out
    entries[1] = [*[e for e in entries[1] if e.block != block][:1], Entry(block, 64)]
    t.assign(entries)
    for p in (holder, 1):
        o, i = merkle.split_block_id(block)
        rig.report_undelivered(
            t.task, p, [(o, i, t.entry(p, block).as_tuple())], sender=t.account_of(p).address
        )
    assert rig.get_bid(t.task, DATA, 0).undelivered == 64
