"""A plain-Python reference model of one market task: Market.vy's rules, restated.

It restates the rules of Market.vy's docstrings and docs/contracts.md the slow, explicit
way (every slash records who shares its pool; entitlements are summed from scratch) instead
of the contract's packed words and accumulators. Each action first returns the revert reason
the contract must give, in the contract's order of checks, or None and applies the effect.

The contract's stateful test (tests/chain/contracts/test_market_stateful.py) checks Market.vy
against it after every step of random call sequences; ``fedmarket.chain.memory`` builds an
in-memory ledger on it for simulations at scale, so what that ledger decides is what the
contract decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedmarket.chain.allocation import Offer

BPS = 10_000
MAX_BIDS = 128  # per side; Market.vy's MAX_BIDS
DATA, PROCESSING = 0, 1  # Side
NO_TASK, BIDDING, ASSIGNING, TRAINING, FINISHED, CANCELLED = range(6)  # TaskState

Share = tuple[int, int]  # (side, bid index): one winning bid's share of a slashed pool


@dataclass
class BidModel:
    bidder: str
    amount: int  # points, or capacity per epoch; the original amount even once withdrawn
    price: int
    withdrawn: bool = False
    fill: int = 0  # > 0 for a winner


@dataclass
class Split:
    """One slash: `share` to each of `recipients`, the remainder to dust."""

    share: int
    recipients: list[Share]


@dataclass
class TaskModel:
    requester: str
    num_points: int
    epoch_seconds: int
    max_epochs: int
    data_budget: int
    processing_budget: int
    bidding_deadline: int
    late_penalty_bps: int
    grace: int
    state: int = BIDDING
    bids: tuple[list[BidModel], list[BidModel]] = field(default_factory=lambda: ([], []))
    epoch: int = 0
    deadline: int = 0
    first_closed: bool = False
    committed: set[int] = field(default_factory=set)  # data bids with a root
    pay: dict[tuple[int, int], int] = field(default_factory=dict)  # (bid, epoch) -> pay
    forfeited: set[tuple[int, int]] = field(default_factory=set)  # (bid, epoch)
    slashed: set[int] = field(default_factory=set)
    splits: list[Split] = field(default_factory=list)
    dust: int = 0
    paid_in: int = 0  # budgets and stakes pulled in
    refunded: int = 0  # stakes credited back by withdrawn processing bids

    # ------------------------------------------------------------ queries

    def open_bid(self, side: int, who: str) -> int | None:
        for index, bid in enumerate(self.bids[side]):
            if bid.bidder == who and not bid.withdrawn:
                return index
        return None

    def offers(self, side: int) -> list[Offer]:
        return [
            Offer(i, 0 if b.withdrawn else b.amount, b.price) for i, b in enumerate(self.bids[side])
        ]

    def stake(self, bid: BidModel) -> int:
        return bid.amount * bid.price * self.max_epochs

    def winners(self, side: int) -> list[int]:
        return [i for i, b in enumerate(self.bids[side]) if b.fill > 0]

    def active(self) -> list[int]:
        return [i for i in self.winners(PROCESSING) if i not in self.slashed]

    def submitted(self) -> list[int]:
        return [i for i in self.active() if (i, self.epoch) in self.pay]

    def is_over(self) -> bool:
        return self.state in (FINISHED, CANCELLED)

    def is_winner(self, who: str) -> bool:
        return any(
            (i := self.open_bid(side, who)) is not None and self.bids[side][i].fill > 0
            for side in (DATA, PROCESSING)
        )

    def pay_for(self, bid: int, late: bool) -> int:
        full = self.bids[PROCESSING][bid].fill * self.bids[PROCESSING][bid].price
        return full * (BPS - self.late_penalty_bps) // BPS if late else full

    def spent(self) -> int:
        """Processing pay accrued, forfeited pay included (it went to the slash pool)."""
        return sum(self.pay.values())

    def data_paid(self) -> int:
        if not self.first_closed:
            return 0
        return sum(self.bids[DATA][i].fill * self.bids[DATA][i].price for i in self.committed)

    def shares_of(self, key: Share) -> int:
        return sum(s.share for s in self.splits if key in s.recipients)

    def entitlement(self, who: str) -> int:
        """Everything `who` has earned from this task so far (what claims add up to)."""
        total = 0
        if who == self.requester:
            if self.state == CANCELLED:
                total += self.data_budget + self.processing_budget
            elif self.state == FINISHED:
                total += self.data_budget - self.data_paid()
                total += self.processing_budget - self.spent()
        d = self.open_bid(DATA, who)
        if d is not None and self.state in (ASSIGNING, TRAINING, FINISHED):
            bid = self.bids[DATA][d]
            if bid.fill > 0:
                if self.first_closed and d in self.committed:
                    total += bid.fill * bid.price
                total += self.shares_of((DATA, d))
        p = self.open_bid(PROCESSING, who)
        if p is not None and self.state >= ASSIGNING:
            bid = self.bids[PROCESSING][p]
            if self.state == CANCELLED or bid.fill == 0:
                total += self.stake(bid)
            else:
                # excess capacity is never at stake
                total += (bid.amount - bid.fill) * bid.price * self.max_epochs
                for (index, epoch), amount in self.pay.items():
                    closed = self.state == FINISHED or epoch < self.epoch
                    if index == p and closed and (index, epoch) not in self.forfeited:
                        total += amount
                total += self.shares_of((PROCESSING, p))
                if self.state == FINISHED and p not in self.slashed:
                    total += bid.fill * bid.price * self.max_epochs
        return total

    # ------------------------------------------------------------ actions

    def bid(self, side: int, who: str, amount: int, price: int, now: int) -> str | None:
        if side == PROCESSING:
            if who == self.requester:
                return "market: requester cannot process its own task"
            if price == 0:
                return "market: processing price must be positive"
        if self.state != BIDDING:
            return "market: task is not taking bids"
        if now > self.bidding_deadline:
            return "market: bidding closed"
        if self.open_bid(side, who) is not None:
            return "market: already bid"
        if len(self.bids[side]) >= MAX_BIDS:
            return "market: too many bids"
        bid = BidModel(who, amount, price)
        self.bids[side].append(bid)
        if side == PROCESSING:
            self.paid_in += self.stake(bid)
        return None

    def withdraw_bid(self, side: int, who: str, now: int) -> tuple[str | None, int]:
        if self.state != BIDDING:
            return "market: task is not taking bids", 0
        if now > self.bidding_deadline:
            return "market: bidding closed", 0
        index = self.open_bid(side, who)
        if index is None:
            return "market: no open bid", 0
        bid = self.bids[side][index]
        bid.withdrawn = True
        refund = self.stake(bid) if side == PROCESSING else 0
        self.refunded += refund
        return None, refund

    def check_resolve(self, now: int) -> str | None:
        if self.state != BIDDING:
            return "market: task is not in bidding"
        if now <= self.bidding_deadline:
            return "market: bidding still open"
        return None

    def resolve(self, data: list[tuple[int, int]], processing: list[tuple[int, int]], now: int):
        """Apply an allocation the contract accepted."""
        for side, fills in ((DATA, data), (PROCESSING, processing)):
            for index, amount in fills:
                self.bids[side][index].fill = amount
        self.state = ASSIGNING
        self.deadline = now + self.epoch_seconds

    def cancel(self, who: str) -> str | None:
        if who != self.requester:
            return "market: only the requester"
        if self.state != BIDDING:
            return "market: task is not in bidding"
        self.state = CANCELLED
        return None

    def commit_assignment(self, who: str, now: int) -> str | None:
        if who != self.requester:
            return "market: only the requester"
        if self.state != ASSIGNING:
            return "market: task is not awaiting an assignment"
        self.state = TRAINING
        self.deadline = now + self.epoch_seconds
        return None

    def commit_data(self, who: str) -> str | None:
        if self.state not in (ASSIGNING, TRAINING) or self.first_closed:
            return "market: data commitments are closed"
        index = self.open_bid(DATA, who)
        if index is None:
            return "market: not a data owner of this task"
        if self.bids[DATA][index].fill == 0:
            return "market: not a winning data owner"
        if index in self.committed:
            return "market: data already committed"
        self.committed.add(index)
        return None

    def submit_result(self, who: str, epoch: int, now: int) -> tuple[str | None, int]:
        if self.state != TRAINING:
            return "market: task is not training", 0
        if epoch != self.epoch:
            return "market: not the current epoch", 0
        index = self.open_bid(PROCESSING, who)
        if index is None:
            return "market: not a processor of this task", 0
        if self.bids[PROCESSING][index].fill == 0:
            return "market: not a winning processor", 0
        if index in self.slashed:
            return "market: processor was slashed", 0
        if (index, epoch) in self.pay:
            return "market: result already submitted", 0
        pay = self.pay_for(index, late=now > self.deadline)
        self.pay[(index, epoch)] = pay
        return None, pay

    def close_epoch(
        self, who: str, epoch: int, flagged: list[str], go_on: bool, now: int
    ) -> str | None:
        if who != self.requester:
            return "market: only the requester"
        if self.state != TRAINING:
            return "market: task is not training"
        if epoch != self.epoch:
            return "market: not the current epoch"
        if len(self.submitted()) != len(self.active()) and now <= self.deadline:
            return "market: epoch still running"
        to_slash: list[int] = []
        for address in flagged:
            index = self.open_bid(PROCESSING, address)
            if index is None:
                return "market: flagged address is not a processor"
            if self.bids[PROCESSING][index].fill == 0:
                return "market: flagged address is not a winning processor"
            if index in self.slashed or index in to_slash:
                return "market: processor already slashed"
            to_slash.append(index)
        for index in to_slash:
            self._slash(index)
        self.first_closed = True
        if not go_on or epoch + 1 >= self.max_epochs or not self.active():
            self.state = FINISHED
        else:
            self.epoch += 1
            self.deadline = now + self.epoch_seconds
        return None

    def _slash(self, index: int) -> None:
        bid = self.bids[PROCESSING][index]
        pool = bid.fill * bid.price * self.max_epochs
        if (index, self.epoch) in self.pay:
            pool += self.pay[(index, self.epoch)]
            self.forfeited.add((index, self.epoch))
        self.slashed.add(index)
        # every other winning bid, except the requester's own data bid
        recipients: list[Share] = [
            (DATA, i) for i in self.winners(DATA) if self.bids[DATA][i].bidder != self.requester
        ]
        recipients += [(PROCESSING, i) for i in self.active()]
        share = pool // len(recipients) if recipients else 0
        self.splits.append(Split(share, recipients))
        self.dust += pool - share * len(recipients)

    def claim_timeout(self, who: str, now: int) -> str | None:
        if self.state == BIDDING:
            if now <= self.bidding_deadline + self.grace:
                return "market: not timed out yet"
            self.state = CANCELLED
            return None
        if self.state not in (ASSIGNING, TRAINING):
            return "market: task is over"
        if now <= self.deadline + self.grace:
            return "market: not timed out yet"
        if not self.is_winner(who):
            return "market: only a winner can claim a timeout"
        if self.state == TRAINING:
            self.first_closed = True
        self.state = FINISHED
        return None
