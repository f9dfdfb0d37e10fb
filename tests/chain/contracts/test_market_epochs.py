"""Market: the assignment, data commitments, results, epoch deadlines and closing epochs."""

from __future__ import annotations

from typing import Any

import boa
import pytest

from .conftest import Standard
from .helpers import (
    ASSIGNMENT_HASH,
    DATA,
    FINISHED,
    MAX_FLAGGED,
    PROCESSING,
    TRAINING,
    ZERO_HASH,
    TaskParams,
    clock_deadline,
    create_task,
    digest,
    events,
    now,
    resolve_greedy,
    travel_to,
)

EPOCH = TaskParams().epoch_seconds


def submit_all(market: Any, s: Standard, epoch: int) -> None:
    for processor in s.processors[:2]:
        market.submit_result(s.task, epoch, digest(epoch), sender=processor)


# ---------------------------------------------------------------- commit_assignment


def test_commit_assignment_starts_epoch_zero(market: Any, assigning: Standard) -> None:
    start = now()
    market.commit_assignment(assigning.task, ASSIGNMENT_HASH, sender=assigning.requester)
    (committed,) = events(market, "AssignmentCommitted")
    assert (committed.assignment_hash, committed.epoch_deadline) == (ASSIGNMENT_HASH, start + EPOCH)
    assert market.tasks(assigning.task).assignment_hash == ASSIGNMENT_HASH
    clock = market.clock_of(assigning.task)
    assert (clock.state, clock.epoch, clock.deadline, clock.submitted) == (
        TRAINING,
        0,
        start + EPOCH,
        0,
    )


def test_commit_assignment_is_for_the_requester_only(
    market: Any, assigning: Standard, outsider: str
) -> None:
    with boa.reverts("market: only the requester"):
        market.commit_assignment(assigning.task, ASSIGNMENT_HASH, sender=outsider)


def test_commit_assignment_needs_a_hash(market: Any, assigning: Standard) -> None:
    with boa.reverts("market: empty assignment hash"):
        market.commit_assignment(assigning.task, ZERO_HASH, sender=assigning.requester)


def test_commit_assignment_before_resolve_or_twice_is_refused(
    market: Any, bidding: Standard
) -> None:
    with boa.reverts("market: task is not awaiting an assignment"):
        market.commit_assignment(bidding.task, ASSIGNMENT_HASH, sender=bidding.requester)
    resolve_greedy(market, bidding.task, bidding.requester)
    market.commit_assignment(bidding.task, ASSIGNMENT_HASH, sender=bidding.requester)
    with boa.reverts("market: task is not awaiting an assignment"):
        market.commit_assignment(bidding.task, ASSIGNMENT_HASH, sender=bidding.requester)


def test_commit_assignment_after_its_window_is_still_accepted(
    market: Any, assigning: Standard
) -> None:
    # nobody claimed the timeout, so the requester may still go on
    travel_to(clock_deadline(market, assigning.task) + 10 * EPOCH)
    market.commit_assignment(assigning.task, ASSIGNMENT_HASH, sender=assigning.requester)
    assert market.clock_of(assigning.task).state == TRAINING


# ---------------------------------------------------------------- commit_data


def test_commit_data_records_the_root_and_the_cost(market: Any, assigning: Standard) -> None:
    owner = assigning.owners[1]
    market.commit_data(assigning.task, digest(7), sender=owner)
    (committed,) = events(market, "DataCommitted")
    assert (committed.owner, committed.root) == (owner, digest(7))
    assert market.get_bid(assigning.task, DATA, 1).data_root == digest(7)
    assert market.tasks(assigning.task).data_committed_cost == 4 * 5


def test_commit_data_is_open_in_training_until_the_first_close(
    market: Any, training: Standard
) -> None:
    market.commit_data(training.task, digest(1), sender=training.owners[0])
    submit_all(market, training, 0)
    market.close_epoch(training.task, 0, [], True, sender=training.requester)
    with boa.reverts("market: data commitments are closed"):
        market.commit_data(training.task, digest(2), sender=training.owners[1])


def test_commit_data_during_bidding_is_refused(market: Any, bidding: Standard) -> None:
    with boa.reverts("market: data commitments are closed"):
        market.commit_data(bidding.task, digest(1), sender=bidding.owners[0])


def test_commit_data_needs_a_root(market: Any, assigning: Standard) -> None:
    with boa.reverts("market: empty data root"):
        market.commit_data(assigning.task, ZERO_HASH, sender=assigning.owners[0])


