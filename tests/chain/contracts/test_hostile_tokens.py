"""Market with tokens that misbehave: re-entrant, fee-taking, silent and false-returning.
Every market here is checked for token conservation after every test, like the others."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from .conftest import register, standard
from .helpers import (
    BIDDING,
    CANCELLED,
    DATA,
    FINISHED,
    GRACE,
    MAX_UINT,
    PROCESSING,
    Rig,
    Task,
    TaskParams,
    assert_conserved,
    balances,
    create_task,
    deploy_rig,
    everyone_collects,
    now,
    travel_to,
)

FUNDS = 10**9


def market_on(
    request: pytest.FixtureRequest,
    deployers: dict[str, Any],
    token: Any,
    reserve: str,
    accounts: list[str],
) -> Rig:
    """A market paid in `token`; each of `accounts` holds FUNDS and has approved it."""
    rig = deploy_rig(deployers, token, reserve)
    for account in accounts:
        token.mint(account, FUNDS)
        token.approve(rig.address, MAX_UINT, sender=account)
    register(request.module.__name__, rig, token)
    return rig


# ---------------------------------------------------------------- re-entrancy


class Reentry:
    """A market on the re-entrant token, which itself holds a processing bid on task 0 and a
    withdrawable stake from task 1, so each re-entrant call it tries would succeed if the
    market were not locked."""

    def __init__(self, rig: Rig, token: Any, requester: str, alice: str) -> None:
        self.rig, self.token, self.requester, self.alice = rig, token, requester, alice
        self.task = create_task(rig, requester)
        create_task(rig, requester)
        token.mint(token.address, FUNDS)
        token.approve_from_self(rig.address, MAX_UINT)
        for task in (self.task, 1):
            token.execute(rig.address, rig.market.bid_processing.prepare_calldata(task, 1, 1, 0))
        token.execute(rig.address, rig._faces[0].withdraw_bid.prepare_calldata(1, PROCESSING, 0))
        assert rig.claimable(token.address) == 3
        rig.bid_processing(1, 2, 1, 0, sender=alice)  # alice has something to withdraw too
        rig.withdraw_bid(1, PROCESSING, 0, sender=alice)


@pytest.fixture(scope="module")
def reentry(
    request: pytest.FixtureRequest,
    deployers: dict[str, Any],
    mock_deployer: Callable[[str], Any],
    reserve: str,
    requester: str,
    owners: list[str],
) -> Reentry:
    token = mock_deployer("ReentrantToken").deploy()
    rig = market_on(request, deployers, token, reserve, [requester, owners[0]])
    return Reentry(rig, token, requester, owners[0])


REENTRY_PAYLOADS: dict[str, Callable[[Reentry], bytes]] = {
    "withdraw": lambda r: r.rig.market.withdraw.prepare_calldata(),
    "collect": lambda r: r.rig.market.collect.prepare_calldata(0, PROCESSING, 0),
    "claim": lambda r: r.rig.market.claim.prepare_calldata(0, PROCESSING, 0),
    "bid_data": lambda r: r.rig.market.bid_data.prepare_calldata(r.task, 64, 1, 0),
    "withdraw_bid": lambda r: r.rig.market.withdraw_bid.prepare_calldata(r.task, PROCESSING, 0),
}

OUTER_CALLS: dict[str, Callable[[Reentry], Any]] = {
    "create_task (transferFrom)": lambda r: create_task(r.rig, r.requester),
    "bid_processing (transferFrom)": lambda r: r.rig.bid_processing(
        r.task, 1, 1, 0, sender=r.alice
    ),
    "withdraw (transfer)": lambda r: r.rig.withdraw(sender=r.alice),
}


@pytest.mark.parametrize("outer", OUTER_CALLS)
@pytest.mark.parametrize("payload", REENTRY_PAYLOADS)
def test_reentry_from_the_token_fails_and_balances_stay_conserved(
    reentry: Reentry, outer: str, payload: str
) -> None:
    rig, token = reentry.rig, reentry.token
    data = REENTRY_PAYLOADS[payload](reentry)
    claimable_before = rig.claimable(token.address)
    book_before = rig.book_of(reentry.task)
    token.arm(rig.address, data)
    OUTER_CALLS[outer](reentry)
    assert (token.attempts(), token.successes()) == (1, 0)
    assert not token.armed()
    assert rig.claimable(token.address) == claimable_before
    assert rig.book_of(reentry.task)[DATA] == book_before[DATA]
    assert_conserved(token, rig)


def test_reentry_into_a_delegated_function_fails_too(reentry: Reentry) -> None:
    """The lock is the market's (transient storage, shared by delegatecall): a call that runs
    in MarketSetup is locked out like one in Market, and goes through outside a transfer."""
    rig, token = reentry.rig, reentry.token
    task = create_task(rig, reentry.requester)
    travel_to(rig.terms(task).bidding_deadline + GRACE + 1)
    payload = rig._faces[1].claim_timeout.prepare_calldata(task, DATA, 0)
    token.arm(rig.address, payload)
    rig.withdraw(sender=reentry.alice)
    assert (token.attempts(), token.successes()) == (1, 0)
    assert rig.clock_of(task).state == BIDDING
    token.execute(rig.address, payload)
    assert rig.clock_of(task).state == CANCELLED


def test_an_unarmed_reentrant_token_runs_a_whole_task(
    reentry: Reentry, processors: list[LocalAccount]
) -> None:
    rig, token = reentry.rig, reentry.token
    p = processors[0]
    token.mint(p.address, FUNDS)
    token.approve(rig.address, MAX_UINT, sender=p.address)
    t = Task(
        rig,
        token,
        reentry.requester,
        [(reentry.alice, 64, 2)],
        [(p, 64, 3)],
        TaskParams(num_points=64, max_epochs=1),
    ).start()
    t.run_epoch(0, go_on=False)
    travel_to(now() + GRACE + 1)
    got = everyone_collects(rig, t)
    assert got[reentry.alice] == 64 * 2 + 6  # its data, and the stake withdrawn earlier
    assert got[p.address] == 64 * 3 + 64 * 3
    assert token.attempts() == 0


# ---------------------------------------------------------------- fee on transfer


@pytest.fixture(scope="module")
def fee(
    request: pytest.FixtureRequest,
    deployers: dict[str, Any],
    mock_deployer: Callable[[str], Any],
    reserve: str,
    requester: str,
    processors: list[LocalAccount],
) -> tuple[Rig, Any]:
    token = mock_deployer("FeeOnTransferToken").deploy(100)
    return market_on(
        request, deployers, token, reserve, [requester, *(p.address for p in processors)]
    ), token


def test_a_fee_on_transfer_token_is_rejected_where_it_takes_a_fee(
    fee: tuple[Rig, Any], requester: str, processors: list[LocalAccount]
) -> None:
    rig, token = fee
    with boa.reverts("market: token took a fee on transfer"):
        create_task(rig, requester)
    token.set_fee(0)
    task = create_task(rig, requester)
    token.set_fee(100)
    with boa.reverts("market: token took a fee on transfer"):
        rig.bid_processing(task, 100, 1, 0, sender=processors[0].address)
    rig.bid_data(task, 64, 1, 0, sender=processors[0].address)  # data bids move no tokens
    create_task(
        rig, requester, TaskParams(data_budget=0, processing_budget=0)
    )  # nor do zero budgets


# ---------------------------------------------------------------- no return value


@pytest.fixture(scope="module")
def silent(
    request: pytest.FixtureRequest,
    deployers: dict[str, Any],
    mock_deployer: Callable[[str], Any],
    reserve: str,
    everyone: list[str],
) -> tuple[Rig, Any]:
    token = mock_deployer("NoReturnToken").deploy()
    return market_on(request, deployers, token, reserve, everyone), token


def test_a_token_without_return_values_runs_the_whole_lifecycle(
    silent: tuple[Rig, Any],
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    everyone: list[str],
) -> None:
    rig, token = silent
    start = balances(token, everyone)
    t = standard(rig, token, requester, owners, processors).start()
    for epoch in range(3):
        t.run_epoch(epoch)
    assert rig.clock_of(t.task).state == FINISHED
    travel_to(now() + GRACE + 1)
    everyone_collects(rig, t)
    nets = {a: token.balanceOf(a) - start[a] for a in everyone}
    assert nets[processors[0].address] == 3 * 128 * 2
    assert nets[processors[1].address] == 3 * 128 * 3
    assert (nets[owners[0]], nets[owners[1]]) == (128 * 3, 128 * 5)
    assert sum(nets.values()) == 0 and token.balanceOf(rig.address) == 0


def test_a_token_without_return_values_still_fails_a_reverting_pull(
    silent: tuple[Rig, Any], requester: str
) -> None:
    rig, token = silent
    token.approve(rig.address, 0, sender=requester)
    with boa.reverts("market: token transfer failed"):
        create_task(rig, requester)


# ---------------------------------------------------------------- returns false


@pytest.fixture(scope="module")
def false(
    request: pytest.FixtureRequest,
    deployers: dict[str, Any],
    mock_deployer: Callable[[str], Any],
    reserve: str,
    requester: str,
    processors: list[LocalAccount],
) -> tuple[Rig, Any]:
    token = mock_deployer("FalseReturnToken").deploy()
    return market_on(
        request, deployers, token, reserve, [requester, *(p.address for p in processors)]
    ), token


def test_false_returning_pulls_revert_as_failed_transfers(
    false: tuple[Rig, Any], requester: str, processors: list[LocalAccount]
) -> None:
    rig, token = false
    task = create_task(rig, requester)
    with boa.reverts("market: token transfer failed"):
        rig.bid_processing(task, 2**40, 1, 0, sender=processors[0].address)
    token.approve(rig.address, 1, sender=requester)
    with boa.reverts("market: token transfer failed"):
        create_task(rig, requester)


def test_a_false_returning_withdraw_reverts_and_keeps_the_credit(
    false: tuple[Rig, Any], requester: str, processors: list[LocalAccount]
) -> None:
    rig, token = false
    p = processors[0].address
    task = create_task(rig, requester)
    rig.bid_processing(task, 5, 1, 0, sender=p)
    rig.withdraw_bid(task, PROCESSING, 0, sender=p)
    token.set_failing(True)
    with boa.reverts("market: token transfer failed"):
        rig.withdraw(sender=p)
    assert rig.claimable(p) == 15
    token.set_failing(False)
    assert rig.withdraw(sender=p) == 15
    assert token.balanceOf(p) == FUNDS
