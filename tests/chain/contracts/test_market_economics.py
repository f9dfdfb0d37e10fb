"""Market: who is paid what, in exact integers, and that no token is created or lost.

Each scenario ends with every account claimed and withdrawn, then checks each account's
net token change and that they sum to minus the task's dust.
"""

from __future__ import annotations

from typing import Any

import boa
import pytest

from .conftest import STANDARD, place_standard_bids
from .helpers import (
    ASSIGNMENT_HASH,
    FINISHED,
    TaskParams,
    assert_conserved,
    balances,
    clock_deadline,
    create_task,
    digest,
    resolve_greedy,
    settle,
    travel_to,
)


class Books:
    """Token balances of every account at the start, to compare with at the end."""

    def __init__(self, token: Any, market: Any, accounts: list[str]) -> None:
        self.token, self.market, self.accounts = token, market, accounts
        self.start = balances(token, accounts)

    def check(self) -> None:
        assert_conserved(self.token, self.market, self.accounts)

    def settle(self, task: int) -> dict[str, int]:
        """Claim and withdraw everything; return each account's net change of tokens."""
        settle(self.market, task, self.accounts)
        assert all(self.market.owed(task, a) == 0 for a in self.accounts)
        assert self.market.liabilities(task) == self.market.dust(task)
        self.check()
        end = balances(self.token, self.accounts)
        nets = {a: end[a] - self.start[a] for a in self.start}
        assert sum(nets.values()) == -self.market.dust(task)
        return nets


@pytest.fixture
def books(token: Any, market: Any, everyone: list[str]) -> Books:
    return Books(token, market, everyone)


def test_standard_task_pays_on_time_late_missing_and_committed_owners_exactly(
    market: Any,
    books: Books,
    requester: str,
    owners: list[str],
    processors: list[str],
) -> None:
    o0, o1, o2 = owners[:3]
    p0, p1, p2 = processors[:3]
    task = create_task(market, requester, STANDARD)
    place_standard_bids(market, task, owners, processors)
    books.check()
    resolve_greedy(market, task, requester)
    books.check()
    # losers' stakes and excess capacity are free at once
    assert market.claim(task, p2) == 270
    assert market.claim(task, p1) == (8 - 6) * 3 * 3
    market.commit_assignment(task, ASSIGNMENT_HASH, sender=requester)
    market.commit_data(task, digest(0), sender=o0)  # o1 never commits

    # epoch 0: p0 on time, p1 late (18 less 25 % = 13.5, rounded down)
    market.submit_result(task, 0, digest(10), sender=p0)
    travel_to(clock_deadline(market, task) + 1)
    market.submit_result(task, 0, digest(10), sender=p1)
    # the open epoch's pay is not claimable yet
    assert market.owed(task, p0) == 0
    assert market.owed(task, o0) == 0
    books.check()
    market.close_epoch(task, 0, [], True, sender=requester)
    assert market.owed(task, p0) == 8
    assert market.owed(task, p1) == 13
    assert market.owed(task, o0) == 6 * 3  # owners are paid at the first close
    assert market.owed(task, o1) == 0
    assert market.owed(task, requester) == 0
    assert market.claim(task, o0) == 18
    books.check()

    # epoch 1: p0 on time, p1 missing; the requester stops after the deadline
    market.submit_result(task, 1, digest(11), sender=p0)
    travel_to(clock_deadline(market, task) + 1)
    market.close_epoch(task, 1, [], False, sender=requester)
    assert market.clock_of(task).state == FINISHED
    assert market.owed(task, p0) == 8 + 8 + 4 * 2 * 3
    assert market.owed(task, p1) == 13 + 6 * 3 * 3
    # unspent budgets: 1000 - 18 for data, 1000 - (8 + 13 + 8) for processing
    assert market.owed(task, requester) == 982 + 971

    nets = books.settle(task)
    assert nets[p0] == 16
    assert nets[p1] == 13
    assert nets[p2] == 0
    assert nets[o0] == 18
    assert (nets[o1], nets[o2]) == (0, 0)
    assert nets[requester] == -(18 + 29)
    assert market.dust(task) == 0