def test_commit_data_by_a_non_owner_is_refused(
    market: Any, assigning: Standard, outsider: str
) -> None:
    with boa.reverts("market: not a data owner of this task"):
        market.commit_data(assigning.task, digest(1), sender=outsider)


def test_commit_data_by_a_losing_owner_is_refused(market: Any, assigning: Standard) -> None:
    with boa.reverts("market: not a winning data owner"):
        market.commit_data(assigning.task, digest(1), sender=assigning.owners[2])


def test_commit_data_twice_is_refused(market: Any, assigning: Standard) -> None:
    market.commit_data(assigning.task, digest(1), sender=assigning.owners[0])
    with boa.reverts("market: data already committed"):
        market.commit_data(assigning.task, digest(2), sender=assigning.owners[0])


# ---------------------------------------------------------------- submit_result


def test_submit_at_the_deadline_is_on_time(market: Any, training: Standard) -> None:
    p0 = training.processors[0]
    travel_to(clock_deadline(market, training.task))
    market.submit_result(training.task, 0, digest(0), sender=p0)
    (submitted,) = events(market, "ResultSubmitted")
    assert (submitted.epoch, submitted.processor, submitted.digest) == (0, p0, digest(0))
    assert (submitted.on_time, submitted.pay) == (True, 4 * 2)
    bid = market.get_bid(training.task, PROCESSING, 0)
    assert (bid.earned, bid.last_submitted_epoch, bid.last_late) == (8, 1, False)
    clock = market.clock_of(training.task)
    assert (clock.submitted, clock.spent) == (1, 8)
    assert market.has_submitted(training.task, 0, p0)


def test_submit_one_second_after_the_deadline_is_late_and_pays_less(
    market: Any, training: Standard
) -> None:
    p1 = training.processors[1]
    travel_to(clock_deadline(market, training.task) + 1)
    market.submit_result(training.task, 0, digest(0), sender=p1)
    (submitted,) = events(market, "ResultSubmitted")
    # 6 points x 3 = 18, less 25 %: 13.5 rounds down to 13
    assert (submitted.on_time, submitted.pay) == (False, 13)
    bid = market.get_bid(training.task, PROCESSING, 1)
    assert (bid.earned, bid.last_late) == (13, True)
    assert market.clock_of(training.task).spent == 13


def test_a_late_result_does_not_stay_late(market: Any, training: Standard) -> None:
    p0, p1 = training.processors[:2]
    travel_to(clock_deadline(market, training.task) + 1)
    submit_all(market, training, 0)
    market.close_epoch(training.task, 0, [], True, sender=training.requester)
    market.submit_result(training.task, 1, digest(1), sender=p1)
    bid = market.get_bid(training.task, PROCESSING, 1)
    assert (bid.earned, bid.last_submitted_epoch, bid.last_late) == (13 + 18, 2, False)
    assert market.has_submitted(training.task, 1, p1)
    assert not market.has_submitted(training.task, 1, p0)
    assert market.has_submitted(training.task, 0, p0)


def test_submit_outside_training_is_refused(market: Any, assigning: Standard) -> None:
    with boa.reverts("market: task is not training"):
        market.submit_result(assigning.task, 0, digest(0), sender=assigning.processors[0])


def test_submit_for_another_epoch_is_refused(market: Any, training: Standard) -> None:
    with boa.reverts("market: not the current epoch"):
        market.submit_result(training.task, 1, digest(0), sender=training.processors[0])


def test_submit_needs_a_digest(market: Any, training: Standard) -> None:
    with boa.reverts("market: empty digest"):
        market.submit_result(training.task, 0, ZERO_HASH, sender=training.processors[0])


def test_submit_by_a_non_processor_is_refused(
    market: Any, training: Standard, outsider: str
) -> None:
    with boa.reverts("market: not a processor of this task"):
        market.submit_result(training.task, 0, digest(0), sender=outsider)
    # a data owner is not a processor either
    with boa.reverts("market: not a processor of this task"):
        market.submit_result(training.task, 0, digest(0), sender=training.owners[0])


def test_submit_by_a_losing_processor_is_refused(market: Any, training: Standard) -> None:
    with boa.reverts("market: not a winning processor"):
        market.submit_result(training.task, 0, digest(0), sender=training.processors[2])


