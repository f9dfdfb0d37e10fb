"""Market: resolve verifies the greedy allocation; examples of each way to get it wrong."""

from __future__ import annotations

from typing import Any

import boa
import pytest

from fedmarket.chain.allocation import InfeasibleAllocation

from .conftest import Standard, place_standard_bids
from .helpers import (
    ASSIGNING,
    DATA,
    MAX_BIDS,
    PROCESSING,
    TaskParams,
    as_tuples,
    assert_conserved,
    bidding_deadline,
    create_task,
    events,
    greedy,
    now,
    offers,
    resolve_greedy,
    travel_to,
)
from .mutations import mutants

# the greedy allocation of conftest's standard book
DATA_FILLS = [(0, 6), (1, 4)]
PROCESSING_FILLS = [(0, 4), (1, 6)]


@pytest.fixture
def closed(market: Any, bidding: Standard) -> Standard:
    """The standard book one second after its bidding deadline."""
    travel_to(bidding_deadline(market, bidding.task) + 1)
    return bidding


def test_allocation_module_proposes_the_standard_fills(market: Any, closed: Standard) -> None:
    allocation = greedy(market, closed.task)
    assert as_tuples(allocation.data) == DATA_FILLS
    assert as_tuples(allocation.processing) == PROCESSING_FILLS
    assert (allocation.data_cost, allocation.processing_cost_per_epoch) == (38, 26)


def test_resolve_at_the_deadline_is_refused_and_one_second_later_accepted(
    market: Any, bidding: Standard
) -> None:
    deadline = bidding_deadline(market, bidding.task)
    travel_to(deadline)
    with boa.reverts("market: bidding still open"):
        market.resolve(bidding.task, DATA_FILLS, PROCESSING_FILLS)
    travel_to(deadline + 1)
    market.resolve(bidding.task, DATA_FILLS, PROCESSING_FILLS)
    assert market.clock_of(bidding.task).state == ASSIGNING


def test_resolve_marks_winners_and_starts_the_assignment_window(
    market: Any, token: Any, closed: Standard, outsider: str
) -> None:
    resolved_at = now()
    market.resolve(closed.task, DATA_FILLS, PROCESSING_FILLS, sender=outsider)
    (resolved,) = events(market, "TaskResolved")
    assert (resolved.data_cost, resolved.processing_cost_per_epoch) == (38, 26)
    assert (resolved.data_winners, resolved.processing_winners) == (2, 2)
    assert resolved.assignment_deadline == resolved_at + TaskParams().epoch_seconds

    clock = market.clock_of(closed.task)
    assert (clock.state, clock.active, clock.deadline) == (
        ASSIGNING,
        2,
        resolved.assignment_deadline,
    )
    assert market.tasks(closed.task).shares == 4  # two owners, two processors
    data = [market.get_bid(closed.task, DATA, i) for i in range(3)]
    assert [(b.winner, b.fill) for b in data] == [(True, 6), (True, 4), (False, 0)]
    processing = [market.get_bid(closed.task, PROCESSING, i) for i in range(3)]
    assert [(b.winner, b.fill) for b in processing] == [(True, 4), (True, 6), (False, 0)]
    assert_conserved(token, market)


def test_losers_stake_and_excess_stake_become_withdrawable_only_after_resolve(
    market: Any, token: Any, closed: Standard
) -> None:
    p1, p2 = closed.processors[1:]
    assert [market.owed(closed.task, p) for p in closed.processors] == [0, 0, 0]
    market.resolve(closed.task, DATA_FILLS, PROCESSING_FILLS)
    # p0 is filled to capacity; p1 keeps (8 - 6) x 3 x 3 epochs; p2 lost its whole 270
    assert [market.owed(closed.task, p) for p in closed.processors] == [0, 18, 270]
    assert [market.owed(closed.task, o) for o in closed.owners] == [0, 0, 0]
    assert market.owed(closed.task, closed.requester) == 0
    before = token.balanceOf(p2)
    assert market.claim(closed.task, p2) == 270
    assert market.withdraw(sender=p2) == 270
    assert token.balanceOf(p2) == before + 270
    assert market.claim(closed.task, p1) == 18
    assert market.claim(closed.task, p1) == 0
    assert_conserved(token, market, closed.processors)


