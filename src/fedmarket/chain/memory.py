"""An in-memory ledger with the market's client interface, for simulations at scale.

``MemoryMarket`` and ``MemoryToken`` answer the same calls as ``MarketClient`` and
``TokenClient`` (same arguments, same receipts and typed events, same ``ContractRevert``
reasons), but every rule comes from the contract's reference model
(``fedmarket.chain.reference.TaskModel``), which the contract's stateful test checks Market.vy
against after every step of random call sequences. So a task played on this ledger makes the
decisions it would make on chain, without an EVM: the plaintext twin of the integrity
benchmark settles here. ``tests/chain/test_memory.py`` plays whole tasks on both and compares.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from fedmarket.chain import allocation
from fedmarket.chain.allocation import Allocation, Fill, Offer
from fedmarket.chain.client import (
    BidView,
    Clock,
    GasLog,
    Receipt,
    Side,
    Solvency,
    Task,
    TaskState,
)
from fedmarket.chain.events import (
    AssignmentCommitted,
    BidPlaced,
    BidWithdrawn,
    Claimed,
    DataCommitted,
    EpochClosed,
    Event,
    ProcessorSlashed,
    ResultSubmitted,
    TaskCancelled,
    TaskCreated,
    TaskFinished,
    TaskResolved,
    TimeoutClaimed,
    Transfer,
    Withdrawn,
)
from fedmarket.chain.reference import (
    ASSIGNING,
    CANCELLED,
    DATA,
    FINISHED,
    PROCESSING,
    TRAINING,
    BidModel,
    TaskModel,
)
from fedmarket.errors import ChainError, ContractRevert

E = TypeVar("E", bound=Event)
MAX_FLAGGED = 16
GENESIS = 1_700_000_000


@dataclass
class _Extra:
    """What the reference model leaves out because the money does not depend on it."""

    spec_hash: bytes
    context_hash: bytes
    assignment_hash: bytes = bytes(32)
    data_roots: dict[int, bytes] = field(default_factory=dict)


@dataclass
class Ledger:
    """The shared state: a clock, token balances, the market's tasks, and the event log."""

    grace: int
    now: int = GENESIS
    block: int = 1
    balances: dict[str, int] = field(default_factory=dict)
    allowances: dict[tuple[str, str], int] = field(default_factory=dict)
    tasks: list[TaskModel] = field(default_factory=list)
    extra: list[_Extra] = field(default_factory=list)
    credited: dict[tuple[int, str], int] = field(default_factory=dict)
    claimable: dict[str, int] = field(default_factory=dict)
    log: list[tuple[int, Event]] = field(default_factory=list)
    gas_log: GasLog = field(default_factory=GasLog)
    _hashes: itertools.count[int] = field(default_factory=itertools.count)

    def mine(self, events: Sequence[Event], function: str, value: Any) -> Receipt[Any]:
        """One transaction: a block one second after the last, its events logged."""
        self.block += 1
        self.now += 1
        self.log += [(self.block, e) for e in events]
        tx = "0x" + hashlib.sha256(f"tx{next(self._hashes)}".encode()).hexdigest()
        return Receipt(function, tx, self.block, 0, tuple(events), value)


def _key(address: str) -> str:
    return address.lower()


