"""Market: deployment (three contracts at one address), announcing a task, calling it off."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from fedmarket.chain import merkle
from fedmarket.chain.signing import domain_separator

from .conftest import standard
from .helpers import (
    BIDDING,
    CANCELLED,
    CONTEXT_HASH,
    DELAY,
    GRACE,
    MAX_EPOCHS,
    MAX_MONEY,
    MAX_POINTS,
    NO_TASK,
    PROCESSING,
    SPEC_HASH,
    ZERO,
    Rig,
    TaskParams,
    create_task,
    everyone_collects,
    now,
)


def test_deploy_records_token_grace_reserve_delay_and_domain(
    rig: Rig, token: Any, reserve: str
) -> None:
    assert rig.token() == token.address
    assert (rig.grace_seconds(), rig.draw_delay_blocks(), rig.reserve()) == (GRACE, DELAY, reserve)
    assert rig.num_tasks() == rig.num_disputes() == rig.reserve_balance() == 0
    chain_id = boa.env.evm.patch.chain_id
    assert bytes(rig.DOMAIN_SEPARATOR()) == domain_separator(chain_id, rig.address)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"token": "outsider"}, "market: token is not a contract"),
        ({"grace": 0}, "market: bad grace period"),
        ({"reserve": "zero"}, "market: no reserve"),
        ({"delay": 0}, "market: bad draw delay"),
        ({"delay": 129}, "market: bad draw delay"),
        ({"setup": "outsider"}, "market: setup is not a contract"),
    ],
)
def test_deploy_rejects_bad_configuration(
    deployers: dict[str, Any],
    token: Any,
    reserve: str,
    outsider: str,
    args: dict[str, Any],
    reason: str,
) -> None:
    court = deployers["MarketCourt"].deploy()
    setup = deployers["MarketSetup"].deploy(court.address)
    named = {"outsider": outsider, "zero": "0x" + "00" * 20}
    values = {
        "token": token.address,
        "grace": GRACE,
        "reserve": reserve,
        "delay": DELAY,
        "setup": setup.address,
    }
    values |= {k: named.get(v, v) if isinstance(v, str) else v for k, v in args.items()}
    with boa.reverts(reason):
        deployers["Market"].deploy(
            values["token"], values["grace"], values["reserve"], values["delay"], values["setup"]
        )


def test_the_setup_refuses_a_court_without_code(deployers: dict[str, Any], outsider: str) -> None:
    with boa.reverts("market: court is not a contract"):
        deployers["MarketSetup"].deploy(outsider)


def test_the_delegate_contracts_called_directly_know_no_task(
    deployers: dict[str, Any], rig: Rig, requester: str
) -> None:
    """MarketSetup and MarketCourt only ever act on the market's storage: at their own
    addresses there is no task, so nothing can happen there."""
    setup_address = rig.market.setup()
    setup = deployers["MarketSetup"].at(setup_address)
    create_task(rig, requester)
    with boa.reverts("market: only the requester"):
        setup.reopen(0, (0, 0, 0), 100, sender=requester)
    assert setup.terms(0).requester == "0x" + "00" * 20


def test_create_task_escrows_both_budgets_and_records_the_terms(
    rig: Rig, token: Any, requester: str
) -> None:
    before = token.balanceOf(requester)
    params = TaskParams(data_budget=300, processing_budget=700, floors=(5, 7, 2))
    start = now()
    task = create_task(rig, requester, params)
    (created,) = rig.logs("TaskCreated")
    assert (task, rig.num_tasks()) == (0, 1)
    assert token.balanceOf(requester) == before - 1_000
    assert rig.liabilities(task) == 1_000
    assert (created.requester, created.num_points, created.min_fill) == (requester, 256, 64)
    assert tuple(created.floors) == (5, 7, 2)
    terms = rig.terms(task)
    assert (terms.requester, terms.num_points, terms.epoch_seconds, terms.max_epochs) == (
        requester,
        256,
        600,
        3,
    )
    assert (terms.data_budget, terms.processing_budget, terms.bidding_deadline) == (
        300,
        700,
        start + 1_000,
    )
    assert (terms.late_penalty_bps, terms.dispute_bond_bps, terms.audit_fee) == (2_500, 2_500, 10)
    assert bytes(terms.terms_hash) == merkle.terms_hash(SPEC_HASH, CONTEXT_HASH)
    assert tuple(rig.floors_of(task)) == (5, 7, 2)
    assert rig.clock_of(task).state == BIDDING


def test_unknown_task_has_no_state(rig: Rig) -> None:
    assert rig.clock_of(7).state == NO_TASK


def test_create_task_accepts_the_largest_values(rig: Rig, token: Any, requester: str) -> None:
    params = TaskParams(
        num_points=MAX_POINTS,
        epoch_seconds=2**32 - 1,
        max_epochs=MAX_EPOCHS,
        bidding_seconds=2**32 - 1,
        late_penalty_bps=10_000,
        dispute_bond_bps=10_000,
        audit_fee=MAX_MONEY,
        min_fill=MAX_POINTS,
        floors=(2**85 - 1,) * 3,
    )
    task = create_task(rig, requester, params)
    terms = rig.terms(task)
    assert (terms.num_points, terms.max_epochs, terms.min_fill, terms.audit_fee) == (
        MAX_POINTS, MAX_EPOCHS, MAX_POINTS, MAX_MONEY,
    )  # fmt: skip
    assert tuple(rig.floors_of(task)) == (2**85 - 1,) * 3


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
        ("late_penalty_bps", 10_001, "market: penalty above 100%"),
        ("dispute_bond_bps", 999, "market: bad dispute bond"),
        ("dispute_bond_bps", 10_001, "market: bad dispute bond"),
        ("data_budget", MAX_MONEY + 1, "market: budget too large"),
        ("audit_fee", MAX_MONEY + 1, "market: audit fee too large"),
        ("min_fill", 63, "market: bad min_fill"),
        ("min_fill", 257, "market: bad min_fill"),
        ("floors", (2**85, 0, 0), "market: floor too large"),
    ],
)
def test_create_task_rejects_bad_parameters(
    rig: Rig, requester: str, field: str, value: Any, reason: str
) -> None:
    with boa.reverts(reason):
        create_task(rig, requester, replace(TaskParams(), **{field: value}))


def test_create_task_rejects_empty_hashes(rig: Rig, requester: str) -> None:
    with boa.reverts("market: empty spec hash"):
        rig.create_task(ZERO, CONTEXT_HASH, *TaskParams().args(), sender=requester)
    with boa.reverts("market: empty context hash"):
        rig.create_task(SPEC_HASH, ZERO, *TaskParams().args(), sender=requester)


def test_create_task_without_allowance_fails_the_pull(rig: Rig, token: Any, requester: str) -> None:
    token.approve(rig.address, 999, sender=requester)
    with boa.reverts("market: token transfer failed"):
        create_task(rig, requester)


def test_cancel_refunds_budgets_and_every_stake_in_full(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    t = standard(rig, token, requester, owners, processors).create().bid()
    before = {a: token.balanceOf(a) for a in [requester, *(p.address for p in processors[:3])]}
    rig.cancel(t.task, sender=requester)
    (cancelled,) = rig.logs("TaskCancelled")
    assert (cancelled.task, cancelled.by) == (t.task, requester)
    assert rig.clock_of(t.task).state == CANCELLED
    assert rig.requester_owed(t.task) == 2_000_000
    stakes = [128 * 2 * 3, 192 * 3 * 3, 300 * 9 * 3]
    assert [rig.owed(t.task, PROCESSING, i) for i in range(3)] == stakes
    got = everyone_collects(rig, t)
    assert got[requester] == 2_000_000
    for p, stake in zip(processors[:3], stakes, strict=True):
        assert token.balanceOf(p.address) == before[p.address] + stake
    assert rig.liabilities(t.task) == 0


def test_cancel_is_for_the_requester_in_bidding_only(
    rig: Rig,
    token: Any,
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    outsider: str,
) -> None:
    t = standard(rig, token, requester, owners, processors).create().bid()
    with boa.reverts("market: only the requester"):
        rig.cancel(t.task, sender=outsider)
    with boa.reverts("market: only the requester"):
        rig.cancel(9, sender=requester)
    t.resolve()
    with boa.reverts("market: task is not in bidding"):
        rig.cancel(t.task, sender=requester)