def test_resolve_twice_is_refused(market: Any, closed: Standard) -> None:
    market.resolve(closed.task, DATA_FILLS, PROCESSING_FILLS)
    with boa.reverts("market: task is not in bidding"):
        market.resolve(closed.task, DATA_FILLS, PROCESSING_FILLS)


def test_resolve_of_a_cancelled_task_is_refused(market: Any, closed: Standard) -> None:
    market.cancel(closed.task, sender=closed.requester)
    with boa.reverts("market: task is not in bidding"):
        market.resolve(closed.task, DATA_FILLS, PROCESSING_FILLS)


def test_resolve_of_an_unknown_task_is_refused(market: Any) -> None:
    with boa.reverts("market: task is not in bidding"):
        market.resolve(9, DATA_FILLS, PROCESSING_FILLS)


@pytest.mark.parametrize(
    ("data", "processing", "reason"),
    [
        ([], PROCESSING_FILLS, "fills must sum to num_points"),
        (DATA_FILLS, [], "fills must sum to num_points"),
        ([(0, 6), (1, 3)], PROCESSING_FILLS, "fills must sum to num_points"),
        ([(0, 6), (1, 5)], PROCESSING_FILLS, "fills must sum to num_points"),
        ([(0, 6), (3, 4)], PROCESSING_FILLS, "no such bid"),
        ([(0, 6), (1, 0), (1, 4)], PROCESSING_FILLS, "empty fill"),
        ([(0, 7), (1, 3)], PROCESSING_FILLS, "fill exceeds bid"),
        ([(1, 4), (0, 6)], PROCESSING_FILLS, "fills not in (price, bid) order"),
        ([(0, 6), (0, 4)], PROCESSING_FILLS, "fills not in (price, bid) order"),
        ([(0, 5), (1, 5)], PROCESSING_FILLS, "only the last fill may be partial"),
        ([(0, 6), (2, 4)], PROCESSING_FILLS, "a cheaper bid was left out"),
        ([(1, 6), (2, 4)], PROCESSING_FILLS, "a cheaper bid was left out"),
        (DATA_FILLS, [(0, 4), (2, 6)], "a cheaper bid was left out"),
        (DATA_FILLS, [(0, 3), (1, 7)], "only the last fill may be partial"),
        (DATA_FILLS, [(1, 8), (2, 2)], "a cheaper bid was left out"),
        (DATA_FILLS, [(0, 5), (1, 5)], "fill exceeds bid"),
    ],
)
def test_resolve_rejects_a_wrong_allocation(
    market: Any, closed: Standard, data: list[Any], processing: list[Any], reason: str
) -> None:
    with boa.reverts(f"market: {reason}"):
        market.resolve(closed.task, data, processing)


def test_resolve_rejects_a_fill_of_a_withdrawn_bid(
    market: Any, bidding: Standard, outsider: str
) -> None:
    market.bid_data(bidding.task, 10, 1, sender=outsider)  # bid 3, the cheapest
    market.withdraw_data_bid(bidding.task, sender=outsider)
    travel_to(bidding_deadline(market, bidding.task) + 1)
    with boa.reverts("market: fill of a withdrawn bid"):
        market.resolve(bidding.task, [(3, 10)], PROCESSING_FILLS)
    # the withdrawn bid is no cheaper bid left out
    market.resolve(bidding.task, DATA_FILLS, PROCESSING_FILLS)


