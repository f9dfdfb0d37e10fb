"""Market: bids on both sides, their withdrawal, and the bidding deadline."""

from __future__ import annotations

from typing import Any

import boa
import pytest

from .conftest import Standard
from .helpers import (
    DATA,
    MAX_BIDS,
    MAX_MONEY,
    MAX_POINTS,
    PROCESSING,
    ZERO_HASH,
    TaskParams,
    assert_conserved,
    bidding_deadline,
    create_task,
    events,
    travel_to,
)


@pytest.fixture
def task(market: Any, requester: str) -> int:
    return create_task(market, requester)


def test_bid_data_records_the_offer_without_a_stake(
    market: Any, token: Any, task: int, owners: list[str]
) -> None:
    before = token.balanceOf(owners[0])
    assert market.bid_data(task, 6, 3, sender=owners[0]) == 0
    (placed,) = events(market, "BidPlaced")
    assert (placed.task, placed.side, placed.bidder, placed.bid) == (task, DATA, owners[0], 0)
    assert (placed.amount, placed.price, placed.stake) == (6, 3, 0)
    assert token.balanceOf(owners[0]) == before
    assert market.num_bids(task, DATA) == 1
    assert market.bid_index(task, DATA, owners[0]) == 1
    bid = market.get_bid(task, DATA, 0)
    assert (bid.bidder, bid.amount, bid.price) == (owners[0], 6, 3)
    assert (bid.winner, bid.fill, bid.slashed, bid.data_root) == (False, 0, False, ZERO_HASH)


def test_bid_data_at_price_zero_is_allowed(market: Any, task: int, owners: list[str]) -> None:
    market.bid_data(task, 1, 0, sender=owners[0])
    assert market.get_bid(task, DATA, 0).price == 0


def test_the_requester_may_sell_its_own_data(market: Any, task: int, requester: str) -> None:
    market.bid_data(task, 5, 1, sender=requester)
    assert market.bid_index(task, DATA, requester) == 1


def test_bid_processing_pulls_a_stake_of_capacity_price_epochs(
    market: Any, token: Any, task: int, processors: list[str]
) -> None:
    before = token.balanceOf(processors[0])
    assert market.bid_processing(task, 4, 2, sender=processors[0]) == 0
    (placed,) = events(market, "BidPlaced")
    assert (placed.side, placed.amount, placed.price, placed.stake) == (PROCESSING, 4, 2, 24)
    assert token.balanceOf(processors[0]) == before - 24
    assert market.liabilities(task) == 2_000 + 24
    bid = market.get_bid(task, PROCESSING, 0)
    assert (bid.bidder, bid.amount, bid.price, bid.winner, bid.fill) == (
        processors[0],
        4,
        2,
        False,
        0,
    )
    assert (bid.earned, bid.last_submitted_epoch, bid.last_late) == (0, 0, False)
    assert_conserved(token, market)


def test_bid_indexes_count_up_per_side(
    market: Any, task: int, owners: list[str], processors: list[str]
) -> None:
    assert market.bid_data(task, 1, 1, sender=owners[0]) == 0
    assert market.bid_data(task, 1, 1, sender=owners[1]) == 1
    assert market.bid_processing(task, 1, 1, sender=processors[0]) == 0
    assert market.bid_processing(task, 1, 1, sender=owners[0]) == 1
    assert (market.num_bids(task, DATA), market.num_bids(task, PROCESSING)) == (2, 2)


def test_get_bid_rejects_a_side_other_than_data_or_processing(market: Any, task: int) -> None:
    with boa.reverts("market: side is 0 (data) or 1 (processing)"):
        market.get_bid(task, 2, 0)


def test_bid_on_an_unknown_task_is_refused(market: Any, owners: list[str]) -> None:
    with boa.reverts("market: task is not taking bids"):
        market.bid_data(3, 1, 1, sender=owners[0])
    with boa.reverts("market: task is not taking bids"):
        market.bid_processing(3, 1, 1, sender=owners[0])


