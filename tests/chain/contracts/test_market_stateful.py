"""A Hypothesis state machine over random sequences of every Market call.

Several tasks and a handful of accounts (each may request, sell data and process) run side
by side with the reference model of src/fedmarket/chain/reference.py. Each rule predicts from
the model whether the call succeeds or which `market: ...` reason it reverts with, and checks
the outcome. The invariants check the money after every step: the market holds exactly its
liabilities plus what it has credited, every credit and withdrawal matches the model, and
every account's entitlement equals the model's.
"""

from __future__ import annotations

from typing import Any, ClassVar

import boa
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fedmarket.chain.allocation import InfeasibleAllocation, allocate, cost, greedy_fills
from fedmarket.chain.reference import TaskModel

from .helpers import (
    ASSIGNING,
    ASSIGNMENT_HASH,
    BIDDING,
    CANCELLED,
    CONTEXT_HASH,
    DATA,
    FINISHED,
    GRACE,
    PROCESSING,
    SPEC_HASH,
    TRAINING,
    digest,
    now,
    travel_to,
)
from .mutations import best_effort, mutants

MAX_TASKS = 3
NUM_ACCOUNTS = 6

accounts_ = st.integers(0, NUM_ACCOUNTS - 1)
tasks_ = st.integers(0, 4 * MAX_TASKS - 1)
sides = st.sampled_from([DATA, PROCESSING])