def test_submit_twice_is_refused(market: Any, training: Standard) -> None:
    market.submit_result(training.task, 0, digest(0), sender=training.processors[0])
    with boa.reverts("market: result already submitted"):
        market.submit_result(training.task, 0, digest(1), sender=training.processors[0])


def test_submit_by_a_slashed_processor_is_refused(market: Any, training: Standard) -> None:
    p0 = training.processors[0]
    submit_all(market, training, 0)
    market.close_epoch(training.task, 0, [p0], True, sender=training.requester)
    with boa.reverts("market: processor was slashed"):
        market.submit_result(training.task, 1, digest(1), sender=p0)


# ---------------------------------------------------------------- close_epoch


def test_close_before_the_deadline_waits_for_every_processor(
    market: Any, training: Standard
) -> None:
    market.submit_result(training.task, 0, digest(0), sender=training.processors[0])
    with boa.reverts("market: epoch still running"):
        market.close_epoch(training.task, 0, [], True, sender=training.requester)
    travel_to(clock_deadline(market, training.task))
    with boa.reverts("market: epoch still running"):
        market.close_epoch(training.task, 0, [], True, sender=training.requester)
    market.submit_result(training.task, 0, digest(0), sender=training.processors[1])
    market.close_epoch(training.task, 0, [], True, sender=training.requester)
    assert market.clock_of(training.task).epoch == 1


def test_close_one_second_after_the_deadline_needs_no_results(
    market: Any, training: Standard
) -> None:
    travel_to(clock_deadline(market, training.task) + 1)
    market.close_epoch(training.task, 0, [], True, sender=training.requester)
    assert market.clock_of(training.task).epoch == 1


def test_early_close_starts_the_next_epoch_at_once(market: Any, training: Standard) -> None:
    submit_all(market, training, 0)
    closed_at = now()
    market.close_epoch(training.task, 0, [], True, sender=training.requester)
    (closed,) = events(market, "EpochClosed")
    assert (closed.epoch, closed.go_on, closed.flagged) == (0, True, 0)
    assert closed.next_deadline == closed_at + EPOCH
    clock = market.clock_of(training.task)
    assert (clock.state, clock.epoch, clock.deadline, clock.submitted, clock.flags) == (
        TRAINING,
        1,
        closed_at + EPOCH,
        0,
        1,
    )


def test_close_with_stop_finishes_the_task(market: Any, training: Standard) -> None:
    submit_all(market, training, 0)
    market.close_epoch(training.task, 0, [], False, sender=training.requester)
    (finished,) = events(market, "TaskFinished")
    (closed,) = events(market, "EpochClosed")
    assert (finished.epochs_closed, finished.timed_out) == (1, False)
    assert (closed.go_on, closed.next_deadline) == (False, 0)
    assert market.clock_of(training.task).state == FINISHED


def test_the_last_epoch_finishes_the_task_even_with_go_on(market: Any, training: Standard) -> None:
    for epoch in range(TaskParams().max_epochs):
        submit_all(market, training, epoch)
        market.close_epoch(training.task, epoch, [], True, sender=training.requester)
    (finished,) = events(market, "TaskFinished")
    assert finished.epochs_closed == 3
    assert market.clock_of(training.task).state == FINISHED


def test_close_is_for_the_requester_only(market: Any, training: Standard, outsider: str) -> None:
    submit_all(market, training, 0)
    with boa.reverts("market: only the requester"):
        market.close_epoch(training.task, 0, [], True, sender=outsider)
    with boa.reverts("market: only the requester"):
        market.close_epoch(training.task, 0, [], True, sender=training.processors[0])


def test_close_outside_training_is_refused(market: Any, assigning: Standard) -> None:
    with boa.reverts("market: task is not training"):
        market.close_epoch(assigning.task, 0, [], True, sender=assigning.requester)


def test_close_after_the_task_finished_is_refused(market: Any, training: Standard) -> None:
    submit_all(market, training, 0)
    market.close_epoch(training.task, 0, [], False, sender=training.requester)
    with boa.reverts("market: task is not training"):
        market.close_epoch(training.task, 0, [], False, sender=training.requester)


def test_close_of_another_epoch_is_refused(market: Any, training: Standard) -> None:
    submit_all(market, training, 0)
    with boa.reverts("market: not the current epoch"):
        market.close_epoch(training.task, 1, [], True, sender=training.requester)


