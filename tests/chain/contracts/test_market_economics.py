"""Market: who is paid what, in exact integers; every account collects at the end and the
sum of their net changes is minus what went to the reserve (nothing is left in the market)."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from .conftest import standard
from .helpers import (
    DATA,
    FINISHED,
    GRACE,
    PROCESSING,
    Rig,
    Task,
    TaskParams,
    balances,
    everyone_collects,
    now,
    travel_to,
)


def nets(token: Any, start: dict[str, int]) -> dict[str, int]:
    end = balances(token, start)
    return {a: end[a] - start[a] for a in start}


def test_the_standard_task_pays_on_time_late_missing_and_committed_owners_exactly(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    o0, o1, o2 = owners[:3]
    p0, p1, p2 = (p.address for p in processors[:3])
    start = balances(token, [requester, o0, o1, o2, p0, p1, p2])
    t = standard(rig, token, requester, owners, processors).create().bid().resolve()
    t.commit_data([o0]).assign()  # o1 never commits its data: it is not paid
    # epoch 0: p0 on time, p1 late (128 x 3 = 384 less 25 % = 288; 96 to the reserve)
    t.submit(0, 0)
    travel_to(rig.clock_of(t.task).deadline + 1)
    t.submit(1, 0)
    assert rig.owed(t.task, PROCESSING, 0) == 0  # the open epoch is not final
    t.close(0)
    assert rig.owed(t.task, PROCESSING, 0) == 256
    assert rig.owed(t.task, PROCESSING, 1) == 288 + (192 - 128) * 3 * 3
    assert rig.owed(t.task, DATA, 0) == 128 * 3
    assert rig.owed(t.task, DATA, 1) == 0
    assert rig.collect(t.task, DATA, 0, sender=o0) == 384
    # epoch 1: both relayed; epoch 2: p1 missing, the requester stops after the deadline
    t.run_epoch(1)
    t.submit(0, 2)
    travel_to(rig.clock_of(t.task).deadline + 1)
    t.close(2, go_on=False)
    assert rig.clock_of(t.task).state == FINISHED
    # unspent: data 1,000,000 - 384 (o0 only); processing 1,000,000 - (256 + 384 + 640 + 256)
    assert rig.requester_owed(t.task) == 2_000_000 - 384 - (256 + 384 + 640 + 256)
    assert rig.owed(t.task, PROCESSING, 0) == 3 * 256  # its stake waits out the grace period
    travel_to(now() + GRACE + 1)
    everyone_collects(rig, t)
    n = nets(token, start)
    assert n[p0] == 3 * 256
    assert n[p1] == 288 + 384
    assert n[o0] == 384
    assert (n[o1], n[o2], n[p2]) == (0, 0, 0)
    assert n[requester] == -(384 + 256 + 384 + 640 + 256)
    assert sum(n.values()) == -rig.reserve_balance() == -96


@pytest.mark.parametrize(
    ("penalty_bps", "late_pay"), [(0, 64), (2_500, 48), (3_333, 42), (10_000, 0)]
)
def test_late_pay_is_rounded_down_and_the_rest_goes_to_the_reserve(
    rig: Rig,
    token: Any,
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    penalty_bps: int,
    late_pay: int,
) -> None:
    params = TaskParams(num_points=64, max_epochs=1, late_penalty_bps=penalty_bps)
    t = Task(rig, token, requester, [(owners[0], 64, 0)], [(processors[0], 64, 1)], params).start()
    travel_to(rig.clock_of(t.task).deadline + 1)
    t.submit(0, 0)
    t.close(0, go_on=False)
    assert rig.reserve_balance() == 64 - late_pay
    travel_to(now() + GRACE + 1)
    got = everyone_collects(rig, t)
    assert got[processors[0].address] == late_pay + 64 * 1 * 1


def test_owners_who_commit_are_paid_even_if_the_task_stops_at_the_first_close(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    t = standard(rig, token, requester, owners, processors).start()
    travel_to(rig.clock_of(t.task).deadline + 1)
    t.close(0, go_on=False)  # nobody sent a root
    assert (rig.owed(t.task, DATA, 0), rig.owed(t.task, DATA, 1)) == (384, 640)
    assert rig.owed(t.task, PROCESSING, 0) == 0
    assert rig.requester_owed(t.task) == 2_000_000 - 1024


def test_claim_credits_only_the_rightful_bidder_and_collect_is_the_bidders(
    rig: Rig,
    token: Any,
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    outsider: str,
) -> None:
    t = standard(rig, token, requester, owners, processors).start()
    t.run_epoch(0)
    p0 = processors[0].address
    with boa.reverts("market: not this bid's bidder"):
        rig.collect(t.task, PROCESSING, 0, sender=outsider)
    assert rig.claim(t.task, PROCESSING, 0, sender=outsider) == 256
    assert rig.claimable(p0) == 256 and rig.claimable(outsider) == 0
    with boa.reverts("market: nothing owed"):
        rig.claim(t.task, PROCESSING, 0, sender=outsider)
    with boa.reverts("market: nothing to withdraw"):
        rig.withdraw(sender=outsider)
    before = token.balanceOf(p0)
    assert rig.withdraw(sender=p0) == 256
    assert token.balanceOf(p0) == before + 256
    with boa.reverts("market: side is 0 (data) or 1 (processing)"):
        rig.claim(t.task, 2, 0, sender=outsider)


def test_the_requester_collects_once_when_the_task_is_over(
    rig: Rig,
    token: Any,
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    outsider: str,
) -> None:
    t = standard(rig, token, requester, owners, processors).start()
    with boa.reverts("market: nothing owed"):
        rig.collect_requester(t.task, sender=requester)
    t.run_epoch(0, go_on=False)
    with boa.reverts("market: only the requester"):
        rig.collect_requester(t.task, sender=outsider)
    assert rig.collect_requester(t.task, sender=requester) == 2_000_000 - 1024 - 640
    with boa.reverts("market: nothing owed"):
        rig.collect_requester(t.task, sender=requester)


def test_the_requesters_own_data_is_paid_to_itself(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    start = balances(token, [requester])
    t = Task(
        rig,
        token,
        requester,
        [(requester, 128, 1), (owners[0], 128, 2)],
        [(processors[0], 256, 1)],
        TaskParams(max_epochs=1),
    ).start()
    t.run_epoch(0, go_on=False)
    travel_to(now() + GRACE + 1)
    everyone_collects(rig, t)
    assert nets(token, start)[requester] == -(128 * 2 + 256)