def test_every_mutant_of_the_standard_allocation_is_rejected(market: Any, closed: Standard) -> None:
    for side in (DATA, PROCESSING):
        for mutant in mutants(offers(market, closed.task, side), 10):
            data = mutant.fills if side == DATA else DATA_FILLS
            processing = mutant.fills if side == PROCESSING else PROCESSING_FILLS
            with boa.reverts(mutant.reason):
                market.resolve(closed.task, data, processing)
    market.resolve(closed.task, DATA_FILLS, PROCESSING_FILLS)


def test_resolve_rejects_data_over_budget(
    market: Any, requester: str, owners: list[str], processors: list[str]
) -> None:
    task = create_task(market, requester, TaskParams(data_budget=37, processing_budget=78))
    place_standard_bids(market, task, owners, processors)
    travel_to(bidding_deadline(market, task) + 1)
    with pytest.raises(InfeasibleAllocation):
        greedy(market, task)
    with boa.reverts("market: over data budget"):
        market.resolve(task, DATA_FILLS, PROCESSING_FILLS)


def test_resolve_rejects_processing_over_budget(
    market: Any, requester: str, owners: list[str], processors: list[str]
) -> None:
    task = create_task(market, requester, TaskParams(data_budget=38, processing_budget=77))
    place_standard_bids(market, task, owners, processors)
    travel_to(bidding_deadline(market, task) + 1)
    with pytest.raises(InfeasibleAllocation):
        greedy(market, task)
    with boa.reverts("market: over processing budget"):
        market.resolve(task, DATA_FILLS, PROCESSING_FILLS)


def test_resolve_accepts_costs_exactly_at_the_budgets(
    market: Any, requester: str, owners: list[str], processors: list[str]
) -> None:
    task = create_task(market, requester, TaskParams(data_budget=38, processing_budget=78))
    place_standard_bids(market, task, owners, processors)
    resolve_greedy(market, task, requester)
    assert market.clock_of(task).state == ASSIGNING


def test_ties_go_to_the_earlier_bid(
    market: Any, requester: str, owners: list[str], processors: list[str]
) -> None:
    task = create_task(market, requester, TaskParams(num_points=5))
    for owner in owners[:3]:
        market.bid_data(task, 3, 2, sender=owner)
    for processor in processors[:3]:
        market.bid_processing(task, 3, 2, sender=processor)
    travel_to(bidding_deadline(market, task) + 1)
    with boa.reverts("market: a cheaper bid was left out"):
        market.resolve(task, [(1, 3), (2, 2)], [(0, 3), (1, 2)])
    allocation = resolve_greedy(market, task, requester)
    assert as_tuples(allocation.data) == [(0, 3), (1, 2)]


def test_requesters_own_data_bid_holds_no_share(
    market: Any, requester: str, owners: list[str], processors: list[str]
) -> None:
    task = create_task(market, requester, TaskParams(num_points=4))
    market.bid_data(task, 2, 1, sender=requester)
    market.bid_data(task, 2, 1, sender=owners[0])
    market.bid_processing(task, 4, 1, sender=processors[0])
    resolve_greedy(market, task, requester)
    assert market.tasks(task).shares == 2  # owner 0 and the processor


def test_resolve_accepts_a_full_book_of_max_bids_per_side(
    market: Any, token: Any, requester: str
) -> None:
    task = create_task(market, requester, TaskParams(num_points=200, max_epochs=1))
    crowd = [boa.env.generate_address() for _ in range(MAX_BIDS)]
    minter = token.minter()
    for i, bidder in enumerate(crowd):
        token.mint(bidder, 10_000, sender=minter)
        token.approve(market, 10_000, sender=bidder)
        # prices fall with the index, so the winners are the last bids
        market.bid_data(task, 2, (MAX_BIDS - i) % 7, sender=bidder)
        market.bid_processing(task, 2, 1 + (MAX_BIDS - i) % 5, sender=bidder)
    allocation = resolve_greedy(market, task, requester)
    assert len(allocation.data) == len(allocation.processing) == 100
    assert market.tasks(task).shares == 200
    assert_conserved(token, market)