class MarketMachine(RuleBasedStateMachine):
    market: ClassVar[Any]
    token: ClassVar[Any]
    accounts: ClassVar[list[str]]

    def __init__(self) -> None:
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.tasks: list[TaskModel] = []
        self.start = {a: self.token.balanceOf(a) for a in self.accounts}
        self.paid_in = dict.fromkeys(self.accounts, 0)
        self.credited = dict.fromkeys(self.accounts, 0)  # claims and bid refunds
        self.withdrawn = dict.fromkeys(self.accounts, 0)
        self.task_credited: dict[tuple[int, str], int] = {}
        self.touched: set[int] = set()

    def teardown(self) -> None:
        self._anchor.__exit__(None, None, None)

    # ------------------------------------------------------------ plumbing

    def expect(self, reason: str | None, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Make the call; it must revert with `reason`, or succeed when that is None."""
        name = getattr(call, "__name__", None) or call.func_t.name
        event(f"{name}: {reason or 'ok'}")
        note(f"{name}{args} {kwargs.get('sender', '')} -> {reason or 'ok'}")
        if reason:
            with boa.reverts(reason):
                call(*args, **kwargs)
            return None
        return call(*args, **kwargs)

    def any_in(self, *states: int) -> bool:
        """Whether some task is in one of `states` (rules for other states then idle)."""
        return any(t.state in states for t in self.tasks)

    def task_of(self, index: int, *states: int) -> tuple[int, TaskModel]:
        """Task `index`; mostly one in one of `states`, where the call can go through."""
        fitting = [i for i, t in enumerate(self.tasks) if t.state in states]
        if fitting and index >= MAX_TASKS:
            task = fitting[index % len(fitting)]
        else:
            task = index % len(self.tasks)
        self.touched.add(task)
        return task, self.tasks[task]

    def account(self, index: int) -> str:
        return self.accounts[index]

    def check_account(self, account: str) -> None:
        """What `account` may withdraw and holds match the books (after it paid or was paid)."""
        assert self.withdrawn[account] <= self.credited[account]
        claimable = self.credited[account] - self.withdrawn[account]
        assert self.market.claimable(account) == claimable
        held = self.start[account] - self.paid_in[account] + self.withdrawn[account]
        assert self.token.balanceOf(account) == held

    def pick(self, model: TaskModel, side: int, index: int) -> str:
        """Mostly one of the task's winners on `side` (else anyone), so calls get through."""
        winners = [model.bids[side][i].bidder for i in model.winners(side)]
        if winners and index < 3 * NUM_ACCOUNTS:
            return winners[index % len(winners)]
        return self.account(index % NUM_ACCOUNTS)

    # ------------------------------------------------------------ rules

    @initialize(
        who=accounts_,
        max_epochs=st.integers(1, 5),
        data=st.lists(
            st.tuples(accounts_, st.integers(1, 6), st.integers(0, 5)), min_size=1, max_size=4
        ),
        processing=st.lists(
            st.tuples(accounts_, st.integers(1, 6), st.integers(1, 5)), min_size=1, max_size=4
        ),
        requester_sells=st.booleans(),
        cut=st.integers(0, 100),
        stage=st.sampled_from([BIDDING, ASSIGNING, TRAINING, TRAINING]),
    )
    def a_task_with_a_feasible_book(
        self,
        who: int,
        max_epochs: int,
        data: list[tuple[int, int, int]],
        processing: list[tuple[int, int, int]],
        requester_sells: bool,
        cut: int,
        stage: int,
    ) -> None:
        """Most random books cannot be resolved; start with one that can, taken to `stage`,
        so that most runs spend their steps in the epochs. The points wanted are a `cut` % of
        what the thinner side offers, so there are losers, partial fills and excess stakes."""
        if requester_sells:  # and at the lowest price, so it wins
            data = [(who, data[0][1], 0), *data]
        bidders = [
            list(data),
            # the requester cannot process its own task
            [(b if b != who else (b + 1) % NUM_ACCOUNTS, a, p) for b, a, p in processing],
        ]
        # one open bid per address and side: the first one counts
        for side in (DATA, PROCESSING):
            bidders[side] = list({b: (b, a, p) for b, a, p in reversed(bidders[side])}.values())
        offered = min(sum(a for _, a, _ in bidders[side]) for side in (DATA, PROCESSING))
        num_points = max(1, offered * cut // 100)
        self.create_task(who, num_points, max_epochs, 300, 100, 2_500, 10**6, 10**6)
        for side in (DATA, PROCESSING):
            for bidder, amount, price in bidders[side]:
                self.bid(0, bidder, side, amount, price)
        for _ in range(stage - BIDDING):
            self.advance_once(0, 0)
        assert self.tasks[0].state == stage

    @precondition(lambda self: len(self.tasks) < MAX_TASKS)
    @rule(
        who=accounts_,
        num_points=st.integers(1, 12),
        max_epochs=st.integers(1, 3),
        epoch_seconds=st.sampled_from([60, 300]),
        bidding_seconds=st.sampled_from([100, 500]),
        penalty=st.sampled_from([0, 2_500, 3_333, 10_000]),
        data_budget=st.one_of(st.just(10**6), st.integers(0, 60)),
        processing_budget=st.one_of(st.just(10**6), st.integers(0, 200)),
    )
    def create_task(
        self,
        who: int,
        num_points: int,
        max_epochs: int,
        epoch_seconds: int,
        bidding_seconds: int,
        penalty: int,
        data_budget: int,
        processing_budget: int,
    ) -> None:
        requester = self.account(who)
        model = TaskModel(
            requester=requester,
            num_points=num_points,
            epoch_seconds=epoch_seconds,
            max_epochs=max_epochs,
            data_budget=data_budget,
            processing_budget=processing_budget,
            bidding_deadline=now() + bidding_seconds,
            late_penalty_bps=penalty,
            grace=GRACE,
        )
        args = (num_points, epoch_seconds, max_epochs, data_budget, processing_budget)
        task = self.expect(
            None,
            self.market.create_task,
            SPEC_HASH,
            CONTEXT_HASH,
            *args,
            bidding_seconds,
            penalty,
            sender=requester,
        )
        assert task == len(self.tasks)
        model.paid_in = data_budget + processing_budget
        self.paid_in[requester] += model.paid_in
        self.tasks.append(model)
        self.touched.add(task)
        self.check_account(requester)

    @precondition(lambda self: self.any_in(BIDDING))
    @rule(
        index=tasks_,
        who=accounts_,
        side=sides,
        amount=st.integers(1, 8),
        price=st.integers(0, 5),
    )
    def bid(self, index: int, who: int, side: int, amount: int, price: int) -> None:
        task, model = self.task_of(index, BIDDING)
        bidder = self.account(who)
        paid_before = model.paid_in
        reason = model.bid(side, bidder, amount, price, now())
        call = self.market.bid_data if side == DATA else self.market.bid_processing
        self.expect(reason, call, task, amount, price, sender=bidder)
        self.paid_in[bidder] += model.paid_in - paid_before
        self.check_account(bidder)

    @precondition(lambda self: self.any_in(BIDDING))
    @rule(index=tasks_, who=st.integers(0, 4 * NUM_ACCOUNTS - 1), side=sides)
    def withdraw_bid(self, index: int, who: int, side: int) -> None:
        task, model = self.task_of(index, BIDDING)
        open_bidders = [b.bidder for b in model.bids[side] if not b.withdrawn]
        if open_bidders and who < 3 * NUM_ACCOUNTS:
            bidder = open_bidders[who % len(open_bidders)]
        else:
            bidder = self.account(who % NUM_ACCOUNTS)
        reason, refund = model.withdraw_bid(side, bidder, now())
        if side == DATA:
            self.expect(reason, self.market.withdraw_data_bid, task, sender=bidder)
        else:
            got = self.expect(reason, self.market.withdraw_processing_bid, task, sender=bidder)
            if reason is None:
                assert got == refund
                self.credited[bidder] += refund
                self.check_account(bidder)

    @precondition(lambda self: self.any_in(BIDDING))
    @rule(index=tasks_, who=accounts_, mutate=st.integers(0, 2), pick=st.integers(0, 2**16))
    def resolve(self, index: int, who: int, mutate: int, pick: int) -> None:
        task, model = self.task_of(index, BIDDING)
        reason = model.check_resolve(now())
        wanted = model.num_points
        data_offers, processing_offers = model.offers(DATA), model.offers(PROCESSING)
        data = best_effort(data_offers, wanted)
        processing = best_effort(processing_offers, wanted)
        data_cost = side_cost(data_offers, wanted)
        epoch_cost = side_cost(processing_offers, wanted)
        data_ok = data_cost is not None and data_cost <= model.data_budget
        if reason is None and mutate == 0:
            # a wrong allocation; a processing one is only checked once the data side passes
            if pick % 2 == 0 and data_cost is not None:
                candidates = mutants(data_offers, wanted)
                mutant = candidates[pick // 2 % len(candidates)]
                data, reason = mutant.fills, mutant.reason
            elif data_ok and epoch_cost is not None:
                candidates = mutants(processing_offers, wanted)
                mutant = candidates[pick // 2 % len(candidates)]
                processing, reason = mutant.fills, mutant.reason
        if reason is None:
            if data_cost is None:
                reason = "market: fills must sum to num_points"
            elif not data_ok:
                reason = "market: over data budget"
            elif epoch_cost is None:
                reason = "market: fills must sum to num_points"
            elif epoch_cost * model.max_epochs > model.processing_budget:
                reason = "market: over processing budget"
        if reason is None:
            # what a client would submit
            allocation = allocate(
                data_offers,
                processing_offers,
                num_points=wanted,
                max_epochs=model.max_epochs,
                data_budget=model.data_budget,
                processing_budget=model.processing_budget,
            )
            assert (data, processing) == (
                [f.as_tuple() for f in allocation.data],
                [f.as_tuple() for f in allocation.processing],
            )
        self.expect(reason, self.market.resolve, task, data, processing, sender=self.account(who))
        if reason is None:
            model.resolve(data, processing, now())

    @precondition(lambda self: any(not t.is_over() for t in self.tasks))
    @rule(index=tasks_, picks=st.lists(st.integers(0, 2**16), min_size=1, max_size=4))
    def advance(self, index: int, picks: list[int]) -> None:
        """The next steps of the usual course of a task, so that runs get past bidding and
        spend their time in the epochs."""
        live = [i for i, t in enumerate(self.tasks) if not t.is_over()]
        task = live[index % len(live)]
        for pick in picks:
            self.advance_once(task, pick)

    def advance_once(self, task: int, pick: int) -> None:
        model = self.tasks[task]
        if model.state == BIDDING:
            if now() <= model.bidding_deadline:
                # top up a side that offers too few points, from someone without a bid there
                for side in (DATA, PROCESSING):
                    short = model.num_points - sum(o.amount for o in model.offers(side))
                    free = [
                        i
                        for i, a in enumerate(self.accounts)
                        if model.open_bid(side, a) is None
                        and (side == DATA or a != model.requester)
                    ]
                    if short > 0 and free:
                        self.bid(task, free[pick % len(free)], side, short, 1 + pick % 3)
            travel_to(max(now(), model.bidding_deadline + 1))
            self.resolve(task, pick % NUM_ACCOUNTS, 1, pick)
        elif model.state == ASSIGNING:
            self.commit_assignment(task, 0, 1)
        elif model.state == TRAINING:
            # a whole epoch: some results (maybe late), then a close (maybe with a flag)
            bits = [pick >> i & 1 for i in range(16)]
            if bits[0] and bits[1]:
                travel_to(max(now(), model.deadline + 1))
            # processors are named by their place among the winners (see `pick`)
            winners = model.winners(PROCESSING)
            for n, i in enumerate(model.active()):
                if i not in model.submitted() and (bits[2 + n % 8] or bits[10]):
                    self.submit_result(task, winners.index(i), 0)
            if bits[11] and bits[12]:
                travel_to(max(now(), model.deadline + 1))
            active = model.active()
            flagged = [active[pick % len(active)]] if bits[13] and active else []
            go_on = 1 - bits[15] * bits[3]
            self.close_epoch(task, 0, 1, [winners.index(i) for i in flagged], go_on, 0)

    @precondition(lambda self: self.any_in(BIDDING))
    @rule(index=tasks_, who=accounts_, as_requester=st.integers(0, 3))
    def cancel(self, index: int, who: int, as_requester: int) -> None:
        task, model = self.task_of(index, BIDDING)
        caller = model.requester if as_requester == 0 else self.account(who)
        self.expect(model.cancel(caller), self.market.cancel, task, sender=caller)

    @precondition(lambda self: self.any_in(ASSIGNING))
    @rule(index=tasks_, who=accounts_, as_requester=st.integers(0, 4))
    def commit_assignment(self, index: int, who: int, as_requester: int) -> None:
        task, model = self.task_of(index, ASSIGNING)
        caller = model.requester if as_requester else self.account(who)
        reason = model.commit_assignment(caller, now())
        self.expect(reason, self.market.commit_assignment, task, ASSIGNMENT_HASH, sender=caller)

    @precondition(lambda self: self.any_in(ASSIGNING, TRAINING))
    @rule(index=tasks_, who=st.integers(0, 4 * NUM_ACCOUNTS - 1))
    def commit_data(self, index: int, who: int) -> None:
        task, model = self.task_of(index, ASSIGNING, TRAINING)
        owner = self.pick(model, DATA, who)
        self.expect(
            model.commit_data(owner), self.market.commit_data, task, digest(who), sender=owner
        )

    @precondition(lambda self: self.any_in(TRAINING))
    @rule(
        index=tasks_, who=st.integers(0, 4 * NUM_ACCOUNTS - 1), shift=st.sampled_from([0, 0, 0, 1])
    )
    def submit_result(self, index: int, who: int, shift: int) -> None:
        task, model = self.task_of(index, TRAINING)
        processor = self.pick(model, PROCESSING, who)
        epoch = model.epoch + shift
        reason, pay = model.submit_result(processor, epoch, now())
        self.expect(reason, self.market.submit_result, task, epoch, digest(epoch), sender=processor)
        if reason is None:
            (submitted,) = [
                e for e in self.market.get_logs() if type(e).__name__ == "ResultSubmitted"
            ]
            assert submitted.pay == pay

    @precondition(lambda self: self.any_in(TRAINING))
    @rule(
        index=tasks_,
        who=accounts_,
        as_requester=st.integers(0, 4),
        flagged=st.lists(st.integers(0, 4 * NUM_ACCOUNTS - 1), max_size=2),
        go_on=st.integers(0, 3),
        shift=st.sampled_from([0, 0, 0, 1]),
    )
    def close_epoch(
        self, index: int, who: int, as_requester: int, flagged: list[int], go_on: int, shift: int
    ) -> None:
        task, model = self.task_of(index, TRAINING)
        caller = self.account(who) if as_requester == 0 else model.requester
        epoch = model.epoch + shift
        addresses = [self.pick(model, PROCESSING, i) for i in flagged]
        reason = model.close_epoch(caller, epoch, addresses, go_on > 0, now())
        self.expect(
            reason, self.market.close_epoch, task, epoch, addresses, go_on > 0, sender=caller
        )
        if reason is None and addresses:
            event("close_epoch: slashed")

    @precondition(lambda self: self.any_in(BIDDING, ASSIGNING, TRAINING))
    @rule(index=tasks_, who=st.integers(0, 4 * NUM_ACCOUNTS - 1))
    def claim_timeout(self, index: int, who: int) -> None:
        task, model = self.task_of(index, BIDDING, ASSIGNING, TRAINING)
        caller = self.pick(model, PROCESSING, who)
        self.expect(
            model.claim_timeout(caller, now()), self.market.claim_timeout, task, sender=caller
        )

    @precondition(lambda self: self.tasks)
    @rule(index=tasks_, who=accounts_)
    def claim(self, index: int, who: int) -> None:
        task, model = self.task_of(index, ASSIGNING, TRAINING, FINISHED, CANCELLED)
        account = self.account(who)
        key = (task, account)
        owed = model.entitlement(account) - self.task_credited.get(key, 0)
        assert owed >= 0, "the model's entitlement went down"
        assert self.expect(None, self.market.claim, task, account) == owed
        self.task_credited[key] = self.task_credited.get(key, 0) + owed
        self.credited[account] += owed
        assert self.market.credited(task, account) == self.task_credited[key]
        self.check_account(account)

    @precondition(lambda self: self.tasks)
    @rule(who=accounts_)
    def withdraw(self, who: int) -> None:
        account = self.account(who)
        amount = self.credited[account] - self.withdrawn[account]
        reason = None if amount > 0 else "market: nothing to withdraw"
        got = self.expect(reason, self.market.withdraw, sender=account)
        if reason is None:
            assert got == amount
            self.withdrawn[account] += amount
        self.check_account(account)

    @precondition(lambda self: self.tasks)
    @rule(index=tasks_, who=accounts_)
    def collect(self, index: int, who: int) -> None:
        """claim(task, caller) and withdraw() in one call."""
        task, model = self.task_of(index, ASSIGNING, TRAINING, FINISHED, CANCELLED)
        account = self.account(who)
        key = (task, account)
        owed = model.entitlement(account) - self.task_credited.get(key, 0)
        amount = self.credited[account] - self.withdrawn[account] + owed
        reason = None if amount > 0 else "market: nothing to withdraw"
        got = self.expect(reason, self.market.collect, task, sender=account)
        if reason is None:
            assert got == amount
            self.task_credited[key] = self.task_credited.get(key, 0) + owed
            self.credited[account] += owed
            self.withdrawn[account] += amount
        self.check_account(account)

    @precondition(lambda self: self.tasks)
    @rule(
        index=tasks_,
        which=st.sampled_from(["bidding", "clock", "grace", "sleep"]),
        offset=st.sampled_from([-1, 0, 1, 59, 600]),
    )
    def travel(self, index: int, which: str, offset: int) -> None:
        """Forward to a task's deadline (or its end of grace) give or take a second, or sleep."""
        model = self.tasks[index % len(self.tasks)]
        if which == "bidding":
            target = model.bidding_deadline + offset
        elif which == "clock":
            target = model.deadline + offset
        elif which == "grace":
            target = max(model.bidding_deadline, model.deadline) + GRACE + offset
        else:
            target = now() + abs(offset)
        travel_to(max(now(), target))

    @precondition(lambda self: any(t.is_over() for t in self.tasks))
    @rule(index=tasks_)
    def settle_a_finished_task(self, index: int) -> None:
        over = [i for i, t in enumerate(self.tasks) if t.is_over()]
        task = over[index % len(over)]
        for who in range(NUM_ACCOUNTS):
            self.claim(task, who)
        model = self.tasks[task]
        # everything is paid out but the dust, and nobody gained or lost more than the model says
        assert self.market.liabilities(task) == model.dust
        paid_out = sum(v for (t, _), v in self.task_credited.items() if t == task)
        assert paid_out + model.refunded == model.paid_in - model.dust
        event("settled a finished task")

    # ------------------------------------------------------------ invariants

    @invariant()
    def market_holds_liabilities_plus_credits(self) -> None:
        liabilities = sum(self.market.liabilities(t) for t in range(len(self.tasks)))
        total_claimable = self.market.total_claimable()
        assert self.token.balanceOf(self.market) == liabilities + total_claimable
        # each account's claimable is checked against the books whenever it changes
        assert total_claimable == sum(self.credited.values()) - sum(self.withdrawn.values())

    @invariant()
    def touched_tasks_match_the_model(self) -> None:
        for task in sorted(self.touched):
            model = self.tasks[task]
            clock = self.market.clock_of(task)
            assert clock.state == model.state
            if model.state == TRAINING:
                assert (clock.epoch, clock.deadline) == (model.epoch, model.deadline)
                assert (clock.spent, clock.active) == (model.spent(), len(model.active()))
            assert self.market.dust(task) == model.dust
            paid_out = sum(v for (t, _), v in self.task_credited.items() if t == task)
            assert self.market.liabilities(task) == model.paid_in - model.refunded - paid_out
            for a in self.accounts:
                # owed never underflows: the entitlement never falls below what was credited
                owed = self.market.owed(task, a)
                assert owed + self.task_credited.get((task, a), 0) == model.entitlement(a)
        self.touched.clear()


def side_cost(offers: Any, wanted: int) -> int | None:
    try:
        return cost(offers, greedy_fills(offers, wanted))
    except InfeasibleAllocation:
        return None


def test_market_state_machine(market: Any, token: Any, everyone: list[str]) -> None:
    MarketMachine.market = market
    MarketMachine.token = token
    MarketMachine.accounts = everyone[:NUM_ACCOUNTS]
    run_state_machine_as_test(
        MarketMachine,
        settings=settings(
            max_examples=50,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