def test_flagged_processor_forfeits_pay_and_stake_to_the_others_never_to_the_requester(
    market: Any, books: Books, requester: str, owners: list[str], processors: list[str]
) -> None:
    o0 = owners[0]
    p0, p1, p2 = processors[:3]
    params = TaskParams(num_points=10, max_epochs=2, late_penalty_bps=1_000)
    task = create_task(market, requester, params)
    market.bid_data(task, 4, 1, sender=requester)  # the requester sells its own data too
    market.bid_data(task, 6, 2, sender=o0)
    market.bid_processing(task, 4, 3, sender=p0)  # stake 24
    market.bid_processing(task, 3, 3, sender=p1)  # stake 18
    market.bid_processing(task, 5, 4, sender=p2)  # stake 40, fill 3: 16 excess
    resolve_greedy(market, task, requester)
    assert market.tasks(task).shares == 4  # o0, p0, p1, p2; not the requester
    market.commit_assignment(task, ASSIGNMENT_HASH, sender=requester)
    market.commit_data(task, digest(0), sender=requester)
    market.commit_data(task, digest(1), sender=o0)

    market.submit_result(task, 0, digest(2), sender=p0)  # 12
    market.submit_result(task, 0, digest(2), sender=p2)  # 12
    travel_to(clock_deadline(market, task) + 1)
    market.submit_result(task, 0, digest(2), sender=p1)  # late: 9 less 10 % = 8
    books.check()
    market.close_epoch(task, 0, [p1], True, sender=requester)
    # pool = 8 + 18 = 26 over o0, p0, p2: 8 each, 2 dust
    assert market.slash_acc(task) == 8
    assert market.dust(task) == 2
    assert market.owed(task, p1) == 0
    assert market.owed(task, requester) == 4  # its own data, and nothing of the pool
    books.check()

    market.submit_result(task, 1, digest(3), sender=p0)  # 12
    travel_to(clock_deadline(market, task) + 1)
    market.submit_result(task, 1, digest(3), sender=p2)  # late: 12 less 10 % = 10
    market.close_epoch(task, 1, [], True, sender=requester)  # the last epoch
    assert market.clock_of(task).state == FINISHED

    nets = books.settle(task)
    assert nets[o0] == 12 + 8
    assert nets[p0] == 12 + 12 + 8
    assert nets[p1] == -18
    assert nets[p2] == 12 + 10 + 8
    # data: paid 12 to o0 (its own 4 goes round); processing: 12 + 8 + 12 + 12 + 10 accrued
    assert nets[requester] == -(12 + 54)
    assert market.dust(task) == 2


def test_a_slashed_processor_keeps_earlier_pay_and_shares_of_earlier_slashes(
    market: Any, books: Books, requester: str, owners: list[str], processors: list[str]
) -> None:
    o0 = owners[0]
    p0, p1, p2 = processors[:3]
    task = create_task(market, requester, TaskParams(num_points=6, late_penalty_bps=0))
    market.bid_data(task, 6, 1, sender=o0)
    for p in (p0, p1, p2):
        market.bid_processing(task, 2, 1, sender=p)  # pay 2 per epoch, stake 6
    resolve_greedy(market, task, requester)
    market.commit_assignment(task, ASSIGNMENT_HASH, sender=requester)
    market.commit_data(task, digest(0), sender=o0)
    for epoch in range(2):
        for p in (p0, p1, p2):
            market.submit_result(task, epoch, digest(epoch), sender=p)
        flagged = [p0, p1] if epoch == 1 else []
        market.close_epoch(task, epoch, flagged, True, sender=requester)
    # p0 first: 2 + 6 = 8 over o0, p1, p2 -> 2 each, 2 dust
    # then p1: 2 + 6 = 8 over o0, p2 -> 4 each
    assert market.slash_acc(task) == 6
    assert market.dust(task) == 2
    clock = market.clock_of(task)
    assert (clock.active, clock.epoch) == (1, 2)
    market.submit_result(task, 2, digest(2), sender=p2)
    market.close_epoch(task, 2, [], False, sender=requester)

    nets = books.settle(task)
    assert nets[p0] == 2 - 6  # epoch 0's pay, not its stake
    assert nets[p1] == 2 + 2 - 6  # and its share of p0's slash
    assert nets[p2] == 2 + 2 + 2 + 6
    assert nets[o0] == 6 + 6
    assert nets[requester] == -(6 + 14)


def test_a_pool_with_nobody_to_share_it_becomes_dust_not_a_refund(
    market: Any, books: Books, requester: str, processors: list[str]
) -> None:
    p0 = processors[0]
    task = create_task(market, requester, TaskParams(num_points=2, max_epochs=2))
    market.bid_data(task, 2, 5, sender=requester)
    market.bid_processing(task, 2, 3, sender=p0)  # stake 12
    resolve_greedy(market, task, requester)
    assert market.tasks(task).shares == 1
    market.commit_assignment(task, ASSIGNMENT_HASH, sender=requester)
    market.submit_result(task, 0, digest(0), sender=p0)
    market.close_epoch(task, 0, [p0], True, sender=requester)
    assert market.clock_of(task).state == FINISHED  # no processor left
    assert market.dust(task) == 6 + 12
    nets = books.settle(task)
    assert nets[p0] == -12
    assert nets[requester] == -6  # the forfeited pay is not returned to it either
    assert market.liabilities(task) == 18