class MemoryToken:
    """An ERC-20 in memory (``TokenClient``'s interface)."""

    def __init__(self, ledger: Ledger, address: str, account: LocalAccount | None) -> None:
        self.ledger = ledger
        self.address = to_checksum_address(address)
        self.account = account

    def as_(self, account: LocalAccount) -> MemoryToken:
        return MemoryToken(self.ledger, self.address, account)

    @property
    def _me(self) -> str:
        assert self.account is not None
        return str(self.account.address)

    def mint(self, receiver: str, amount: int) -> Receipt[None]:
        b = self.ledger.balances
        b[_key(receiver)] = b.get(_key(receiver), 0) + amount
        event = Transfer(to_checksum_address("0x" + "00" * 20), to_checksum_address(receiver),
                         amount)  # fmt: skip
        return self.ledger.mine([event], "mint", None)

    def approve(self, spender: str, amount: int) -> Receipt[None]:
        self.ledger.allowances[(_key(self._me), _key(spender))] = amount
        return self.ledger.mine([], "approve", None)

    def transfer(self, receiver: str, amount: int) -> Receipt[None]:
        self.move(self._me, receiver, amount)
        return self.ledger.mine([], "transfer", None)

    def move(self, sender: str, receiver: str, amount: int) -> None:
        b = self.ledger.balances
        if b.get(_key(sender), 0) < amount:
            raise ContractRevert("insufficient balance", function="transfer")
        b[_key(sender)] -= amount
        b[_key(receiver)] = b.get(_key(receiver), 0) + amount

    def balance_of(self, account: str) -> int:
        return self.ledger.balances.get(_key(account), 0)

    def allowance(self, owner: str, spender: str) -> int:
        return self.ledger.allowances.get((_key(owner), _key(spender)), 0)

    def total_supply(self) -> int:
        return sum(self.ledger.balances.values())


