"""Market: a silent requester cannot lock funds (claim_timeout and the grace period)."""

from __future__ import annotations

from typing import Any

import boa

from .conftest import FUNDS, Standard
from .helpers import (
    BIDDING,
    CANCELLED,
    FINISHED,
    GRACE,
    TRAINING,
    assert_conserved,
    balances,
    bidding_deadline,
    clock_deadline,
    digest,
    events,
    settle,
    travel_to,
)


def test_bidding_timeout_at_deadline_plus_grace_is_refused_one_second_later_cancels(
    market: Any, bidding: Standard, outsider: str
) -> None:
    deadline = bidding_deadline(market, bidding.task)
    travel_to(deadline + GRACE)
    with boa.reverts("market: not timed out yet"):
        market.claim_timeout(bidding.task, sender=outsider)
    travel_to(deadline + GRACE + 1)
    market.claim_timeout(bidding.task, sender=outsider)  # anyone may, during bidding
    (cancelled,) = events(market, "TaskCancelled")
    (claimed,) = events(market, "TimeoutClaimed")
    assert cancelled.by == outsider
    assert (claimed.state, claimed.by) == (CANCELLED, outsider)
    assert market.clock_of(bidding.task).state == CANCELLED


def test_bidding_timeout_refunds_everything(
    market: Any, token: Any, bidding: Standard, everyone: list[str]
) -> None:
    travel_to(bidding_deadline(market, bidding.task) + GRACE + 1)
    market.claim_timeout(bidding.task, sender=bidding.owners[0])
    settle(market, bidding.task, everyone)
    # everybody is back where they started
    assert set(balances(token, everyone).values()) == {FUNDS}
    assert token.balanceOf(market) == 0


def test_assignment_timeout_at_deadline_plus_grace_is_refused_one_second_later_finishes(
    market: Any, token: Any, assigning: Standard, everyone: list[str]
) -> None:
    deadline = clock_deadline(market, assigning.task)
    travel_to(deadline + GRACE)
    with boa.reverts("market: not timed out yet"):
        market.claim_timeout(assigning.task, sender=assigning.processors[0])
    travel_to(deadline + GRACE + 1)
    before = balances(token, everyone)
    market.claim_timeout(assigning.task, sender=assigning.processors[0])
    (finished,) = events(market, "TaskFinished")
    assert (finished.epochs_closed, finished.timed_out) == (0, True)
    assert events(market, "EpochClosed") == []
    assert market.clock_of(assigning.task).state == FINISHED

    # nothing was used: the requester gets both budgets back, processors their stakes
    assert market.owed(assigning.task, assigning.requester) == 2_000
    assert [market.owed(assigning.task, p) for p in assigning.processors] == [24, 72, 270]
    assert [market.owed(assigning.task, o) for o in assigning.owners] == [0, 0, 0]
    settle(market, assigning.task, everyone)
    after = balances(token, everyone)
    assert sum(after.values()) - sum(before.values()) == 2_000 + 366
    assert token.balanceOf(market) == 0


def test_only_a_winner_can_claim_a_timeout_after_resolve(
    market: Any, assigning: Standard, outsider: str
) -> None:
    travel_to(clock_deadline(market, assigning.task) + GRACE + 1)
    for who in (outsider, assigning.owners[2], assigning.processors[2], assigning.requester):
        with boa.reverts("market: only a winner can claim a timeout"):
            market.claim_timeout(assigning.task, sender=who)
    market.claim_timeout(assigning.task, sender=assigning.owners[1])  # a winning owner may
    assert market.clock_of(assigning.task).state == FINISHED


