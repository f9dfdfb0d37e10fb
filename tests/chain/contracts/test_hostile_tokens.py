"""Market with tokens that misbehave: re-entrant, fee-taking, silent and false-returning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boa
import pytest

from .conftest import STANDARD, place_standard_bids
from .helpers import (
    ASSIGNMENT_HASH,
    FINISHED,
    GRACE,
    MAX_UINT,
    PROCESSING,
    TaskParams,
    assert_conserved,
    balances,
    create_task,
    digest,
    resolve_greedy,
    settle,
)

FUNDS = 10**9


def deploy_market(market_deployer: Any, token: Any, accounts: list[str]) -> Any:
    """A market on `token`; each of `accounts` holds FUNDS and has approved it without limit."""
    market = market_deployer.deploy(token.address, GRACE)
    for account in accounts:
        token.mint(account, FUNDS)
        token.approve(market, MAX_UINT, sender=account)
    return market


# ---------------------------------------------------------------- re-entrancy


class Rig:
    """A market on the re-entrant token, which itself holds a processing bid on task 0 and
    a withdrawable stake from task 1, so each re-entrant call it tries would succeed if the
    market were not locked."""

    def __init__(self, market: Any, token: Any, requester: str, alice: str) -> None:
        self.market, self.token, self.requester, self.alice = market, token, requester, alice
        self.task = create_task(market, requester)
        create_task(market, requester)
        token.mint(token.address, FUNDS)
        token.approve_from_self(market, MAX_UINT)
        for task in (self.task, 1):
            token.execute(market, market.bid_processing.prepare_calldata(task, 1, 1))
        token.execute(market, market.withdraw_processing_bid.prepare_calldata(1))
        assert market.claimable(token.address) == 3
        # alice has something to withdraw too
        market.bid_processing(1, 2, 1, sender=alice)
        market.withdraw_processing_bid(1, sender=alice)


@pytest.fixture(scope="module")
def rig(
    market_deployer: Any, mock_deployer: Callable[[str], Any], requester: str, owners: list[str]
) -> Rig:
    token = mock_deployer("ReentrantToken").deploy()
    market = deploy_market(market_deployer, token, [requester, owners[0]])
    return Rig(market, token, requester, owners[0])


REENTRY_PAYLOADS: dict[str, Callable[[Rig], bytes]] = {
    "withdraw": lambda r: r.market.withdraw.prepare_calldata(),
    "collect": lambda r: r.market.collect.prepare_calldata(1),
    "claim": lambda r: r.market.claim.prepare_calldata(r.task, r.token.address),
    "bid_data": lambda r: r.market.bid_data.prepare_calldata(r.task, 1, 1),
    "withdraw_processing_bid": lambda r: r.market.withdraw_processing_bid.prepare_calldata(r.task),
}

OUTER_CALLS: dict[str, Callable[[Rig], Any]] = {
    "create_task (transferFrom)": lambda r: create_task(r.market, r.requester),
    "bid_processing (transferFrom)": lambda r: r.market.bid_processing(
        r.task, 1, 1, sender=r.alice
    ),
    "withdraw (transfer)": lambda r: r.market.withdraw(sender=r.alice),
}


@pytest.mark.parametrize("outer", OUTER_CALLS)
@pytest.mark.parametrize("payload", REENTRY_PAYLOADS)
def test_reentry_from_the_token_fails_and_balances_stay_conserved(
    rig: Rig, outer: str, payload: str
) -> None:
    market, token = rig.market, rig.token
    data = REENTRY_PAYLOADS[payload](rig)
    claimable_before = market.claimable(token.address)
    bids_before = market.num_bids(rig.task, 0)
    token.arm(market, data)
    OUTER_CALLS[outer](rig)
    assert (token.attempts(), token.successes()) == (1, 0)
    assert not token.armed()
    assert market.claimable(token.address) == claimable_before
    assert market.num_bids(rig.task, 0) == bids_before
    assert market.bid_index(rig.task, PROCESSING, token.address) == 1
    assert_conserved(token, market, [rig.requester, rig.alice, token.address])
    # the same call made outside a transfer goes through: only the lock stopped it
    token.execute(market, data)
    assert_conserved(token, market, [rig.requester, rig.alice, token.address])


def test_unarmed_reentrant_token_runs_a_whole_task(rig: Rig) -> None:
    market, token = rig.market, rig.token
    task = create_task(market, rig.requester, TaskParams(num_points=1, max_epochs=1))
    market.bid_data(task, 1, 2, sender=rig.alice)
    market.bid_processing(task, 1, 3, sender=rig.alice)
    resolve_greedy(market, task, rig.requester)
    market.commit_assignment(task, ASSIGNMENT_HASH, sender=rig.requester)
    market.commit_data(task, digest(0), sender=rig.alice)
    market.submit_result(task, 0, digest(1), sender=rig.alice)
    market.close_epoch(task, 0, [], False, sender=rig.requester)
    before = token.balanceOf(rig.alice)
    settle(market, task, [rig.requester, rig.alice])
    # data 2, pay 3, stake 3, and the stake of 6 she withdrew from task 1 earlier
    assert token.balanceOf(rig.alice) == before + 2 + 3 + 3 + 6
    assert token.attempts() == 0


# ---------------------------------------------------------------- fee on transfer


@pytest.fixture(scope="module")
def fee_token(mock_deployer: Callable[[str], Any]) -> Any:
    return mock_deployer("FeeOnTransferToken").deploy(100)


@pytest.fixture(scope="module")
def fee_market(market_deployer: Any, fee_token: Any, requester: str, processors: list[str]) -> Any:
    return deploy_market(market_deployer, fee_token, [requester, *processors])


def test_fee_on_transfer_token_is_rejected_at_create_task(
    fee_market: Any, fee_token: Any, requester: str
) -> None:
    with boa.reverts("market: token took a fee on transfer"):
        create_task(fee_market, requester)
    assert fee_token.balanceOf(fee_market) == 0


def test_fee_on_transfer_token_is_rejected_at_bid_processing(
    fee_market: Any, fee_token: Any, requester: str, processors: list[str]
) -> None:
    fee_token.set_fee(0)
    task = create_task(fee_market, requester)
    fee_token.set_fee(100)
    with boa.reverts("market: token took a fee on transfer"):
        fee_market.bid_processing(task, 100, 1, sender=processors[0])
    # data bids move no tokens, so they still work
    fee_market.bid_data(task, 1, 1, sender=processors[0])
    assert_conserved(fee_token, fee_market)


def test_fee_on_transfer_token_passes_when_nothing_moves(
    fee_market: Any, fee_token: Any, requester: str
) -> None:
    # budgets of zero are never pulled, so the fee never shows
    create_task(fee_market, requester, TaskParams(data_budget=0, processing_budget=0))
    assert fee_market.num_tasks() == 1


# ---------------------------------------------------------------- no return value


@pytest.fixture(scope="module")
def silent_token(mock_deployer: Callable[[str], Any]) -> Any:
    return mock_deployer("NoReturnToken").deploy()


@pytest.fixture(scope="module")
def silent_market(market_deployer: Any, silent_token: Any, everyone: list[str]) -> Any:
    return deploy_market(market_deployer, silent_token, everyone)


def test_token_without_return_values_runs_the_whole_lifecycle(
    silent_market: Any,
    silent_token: Any,
    requester: str,
    owners: list[str],
    processors: list[str],
    everyone: list[str],
) -> None:
    market, token = silent_market, silent_token
    start = balances(token, everyone)
    task = create_task(market, requester, STANDARD)
    place_standard_bids(market, task, owners, processors)
    assert_conserved(token, market)
    resolve_greedy(market, task, requester)
    market.commit_assignment(task, ASSIGNMENT_HASH, sender=requester)
    market.commit_data(task, digest(0), sender=owners[0])
    for epoch in range(STANDARD.max_epochs):
        for processor in processors[:2]:
            market.submit_result(task, epoch, digest(epoch), sender=processor)
        market.close_epoch(task, epoch, [], True, sender=requester)
    assert market.clock_of(task).state == FINISHED
    settle(market, task, everyone)
    assert_conserved(token, market, everyone)
    nets = {a: token.balanceOf(a) - start[a] for a in everyone}
    assert nets[processors[0]] == 3 * 4 * 2
    assert nets[processors[1]] == 3 * 6 * 3
    assert nets[owners[0]] == 6 * 3
    assert nets[requester] == -(18 + 3 * 26)
    assert sum(nets.values()) == 0
    assert token.balanceOf(market) == 0


def test_token_without_return_values_still_fails_a_reverting_pull(
    silent_market: Any, silent_token: Any, requester: str
) -> None:
    silent_token.approve(silent_market, 0, sender=requester)
    with boa.reverts("market: token transfer failed"):
        create_task(silent_market, requester)


# ---------------------------------------------------------------- returns false


@pytest.fixture(scope="module")
def false_token(mock_deployer: Callable[[str], Any]) -> Any:
    return mock_deployer("FalseReturnToken").deploy()


@pytest.fixture(scope="module")
def false_market(
    market_deployer: Any, false_token: Any, requester: str, processors: list[str]
) -> Any:
    return deploy_market(market_deployer, false_token, [requester, *processors])


def test_false_returning_pull_reverts_as_a_failed_transfer(
    false_market: Any, false_token: Any, requester: str
) -> None:
    false_token.approve(false_market, 1, sender=requester)
    with boa.reverts("market: token transfer failed"):
        create_task(false_market, requester)


def test_false_returning_stake_pull_reverts_as_a_failed_transfer(
    false_market: Any, false_token: Any, requester: str, processors: list[str]
) -> None:
    task = create_task(false_market, requester)
    with boa.reverts("market: token transfer failed"):
        false_market.bid_processing(task, FUNDS, 1, sender=processors[0])


def test_false_returning_withdraw_reverts_and_keeps_the_credit(
    false_market: Any, false_token: Any, requester: str, processors: list[str]
) -> None:
    task = create_task(false_market, requester)
    false_market.bid_processing(task, 5, 1, sender=processors[0])
    false_market.withdraw_processing_bid(task, sender=processors[0])
    false_token.set_failing(True)
    with boa.reverts("market: token transfer failed"):
        false_market.withdraw(sender=processors[0])
    assert false_market.claimable(processors[0]) == 15
    assert_conserved(false_token, false_market)
    false_token.set_failing(False)
    assert false_market.withdraw(sender=processors[0]) == 15
    assert false_token.balanceOf(processors[0]) == FUNDS
