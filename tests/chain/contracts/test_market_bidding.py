"""Market: bids. Slots of withdrawn bids are reused, a full book evicts a pricier bid, nobody
withdraws in the last quarter of the window, the requester's floors and the privacy floor
(min_fill) keep dust out; filling the book costs more than what it blocks."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from .conftest import standard
from .helpers import (
    DATA,
    MAX_BIDS,
    MAX_MONEY,
    MAX_POINTS,
    MAX_UINT,
    PROCESSING,
    Rig,
    TaskParams,
    create_task,
    travel_to,
)


def test_bid_data_takes_the_lowest_free_slot_and_stakes_nothing(
    rig: Rig, token: Any, requester: str, owners: list[str]
) -> None:
    task = create_task(rig, requester)
    before = token.balanceOf(owners[0])
    assert rig.bid_data(task, 64, 3, 0, sender=owners[0]) == 0
    (placed,) = rig.logs("BidPlaced")
    got = (placed.task, placed.side, placed.bidder, placed.bid, placed.amount, placed.price)
    assert (*got, placed.stake) == (task, DATA, owners[0], 0, 64, 3, 0)
    assert rig.bid_data(task, 70, 0, 0, sender=owners[1]) == 1  # price 0 is allowed
    assert token.balanceOf(owners[0]) == before
    bid = rig.get_bid(task, DATA, 0)
    assert (bid.bidder, bid.amount, bid.price, bid.winner, bid.fill) == (owners[0], 64, 3, False, 0)
    assert rig.book_of(task) == (0b11, 0)


def test_one_address_may_hold_several_bids_on_both_sides(
    rig: Rig, requester: str, processors: list[LocalAccount]
) -> None:
    """Sybils are free, so one bid per address would only be cosmetic (and cost a slot)."""
    task = create_task(rig, requester)
    p = processors[0].address
    assert [rig.bid_data(task, 64, 1, 0, sender=p) for _ in range(2)] == [0, 1]
    assert [rig.bid_processing(task, 10, 1, 0, sender=p) for _ in range(2)] == [0, 1]


def test_bid_processing_pulls_a_stake_of_capacity_price_epochs(
    rig: Rig, token: Any, requester: str, processors: list[LocalAccount]
) -> None:
    task = create_task(rig, requester)
    p = processors[0].address
    before = token.balanceOf(p)
    assert rig.bid_processing(task, 100, 7, 0, sender=p) == 0
    (placed,) = rig.logs("BidPlaced")
    assert placed.stake == 100 * 7 * 3
    assert token.balanceOf(p) == before - 2_100
    assert rig.liabilities(task) == 2_000_000 + 2_100
    assert rig.get_bid(task, PROCESSING, 0).stake_price == 7


def test_a_stake_floor_raises_a_cheap_processors_stake(
    rig: Rig, requester: str, processors: list[LocalAccount]
) -> None:
    task = create_task(rig, requester, TaskParams(floors=(0, 50, 0)))
    rig.bid_processing(task, 10, 1, 0, sender=processors[0].address)
    (placed,) = rig.logs("BidPlaced")
    assert placed.stake == 10 * 50 * 3
    assert rig.get_bid(task, PROCESSING, 0).stake_price == 50


@pytest.mark.parametrize(
    ("side", "amount", "price", "reason"),
    [
        (DATA, 63, 1, "market: bad amount"),  # below min_fill
        (DATA, MAX_POINTS + 1, 1, "market: bad amount"),
        (DATA, 64, MAX_MONEY + 1, "market: price too large"),
        (DATA, 2**40, 2**61, "market: price too large"),
        (PROCESSING, 0, 1, "market: bad amount"),
        (PROCESSING, MAX_POINTS + 1, 1, "market: bad amount"),
        (PROCESSING, 1, 0, "market: processing price must be positive"),
        (PROCESSING, 1, MAX_MONEY + 1, "market: price too large"),
        (PROCESSING, 2**40, 2**60, "market: stake too large"),
    ],
)
def test_bad_bids_are_refused_with_a_reason(
    rig: Rig, requester: str, outsider: str, side: int, amount: int, price: int, reason: str
) -> None:
    task = create_task(rig, requester)
    bid = rig.bid_data if side == DATA else rig.bid_processing
    with boa.reverts(reason):
        bid(task, amount, price, 0, sender=outsider)


def test_floors_refuse_cheaper_bids_but_not_the_requesters_own_data(
    rig: Rig, requester: str, outsider: str
) -> None:
    task = create_task(rig, requester, TaskParams(floors=(5, 0, 3)))
    with boa.reverts("market: price below the floor"):
        rig.bid_data(task, 64, 2, 0, sender=outsider)
    with boa.reverts("market: price below the floor"):
        rig.bid_processing(task, 10, 4, 0, sender=outsider)
    rig.bid_data(task, 64, 3, 0, sender=outsider)
    rig.bid_processing(task, 10, 5, 0, sender=outsider)
    # own-data: the requester sells its own points for free
    assert rig.bid_data(task, 100, 0, 0, sender=requester) == 1


def test_the_requester_cannot_process_its_own_task(rig: Rig, requester: str) -> None:
    task = create_task(rig, requester)
    with boa.reverts("market: requester cannot process its own task"):
        rig.bid_processing(task, 10, 1, 0, sender=requester)


def test_bids_on_unknown_or_cancelled_tasks_are_refused(
    rig: Rig, requester: str, outsider: str
) -> None:
    with boa.reverts("market: task is not taking bids"):
        rig.bid_data(9, 64, 1, 0, sender=outsider)
    task = create_task(rig, requester)
    rig.cancel(task, sender=requester)
    with boa.reverts("market: task is not taking bids"):
        rig.bid_processing(task, 10, 1, 0, sender=outsider)


def test_bid_at_the_deadline_is_accepted_and_one_second_later_refused(
    rig: Rig, requester: str, outsider: str
) -> None:
    task = create_task(rig, requester)
    travel_to(rig.terms(task).bidding_deadline)
    rig.bid_data(task, 64, 1, 0, sender=outsider)
    travel_to(rig.terms(task).bidding_deadline + 1)
    with boa.reverts("market: bidding closed"):
        rig.bid_data(task, 64, 1, 0, sender=outsider)


def test_bid_processing_without_funds_fails_the_pull(rig: Rig, token: Any, requester: str) -> None:
    poor = boa.env.generate_address("poor")
    token.approve(rig.address, MAX_UINT, sender=poor)
    task = create_task(rig, requester)
    with boa.reverts("market: token transfer failed"):
        rig.bid_processing(task, 10, 1, 0, sender=poor)


def test_withdrawing_credits_the_stake_and_frees_the_slot_for_the_next_bid(
    rig: Rig, token: Any, requester: str, processors: list[LocalAccount], outsider: str
) -> None:
    task = create_task(rig, requester)
    p = processors[0].address
    rig.bid_processing(task, 10, 4, 0, sender=p)
    rig.bid_processing(task, 10, 4, 0, sender=outsider)
    assert rig.withdraw_bid(task, PROCESSING, 0, sender=p) == 120
    (withdrawn,) = rig.logs("BidWithdrawn")
    assert (withdrawn.bidder, withdrawn.bid, withdrawn.refunded) == (p, 0, 120)
    assert rig.claimable(p) == 120
    assert rig.get_bid(task, PROCESSING, 0).amount == 0
    assert rig.book_of(task)[PROCESSING] == 0b10
    # the freed slot is the next bid's
    assert rig.bid_processing(task, 5, 2, 0, sender=outsider) == 0
    before = token.balanceOf(p)
    assert rig.withdraw(sender=p) == 120
    assert token.balanceOf(p) == before + 120


def test_only_the_bidder_withdraws_an_open_bid(
    rig: Rig, requester: str, owners: list[str], outsider: str
) -> None:
    task = create_task(rig, requester)
    rig.bid_data(task, 64, 1, 0, sender=owners[0])
    with boa.reverts("market: not this bid's bidder"):
        rig.withdraw_bid(task, DATA, 0, sender=outsider)
    with boa.reverts("market: no open bid"):
        rig.withdraw_bid(task, DATA, 1, sender=outsider)
    with boa.reverts("market: side is 0 (data) or 1 (processing)"):
        rig.withdraw_bid(task, 2, 0, sender=owners[0])


def test_no_withdrawal_in_the_last_quarter_of_the_window(
    rig: Rig, requester: str, owners: list[str]
) -> None:
    """A filler cannot empty the book at the deadline: its bids stand."""
    task = create_task(rig, requester)  # 1,000 s of bidding
    rig.bid_data(task, 64, 1, 0, sender=owners[0])
    rig.bid_data(task, 64, 1, 0, sender=owners[0])
    deadline = rig.terms(task).bidding_deadline
    travel_to(deadline - 250)
    rig.withdraw_bid(task, DATA, 0, sender=owners[0])
    travel_to(deadline - 249)
    with boa.reverts("market: withdrawals closed"):
        rig.withdraw_bid(task, DATA, 1, sender=owners[0])


def test_withdraw_after_resolve_is_refused(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    t = standard(rig, token, requester, owners, processors).create().bid().resolve()
    with boa.reverts("market: task is not taking bids"):
        rig.withdraw_bid(t.task, DATA, 2, sender=owners[2])


def fill_side(rig: Rig, task: int, side: int, who: str, price: int, amount: int = 64) -> None:
    bid = rig.bid_data if side == DATA else rig.bid_processing
    for _ in range(MAX_BIDS):
        bid(task, amount, price, 0, sender=who)


def test_slot_griefing_by_bid_and_withdraw_takes_no_slot(
    rig: Rig, requester: str, outsider: str, owners: list[str]
) -> None:
    """Today one address fills all 128 slots of a side by bidding and withdrawing; honest bids
    then revert. Slots are now reused: after 300 cycles the book is empty and an honest bid
    gets slot 0."""
    task = create_task(rig, requester)
    for _ in range(300):
        rig.bid_data(task, 64, 1, 0, sender=outsider)
        rig.withdraw_bid(task, DATA, 0, sender=outsider)
    assert rig.book_of(task)[DATA] == 0
    assert rig.bid_data(task, 64, 5, 0, sender=owners[0]) == 0


@pytest.mark.parametrize("side", [DATA, PROCESSING])
def test_a_full_book_takes_a_better_bid_by_evicting_a_pricier_one(
    rig: Rig, token: Any, requester: str, outsider: str, owners: list[str], side: int
) -> None:
    task = create_task(rig, requester)
    fill_side(rig, task, side, outsider, price=9)
    bid = rig.bid_data if side == DATA else rig.bid_processing
    with boa.reverts("market: book full, name a bid to evict"):
        bid(task, 64, 5, 0, sender=owners[0])
    with boa.reverts("market: only a pricier bid can be evicted"):
        bid(task, 64, 9, 7 + 1, sender=owners[0])  # same price: no
    assert bid(task, 64, 5, 7 + 1, sender=owners[0]) == 7
    (evicted,) = rig.logs("BidEvicted")
    stake = 64 * 9 * 3 if side == PROCESSING else 0
    assert (evicted.bidder, evicted.bid, evicted.refunded) == (outsider, 7, stake)
    assert rig.get_bid(task, side, 7).bidder == owners[0]
    assert rig.claimable(outsider) == stake


def test_filling_the_book_with_cheap_dust_only_wins_the_task_and_costs_its_stakes(
    rig: Rig, requester: str, outsider: str, owners: list[str]
) -> None:
    """A filler whose 128 bids are cheaper than an honest one cannot be evicted; then they
    are the cheapest and win, and a processor's bid stakes capacity x price x epochs each:
    the book costs its filler 128 stakes, and the requester's floors and `reopen` keep dust
    out (test_market_resolve)."""
    task = create_task(rig, requester, TaskParams(floors=(2, 0, 0)))
    with boa.reverts("market: price below the floor"):
        rig.bid_processing(task, 1, 1, 0, sender=outsider)
    fill_side(rig, task, PROCESSING, outsider, price=2, amount=2)
    assert rig.liabilities(task) == 2_000_000 + MAX_BIDS * 2 * 2 * 3
    with boa.reverts("market: only a pricier bid can be evicted"):
        rig.bid_processing(task, 300, 3, 1, sender=owners[0])