def test_training_timeout_closes_the_open_epoch_and_pays_submitted_work(
    market: Any, token: Any, training: Standard, everyone: list[str]
) -> None:
    p0, p1, p2 = training.processors
    market.commit_data(training.task, digest(1), sender=training.owners[0])
    market.submit_result(training.task, 0, digest(0), sender=p0)
    deadline = clock_deadline(market, training.task)
    travel_to(deadline + 1)
    market.submit_result(training.task, 0, digest(0), sender=p1)  # late: 13
    travel_to(deadline + GRACE)
    with boa.reverts("market: not timed out yet"):
        market.claim_timeout(training.task, sender=p0)
    travel_to(deadline + GRACE + 1)
    before = balances(token, everyone)
    market.claim_timeout(training.task, sender=p1)
    (closed,) = events(market, "EpochClosed")
    (finished,) = events(market, "TaskFinished")
    assert (closed.epoch, closed.go_on, closed.flagged, closed.next_deadline) == (0, False, 0, 0)
    assert (finished.epochs_closed, finished.timed_out) == (1, True)
    clock = market.clock_of(training.task)
    assert (clock.state, clock.flags) == (FINISHED, 1)

    owed = {a: market.owed(training.task, a) for a in everyone}
    assert owed[p0] == 24 + 8
    assert owed[p1] == 72 + 13
    assert owed[p2] == 270
    assert owed[training.owners[0]] == 18  # committed its data
    assert owed[training.owners[1]] == 0  # did not
    # 1000 - 18 paid for data + 1000 - 21 paid for processing
    assert owed[training.requester] == 982 + 979
    settle(market, training.task, everyone)
    assert sum(balances(token, everyone).values()) - sum(before.values()) == sum(owed.values())
    assert token.balanceOf(market) == 0
    assert_conserved(token, market, everyone)


def test_requester_may_close_during_the_grace_period(market: Any, training: Standard) -> None:
    travel_to(clock_deadline(market, training.task) + GRACE)
    market.close_epoch(training.task, 0, [], True, sender=training.requester)
    assert market.clock_of(training.task).state == TRAINING


def test_timeout_counts_from_the_latest_epoch_deadline(market: Any, training: Standard) -> None:
    p0 = training.processors[0]
    travel_to(clock_deadline(market, training.task) + GRACE)
    market.close_epoch(training.task, 0, [], True, sender=training.requester)
    with boa.reverts("market: not timed out yet"):
        market.claim_timeout(training.task, sender=p0)
    travel_to(clock_deadline(market, training.task) + GRACE + 1)
    market.claim_timeout(training.task, sender=p0)
    (finished,) = events(market, "TaskFinished")
    assert finished.epochs_closed == 2


def test_a_slashed_processor_still_counts_as_a_winner(market: Any, training: Standard) -> None:
    p0 = training.processors[0]
    travel_to(clock_deadline(market, training.task) + 1)
    market.close_epoch(training.task, 0, [p0], True, sender=training.requester)
    travel_to(clock_deadline(market, training.task) + GRACE + 1)
    market.claim_timeout(training.task, sender=p0)
    assert market.clock_of(training.task).state == FINISHED


def test_timeout_of_a_finished_task_is_refused(market: Any, training: Standard) -> None:
    travel_to(clock_deadline(market, training.task) + GRACE + 1)
    market.claim_timeout(training.task, sender=training.processors[0])
    with boa.reverts("market: task is over"):
        market.claim_timeout(training.task, sender=training.processors[0])


def test_timeout_of_a_cancelled_task_is_refused(market: Any, bidding: Standard) -> None:
    market.cancel(bidding.task, sender=bidding.requester)
    travel_to(bidding_deadline(market, bidding.task) + GRACE + 1)
    with boa.reverts("market: task is over"):
        market.claim_timeout(bidding.task, sender=bidding.requester)


def test_timeout_of_an_unknown_task_is_refused(market: Any, outsider: str) -> None:
    with boa.reverts("market: no such task"):
        market.claim_timeout(42, sender=outsider)


def test_bidding_timeout_is_open_even_with_a_feasible_book(
    market: Any, bidding: Standard, outsider: str
) -> None:
    # nobody resolved in time: the task is called off rather than left hanging
    travel_to(bidding_deadline(market, bidding.task) + GRACE + 1)
    assert market.clock_of(bidding.task).state == BIDDING
    market.claim_timeout(bidding.task, sender=outsider)
    with boa.reverts("market: task is not in bidding"):
        market.resolve(bidding.task, [(0, 6), (1, 4)], [(0, 4), (1, 6)])
