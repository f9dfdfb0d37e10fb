"""Resolve fuzzing: on random bid books the contract accepts exactly the greedy allocation.

`fedmarket.chain.allocation.allocate` proposes; `resolve` must accept it when it fits the
budgets, reject it with the budget reason when it does not, and reject every single-rule
mutant of it (tests/chain/contracts/mutations.py) with that rule's reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boa
import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from fedmarket.chain.allocation import InfeasibleAllocation, Offer, allocate, cost, greedy_fills

from .helpers import (
    ASSIGNING,
    DATA,
    MAX_BIDS,
    MAX_UINT,
    PROCESSING,
    TaskParams,
    as_tuples,
    assert_conserved,
    bidding_deadline,
    create_task,
    offers,
    travel_to,
)
from .mutations import best_effort, mutants

BidSpec = tuple[int, int, bool]  # amount, price, withdrawn


@dataclass(frozen=True)
class Book:
    num_points: int
    max_epochs: int
    data: list[BidSpec]
    processing: list[BidSpec]
    # budget = the greedy cost + slack (-1: one unit short); None: ample
    data_slack: int | None
    processing_slack: int | None


def open_points(bids: list[BidSpec]) -> int:
    return sum(amount for amount, _, withdrawn in bids if not withdrawn)


def side_offers(bids: list[BidSpec]) -> list[Offer]:
    # a withdrawn bid reads back as amount 0 and price 0
    return [
        Offer(i, *((0, 0) if w else (amount, price))) for i, (amount, price, w) in enumerate(bids)
    ]


def side_cost(bids: list[BidSpec], wanted: int) -> int | None:
    """The greedy cost of one side, or None when its open bids hold too few points."""
    found = side_offers(bids)
    try:
        return cost(found, greedy_fills(found, wanted))
    except InfeasibleAllocation:
        return None


def budget(greedy_cost: int | None, slack: int | None, factor: int) -> int:
    if greedy_cost is None or slack is None:
        return 10**9
    return max(0, greedy_cost * factor + slack)


def bids(min_price: int, size: int) -> st.SearchStrategy[list[BidSpec]]:
    # few distinct prices, so ties are common
    amount, price = st.integers(1, 15), st.integers(min_price, 6)
    # about one bid in five is withdrawn
    withdrawn = st.integers(0, 4).map(lambda n: n == 0)
    return st.lists(st.tuples(amount, price, withdrawn), min_size=1, max_size=size)


@st.composite
def books(draw: st.DrawFn) -> Book:
    data = draw(bids(0, 20))
    processing = draw(bids(1, 20))
    available = min(open_points(data), open_points(processing))
    if available == 0 or draw(st.integers(0, 9)) == 0:
        num_points = draw(st.integers(1, available + 5))  # sometimes too few points
    else:
        num_points = draw(st.integers(1, available))
    slack = st.one_of(st.none(), st.sampled_from([-1, 0, 1]))
    return Book(
        num_points=num_points,
        max_epochs=draw(st.integers(1, 3)),
        data=data,
        processing=processing,
        data_slack=draw(slack),
        processing_slack=draw(slack),
    )


FULL_BOOK = Book(
    num_points=500,
    max_epochs=2,
    data=[(1 + i % 9, (i * 7) % 5, i % 11 == 0) for i in range(MAX_BIDS)],
    processing=[(1 + i % 13, 1 + (i * 5) % 4, i % 17 == 3) for i in range(MAX_BIDS)],
    data_slack=0,
    processing_slack=None,
)
# every price the same: only the bid index orders the fills
TIED_BOOK = Book(
    num_points=201,
    max_epochs=1,
    data=[(1 + i % 5, 3, i % 7 == 2) for i in range(MAX_BIDS)],
    processing=[(1 + i % 3, 3, i % 5 == 4) for i in range(MAX_BIDS)],
    data_slack=None,
    processing_slack=-1,
)


@dataclass(frozen=True)
class Rig:
    market: Any = field(repr=False)
    token: Any = field(repr=False)
    requester: str = field(repr=False)
    crowd: list[str] = field(repr=False)  # bidder i places bid i on each side


@pytest.fixture(scope="module")
def rig(token: Any, market: Any, requester: str) -> Rig:
    """The market and MAX_BIDS funded bidders."""
    crowd = [boa.env.generate_address(f"bidder{i}") for i in range(MAX_BIDS)]
    minter = token.minter()
    for account in crowd:
        token.mint(account, 10**6, sender=minter)
        token.approve(market, MAX_UINT, sender=account)
    return Rig(market, token, requester, crowd)


def place(market: Any, task: int, book: Book, crowd: list[str]) -> None:
    for side, side_bids in ((DATA, book.data), (PROCESSING, book.processing)):
        bid = market.bid_data if side == DATA else market.bid_processing
        withdraw = market.withdraw_data_bid if side == DATA else market.withdraw_processing_bid
        for bidder, (amount, price, withdrawn) in zip(crowd, side_bids, strict=False):
            bid(task, amount, price, sender=bidder)
            if withdrawn:
                withdraw(task, sender=bidder)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(book=books())
@example(book=FULL_BOOK)
@example(book=TIED_BOOK)
def test_resolve_accepts_exactly_the_greedy_allocation(rig: Rig, book: Book) -> None:
    market = rig.market
    data_cost = side_cost(book.data, book.num_points)
    epoch_cost = side_cost(book.processing, book.num_points)
    params = TaskParams(
        num_points=book.num_points,
        max_epochs=book.max_epochs,
        data_budget=budget(data_cost, book.data_slack, 1),
        processing_budget=budget(epoch_cost, book.processing_slack, book.max_epochs),
    )
    note(f"{params}, data cost {data_cost}, processing cost per epoch {epoch_cost}")
    with boa.env.anchor():
        task = create_task(market, rig.requester, params)
        place(market, task, book, rig.crowd)
        travel_to(bidding_deadline(market, task) + 1)
        data_offers = offers(market, task, DATA)
        processing_offers = offers(market, task, PROCESSING)
        assert data_offers == side_offers(book.data)
        assert processing_offers == side_offers(book.processing)
        data = best_effort(data_offers, book.num_points)
        processing = best_effort(processing_offers, book.num_points)

        # each side's mutants, with the other side right; a processing mutant is only
        # reached when the data side passes, budget included
        if data_cost is not None:
            for mutant in mutants(data_offers, book.num_points):
                note(f"data mutant: {mutant}")
                with boa.reverts(mutant.reason):
                    market.resolve(task, mutant.fills, processing)
        data_ok = data_cost is not None and data_cost <= params.data_budget
        if data_ok and epoch_cost is not None:
            for mutant in mutants(processing_offers, book.num_points):
                note(f"processing mutant: {mutant}")
                with boa.reverts(mutant.reason):
                    market.resolve(task, data, mutant.fills)

        try:
            allocation = allocate(
                data_offers,
                processing_offers,
                num_points=book.num_points,
                max_epochs=book.max_epochs,
                data_budget=params.data_budget,
                processing_budget=params.processing_budget,
            )
        except InfeasibleAllocation:
            allocation = None
        if data_cost is None:
            reason = "fills must sum to num_points"
        elif not data_ok:
            reason = "over data budget"
        elif epoch_cost is None:
            reason = "fills must sum to num_points"
        elif epoch_cost * book.max_epochs > params.processing_budget:
            reason = "over processing budget"
        else:
            reason = ""
        assert (allocation is None) == bool(reason)
        event(f"resolve: {reason or 'accepted'}")
        if reason:
            with boa.reverts(f"market: {reason}"):
                market.resolve(task, data, processing)
            return

        assert allocation is not None
        assert (as_tuples(allocation.data), as_tuples(allocation.processing)) == (data, processing)
        market.resolve(task, data, processing)
        assert market.clock_of(task).state == ASSIGNING
        for side, fills in ((DATA, dict(data)), (PROCESSING, dict(processing))):
            for index in range(market.num_bids(task, side)):
                bid = market.get_bid(task, side, index)
                assert (bid.winner, bid.fill) == (index in fills, fills.get(index, 0))
        assert market.tasks(task).shares == len(data) + len(processing)
        assert market.clock_of(task).active == len(processing)
        assert_conserved(rig.token, market)
