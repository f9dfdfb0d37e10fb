"""Resolve fuzzing: on random bid books the contract accepts exactly the greedy allocation.

`fedmarket.chain.allocation.allocate` proposes (data fills >= min_fill); `resolve` must accept
it when it fits the budgets, reject it with the budget reason when it does not, and reject
every mutant of it (tests/chain/contracts/mutations.py) with the reference model's reason.
Withdrawn bids free their slots, so books are built by bidding and withdrawing.
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
    create_task,
    offers,
    travel_to,
)
from .mutations import best_effort, mutants

BidSpec = tuple[int, int, bool]  # amount, price, withdrawn
MIN_FILL = 64


@dataclass(frozen=True)
class Book:
    num_points: int
    max_epochs: int
    data: list[BidSpec]
    processing: list[BidSpec]
    # budget = the greedy cost + slack (-1: one unit short); None: ample
    data_slack: int | None
    processing_slack: int | None


def open_offers(bids: list[BidSpec]) -> list[Offer]:
    return [Offer(i, a, p) for i, (a, p, w) in enumerate(bids) if not w]


def side_cost(bids: list[BidSpec], wanted: int, min_fill: int) -> int | None:
    found = open_offers(bids)
    try:
        return cost(found, greedy_fills(found, wanted, min_fill))
    except InfeasibleAllocation:
        return None


def budget(greedy_cost: int | None, slack: int | None, factor: int) -> int:
    if greedy_cost is None or slack is None:
        return 10**9
    return max(0, greedy_cost * factor + slack)


def bids(
    min_amount: int, max_amount: int, min_price: int, size: int
) -> st.SearchStrategy[list[BidSpec]]:
    # few distinct prices, so ties are common; about one bid in five is withdrawn
    amount, price = st.integers(min_amount, max_amount), st.integers(min_price, 6)
    withdrawn = st.integers(0, 4).map(lambda n: n == 0)
    return st.lists(st.tuples(amount, price, withdrawn), min_size=1, max_size=size)


@st.composite
def books(draw: st.DrawFn) -> Book:
    data = draw(bids(MIN_FILL, 160, 0, 16))
    processing = draw(bids(1, 200, 1, 16))
    available = min(sum(a for a, _, w in side if not w) for side in (data, processing))
    low = MIN_FILL
    if available < low or draw(st.integers(0, 9)) == 0:
        num_points = draw(st.integers(low, max(low, available) + 70))  # sometimes too few
    else:
        num_points = draw(st.integers(low, available))
    slack = st.one_of(st.none(), st.sampled_from([-1, 0, 1]))
    return Book(num_points, draw(st.integers(1, 3)), data, processing, draw(slack), draw(slack))


FULL_BOOK = Book(
    num_points=5_000,
    max_epochs=2,
    data=[(64 + i % 9, (i * 7) % 5, i % 11 == 0) for i in range(MAX_BIDS)],
    processing=[(30 + i % 13, 1 + (i * 5) % 4, i % 17 == 3) for i in range(MAX_BIDS)],
    data_slack=0,
    processing_slack=None,
)
TIED_BOOK = Book(  # every price the same: only the slot orders the fills
    num_points=2_011,
    max_epochs=1,
    data=[(64 + i % 5, 3, i % 7 == 2) for i in range(MAX_BIDS)],
    processing=[(20 + i % 3, 3, i % 5 == 4) for i in range(MAX_BIDS)],
    data_slack=None,
    processing_slack=-1,
)


@dataclass(frozen=True)
class Crowd:
    rig: Any = field(repr=False)
    token: Any = field(repr=False)
    requester: str = field(repr=False)
    bidders: list[str] = field(repr=False)


@pytest.fixture(scope="module")
def crowd(token: Any, rig: Any, requester: str) -> Crowd:
    bidders = [boa.env.generate_address(f"bidder{i}") for i in range(MAX_BIDS)]
    minter = token.minter()
    for account in bidders:
        token.mint(account, 10**6, sender=minter)
        token.approve(rig.address, MAX_UINT, sender=account)
    return Crowd(rig, token, requester, bidders)


def place(rig: Any, task: int, book: Book, bidders: list[str]) -> None:
    """Bid i goes to slot i: withdrawn ones are withdrawn at the end (their slots stay free)."""
    for side, side_bids in ((DATA, book.data), (PROCESSING, book.processing)):
        bid = rig.bid_data if side == DATA else rig.bid_processing
        for bidder, (amount, price, _) in zip(bidders, side_bids, strict=False):
            bid(task, amount, price, 0, sender=bidder)
        for i, (bidder, (_, _, withdrawn)) in enumerate(zip(bidders, side_bids, strict=False)):
            if withdrawn:
                rig.withdraw_bid(task, side, i, sender=bidder)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(book=books())
@example(book=FULL_BOOK)
@example(book=TIED_BOOK)
def test_resolve_accepts_exactly_the_greedy_allocation(crowd: Crowd, book: Book) -> None:
    rig = crowd.rig
    data_cost = side_cost(book.data, book.num_points, MIN_FILL)
    epoch_cost = side_cost(book.processing, book.num_points, 0)
    params = TaskParams(
        num_points=book.num_points,
        max_epochs=book.max_epochs,
        data_budget=budget(data_cost, book.data_slack, 1),
        processing_budget=budget(epoch_cost, book.processing_slack, book.max_epochs),
        bidding_seconds=100_000,
    )
    note(f"{params}, data cost {data_cost}, processing cost per epoch {epoch_cost}")
    with boa.env.anchor():
        task = create_task(rig, crowd.requester, params)
        place(rig, task, book, crowd.bidders)
        travel_to(rig.terms(task).bidding_deadline + 1)
        data_offers = offers(rig, task, DATA)
        processing_offers = offers(rig, task, PROCESSING)
        assert data_offers == open_offers(book.data)
        assert processing_offers == open_offers(book.processing)
        data = best_effort(data_offers, book.num_points, MIN_FILL)
        processing = best_effort(processing_offers, book.num_points)
        if data_cost is not None:
            for mutant in mutants(data_offers, book.num_points, DATA, MIN_FILL):
                note(f"data mutant: {mutant}")
                with boa.reverts(mutant.reason):
                    rig.resolve(task, mutant.fills, processing)
        data_ok = data_cost is not None and data_cost <= params.data_budget
        if data_ok and epoch_cost is not None:
            for mutant in mutants(processing_offers, book.num_points, PROCESSING):
                note(f"processing mutant: {mutant}")
                with boa.reverts(mutant.reason):
                    rig.resolve(task, data, mutant.fills)
        try:
            allocation = allocate(
                data_offers,
                processing_offers,
                num_points=book.num_points,
                max_epochs=book.max_epochs,
                data_budget=params.data_budget,
                processing_budget=params.processing_budget,
                min_fill=MIN_FILL,
            )
        except InfeasibleAllocation:
            allocation = None
        if data_cost is None or (data_ok and epoch_cost is None):
            reason = "fills must sum to num_points"
        elif not data_ok:
            reason = "over data budget"
        elif epoch_cost is not None and epoch_cost * book.max_epochs > params.processing_budget:
            reason = "over processing budget"
        else:
            reason = ""
        assert (allocation is None) == bool(reason)
        event(f"resolve: {reason or 'accepted'}")
        if reason:
            with boa.reverts(f"market: {reason}"):
                rig.resolve(task, data, processing)
            return
        assert allocation is not None
        assert (as_tuples(allocation.data), as_tuples(allocation.processing)) == (data, processing)
        rig.resolve(task, data, processing)
        assert rig.clock_of(task).state == ASSIGNING
        for side, fills in ((DATA, dict(data)), (PROCESSING, dict(processing))):
            for o in data_offers if side == DATA else processing_offers:
                bid = rig.get_bid(task, side, o.index)
                assert (bid.winner, bid.fill) == (o.index in fills, fills.get(o.index, 0))
        assert rig.clock_of(task).active == len(processing)