def test_bid_on_a_cancelled_task_is_refused(
    market: Any, task: int, requester: str, owners: list[str]
) -> None:
    market.cancel(task, sender=requester)
    with boa.reverts("market: task is not taking bids"):
        market.bid_data(task, 1, 1, sender=owners[0])


@pytest.mark.parametrize("side", [DATA, PROCESSING])
def test_bid_at_the_deadline_is_accepted_and_one_second_later_refused(
    market: Any, task: int, owners: list[str], side: int
) -> None:
    bid = market.bid_data if side == DATA else market.bid_processing
    deadline = bidding_deadline(market, task)
    travel_to(deadline)
    bid(task, 1, 1, sender=owners[0])
    travel_to(deadline + 1)
    with boa.reverts("market: bidding closed"):
        bid(task, 1, 1, sender=owners[1])


@pytest.mark.parametrize("side", [DATA, PROCESSING])
def test_bid_of_zero_or_too_many_points_is_refused(
    market: Any, task: int, owners: list[str], side: int
) -> None:
    bid = market.bid_data if side == DATA else market.bid_processing
    for amount in (0, MAX_POINTS + 1):
        with boa.reverts("market: bad amount"):
            bid(task, amount, 1, sender=owners[0])


def test_data_bid_worth_more_than_max_money_is_refused(
    market: Any, task: int, owners: list[str]
) -> None:
    with boa.reverts("market: price too large"):
        market.bid_data(task, 1, MAX_MONEY + 1, sender=owners[0])
    with boa.reverts("market: price too large"):
        market.bid_data(task, 2, MAX_MONEY // 2 + 1, sender=owners[0])
    market.bid_data(task, 2, MAX_MONEY // 2, sender=owners[0])


def test_stake_above_max_money_is_refused(
    market: Any, token: Any, requester: str, processors: list[str]
) -> None:
    task = create_task(market, requester, TaskParams(max_epochs=2))
    with boa.reverts("market: stake too large"):
        market.bid_processing(task, 2**40, 2**60, sender=processors[0])
    token.mint(processors[0], MAX_MONEY, sender=token.minter())
    market.bid_processing(task, 2**39, 2**60, sender=processors[0])
    assert market.liabilities(task) == 2_000 + MAX_MONEY


def test_processing_at_price_zero_is_refused(market: Any, task: int, processors: list[str]) -> None:
    with boa.reverts("market: processing price must be positive"):
        market.bid_processing(task, 5, 0, sender=processors[0])


def test_the_requester_cannot_process_its_own_task(market: Any, task: int, requester: str) -> None:
    with boa.reverts("market: requester cannot process its own task"):
        market.bid_processing(task, 5, 1, sender=requester)


@pytest.mark.parametrize("side", [DATA, PROCESSING])
def test_second_open_bid_on_a_side_is_refused(
    market: Any, task: int, owners: list[str], side: int
) -> None:
    bid = market.bid_data if side == DATA else market.bid_processing
    bid(task, 1, 1, sender=owners[0])
    with boa.reverts("market: already bid"):
        bid(task, 2, 2, sender=owners[0])


def test_one_address_may_bid_on_both_sides(market: Any, task: int, owners: list[str]) -> None:
    market.bid_data(task, 1, 1, sender=owners[0])
    market.bid_processing(task, 1, 1, sender=owners[0])
    assert market.bid_index(task, DATA, owners[0]) == 1
    assert market.bid_index(task, PROCESSING, owners[0]) == 1


def test_bid_processing_without_funds_fails_the_pull(
    market: Any, token: Any, task: int, outsider: str
) -> None:
    token.approve(market, 0, sender=outsider)
    with boa.reverts("market: token transfer failed"):
        market.bid_processing(task, 1, 1, sender=outsider)


def test_withdraw_data_bid_frees_the_slot_for_a_new_bid(
    market: Any, task: int, owners: list[str]
) -> None:
    market.bid_data(task, 6, 3, sender=owners[0])
    market.withdraw_data_bid(task, sender=owners[0])
    (withdrawn,) = events(market, "BidWithdrawn")
    assert (withdrawn.side, withdrawn.bidder, withdrawn.bid, withdrawn.refunded) == (
        DATA,
        owners[0],
        0,
        0,
    )
    assert market.bid_index(task, DATA, owners[0]) == 0
    assert market.get_bid(task, DATA, 0).amount == 0
    assert market.bid_data(task, 2, 2, sender=owners[0]) == 1
    assert market.bid_index(task, DATA, owners[0]) == 2


def test_withdraw_processing_bid_credits_the_stake_at_once(
    market: Any, token: Any, task: int, processors: list[str]
) -> None:
    market.bid_processing(task, 4, 2, sender=processors[0])
    assert market.withdraw_processing_bid(task, sender=processors[0]) == 24
    (withdrawn,) = events(market, "BidWithdrawn")
    assert (withdrawn.side, withdrawn.refunded) == (PROCESSING, 24)
    assert market.claimable(processors[0]) == 24
    assert market.total_claimable() == 24
    assert market.liabilities(task) == 2_000
    assert market.owed(task, processors[0]) == 0
    assert_conserved(token, market)
    before = token.balanceOf(processors[0])
    assert market.withdraw(sender=processors[0]) == 24
    assert token.balanceOf(processors[0]) == before + 24


@pytest.mark.parametrize("side", [DATA, PROCESSING])
def test_withdraw_without_an_open_bid_is_refused(
    market: Any, task: int, owners: list[str], side: int
) -> None:
    withdraw = market.withdraw_data_bid if side == DATA else market.withdraw_processing_bid
    with boa.reverts("market: no open bid"):
        withdraw(task, sender=owners[0])
    (market.bid_data if side == DATA else market.bid_processing)(task, 1, 1, sender=owners[0])
    withdraw(task, sender=owners[0])
    with boa.reverts("market: no open bid"):
        withdraw(task, sender=owners[0])


@pytest.mark.parametrize("side", [DATA, PROCESSING])
def test_withdraw_at_the_deadline_is_accepted_and_one_second_later_refused(
    market: Any, task: int, owners: list[str], side: int
) -> None:
    bid = market.bid_data if side == DATA else market.bid_processing
    withdraw = market.withdraw_data_bid if side == DATA else market.withdraw_processing_bid
    bid(task, 1, 1, sender=owners[0])
    bid(task, 1, 1, sender=owners[1])
    deadline = bidding_deadline(market, task)
    travel_to(deadline)
    withdraw(task, sender=owners[0])
    travel_to(deadline + 1)
    with boa.reverts("market: bidding closed"):
        withdraw(task, sender=owners[1])


@pytest.mark.parametrize("side", [DATA, PROCESSING])
def test_withdraw_after_resolve_is_refused(market: Any, assigning: Standard, side: int) -> None:
    withdraw = market.withdraw_data_bid if side == DATA else market.withdraw_processing_bid
    bidder = assigning.owners[2] if side == DATA else assigning.processors[2]
    with boa.reverts("market: task is not taking bids"):
        withdraw(assigning.task, sender=bidder)


def test_bids_stop_at_max_bids_per_side(market: Any, task: int, owners: list[str]) -> None:
    # withdrawn bids keep their slot, so one address can use all of them
    for _ in range(MAX_BIDS):
        market.bid_data(task, 1, 1, sender=owners[0])
        market.withdraw_data_bid(task, sender=owners[0])
    assert market.num_bids(task, DATA) == MAX_BIDS
    with boa.reverts("market: too many bids"):
        market.bid_data(task, 1, 1, sender=owners[0])
    # the other side has its own slots
    market.bid_processing(task, 1, 1, sender=owners[0])