class MemoryMarket:
    """Market.vy in memory (``MarketClient``'s interface), its rules from ``TaskModel``."""

    def __init__(
        self, ledger: Ledger, address: str, token: MemoryToken, account: LocalAccount | None
    ) -> None:
        self.ledger = ledger
        self.address = to_checksum_address(address)
        self._token = token
        self.account = account

    # ------------------------------------------------------------ plumbing

    def as_(self, account: LocalAccount) -> MemoryMarket:
        return MemoryMarket(self.ledger, self.address, self._token, account)

    @property
    def gas_log(self) -> GasLog:
        return self.ledger.gas_log

    @property
    def _me(self) -> str:
        assert self.account is not None
        return to_checksum_address(str(self.account.address))

    def _task(self, task: int, function: str) -> TaskModel:
        if not 0 <= task < len(self.ledger.tasks):
            raise ContractRevert("market: no such task", function=function)
        return self.ledger.tasks[task]

    @staticmethod
    def _check(reason: str | None, function: str) -> None:
        if reason:
            raise ContractRevert(reason, function=function)

    def _pull(self, sender: str, amount: int, function: str) -> None:
        allowed = self._token.allowance(sender, self.address)
        if allowed < amount or self._token.balance_of(sender) < amount:
            hint = "the token transfer failed: approve and fund first"
            raise ContractRevert("", function=function, hint=hint)
        self.ledger.allowances[(_key(sender), _key(self.address))] = allowed - amount
        self._token.move(sender, self.address, amount)

    def block_number(self) -> int:
        return self.ledger.block

    def now(self) -> int:
        """The timestamp the next transaction sees."""
        return self.ledger.now + 1

    # ------------------------------------------------------------ logs

    def logs(self, kind: type[E], *, task: int | None = None, from_block: int = 0) -> list[E]:
        out = []
        for block, event in self.ledger.log:
            if block < from_block or not isinstance(event, kind):
                continue
            if task is not None and getattr(event, "task", task) != task:
                continue
            out.append(event)
        return out

    # ------------------------------------------------------------ transactions

    def create_task(
        self,
        spec_hash: bytes,
        public_context_hash: bytes,
        num_points: int,
        epoch_seconds: int,
        max_epochs: int,
        data_budget: int,
        processing_budget: int,
        bidding_seconds: int,
        late_penalty_bps: int,
    ) -> Receipt[int]:
        f = "create_task"
        if spec_hash == bytes(32) or public_context_hash == bytes(32):
            raise ContractRevert("market: empty spec hash", function=f)
        for ok, why in (
            (num_points > 0, "market: bad num_points"),
            (epoch_seconds > 0, "market: bad epoch_seconds"),
            (max_epochs > 0, "market: bad max_epochs"),
            (bidding_seconds > 0, "market: bad bidding_seconds"),
            (late_penalty_bps <= 10_000, "market: penalty above 100%"),
        ):
            if not ok:
                raise ContractRevert(why, function=f)
        now = self.now()
        budget = data_budget + processing_budget
        self._pull(self._me, budget, f)
        model = TaskModel(
            requester=self._me,
            num_points=num_points,
            epoch_seconds=epoch_seconds,
            max_epochs=max_epochs,
            data_budget=data_budget,
            processing_budget=processing_budget,
            bidding_deadline=now + bidding_seconds,
            late_penalty_bps=late_penalty_bps,
            grace=self.ledger.grace,
        )
        model.paid_in = budget
        task = len(self.ledger.tasks)
        self.ledger.tasks.append(model)
        self.ledger.extra.append(_Extra(bytes(spec_hash), bytes(public_context_hash)))
        event = TaskCreated(task, to_checksum_address(self._me), bytes(spec_hash),
                            bytes(public_context_hash), num_points, data_budget,
                            processing_budget, model.bidding_deadline)  # fmt: skip
        return self.ledger.mine([event], f, task)

    def _bid(self, task: int, side: int, amount: int, price: int) -> Receipt[int]:
        f = "bid_data" if side == DATA else "bid_processing"
        model = self._task(task, f)
        if amount <= 0:
            raise ContractRevert("market: bad amount", function=f)
        paid_before = model.paid_in
        self._check(model.bid(side, self._me, amount, price, self.now()), f)
        stake = model.paid_in - paid_before
        if stake:
            try:
                self._pull(self._me, stake, f)
            except ContractRevert:
                model.bids[side].pop()
                model.paid_in = paid_before
                raise
        index = len(model.bids[side]) - 1
        event = BidPlaced(task, side, to_checksum_address(self._me), index, amount, price, stake)
        return self.ledger.mine([event], f, index)

    def bid_data(self, task: int, points: int, price_per_point: int) -> Receipt[int]:
        return self._bid(task, DATA, points, price_per_point)

    def bid_processing(
        self, task: int, capacity_per_epoch: int, price_per_point: int
    ) -> Receipt[int]:
        return self._bid(task, PROCESSING, capacity_per_epoch, price_per_point)

    def _withdraw_bid(self, task: int, side: int) -> Receipt[int]:
        f = "withdraw_data_bid" if side == DATA else "withdraw_processing_bid"
        model = self._task(task, f)
        index = model.open_bid(side, self._me)
        reason, refund = model.withdraw_bid(side, self._me, self.now())
        self._check(reason, f)
        assert index is not None
        if refund:
            c = self.ledger.claimable
            c[_key(self._me)] = c.get(_key(self._me), 0) + refund
        event = BidWithdrawn(task, side, to_checksum_address(self._me), index, refund)
        return self.ledger.mine([event], f, refund)

    def withdraw_data_bid(self, task: int) -> Receipt[None]:
        r = self._withdraw_bid(task, DATA)
        return Receipt(r.function, r.tx_hash, r.block_number, 0, r.events, None)

    def withdraw_processing_bid(self, task: int) -> Receipt[int]:
        return self._withdraw_bid(task, PROCESSING)

    def resolve(
        self, task: int, data_fills: Sequence[Fill], processing_fills: Sequence[Fill]
    ) -> Receipt[None]:
        f = "resolve"
        model = self._task(task, f)
        self._check(model.check_resolve(self.now()), f)
        expected = allocation.allocate(
            model.offers(DATA),
            model.offers(PROCESSING),
            num_points=model.num_points,
            max_epochs=model.max_epochs,
            data_budget=model.data_budget,
            processing_budget=model.processing_budget,
        )
        got = ([x.as_tuple() for x in data_fills], [x.as_tuple() for x in processing_fills])
        want = ([x.as_tuple() for x in expected.data], [x.as_tuple() for x in expected.processing])
        if got != want:
            raise ContractRevert("market: not the greedy allocation", function=f)
        model.resolve(got[0], got[1], self.now())
        event = TaskResolved(task, expected.data_cost, expected.processing_cost_per_epoch,
                             len(got[0]), len(got[1]), model.deadline)  # fmt: skip
        return self.ledger.mine([event], f, None)

    def resolve_greedy(self, task: int) -> Receipt[Allocation]:
        model = self._task(task, "resolve")
        self._check(model.check_resolve(self.now()), "resolve")
        chosen = allocation.allocate(
            model.offers(DATA),
            model.offers(PROCESSING),
            num_points=model.num_points,
            max_epochs=model.max_epochs,
            data_budget=model.data_budget,
            processing_budget=model.processing_budget,
        )
        r = self.resolve(task, chosen.data, chosen.processing)
        return Receipt(r.function, r.tx_hash, r.block_number, 0, r.events, chosen)

    def cancel(self, task: int) -> Receipt[None]:
        model = self._task(task, "cancel")
        self._check(model.cancel(self._me), "cancel")
        return self.ledger.mine(
            [TaskCancelled(task, to_checksum_address(self._me))], "cancel", None
        )

    def commit_assignment(self, task: int, assignment_hash: bytes) -> Receipt[None]:
        f = "commit_assignment"
        model = self._task(task, f)
        self._check(model.commit_assignment(self._me, self.now()), f)
        if assignment_hash == bytes(32):
            raise ContractRevert("market: empty assignment hash", function=f)
        self.ledger.extra[task].assignment_hash = bytes(assignment_hash)
        event = AssignmentCommitted(task, bytes(assignment_hash), model.deadline)
        return self.ledger.mine([event], f, None)

    def commit_data(self, task: int, root: bytes) -> Receipt[None]:
        f = "commit_data"
        model = self._task(task, f)
        self._check(model.commit_data(self._me), f)
        index = model.open_bid(DATA, self._me)
        assert index is not None
        self.ledger.extra[task].data_roots[index] = bytes(root)
        event = DataCommitted(task, to_checksum_address(self._me), bytes(root))
        return self.ledger.mine([event], f, None)

    def submit_result(self, task: int, epoch: int, digest: bytes) -> Receipt[None]:
        f = "submit_result"
        model = self._task(task, f)
        if digest == bytes(32):
            raise ContractRevert("market: empty digest", function=f)
        now = self.now()
        reason, pay = model.submit_result(self._me, epoch, now)
        self._check(reason, f)
        event = ResultSubmitted(task, epoch, to_checksum_address(self._me), bytes(digest),
                                now <= model.deadline, pay)  # fmt: skip
        return self.ledger.mine([event], f, None)

    def close_epoch(
        self, task: int, epoch: int, flagged: Sequence[str], go_on: bool
    ) -> Receipt[None]:
        f = "close_epoch"
        model = self._task(task, f)
        flagged = [to_checksum_address(a) for a in flagged]
        if len(flagged) > MAX_FLAGGED:
            raise ContractRevert("", function=f, hint="at most 16 processors flagged per call")
        splits = len(model.splits)
        before = {i: model.pay.get((i, epoch)) for i in model.winners(PROCESSING)}
        self._check(model.close_epoch(self._me, epoch, list(flagged), go_on, self.now()), f)
        events: list[Event] = []
        for split, who in zip(model.splits[splits:], flagged, strict=True):
            index = model.open_bid(PROCESSING, who)
            assert index is not None
            bid = model.bids[PROCESSING][index]
            stake = bid.fill * bid.price * model.max_epochs
            forfeited = before.get(index) or 0
            events.append(
                ProcessorSlashed(
                    task, epoch, to_checksum_address(who), forfeited, stake, split.share
                )
            )
        if model.state == FINISHED:
            events.append(TaskFinished(task, epoch + 1, False))
        go = model.state == TRAINING
        events.append(EpochClosed(task, epoch, go, len(flagged), model.deadline if go else 0))
        return self.ledger.mine(events, f, None)

    def claim_timeout(self, task: int) -> Receipt[None]:
        f = "claim_timeout"
        model = self._task(task, f)
        state, epoch = model.state, model.epoch
        self._check(model.claim_timeout(self._me, self.now()), f)
        events: list[Event] = []
        if model.state == CANCELLED:
            events.append(TaskCancelled(task, to_checksum_address(self._me)))
        else:
            if state == TRAINING:
                events.append(EpochClosed(task, epoch, False, 0, 0))
            events.append(TaskFinished(task, epoch + int(state == TRAINING), True))
        events.append(TimeoutClaimed(task, model.state, to_checksum_address(self._me)))
        return self.ledger.mine(events, f, None)

    def _claim(self, task: int, account: str) -> tuple[int, list[Event]]:
        owed = self.owed(task, account)
        if owed <= 0:
            return 0, []
        key = (task, _key(account))
        self.ledger.credited[key] = self.ledger.credited.get(key, 0) + owed
        c = self.ledger.claimable
        c[_key(account)] = c.get(_key(account), 0) + owed
        return owed, [Claimed(task, to_checksum_address(account), owed)]

    def _withdraw(self, function: str) -> tuple[int, list[Event]]:
        amount = self.ledger.claimable.get(_key(self._me), 0)
        if amount <= 0:
            raise ContractRevert("market: nothing to withdraw", function=function)
        self.ledger.claimable[_key(self._me)] = 0
        self._token.move(self.address, self._me, amount)
        return amount, [Withdrawn(to_checksum_address(self._me), amount)]

    def claim(self, task: int, account: str | None = None) -> Receipt[int]:
        self._task(task, "claim")
        owed, events = self._claim(task, to_checksum_address(account or self._me))
        return self.ledger.mine(events, "claim", owed)

    def withdraw(self) -> Receipt[int]:
        amount, events = self._withdraw("withdraw")
        return self.ledger.mine(events, "withdraw", amount)

    def collect(self, task: int) -> Receipt[int]:
        self._task(task, "collect")
        _, claimed = self._claim(task, self._me)
        amount, events = self._withdraw("collect")
        return self.ledger.mine(claimed + events, "collect", amount)

    # ------------------------------------------------------------ views

    def tasks(self, task: int) -> Task:
        model = self._task(task, "tasks")
        extra = self.ledger.extra[task]
        committed = sum(model.bids[DATA][i].fill * model.bids[DATA][i].price
                        for i in model.committed)  # fmt: skip
        shares = len([i for i in model.winners(DATA) if model.bids[DATA][i].bidder !=
                      model.requester]) + len(model.active())  # fmt: skip
        return Task(
            to_checksum_address(model.requester), extra.spec_hash, extra.context_hash,
            model.num_points, model.epoch_seconds, model.max_epochs, model.data_budget,
            model.processing_budget, model.bidding_deadline, model.late_penalty_bps,
            extra.assignment_hash, committed, shares,
        )  # fmt: skip

    def clock_of(self, task: int) -> Clock:
        model = self._task(task, "clock_of")
        training = model.state == TRAINING
        return Clock(
            TaskState(model.state),
            model.epoch,
            model.deadline,
            len(model.submitted()) if training else 0,
            len(model.active()) if model.state >= ASSIGNING else 0,
            int(model.first_closed),
            model.spent(),
        )

    def _view(self, task: int, side: int, index: int, bid: BidModel) -> BidView:
        model = self.ledger.tasks[task]
        earned = 0
        last = 0
        late = False
        if side == PROCESSING:
            for (i, epoch), amount in sorted(model.pay.items(), key=lambda kv: kv[0][1]):
                if i == index:
                    if (i, epoch) not in model.forfeited:
                        earned += amount
                    last = epoch + 1
                    late = amount < model.pay_for(i, late=False)
        return BidView(
            bidder=to_checksum_address(bid.bidder),
            amount=0 if bid.withdrawn else bid.amount,
            price=0 if bid.withdrawn else bid.price,
            winner=bid.fill > 0,
            fill=bid.fill,
            slashed=side == PROCESSING and index in model.slashed,
            earned=earned,
            last_submitted_epoch=last,
            last_late=late,
            data_root=self.ledger.extra[task].data_roots.get(index, bytes(32))
            if side == DATA
            else bytes(32),
        )

    def get_bid(self, task: int, side: Side | int, index: int) -> BidView:
        model = self._task(task, "get_bid")
        return self._view(task, int(side), index, model.bids[int(side)][index])

    def bids(self, task: int, side: Side | int) -> list[BidView]:
        model = self._task(task, "bids")
        return [self._view(task, int(side), i, b) for i, b in enumerate(model.bids[int(side)])]

    def bid_index(self, task: int, side: Side | int, account: str) -> int:
        model = self._task(task, "bid_index")
        index = model.open_bid(int(side), to_checksum_address(account))
        return 0 if index is None else index + 1

    def has_submitted(self, task: int, epoch: int, account: str) -> bool:
        model = self._task(task, "has_submitted")
        index = model.open_bid(PROCESSING, to_checksum_address(account))
        return index is not None and (index, epoch) in model.pay

    def owed(self, task: int, account: str) -> int:
        model = self._task(task, "owed")
        entitled = model.entitlement(to_checksum_address(account))
        return entitled - self.ledger.credited.get((task, _key(account)), 0)

    def claimable(self, account: str) -> int:
        return self.ledger.claimable.get(_key(account), 0)

    def liabilities(self, task: int) -> int:
        model = self._task(task, "liabilities")
        paid_out = sum(v for (t, _), v in self.ledger.credited.items() if t == task)
        return model.paid_in - model.refunded - paid_out

    def credited(self, task: int, account: str) -> int:
        return self.ledger.credited.get((task, _key(account)), 0)

    def total_claimable(self) -> int:
        return sum(self.ledger.claimable.values())

    def dust(self, task: int) -> int:
        return self._task(task, "dust").dust

    def num_bids(self, task: int, side: Side | int) -> int:
        return len(self._task(task, "num_bids").bids[int(side)])

    def num_tasks(self) -> int:
        return len(self.ledger.tasks)

    def grace_seconds(self) -> int:
        return self.ledger.grace

    def token(self) -> str:
        return self._token.address

    def solvency(self) -> Solvency:
        return Solvency(
            balance=self._token.balance_of(self.address),
            liabilities=sum(self.liabilities(t) for t in range(self.num_tasks())),
            total_claimable=self.total_claimable(),
        )


@dataclass
class MemoryChain:
    """A chain in memory: accounts (anvil's dev keys), a clock that moves on request."""

    accounts: list[LocalAccount]
    ledger: Ledger
    name: str = "memory"

    def timestamp(self) -> int:
        return self.ledger.now + 1

    def time_travel(self, seconds: int) -> None:
        if seconds < 0:
            raise ChainError("cannot travel back in time")
        self.ledger.now += seconds


def memory_chain(
    keys: Sequence[str], *, grace_seconds: int
) -> tuple[MemoryChain, MemoryMarket, MemoryToken]:
    """A fresh ledger with a market and its token, acting as the first account."""
    accounts = [Account.from_key(k) for k in keys]
    ledger = Ledger(grace=grace_seconds)
    token = MemoryToken(ledger, "0x" + "70" * 20, accounts[0])
    market = MemoryMarket(ledger, "0x" + "3a" * 20, token, accounts[0])
    return MemoryChain(accounts, ledger), market, token


__all__ = ["Ledger", "MemoryChain", "MemoryMarket", "MemoryToken", "Offer", "memory_chain"]