def test_an_address_with_two_winning_bids_holds_two_shares(
    market: Any, books: Books, requester: str, owners: list[str], processors: list[str]
) -> None:
    both, p1 = owners[0], processors[0]
    task = create_task(market, requester, TaskParams(num_points=2, max_epochs=1))
    market.bid_data(task, 2, 1, sender=both)
    market.bid_processing(task, 1, 4, sender=both)  # stake 4
    market.bid_processing(task, 1, 5, sender=p1)  # stake 5
    resolve_greedy(market, task, requester)
    assert market.tasks(task).shares == 3
    market.commit_assignment(task, ASSIGNMENT_HASH, sender=requester)
    travel_to(clock_deadline(market, task) + 1)
    market.close_epoch(task, 0, [p1], False, sender=requester)  # nobody submitted
    # p1's stake of 5 over `both`'s data bid and its processing bid: 2 + 2, 1 dust
    nets = books.settle(task)
    assert nets[both] == 2 + 2
    assert nets[p1] == -5
    assert market.dust(task) == 1


@pytest.mark.parametrize(("penalty_bps", "late_pay"), [(0, 7), (2_500, 5), (3_333, 4), (10_000, 0)])
def test_late_pay_is_rounded_down(
    market: Any,
    books: Books,
    requester: str,
    owners: list[str],
    processors: list[str],
    penalty_bps: int,
    late_pay: int,
) -> None:
    p0 = processors[0]
    params = TaskParams(num_points=7, max_epochs=1, late_penalty_bps=penalty_bps)
    task = create_task(market, requester, params)
    market.bid_data(task, 7, 0, sender=owners[0])
    market.bid_processing(task, 7, 1, sender=p0)
    resolve_greedy(market, task, requester)
    market.commit_assignment(task, ASSIGNMENT_HASH, sender=requester)
    travel_to(clock_deadline(market, task) + 1)
    market.submit_result(task, 0, digest(0), sender=p0)
    market.close_epoch(task, 0, [], False, sender=requester)
    nets = books.settle(task)
    assert nets[p0] == late_pay
    assert nets[requester] == -late_pay


def test_owners_who_commit_are_paid_even_if_the_task_stops_at_the_first_close(
    market: Any, books: Books, requester: str, owners: list[str], processors: list[str]
) -> None:
    task = create_task(market, requester, STANDARD)
    place_standard_bids(market, task, owners, processors)
    resolve_greedy(market, task, requester)
    market.commit_data(task, digest(0), sender=owners[0])  # during the assignment window
    market.commit_assignment(task, ASSIGNMENT_HASH, sender=requester)
    market.commit_data(task, digest(1), sender=owners[1])  # or during epoch 0
    travel_to(clock_deadline(market, task) + 1)
    market.close_epoch(task, 0, [], False, sender=requester)  # nobody submitted
    nets = books.settle(task)
    assert (nets[owners[0]], nets[owners[1]]) == (18, 20)
    assert nets[processors[0]] == nets[processors[1]] == 0
    assert nets[requester] == -38


def test_claim_is_idempotent_and_credits_only_the_rightful_account(
    market: Any, token: Any, training: Any, outsider: str
) -> None:
    p0 = training.processors[0]
    market.submit_result(training.task, 0, digest(0), sender=p0)
    travel_to(clock_deadline(market, training.task) + 1)
    market.close_epoch(training.task, 0, [], True, sender=training.requester)
    assert market.claim(training.task, p0, sender=outsider) == 8
    assert market.claim(training.task, p0, sender=outsider) == 0
    assert market.credited(training.task, p0) == 8
    assert market.claimable(p0) == 8
    assert market.claimable(outsider) == 0
    with boa.reverts("market: nothing to withdraw"):
        market.withdraw(sender=outsider)
    before = token.balanceOf(p0)
    assert market.withdraw(sender=p0) == 8
    assert token.balanceOf(p0) == before + 8
    with boa.reverts("market: nothing to withdraw"):
        market.withdraw(sender=p0)


def test_claims_across_tasks_add_up_in_one_withdrawal(
    market: Any, books: Books, requester: str, owners: list[str], processors: list[str]
) -> None:
    first = create_task(market, requester, STANDARD)
    second = create_task(market, requester, STANDARD)
    for task in (first, second):
        place_standard_bids(market, task, owners, processors)
    for task in (first, second):
        resolve_greedy(market, task, requester)
    p2 = processors[2]
    assert market.claim(first, p2) + market.claim(second, p2) == 2 * 270
    assert market.total_claimable() == 540
    assert market.withdraw(sender=p2) == 540
    books.check()
