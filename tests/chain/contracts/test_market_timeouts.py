"""Market: a vanished requester cannot lock funds (claim_timeout)."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from .conftest import standard
from .helpers import (
    CANCELLED,
    DATA,
    FINISHED,
    GRACE,
    PROCESSING,
    Rig,
    Task,
    everyone_collects,
    travel_to,
)


@pytest.fixture
def t(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> Task:
    return standard(rig, token, requester, owners, processors).create().bid()


def test_bidding_timeout_cancels_after_the_deadline_plus_grace_and_refunds_everything(
    rig: Rig, t: Task, outsider: str, requester: str
) -> None:
    travel_to(rig.terms(t.task).bidding_deadline + GRACE)
    with boa.reverts("market: not timed out yet"):
        rig.claim_timeout(t.task, 0, 0, sender=outsider)
    travel_to(rig.terms(t.task).bidding_deadline + GRACE + 1)
    rig.claim_timeout(t.task, 0, 0, sender=outsider)  # anyone
    assert rig.clock_of(t.task).state == CANCELLED
    got = everyone_collects(rig, t)
    assert got[requester] == 2_000_000


def test_assignment_timeout_finishes_and_only_a_winner_may_claim_it(
    rig: Rig, t: Task, owners: list[str], processors: list[LocalAccount]
) -> None:
    t.resolve()
    deadline = rig.clock_of(t.task).deadline
    travel_to(deadline + GRACE + 1)
    with boa.reverts("market: only a winner can claim a timeout"):
        rig.claim_timeout(t.task, DATA, 2, sender=owners[2])  # a loser
    with boa.reverts("market: only a winner can claim a timeout"):
        rig.claim_timeout(t.task, DATA, 1, sender=owners[0])  # another's bid
    with boa.reverts("market: only a winner can claim a timeout"):
        rig.claim_timeout(t.task, 2, 0, sender=owners[0])  # no such side
    rig.claim_timeout(t.task, DATA, 0, sender=owners[0])
    (finished,) = rig.logs("TaskFinished")
    assert (finished.epochs_closed, finished.timed_out) == (0, True)
    assert rig.clock_of(t.task).state == FINISHED
    assert rig.requester_owed(t.task) == 2_000_000  # owners unpaid: no epoch ever closed


def test_training_timeout_closes_the_open_epoch_and_pays_recorded_roots(
    rig: Rig, t: Task, requester: str, processors: list[LocalAccount]
) -> None:
    t.resolve().commit_data().assign()
    t.run_epoch(0)
    t.relay(1)
    travel_to(rig.clock_of(t.task).deadline + GRACE)
    rig.close_epoch(t.task, 1, b"\x01" * 32, True, 0, sender=requester)  # still the requester's
    travel_to(rig.clock_of(t.task).deadline + GRACE + 1)
    rig.claim_timeout(t.task, PROCESSING, 1, sender=processors[1].address)
    closed = rig.logs("EpochClosed")[0]
    assert (closed.epoch, closed.go_on) == (2, False)
    assert rig.clock_of(t.task).full_epochs == 2  # epoch 2 had no roots
    with boa.reverts("market: task is over"):
        rig.claim_timeout(t.task, PROCESSING, 1, sender=processors[1].address)
    travel_to(rig.clock_of(t.task).deadline + GRACE + 1)
    got = everyone_collects(rig, t)
    assert got[processors[0].address] == 2 * 256 + 768
    assert got[requester] == 2_000_000 - 1024 - 2 * 640


def test_timeout_of_an_unknown_task_is_refused(rig: Rig, outsider: str) -> None:
    with boa.reverts("market: no such task"):
        rig.claim_timeout(12, 0, 0, sender=outsider)