def test_flag_slashes_and_logs_the_split(market: Any, training: Standard) -> None:
    p0 = training.processors[0]
    submit_all(market, training, 0)
    market.close_epoch(training.task, 0, [p0], True, sender=training.requester)
    (slashed,) = events(market, "ProcessorSlashed")
    # pay 8 + stake 4 x 2 x 3 = 24: a pool of 32 over owner 0, owner 1 and processor 1
    assert (slashed.processor, slashed.forfeited_pay, slashed.forfeited_stake) == (p0, 8, 24)
    assert slashed.share_per_participant == 10
    assert market.dust(training.task) == 2
    assert market.slash_acc(training.task) == 10
    assert market.tasks(training.task).shares == 3
    bid = market.get_bid(training.task, PROCESSING, 0)
    assert (bid.slashed, bid.earned) == (True, 0)
    clock = market.clock_of(training.task)
    assert (clock.active, clock.state) == (1, TRAINING)


def test_flag_of_an_address_that_is_not_a_processor_is_refused(
    market: Any, training: Standard, outsider: str
) -> None:
    submit_all(market, training, 0)
    for who in (outsider, training.owners[0]):
        with boa.reverts("market: flagged address is not a processor"):
            market.close_epoch(training.task, 0, [who], True, sender=training.requester)


def test_flag_of_a_losing_processor_is_refused(market: Any, training: Standard) -> None:
    submit_all(market, training, 0)
    with boa.reverts("market: flagged address is not a winning processor"):
        market.close_epoch(
            training.task, 0, [training.processors[2]], True, sender=training.requester
        )


def test_flag_of_the_same_processor_twice_is_refused(market: Any, training: Standard) -> None:
    p0 = training.processors[0]
    submit_all(market, training, 0)
    with boa.reverts("market: processor already slashed"):
        market.close_epoch(training.task, 0, [p0, p0], True, sender=training.requester)
    market.close_epoch(training.task, 0, [p0], True, sender=training.requester)
    travel_to(clock_deadline(market, training.task) + 1)
    with boa.reverts("market: processor already slashed"):
        market.close_epoch(training.task, 1, [p0], True, sender=training.requester)


def test_flag_of_a_missing_processor_takes_only_its_stake(market: Any, training: Standard) -> None:
    p0, p1 = training.processors[:2]
    market.submit_result(training.task, 0, digest(0), sender=p1)
    travel_to(clock_deadline(market, training.task) + 1)
    market.close_epoch(training.task, 0, [p0], True, sender=training.requester)
    (slashed,) = events(market, "ProcessorSlashed")
    assert (slashed.forfeited_pay, slashed.forfeited_stake) == (0, 24)


def test_flagging_every_processor_finishes_the_task(market: Any, training: Standard) -> None:
    submit_all(market, training, 0)
    market.close_epoch(training.task, 0, training.processors[:2], True, sender=training.requester)
    assert len(events(market, "ProcessorSlashed")) == 2
    (closed,) = events(market, "EpochClosed")
    assert (closed.go_on, closed.flagged) == (False, 2)
    clock = market.clock_of(training.task)
    assert (clock.state, clock.active) == (FINISHED, 0)


def test_close_accepts_max_flagged_processors(market: Any, token: Any, requester: str) -> None:
    task = create_task(market, requester, TaskParams(num_points=MAX_FLAGGED + 1))
    crowd = [boa.env.generate_address() for _ in range(MAX_FLAGGED + 1)]
    for processor in crowd:
        token.mint(processor, 100, sender=token.minter())
        token.approve(market, 100, sender=processor)
        market.bid_processing(task, 1, 1, sender=processor)
    market.bid_data(task, MAX_FLAGGED + 1, 1, sender=requester)
    resolve_greedy(market, task, requester)
    market.commit_assignment(task, ASSIGNMENT_HASH, sender=requester)
    travel_to(clock_deadline(market, task) + 1)
    market.close_epoch(task, 0, crowd[:MAX_FLAGGED], True, sender=requester)
    clock = market.clock_of(task)
    assert (clock.active, clock.state) == (1, TRAINING)


@pytest.mark.parametrize("go_on", [True, False])
def test_close_with_flags_and_missing_results_after_the_deadline(
    market: Any, training: Standard, go_on: bool
) -> None:
    travel_to(clock_deadline(market, training.task) + 1)
    market.close_epoch(training.task, 0, [training.processors[1]], go_on, sender=training.requester)
    clock = market.clock_of(training.task)
    assert clock.state == (TRAINING if go_on else FINISHED)
    assert clock.active == 1
