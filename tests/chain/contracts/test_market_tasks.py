"""Market: deployment, announcing a task (create_task) and calling it off (cancel)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import boa
import pytest

from .conftest import Standard
from .helpers import (
    BIDDING,
    CANCELLED,
    CONTEXT_HASH,
    GRACE,
    MAX_EPOCHS,
    MAX_MONEY,
    MAX_POINTS,
    NO_TASK,
    SPEC_HASH,
    ZERO_HASH,
    TaskParams,
    assert_conserved,
    create_task,
    events,
    now,
    settle,
)


def test_deploy_records_token_and_grace(market: Any, token: Any) -> None:
    assert market.token() == token.address
    assert market.grace_seconds() == GRACE
    assert market.num_tasks() == 0


def test_deploy_rejects_a_token_without_code(market_deployer: Any, outsider: str) -> None:
    with boa.reverts("market: token is not a contract"):
        market_deployer.deploy(outsider, GRACE)


def test_deploy_rejects_a_zero_grace_period(market_deployer: Any, token: Any) -> None:
    with boa.reverts("market: grace period must be positive"):
        market_deployer.deploy(token.address, 0)


def test_create_task_escrows_both_budgets_in_one_pull(
    market: Any, token: Any, requester: str
) -> None:
    before = token.balanceOf(requester)
    params = TaskParams(data_budget=300, processing_budget=700)
    start = now()
    task = create_task(market, requester, params)
    (created,) = events(market, "TaskCreated")

    assert task == 0
    assert market.num_tasks() == 1
    assert token.balanceOf(requester) == before - 1_000
    assert token.balanceOf(market) == 1_000
    assert market.liabilities(task) == 1_000
    assert created.task == task
    assert created.requester == requester
    assert (created.data_budget, created.processing_budget) == (300, 700)
    assert created.bidding_deadline == start + params.bidding_seconds

    t = market.tasks(task)
    assert t.requester == requester
    assert (t.spec_hash, t.public_context_hash) == (SPEC_HASH, CONTEXT_HASH)
    assert (t.num_points, t.epoch_seconds, t.max_epochs) == (10, 600, 3)
    assert (t.data_budget, t.processing_budget, t.late_penalty_bps) == (300, 700, 2_500)
    assert t.bidding_deadline == start + params.bidding_seconds
    assert (t.assignment_hash, t.data_committed_cost, t.shares) == (ZERO_HASH, 0, 0)
    clock = market.clock_of(task)
    assert (clock.state, clock.epoch, clock.deadline, clock.spent) == (BIDDING, 0, 0, 0)
    assert_conserved(token, market)


def test_task_ids_count_up(market: Any, requester: str, outsider: str) -> None:
    assert create_task(market, requester) == 0
    assert create_task(market, outsider) == 1
    assert market.tasks(1).requester == outsider
    assert market.num_tasks() == 2


def test_unknown_task_has_no_state(market: Any) -> None:
    assert market.clock_of(7).state == NO_TASK


def test_create_task_accepts_the_largest_values(market: Any, token: Any, requester: str) -> None:
    params = TaskParams(
        num_points=MAX_POINTS,
        epoch_seconds=2**32 - 1,
        max_epochs=MAX_EPOCHS,
        data_budget=MAX_MONEY,
        processing_budget=MAX_MONEY,
        bidding_seconds=2**32 - 1,
        late_penalty_bps=10_000,
    )
    token.mint(requester, 2 * MAX_MONEY, sender=token.minter())
    task = create_task(market, requester, params)
    assert market.liabilities(task) == 2 * MAX_MONEY


def test_create_task_with_zero_budgets_pulls_nothing(
    market: Any, token: Any, requester: str
) -> None:
    create_task(market, requester, TaskParams(data_budget=0, processing_budget=0))
    assert events(market, "Transfer") == []
    assert token.balanceOf(market) == 0


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("num_points", 0, "market: bad num_points"),
        ("num_points", MAX_POINTS + 1, "market: bad num_points"),
        ("epoch_seconds", 0, "market: bad epoch_seconds"),
        ("epoch_seconds", 2**32, "market: bad epoch_seconds"),
        ("max_epochs", 0, "market: bad max_epochs"),
        ("max_epochs", MAX_EPOCHS + 1, "market: bad max_epochs"),
        ("bidding_seconds", 0, "market: bad bidding_seconds"),
        ("bidding_seconds", 2**32, "market: bad bidding_seconds"),
        ("late_penalty_bps", 10_001, "market: penalty above 100%"),
        ("data_budget", MAX_MONEY + 1, "market: budget too large"),
        ("processing_budget", MAX_MONEY + 1, "market: budget too large"),
    ],
)
def test_create_task_rejects_bad_parameters(
    market: Any, requester: str, field: str, value: int, reason: str
) -> None:
    with boa.reverts(reason):
        create_task(market, requester, replace(TaskParams(), **{field: value}))


def test_create_task_rejects_an_empty_spec_hash(market: Any, requester: str) -> None:
    with boa.reverts("market: empty spec hash"):
        market.create_task(ZERO_HASH, CONTEXT_HASH, *TaskParams().args(), sender=requester)


def test_create_task_rejects_an_empty_context_hash(market: Any, requester: str) -> None:
    with boa.reverts("market: empty context hash"):
        market.create_task(SPEC_HASH, ZERO_HASH, *TaskParams().args(), sender=requester)


def test_create_task_without_allowance_fails_the_pull(
    market: Any, token: Any, requester: str
) -> None:
    token.approve(market, 999, sender=requester)
    with boa.reverts("market: token transfer failed"):
        create_task(market, requester)


def test_create_task_without_funds_fails_the_pull(market: Any, token: Any, outsider: str) -> None:
    token.transfer(token.minter(), token.balanceOf(outsider), sender=outsider)
    with boa.reverts("market: token transfer failed"):
        create_task(market, outsider)


def test_cancel_refunds_budgets_and_every_stake_in_full(
    market: Any, token: Any, bidding: Standard, everyone: list[str]
) -> None:
    before = {a: token.balanceOf(a) for a in everyone}
    market.cancel(bidding.task, sender=bidding.requester)
    (cancelled,) = events(market, "TaskCancelled")
    assert (cancelled.task, cancelled.by) == (bidding.task, bidding.requester)
    assert market.clock_of(bidding.task).state == CANCELLED

    assert market.owed(bidding.task, bidding.requester) == 2_000
    assert [market.owed(bidding.task, p) for p in bidding.processors] == [24, 72, 270]
    assert [market.owed(bidding.task, o) for o in bidding.owners] == [0, 0, 0]
    settle(market, bidding.task, everyone)
    assert token.balanceOf(bidding.requester) == before[bidding.requester] + 2_000
    for p, stake in zip(bidding.processors, [24, 72, 270], strict=True):
        assert token.balanceOf(p) == before[p] + stake
    assert token.balanceOf(market) == 0
    assert market.liabilities(bidding.task) == 0
    assert_conserved(token, market, everyone)


def test_cancel_is_for_the_requester_only(market: Any, bidding: Standard, outsider: str) -> None:
    with boa.reverts("market: only the requester"):
        market.cancel(bidding.task, sender=outsider)


def test_cancel_of_an_unknown_task_is_refused(market: Any, requester: str) -> None:
    with boa.reverts("market: only the requester"):
        market.cancel(5, sender=requester)


def test_cancel_after_resolve_is_refused(market: Any, assigning: Standard) -> None:
    with boa.reverts("market: task is not in bidding"):
        market.cancel(assigning.task, sender=assigning.requester)


def test_cancel_twice_is_refused(market: Any, bidding: Standard) -> None:
    market.cancel(bidding.task, sender=bidding.requester)
    with boa.reverts("market: task is not in bidding"):
        market.cancel(bidding.task, sender=bidding.requester)


def test_cancel_after_the_bidding_deadline_still_works(market: Any, bidding: Standard) -> None:
    boa.env.time_travel(seconds=TaskParams().bidding_seconds + GRACE + 10)
    market.cancel(bidding.task, sender=bidding.requester)
    assert market.clock_of(bidding.task).state == CANCELLED
