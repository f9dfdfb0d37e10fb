"""Market: verified resolution (the greedy allocation, data fills >= min_fill) and reopening
with stricter floors."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from fedmarket.chain.allocation import greedy_fills

from .conftest import standard
from .helpers import (
    ASSIGNING,
    BIDDING,
    DATA,
    MAX_BIDS,
    PROCESSING,
    Rig,
    TaskParams,
    as_tuples,
    create_task,
    greedy,
    offers,
    resolve_greedy,
    travel_to,
)
from .mutations import mutants


def standard_task(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> Any:
    return standard(rig, token, requester, owners, processors).create().bid()


def test_allocation_module_proposes_the_standard_fills(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    t = standard_task(rig, token, requester, owners, processors)
    allocation = greedy(rig, t.task)
    assert as_tuples(allocation.data) == [(0, 128), (1, 128)]
    assert as_tuples(allocation.processing) == [(0, 128), (1, 128)]
    assert (allocation.data_cost, allocation.processing_cost_per_epoch) == (
        128 * 3 + 128 * 5,
        128 * 2 + 128 * 3,
    )


def test_resolve_at_the_deadline_is_refused_and_one_second_later_accepted(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    t = standard_task(rig, token, requester, owners, processors)
    a = greedy(rig, t.task)
    travel_to(rig.terms(t.task).bidding_deadline)
    with boa.reverts("market: bidding still open"):
        rig.resolve(t.task, as_tuples(a.data), as_tuples(a.processing), sender=requester)
    travel_to(rig.terms(t.task).bidding_deadline + 1)
    rig.resolve(t.task, as_tuples(a.data), as_tuples(a.processing), sender=requester)


def test_resolve_marks_winners_and_starts_the_assignment_window(
    rig: Rig,
    token: Any,
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    outsider: str,
) -> None:
    t = standard_task(rig, token, requester, owners, processors)
    travel_to(rig.terms(t.task).bidding_deadline + 1)
    a = greedy(rig, t.task)
    rig.resolve(t.task, as_tuples(a.data), as_tuples(a.processing), sender=outsider)  # anyone
    (resolved,) = rig.logs("TaskResolved")
    assert (resolved.data_cost, resolved.processing_cost_per_epoch, resolved.data_points) == (
        1024,
        640,
        256,
    )
    assert (resolved.data_winners, resolved.processing_winners) == (2, 2)
    clock = rig.clock_of(t.task)
    assert (clock.state, clock.active) == (ASSIGNING, 2)
    assert resolved.assignment_deadline == clock.deadline
    assert rig.book_of(t.task) == (0b11, 0b11)  # winners now
    assert rig.active_of(t.task) == (0b11, 640)
    bids = [rig.get_bid(t.task, PROCESSING, i) for i in range(3)]
    assert [(b.winner, b.fill, b.epoch_pay) for b in bids] == [
        (True, 128, 256),
        (True, 128, 384),
        (False, 0, 0),
    ]


def test_loser_and_excess_stakes_return_once_training_starts(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    """Not before: `reopen` may still change who wins."""
    t = standard_task(rig, token, requester, owners, processors).resolve()
    assert rig.owed(t.task, PROCESSING, 2) == 0
    with boa.reverts("market: nothing owed"):
        rig.collect(t.task, PROCESSING, 2, sender=processors[2].address)
    t.commit_data().assign()
    assert rig.owed(t.task, PROCESSING, 2) == 300 * 9 * 3
    assert rig.owed(t.task, PROCESSING, 1) == (192 - 128) * 3 * 3
    assert rig.collect(t.task, PROCESSING, 2, sender=processors[2].address) == 300 * 9 * 3
    with boa.reverts("market: not this bid's bidder"):
        rig.collect(t.task, PROCESSING, 1, sender=processors[2].address)


def test_resolve_twice_of_a_cancelled_or_unknown_task_is_refused(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    t = standard_task(rig, token, requester, owners, processors).resolve()
    with boa.reverts("market: task is not in bidding"):
        resolve_greedy(rig, t.task, requester)
    with boa.reverts("market: task is not in bidding"):
        rig.resolve(42, [], [], sender=requester)


def test_every_mutant_of_the_standard_allocation_is_rejected(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    t = standard_task(rig, token, requester, owners, processors)
    travel_to(rig.terms(t.task).bidding_deadline + 1)
    a = greedy(rig, t.task)
    for side, right in ((DATA, a.processing), (PROCESSING, a.data)):
        found = mutants(offers(rig, t.task, side), 256, side, 64)
        assert len(found) >= 8
        for m in found:
            data, processing = (
                (m.fills, as_tuples(right)) if side == DATA else (as_tuples(right), m.fills)
            )
            with boa.reverts(m.reason):
                rig.resolve(t.task, data, processing, sender=requester)


def test_the_marginal_data_bid_is_dropped_rather_than_cut_below_min_fill(
    rig: Rig, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    """The privacy floor: no data fill below min_fill. 200 of 256 points leave 56 < 64, so
    the next bid is not filled at all and data sums to 200; processing still buys 256."""
    task = create_task(rig, requester)
    rig.bid_data(task, 200, 1, 0, sender=owners[0])
    rig.bid_data(task, 100, 2, 0, sender=owners[1])
    rig.bid_processing(task, 256, 1, 0, sender=processors[0].address)
    travel_to(rig.terms(task).bidding_deadline + 1)
    with boa.reverts("market: fill below min_fill"):
        rig.resolve(task, [(0, 200), (1, 56)], [(0, 256)], sender=requester)
    a = greedy(rig, task)
    assert as_tuples(a.data) == [(0, 200)]
    rig.resolve(task, [(0, 200)], [(0, 256)], sender=requester)
    assert rig.logs("TaskResolved")[0].data_points == 200


def test_a_partial_last_fill_must_complete_the_points(
    rig: Rig, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    task = create_task(rig, requester)
    rig.bid_data(task, 100, 1, 0, sender=owners[0])
    rig.bid_data(task, 200, 2, 0, sender=owners[1])
    rig.bid_processing(task, 256, 1, 0, sender=processors[0].address)
    travel_to(rig.terms(task).bidding_deadline + 1)
    with boa.reverts("market: fills must sum to num_points"):
        rig.resolve(task, [(0, 100), (1, 100)], [(0, 256)], sender=requester)
    rig.resolve(task, [(0, 100), (1, 156)], [(0, 256)], sender=requester)


@pytest.mark.parametrize(
    ("data_budget", "processing_budget", "reason"),
    [
        (1_023, 10**6, "market: over data budget"),
        (10**6, 1_919, "market: over processing budget"),
        (1_024, 1_920, None),
    ],
)
def test_budgets_bound_the_allocation(
    rig: Rig,
    token: Any,
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    data_budget: int,
    processing_budget: int,
    reason: str | None,
) -> None:
    params = TaskParams(data_budget=data_budget, processing_budget=processing_budget)
    t = standard(rig, token, requester, owners, processors, params).create().bid()
    travel_to(rig.terms(t.task).bidding_deadline + 1)
    data = [f.as_tuple() for f in greedy_fills(offers(rig, t.task, DATA), 256, 64)]
    processing = [f.as_tuple() for f in greedy_fills(offers(rig, t.task, PROCESSING), 256)]
    if reason is None:
        rig.resolve(t.task, data, processing, sender=requester)
        assert rig.clock_of(t.task).state == ASSIGNING
    else:
        with boa.reverts(reason):
            rig.resolve(t.task, data, processing, sender=requester)


def test_ties_go_to_the_earlier_slot(
    rig: Rig, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    task = create_task(rig, requester)
    for o in owners[:3]:
        rig.bid_data(task, 128, 4, 0, sender=o)
    rig.bid_processing(task, 256, 1, 0, sender=processors[0].address)
    a = resolve_greedy(rig, task, requester)
    assert as_tuples(a.data) == [(0, 128), (1, 128)]


def test_resolve_accepts_a_full_book_of_max_bids_per_side(
    rig: Rig, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    task = create_task(rig, requester, TaskParams(num_points=64 * 100))
    for i in range(MAX_BIDS):
        rig.bid_data(task, 64, 1 + i % 7, 0, sender=owners[i % 6])
        rig.bid_processing(task, 64, 1 + i % 5, 0, sender=processors[i % 6].address)
    a = resolve_greedy(rig, task, requester)
    assert len(a.data) == len(a.processing) == 100


def test_reopen_with_stricter_floors_excludes_dust(
    rig: Rig, requester: str, owners: list[str], processors: list[LocalAccount], outsider: str
) -> None:
    """The dust hijack: a price-0 data bid and a 1-unit processing bid for every point win the
    whole task. Today nobody can undo it once someone resolves. The requester reopens with
    floors that exclude them (refunded in full), and the honest bids win."""
    task = create_task(rig, requester)
    rig.bid_data(task, 256, 0, 0, sender=outsider)
    rig.bid_processing(task, 256, 1, 0, sender=outsider)
    rig.bid_data(task, 256, 5, 0, sender=owners[0])
    rig.bid_processing(task, 256, 4, 0, sender=processors[0].address)
    a = resolve_greedy(rig, task, outsider)  # the hijacker resolves at once
    assert as_tuples(a.data) == [(0, 256)] and as_tuples(a.processing) == [(0, 256)]
    rig.reopen(task, (2, 0, 1), 600, sender=requester)
    events = rig.logs("BidWithdrawn")
    assert [(e.side, e.bid, e.refunded) for e in events] == [
        (DATA, 0, 0),
        (PROCESSING, 0, 256 * 1 * 3),
    ]
    (reopened,) = rig.logs("TaskReopened")
    assert tuple(reopened.floors) == (2, 0, 1) and reopened.refunded_bids == 2
    assert rig.claimable(outsider) == 768
    assert rig.clock_of(task).state == BIDDING
    assert rig.book_of(task) == (0b10, 0b10)
    assert not rig.get_bid(task, DATA, 1).winner
    a = resolve_greedy(rig, task, requester)
    assert as_tuples(a.data) == [(1, 256)] and as_tuples(a.processing) == [(1, 256)]


def test_reopen_cannot_lower_floors_and_is_for_the_requester_before_the_assignment(
    rig: Rig,
    token: Any,
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    outsider: str,
) -> None:
    """So reopening can never fish for cheaper prices."""
    t = (
        standard(rig, token, requester, owners, processors, TaskParams(floors=(1, 0, 1)))
        .create()
        .bid()
        .resolve()
    )
    with boa.reverts("market: floors can only rise"):
        rig.reopen(t.task, (0, 0, 1), 600, sender=requester)
    with boa.reverts("market: only the requester"):
        rig.reopen(t.task, (1, 0, 1), 600, sender=outsider)
    with boa.reverts("market: bad bidding_seconds"):
        rig.reopen(t.task, (1, 0, 1), 0, sender=requester)
    t.commit_data().assign()
    with boa.reverts("market: task is not awaiting an assignment"):
        rig.reopen(t.task, (1, 0, 1), 600, sender=requester)


def test_reopen_clears_commitments_and_the_requesters_own_data_stays(
    rig: Rig, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    task = create_task(rig, requester)
    rig.bid_data(task, 128, 0, 0, sender=requester)
    rig.bid_data(task, 128, 3, 0, sender=owners[0])
    rig.bid_processing(task, 256, 2, 0, sender=processors[0].address)
    resolve_greedy(rig, task, requester)
    rig.commit_data(task, 1, [128], [b"\x01" * 32], sender=owners[0])
    rig.reopen(task, (0, 0, 1), 600, sender=requester)
    assert rig.logs("TaskReopened")[0].refunded_bids == 0  # own data is exempt from the floor
    assert not rig.get_bid(task, DATA, 1).committed
    assert rig.data_money_of(task) == (0, 0)
