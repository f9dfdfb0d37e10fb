"""A plain-Python reference model of the market: Market.vy's rules (with MarketSetup and
MarketCourt), restated the slow, explicit way.

Where the contract packs words and pays lazily (a counter of full epochs, an unpaid-pay
field), the model keeps every epoch's pay of every processor as its own entry, every slash
with its pool and recipients, every dispute as a record, and sums entitlements from scratch.
Each action checks in the contract's order and raises :class:`Revert` with the reason the
contract gives, or applies its effects and returns the events the contract emits (the typed
events of ``fedmarket.chain.events``) and its return value. A failed token pull is asked of
``funds`` before anything changes, so a reverted action leaves the model untouched.

``tests/chain/contracts/test_market_stateful.py`` checks Market.vy against this model after
every step of random call sequences (views, reverts, events, money); ``fedmarket.chain.memory``
builds the in-memory ledger of simulations on it, so what that ledger decides is what the
contract decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address

from fedmarket.chain import merkle
from fedmarket.chain.allocation import Offer
from fedmarket.chain.events import (
    AssignmentCommitted,
    BidEvicted,
    BidPlaced,
    BidWithdrawn,
    BlockUndelivered,
    Claimed,
    Collected,
    DataCommitted,
    DisputeOpened,
    DisputeResolved,
    DrawRetargeted,
    EpochClosed,
    EpochRoots,
    Event,
    LeafShown,
    ModelReleased,
    PanelDrawn,
    ProcessorSlashed,
    ReserveCredited,
    ReserveWithdrawn,
    RootSubmitted,
    ShareCredited,
    TaskCancelled,
    TaskCreated,
    TaskFinished,
    TaskReopened,
    TaskResolved,
    TimeoutClaimed,
    VoteCommitted,
    Withdrawn,
)
from fedmarket.chain.signing import SignedRoot

BPS = 10_000
MAX_BIDS = 128
MAX_DEPTH = 16
MAX_LOOKBACK = 512
MAX_BLOCKS = 256
MAX_REPORT = 32
PANEL, PANEL_MIN = 3, 2
MIN_FILL = 64
MAX_LOAD = 2  # a processor is assigned at most this many times its fill
MIN_BOND_BPS = 1_000
MAX_EPOCHS = 100_000
MAX_MONEY = 2**100
MAX_FLOOR = 2**85
MAX_POINTS = 2**48 - 1
MASK32 = 2**32 - 1
DATA, PROCESSING = 0, 1  # Side
NO_TASK, BIDDING, ASSIGNING, TRAINING, FINISHED, CANCELLED = range(6)  # TaskState
D_OPEN, D_DRAWN, D_RESOLVED = 1, 2, 3
UNOPENED, DISMISSED, CONVICTED, CLEARED, NO_VERDICT = 1, 2, 3, 4, 5
FAULT_UNOPENED, FAULT_PANEL = 1, 2
R_LATE, R_NOT_RECEIVED, R_UNDELIVERED, R_SLASH = 1, 2, 3, 4
ZERO_ADDRESS = "0x" + "00" * 20


class Revert(Exception):
    """What the contract would revert with."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def require(ok: bool, reason: str) -> None:
    if not ok:
        raise Revert(reason)


@dataclass
class Result:
    events: list[Event]
    value: Any = None


def _a(address: str) -> ChecksumAddress:
    return to_checksum_address(address)


# ---------------------------------------------------------------- state


@dataclass
class Bid:
    bidder: str
    amount: int  # points, or capacity per epoch
    price: int
    stake_floor: int = 0  # processing: the stake floor when it bid
    fill: int = 0
    winner: bool = False
    committed: bool = False  # data
    paid: bool = False  # data: pay collected
    slashed: bool = False  # processing
    refunded: bool = False  # the stake above the fill returned
    stake_done: bool = False
    undelivered: int = 0  # points reported undelivered (data: of its blocks; processing: to it)
    open_disputes: int = 0
    last_submitted: int = 0  # processing: epoch + 1 of its last direct root
    last_late: bool = False

    @property
    def stake_price(self) -> int:
        return max(self.price, self.stake_floor)

    @property
    def epoch_pay(self) -> int:
        return (self.fill - self.undelivered) * self.price


@dataclass
class Pay:
    """One processor's pay for one epoch, as its own entry."""

    amount: int  # what it is paid (late: after the penalty)
    full: bool  # relayed with the whole epoch (else sent directly)
    gross: int = 0  # direct roots: the pay before the penalty (what the requester spends)
    marked: bool = False  # "not received": moved to the reserve
    collected: bool = False
    forfeited: bool = False


@dataclass
class TaskM:
    requester: str
    num_points: int
    epoch_seconds: int
    max_epochs: int
    data_budget: int
    processing_budget: int
    bidding_deadline: int
    bidding_seconds: int
    late_penalty_bps: int
    dispute_bond_bps: int
    audit_fee: int
    min_fill: int
    floors: tuple[int, int, int]
    terms_hash: bytes
    state: int = BIDDING
    epoch: int = 0
    deadline: int = 0
    first_closed: bool = False
    full: bool = False  # the open epoch was relayed in full
    requester_paid: bool = False
    bids: tuple[dict[int, Bid], dict[int, Bid]] = field(default_factory=lambda: ({}, {}))
    # (side, slot) -> (bidder, stake floor) of the last bid placed there: an emptied slot keeps
    # them, as the contract's storage does
    slots: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    winners: tuple[set[int], set[int]] = field(default_factory=lambda: (set(), set()))
    active: set[int] = field(default_factory=set)
    assignment_root: bytes = bytes(32)
    book: merkle.EpochBook | None = None
    pays: dict[tuple[int, int], Pay] = field(default_factory=dict)  # (processor, epoch)
    shares: dict[int, int] = field(default_factory=dict)  # processor -> uncollected shares
    reported: set[tuple[int, int]] = field(default_factory=set)  # (processor, block)
    owner_reported: set[int] = field(default_factory=set)  # blocks whose owner lost their pay
    disputed: set[tuple[int, int, int]] = field(default_factory=set)  # (block, accused, epoch)
    liabilities: int = 0
    full_epochs: int = 0

    def open_bids(self, side: int) -> list[int]:
        return sorted(self.bids[side])

    def offers(self, side: int) -> list[Offer]:
        return [Offer(i, b.amount, b.price) for i, b in sorted(self.bids[side].items())]

    def stake(self, bid: Bid, points: int | None = None) -> int:
        return (bid.amount if points is None else points) * bid.stake_price * self.max_epochs

    def closed(self, epoch: int) -> bool:
        return epoch < self.epoch or self.state == FINISHED

    def spent(self) -> int:
        """Processing pay accrued: direct roots at once (penalty included), full epochs once
        closed, for the processors still active then."""
        total = 0
        for (_, e), p in self.pays.items():
            if not p.full:
                total += p.gross
            elif self.closed(e):
                total += p.amount
        return total

    def committed_cost(self) -> int:
        return sum(b.fill * b.price for i, b in self.bids[DATA].items() if b.committed)

    def undelivered_cost(self) -> int:
        return sum(b.undelivered * b.price for b in self.bids[DATA].values() if b.committed)


@dataclass
class DisputeM:
    task: int
    accuser: str
    accused: int
    owner_bid: int
    block_index: int
    epoch: int
    entry_index: int
    count: int
    open_block: int
    bond: int
    fee: int
    root: bytes
    state: int = D_OPEN
    panel: list[int] = field(default_factory=list)
    vote_deadline: int = 0
    votes: dict[int, bytes] = field(default_factory=dict)  # slot -> commitment
    shown: bytes = bytes(32)

    @property
    def block(self) -> int:
        return merkle.block_id(self.owner_bid, self.block_index)


# ---------------------------------------------------------------- the market


Funds = Callable[[str, int], bool]  # can `sender` pay `amount` into the market?


class MarketModel:
    """The whole market: its tasks, disputes, credits and reserve.

    ``beacon(block_number)`` is the hash the draw reads (the chain's ``blockhash``)."""

    def __init__(
        self,
        *,
        grace: int,
        reserve: str,
        draw_delay: int,
        domain: bytes,
        beacon: Callable[[int], bytes],
        trust_signatures: bool = False,
    ) -> None:
        self.grace = grace
        self.reserve = _a(reserve)
        self.draw_delay = draw_delay
        self.domain = domain
        self.beacon = beacon
        self.trust_signatures = trust_signatures
        self.tasks: list[TaskM] = []
        self.disputes: list[DisputeM] = []
        self.claimable: dict[str, int] = {}
        self.reserve_balance = 0

    # ------------------------------------------------------------ helpers

    def task(self, task: int) -> TaskM | None:
        return self.tasks[task] if 0 <= task < len(self.tasks) else None

    def _credit(self, account: str, amount: int) -> None:
        if amount:
            self.claimable[_a(account)] = self.claimable.get(_a(account), 0) + amount

    @property
    def total_claimable(self) -> int:
        return sum(self.claimable.values())

    def _to_reserve(
        self, task: int, t: TaskM, amount: int, reason: int, events: list[Event]
    ) -> None:
        if amount:
            t.liabilities -= amount
            self.reserve_balance += amount
            events.append(ReserveCredited(task, amount, reason))

    @staticmethod
    def _pull(funds: Funds, sender: str, amount: int) -> None:
        if amount and not funds(sender, amount):
            raise Revert("market: token transfer failed")

    # ------------------------------------------------------------ tasks

    def create_task(
        self,
        sender: str,
        now: int,
        funds: Funds,
        spec_hash: bytes,
        public_context_hash: bytes,
        num_points: int,
        epoch_seconds: int,
        max_epochs: int,
        data_budget: int,
        processing_budget: int,
        bidding_seconds: int,
        late_penalty_bps: int,
        dispute_bond_bps: int,
        audit_fee: int,
        min_fill: int,
        floors: tuple[int, int, int],
    ) -> Result:
        require(spec_hash != bytes(32), "market: empty spec hash")
        require(public_context_hash != bytes(32), "market: empty context hash")
        require(0 < num_points <= MAX_POINTS, "market: bad num_points")
        require(0 < epoch_seconds <= MASK32, "market: bad epoch_seconds")
        require(0 < max_epochs <= MAX_EPOCHS, "market: bad max_epochs")
        require(0 < bidding_seconds <= MASK32, "market: bad bidding_seconds")
        require(late_penalty_bps <= BPS, "market: penalty above 100%")
        require(MIN_BOND_BPS <= dispute_bond_bps <= BPS, "market: bad dispute bond")
        require(
            data_budget <= MAX_MONEY and processing_budget <= MAX_MONEY, "market: budget too large"
        )
        require(audit_fee <= MAX_MONEY, "market: audit fee too large")
        require(MIN_FILL <= min_fill <= num_points, "market: bad min_fill")
        require(all(f < MAX_FLOOR for f in floors), "market: floor too large")
        self._pull(funds, sender, data_budget + processing_budget)
        task = len(self.tasks)
        deadline = now + bidding_seconds
        floors3 = (floors[0], floors[1], floors[2])
        t = TaskM(
            _a(sender), num_points, epoch_seconds, max_epochs, data_budget, processing_budget,
            deadline, bidding_seconds, late_penalty_bps, dispute_bond_bps, audit_fee, min_fill,
            floors3, merkle.terms_hash(spec_hash, public_context_hash),
        )  # fmt: skip
        t.liabilities = data_budget + processing_budget
        t.book = merkle.EpochBook(task)
        self.tasks.append(t)
        event = TaskCreated(
            task, _a(sender), spec_hash, public_context_hash, num_points, epoch_seconds,
            max_epochs, data_budget, processing_budget, deadline, late_penalty_bps,
            dispute_bond_bps, audit_fee, min_fill, floors3,
        )  # fmt: skip
        return Result([event], task)

    def _place_bid(
        self, t: TaskM, task: int, side: int, sender: str, now: int, amount: int, price: int,
        stake: int, stake_floor: int, evict: int, events: list[Event],
    ) -> int:  # fmt: skip
        require(t.state == BIDDING, "market: task is not taking bids")
        require(now <= t.bidding_deadline, "market: bidding closed")
        bids = t.bids[side]
        if len(bids) < MAX_BIDS:
            index = min(set(range(MAX_BIDS)) - set(bids))
        else:
            require(evict != 0 and evict <= MAX_BIDS, "market: book full, name a bid to evict")
            index = evict - 1
            loser = bids[index]
            require(loser.price > price, "market: only a pricier bid can be evicted")
            refund = t.stake(loser) if side == PROCESSING else 0
            if refund:
                t.liabilities -= refund
                self._credit(loser.bidder, refund)
            events.append(BidEvicted(task, side, _a(loser.bidder), index, refund))
        bids[index] = Bid(_a(sender), amount, price, stake_floor)
        t.slots[(side, index)] = (_a(sender), stake_floor)
        events.append(BidPlaced(task, side, _a(sender), index, amount, price, stake))
        return index

    def bid_data(
        self, sender: str, now: int, funds: Funds, task: int, points: int, price: int, evict: int
    ) -> Result:
        t = self.task(task)
        min_fill = t.min_fill if t else 0
        require(min_fill <= points <= MAX_POINTS, "market: bad amount")
        require(price <= MAX_MONEY and points * price <= MAX_MONEY, "market: price too large")
        requester = t.requester if t else ZERO_ADDRESS
        if _a(sender) != requester:
            require(price >= (t.floors[2] if t else 0), "market: price below the floor")
        if t is None:
            raise Revert("market: task is not taking bids")
        events: list[Event] = []
        index = self._place_bid(t, task, DATA, sender, now, points, price, 0, 0, evict, events)
        return Result(events, index)

    def bid_processing(
        self, sender: str, now: int, funds: Funds, task: int, capacity: int, price: int, evict: int
    ) -> Result:
        t = self.task(task)
        requester = t.requester if t else ZERO_ADDRESS
        require(_a(sender) != requester, "market: requester cannot process its own task")
        require(price > 0, "market: processing price must be positive")
        require(0 < capacity <= MAX_POINTS, "market: bad amount")
        require(price <= MAX_MONEY, "market: price too large")
        floors = t.floors if t else (0, 0, 0)
        require(price >= floors[0], "market: price below the floor")
        max_epochs = t.max_epochs if t else 0
        stake = capacity * max(price, floors[1]) * max_epochs
        require(stake <= MAX_MONEY, "market: stake too large")
        if t is None:
            raise Revert("market: task is not taking bids")
        require(t.state == BIDDING, "market: task is not taking bids")
        require(now <= t.bidding_deadline, "market: bidding closed")
        if len(t.bids[PROCESSING]) >= MAX_BIDS:
            require(evict != 0 and evict <= MAX_BIDS, "market: book full, name a bid to evict")
            require(
                t.bids[PROCESSING][evict - 1].price > price,
                "market: only a pricier bid can be evicted",
            )
        self._pull(funds, sender, stake)
        events: list[Event] = []
        index = self._place_bid(
            t, task, PROCESSING, sender, now, capacity, price, stake, floors[1], evict, events
        )
        t.liabilities += stake
        return Result(events, index)

    def withdraw_bid(self, sender: str, now: int, task: int, side: int, index: int) -> Result:
        require(side <= PROCESSING, "market: side is 0 (data) or 1 (processing)")
        t = self.task(task)
        require(t is not None and t.state == BIDDING, "market: task is not taking bids")
        assert t is not None
        require(now + t.bidding_seconds // 4 <= t.bidding_deadline, "market: withdrawals closed")
        require(index < MAX_BIDS, "market: no such bid")
        bid = t.bids[side].get(index)
        require(bid is not None, "market: no open bid")
        assert bid is not None
        require(bid.bidder == _a(sender), "market: not this bid's bidder")
        refund = t.stake(bid) if side == PROCESSING else 0
        if refund:
            t.liabilities -= refund
            self._credit(sender, refund)
        del t.bids[side][index]
        return Result([BidWithdrawn(task, side, _a(sender), index, refund)], refund)

    # ------------------------------------------------------------ resolution

    @staticmethod
    def verify_side(
        open_bids: dict[int, Bid],
        side: int,
        fills: Sequence[tuple[int, int]],
        wanted: int,
        min_fill: int,
    ) -> tuple[int, int]:
        """(cost, points) of the greedy allocation ``fills``, or the contract's Revert."""
        selected: set[int] = set()
        total = cost = 0
        last_key = 0
        partial = False
        for bid, amount in fills:
            require(bid < MAX_BIDS and bid in open_bids, "market: no such open bid")
            b = open_bids[bid]
            require(amount != 0, "market: empty fill")
            require(amount <= b.amount, "market: fill exceeds bid")
            require(side == PROCESSING or amount >= min_fill, "market: fill below min_fill")
            key = (b.price << 8) | bid
            require(total == 0 or key > last_key, "market: fills not in (price, bid) order")
            require(not partial, "market: only the last fill may be partial")
            partial = amount < b.amount
            last_key = key
            total += amount
            cost += amount * b.price
            selected.add(bid)
        if side == PROCESSING or partial:
            require(total == wanted, "market: fills must sum to num_points")
        else:
            require(
                total <= wanted and total + min_fill > wanted,
                "market: fills must sum to num_points",
            )
        for i in sorted(set(open_bids) - selected):
            require((open_bids[i].price << 8) | i > last_key, "market: a cheaper bid was left out")
        return cost, total

    def resolve(
        self,
        sender: str,
        now: int,
        task: int,
        data: Sequence[tuple[int, int]],
        processing: Sequence[tuple[int, int]],
    ) -> Result:
        t = self.task(task)
        require(t is not None and t.state == BIDDING, "market: task is not in bidding")
        assert t is not None
        require(now > t.bidding_deadline, "market: bidding still open")
        data_cost, data_points = self.verify_side(
            t.bids[DATA], DATA, data, t.num_points, t.min_fill
        )
        require(data_cost <= t.data_budget, "market: over data budget")
        epoch_cost, _ = self.verify_side(
            t.bids[PROCESSING], PROCESSING, processing, t.num_points, 0
        )
        require(epoch_cost * t.max_epochs <= t.processing_budget, "market: over processing budget")
        for side, fills in ((DATA, data), (PROCESSING, processing)):
            for bid, amount in fills:
                t.bids[side][bid].fill = amount
                t.bids[side][bid].winner = True
            t.winners[side].clear()
            t.winners[side].update(b for b, _ in fills)
        t.active = {b for b, _ in processing}
        t.state = ASSIGNING
        t.deadline = now + t.epoch_seconds
        event = TaskResolved(
            task, data_cost, epoch_cost, data_points, len(data), len(processing), t.deadline
        )
        return Result([event])

    def reopen(
        self, sender: str, now: int, task: int, floors: tuple[int, int, int], bidding_seconds: int
    ) -> Result:
        t = self.task(task)
        require(t is not None and _a(sender) == t.requester, "market: only the requester")
        assert t is not None
        require(t.state == ASSIGNING, "market: task is not awaiting an assignment")
        require(0 < bidding_seconds <= MASK32, "market: bad bidding_seconds")
        require(
            all(new >= old for new, old in zip(floors, t.floors, strict=True)),
            "market: floors can only rise",
        )
        require(all(f < MAX_FLOOR for f in floors), "market: floor too large")
        events: list[Event] = []
        refunded = 0
        for side in (DATA, PROCESSING):
            for i in sorted(t.bids[side]):
                b = t.bids[side][i]
                if side == DATA:
                    below = b.price < floors[2] and b.bidder != t.requester
                else:
                    below = b.price < floors[0] or b.stake_price < floors[1]
                if below:
                    refund = t.stake(b) if side == PROCESSING else 0
                    if refund:
                        t.liabilities -= refund
                        self._credit(b.bidder, refund)
                    del t.bids[side][i]
                    refunded += 1
                    events.append(BidWithdrawn(task, side, _a(b.bidder), i, refund))
                else:
                    t.bids[side][i] = Bid(b.bidder, b.amount, b.price, b.stake_floor)
            t.winners[side].clear()
        t.active = set()
        t.floors = (floors[0], floors[1], floors[2])
        t.bidding_deadline = now + bidding_seconds
        t.bidding_seconds = bidding_seconds
        t.state = BIDDING
        t.deadline = 0
        events.append(TaskReopened(task, t.bidding_deadline, t.floors, refunded))
        return Result(events)

    def cancel(self, sender: str, task: int) -> Result:
        t = self.task(task)
        require(t is not None and _a(sender) == t.requester, "market: only the requester")
        assert t is not None
        require(t.state == BIDDING, "market: task is not in bidding")
        t.state = CANCELLED
        return Result([TaskCancelled(task, _a(sender))])

    # ------------------------------------------------------------ assignment and data

    def commit_data(
        self, sender: str, task: int, owner_bid: int, sizes: Sequence[int], digests: Sequence[bytes]
    ) -> Result:
        t = self.task(task)
        require(t is not None and t.state == ASSIGNING, "market: data commitments are closed")
        assert t is not None
        require(owner_bid < MAX_BIDS, "market: no such bid")
        b = t.bids[DATA].get(owner_bid)
        require(b is not None and b.bidder == _a(sender), "market: not this bid's bidder")
        assert b is not None
        require(b.winner, "market: not a winning data owner")
        require(not b.committed, "market: data already committed")
        require(len(sizes) == len(digests) and len(digests) > 0, "market: bad manifest")
        require(all(s > 0 for s in sizes), "market: empty block")
        require(sum(sizes) == b.fill, "market: manifest does not sum to the fill")
        b.committed = True
        return Result([DataCommitted(task, _a(sender), owner_bid, list(sizes), list(digests))])

    def commit_assignment(
        self,
        sender: str,
        now: int,
        task: int,
        records: Sequence[merkle.Record],
        model_digest: bytes,
    ) -> Result:
        t = self.task(task)
        require(t is not None and _a(sender) == t.requester, "market: only the requester")
        assert t is not None
        require(t.state == ASSIGNING, "market: task is not awaiting an assignment")
        require(model_digest != bytes(32), "market: empty model digest")
        seen: set[int] = set()
        for r in records:
            require(
                r.processor < MAX_BIDS and r.processor in t.active,
                "market: record of no winning processor",
            )
            require(r.processor not in seen, "market: two records for one processor")
            seen.add(r.processor)
            require(0 < r.count <= 2**MAX_DEPTH, "market: bad entry count")
            require(
                r.points <= MAX_LOAD * t.bids[PROCESSING][r.processor].fill,
                "market: assignment over the processor's load",
            )
        root = (
            merkle.Tree([merkle.record_leaf(task, r) for r in records]).root
            if records
            else bytes(32)
        )
        t.assignment_root = root
        t.state = TRAINING
        t.deadline = now + 2 * t.epoch_seconds
        assert t.book is not None
        t.book.release(0, model_digest)
        return Result([
            AssignmentCommitted(task, root, [r.processor for r in records],
                                [r.count for r in records],
                                [r.points for r in records], [r.subroot for r in records]),
            ModelReleased(task, 0, model_digest, t.deadline),
        ])  # fmt: skip

    def _check_entry(
        self, t: TaskM, task: int, processor: int, block: int, e: merkle.EntryProof
    ) -> None:
        require(e.record.processor == processor, "market: the record is another processor's")
        require(e.entry_index < e.record.count, "market: entry outside the processor's list")
        require(
            len(e.entry_proof) == merkle.depth(e.record.count), "market: bad entry proof length"
        )
        climbed = merkle.climb(merkle.entry_leaf(task, block, e.size), e.entry_index, e.entry_proof)
        require(climbed is not None, "market: index beyond the proof")
        require(climbed == e.record.subroot, "market: bad entry proof")
        top = merkle.climb(merkle.record_leaf(task, e.record), e.record_index, e.record_proof)
        require(top is not None, "market: index beyond the proof")
        require(top == t.assignment_root, "market: bad record proof")

    def report_undelivered(
        self,
        sender: str,
        task: int,
        processor: int,
        blocks: Sequence[tuple[int, int, merkle.EntryProof]],
    ) -> Result:
        t = self.task(task)
        require(
            t is not None and t.state == TRAINING and t.epoch == 0, "market: reports are closed"
        )
        assert t is not None
        require(processor < MAX_BIDS, "market: no such bid")
        p = t.bids[PROCESSING].get(processor)
        require(p is not None and p.bidder == _a(sender), "market: not this bid's bidder")
        assert p is not None
        require(p.winner and not p.slashed, "market: not an active processor")
        require(not t.full, "market: report before your first root")
        require(p.last_submitted == 0, "market: report before your first root")
        events: list[Event] = []
        cut = 0
        staged_reported: set[tuple[int, int]] = set()
        staged_owner: dict[int, int] = {}
        for owner_bid, index, entry in blocks:
            require(
                owner_bid < MAX_BIDS and owner_bid in t.winners[DATA],
                "market: not a winning data bid",
            )
            require(index <= MASK32, "market: bad block index")
            block = merkle.block_id(owner_bid, index)
            self._check_entry(t, task, processor, block, entry)
            key = (processor, block)
            require(
                key not in t.reported and key not in staged_reported,
                "market: block already reported",
            )
            staged_reported.add(key)
            if block not in t.owner_reported and block not in staged_owner:
                staged_owner[block] = entry.size
            cut += entry.size
            events.append(BlockUndelivered(task, processor, owner_bid, index, entry.size))
        t.reported |= staged_reported
        for block, size in staged_owner.items():
            t.owner_reported.add(block)
            o = t.bids[DATA][merkle.split_block_id(block)[0]]
            o.undelivered += min(size, o.fill - o.undelivered)
        p.undelivered += min(cut, p.fill - p.undelivered)
        return Result(events)

    # ------------------------------------------------------------ epochs

    def _signer(self, signed: SignedRoot, task: int, epoch: int, expected: str) -> bool:
        if self.trust_signatures:
            return True
        return (signed.signer(self.domain, task, epoch) or "").lower() == expected.lower()

    def relay_epoch(
        self, sender: str, now: int, task: int, epoch: int, signed: Sequence[SignedRoot]
    ) -> Result:
        t = self.task(task)
        require(t is not None and t.state == TRAINING, "market: task is not training")
        assert t is not None and t.book is not None
        require(epoch == t.epoch, "market: not the current epoch")
        require(now <= t.deadline, "market: late roots go one by one")
        require(
            self._submitted(t) == 0, "market: roots already recorded, relay the rest one by one"
        )
        order = sorted(t.active)
        roots = []
        for n, s in enumerate(signed):
            require(n < len(order), "market: more roots than active processors")
            i = order[n]
            require(s.root != bytes(32), "market: empty root")
            require(
                self._signer(s, task, epoch, t.bids[PROCESSING][i].bidder),
                "market: bad root signature",
            )
            roots.append((i, s.root))
        require(len(signed) == len(order), "market: an active processor is missing")
        for i, root in roots:
            t.pays[(i, epoch)] = Pay(t.bids[PROCESSING][i].epoch_pay, full=True)
            t.book.record(epoch, i, root)
        t.full = True
        bitmap = sum(1 << i for i in order)
        return Result([EpochRoots(task, epoch, bitmap, [r for _, r in roots])])

    def _submitted(self, t: TaskM) -> int:
        if t.full:
            return len(t.active)
        return sum(1 for i in t.active if t.bids[PROCESSING][i].last_submitted == t.epoch + 1)

    def submit_root(
        self, sender: str, now: int, task: int, epoch: int, processor: int, signed: SignedRoot
    ) -> Result:
        t = self.task(task)
        require(t is not None and t.state == TRAINING, "market: task is not training")
        assert t is not None and t.book is not None
        require(epoch == t.epoch, "market: not the current epoch")
        require(not t.full, "market: the epoch was relayed")
        require(signed.root != bytes(32), "market: empty root")
        require(processor < MAX_BIDS, "market: no such bid")
        p = t.bids[PROCESSING].get(processor)
        who = p.bidder if p is not None else ZERO_ADDRESS
        if _a(sender) != who:
            require(
                p is not None and self._signer(signed, task, epoch, who),
                "market: bad root signature",
            )
        require(p is not None and p.winner and not p.slashed, "market: not an active processor")
        assert p is not None
        require(p.last_submitted != epoch + 1, "market: root already submitted")
        pay = p.epoch_pay
        on_time = now <= t.deadline
        paid = pay if on_time else pay * (BPS - t.late_penalty_bps) // BPS
        t.pays[(processor, epoch)] = Pay(paid, full=False, gross=pay)
        p.last_submitted = epoch + 1
        p.last_late = not on_time
        t.book.record(epoch, processor, signed.root)
        events: list[Event] = [RootSubmitted(task, epoch, processor, signed.root, on_time, paid)]
        self._to_reserve(task, t, pay - paid, R_LATE, events)
        return Result(events)

    def _close(self, task: int, t: TaskM, events: list[Event]) -> None:
        if t.full:
            t.full_epochs += 1
        if not t.first_closed:
            t.first_closed = True
            self._to_reserve(task, t, t.undelivered_cost(), R_UNDELIVERED, events)

    def close_epoch(
        self,
        sender: str,
        now: int,
        task: int,
        epoch: int,
        next_model: bytes,
        go_on: bool,
        not_received: int,
    ) -> Result:
        t = self.task(task)
        require(t is not None and _a(sender) == t.requester, "market: only the requester")
        assert t is not None and t.book is not None
        require(t.state == TRAINING, "market: task is not training")
        require(epoch == t.epoch, "market: not the current epoch")
        require(
            self._submitted(t) == len(t.active) or now > t.deadline, "market: epoch still running"
        )
        events: list[Event] = []
        if not_received:
            require(not_received < 2**128, "market: not a winning processor")
            marked = [i for i in range(128) if not_received >> i & 1]
            require(
                all(i in t.winners[PROCESSING] for i in marked), "market: not a winning processor"
            )
            moved = 0
            for i in marked:
                pay = t.pays.get((i, epoch))
                if t.bids[PROCESSING][i].slashed or pay is None or pay.forfeited:
                    continue
                if pay.full and not t.full:
                    continue
                pay.marked = True
                moved += pay.amount
            self._to_reserve(task, t, moved, R_NOT_RECEIVED, events)
        self._close(task, t, events)
        t.book.closed = epoch + 1
        next_deadline = 0
        if not go_on or epoch + 1 >= t.max_epochs or not t.active:
            t.state = FINISHED
            t.deadline = now
            events.append(TaskFinished(task, epoch + 1, False))
        else:
            require(next_model != bytes(32), "market: empty model digest")
            t.epoch = epoch + 1
            t.full = False
            t.deadline = now + t.epoch_seconds
            next_deadline = t.deadline
            t.book.release(epoch + 1, next_model)
            events.append(ModelReleased(task, epoch + 1, next_model, next_deadline))
        events.append(EpochClosed(task, epoch, t.state == TRAINING, not_received, next_deadline))
        return Result(events)

    def claim_timeout(self, sender: str, now: int, task: int, side: int, index: int) -> Result:
        t = self.task(task)
        require(t is not None, "market: no such task")
        assert t is not None and t.book is not None
        events: list[Event] = []
        if t.state == BIDDING:
            require(now > t.bidding_deadline + self.grace, "market: not timed out yet")
            t.state = CANCELLED
            events.append(TaskCancelled(task, _a(sender)))
        else:
            require(t.state in (ASSIGNING, TRAINING), "market: task is over")
            require(now > t.deadline + self.grace, "market: not timed out yet")
            bid = t.bids[side].get(index) if side <= PROCESSING and index < MAX_BIDS else None
            require(
                bid is not None and bid.bidder == _a(sender) and bid.winner,
                "market: only a winner can claim a timeout",
            )
            closed = 0
            if t.state == TRAINING:
                self._close(task, t, events)
                t.book.closed = t.epoch + 1
                closed = t.epoch + 1
                events.append(EpochClosed(task, t.epoch, False, 0, 0))
            events.append(TaskFinished(task, closed, True))
            t.state = FINISHED
            t.deadline = now
        events.append(TimeoutClaimed(task, t.state, _a(sender)))
        return Result(events)

    # ------------------------------------------------------------ disputes

    def open_dispute(
        self, sender: str, now: int, block_number: int, funds: Funds, task: int, epoch: int,
        accused: int, owner_bid: int, block_index: int, entry: merkle.EntryProof,
        where: merkle.EpochProof,
    ) -> Result:  # fmt: skip
        t = self.task(task)
        require(t is not None and t.state in (TRAINING, FINISHED), "market: task is not training")
        assert t is not None and t.book is not None
        if t.state == FINISHED:
            require(now <= t.deadline + self.grace, "market: disputes are closed")
        require(accused < MAX_BIDS and owner_bid < MAX_BIDS, "market: no such bid")
        p = t.bids[PROCESSING].get(accused)
        require(p is not None and p.winner and not p.slashed, "market: not an active processor")
        assert p is not None
        require(block_index <= MASK32 and epoch <= MASK32, "market: bad block index")
        block = merkle.block_id(owner_bid, block_index)
        self._check_entry(t, task, accused, block, entry)
        # the accused's root, from the epoch's accumulator and the history of closed epochs
        acc = merkle.epoch_start(task, epoch, where.model_digest)
        found = bytes(32)
        for processor, root in where.roots:
            acc = merkle.root_step(acc, processor, root)
            if processor == accused and found == bytes(32):
                found = root
        h = merkle.history_step(where.history_before, acc)
        for a in where.later:
            h = merkle.history_step(h, a)
        require(h == t.book.history(), "market: epoch proof does not match the closed epochs")
        require(found != bytes(32), "market: the accused recorded no root that epoch")
        key = (block, accused, epoch)
        require(key not in t.disputed, "market: already disputed")
        require(p.open_disputes < 255, "market: too many open disputes")
        bond = max(t.stake(p, p.fill) * t.dispute_bond_bps // BPS, PANEL * t.audit_fee)
        require(bond <= MAX_MONEY, "market: bond too large")
        self._pull(funds, sender, bond)
        t.disputed.add(key)
        p.open_disputes += 1
        d = len(self.disputes)
        self.disputes.append(
            DisputeM(task, _a(sender), accused, owner_bid, block_index, epoch, entry.entry_index,
                     entry.record.count, block_number, bond, t.audit_fee, found)
        )  # fmt: skip
        t.liabilities += bond
        event = DisputeOpened(
            d, task, _a(sender), accused, epoch, owner_bid, block_index, entry.entry_index, bond
        )
        return Result([event], d)

    def draw(self, sender: str, now: int, block_number: int, dispute: int) -> Result:
        d = self.disputes[dispute] if 0 <= dispute < len(self.disputes) else None
        require(d is not None and d.state == D_OPEN, "market: not awaiting a draw")
        assert d is not None
        target = d.open_block + self.draw_delay
        require(block_number > target, "market: too early to draw")
        if block_number > target + 256:
            d.open_block = block_number
            return Result([DrawRetargeted(dispute, block_number)])
        t = self.tasks[d.task]
        seed = merkle.draw_seed(self.beacon(target), dispute)
        weights = [
            (i, t.bids[PROCESSING][i].epoch_pay)
            for i in sorted(t.active - {d.accused})
            if t.bids[PROCESSING][i].bidder != d.accuser and t.bids[PROCESSING][i].epoch_pay > 0
        ]
        picks = merkle.draw_panel(seed, weights, PANEL) if len(weights) >= PANEL_MIN else []
        d.panel = picks
        d.state = D_DRAWN
        d.vote_deadline = now + t.epoch_seconds + self.grace
        return Result([PanelDrawn(dispute, d.task, list(picks), d.vote_deadline)])

    def _owner_voter(self, t: TaskM, d: DisputeM) -> str | None:
        owner = t.bids[DATA][d.owner_bid].bidder if d.owner_bid in t.bids[DATA] else ZERO_ADDRESS
        accused = t.bids[PROCESSING][d.accused].bidder
        return None if owner == accused else owner

    def commit_vote(self, sender: str, now: int, dispute: int, commitment: bytes) -> Result:
        d = self.disputes[dispute] if 0 <= dispute < len(self.disputes) else None
        require(d is not None and d.state == D_DRAWN, "market: not drawn")
        assert d is not None
        require(d.shown == bytes(32), "market: the leaf is already shown")
        require(now <= d.vote_deadline, "market: voting is over")
        require(commitment != bytes(32), "market: empty commitment")
        t = self.tasks[d.task]
        slot = next(
            (n for n, i in enumerate(d.panel) if t.bids[PROCESSING][i].bidder == _a(sender)), 4
        )
        if slot == 4 and self._owner_voter(t, d) == _a(sender):
            slot = 3
        require(slot != 4, "market: not a voter of this dispute")
        require(slot not in d.votes, "market: already voted")
        d.votes[slot] = commitment
        return Result([VoteCommitted(dispute, _a(sender), commitment)])

    def show_leaf(
        self, sender: str, now: int, dispute: int, digest: bytes, proof: Sequence[bytes]
    ) -> Result:
        d = self.disputes[dispute] if 0 <= dispute < len(self.disputes) else None
        require(d is not None and d.state == D_DRAWN, "market: not drawn")
        assert d is not None
        require(d.shown == bytes(32), "market: the leaf is already shown")
        require(digest != bytes(32), "market: empty digest")
        all_voted = all(n in d.votes for n in range(len(d.panel)))
        require(now > d.vote_deadline or all_voted, "market: voting is open")
        require(now <= d.vote_deadline + self.grace, "market: too late to show")
        require(len(proof) == merkle.depth(d.count), "market: bad proof length")
        climbed = merkle.climb(
            merkle.result_leaf(d.task, d.epoch, d.block, digest), d.entry_index, proof
        )
        require(climbed is not None, "market: index beyond the proof")
        require(climbed == d.root, "market: not the committed leaf")
        d.shown = digest
        return Result([LeafShown(dispute, digest)])

    def _agree(self, dispute: int, d: DisputeM, value: bytes) -> tuple[int, list[int]]:
        t = self.tasks[d.task]
        agree = [
            n for n, i in enumerate(d.panel)
            if d.votes.get(n)
            == merkle.vote_commitment(dispute, t.bids[PROCESSING][i].bidder, value)
        ]  # fmt: skip
        return len(d.panel), agree

    def resolve_dispute(self, sender: str, now: int, dispute: int, value: bytes) -> Result:
        d = self.disputes[dispute] if 0 <= dispute < len(self.disputes) else None
        require(d is not None and d.state == D_DRAWN, "market: not drawn")
        assert d is not None
        t = self.tasks[d.task]
        show_deadline = d.vote_deadline + self.grace
        fees = to_accuser = to_accused = 0
        paid_voters: list[int] = []
        if d.shown == bytes(32):
            require(now > show_deadline, "market: the leaf can still be shown")
            outcome = UNOPENED
        elif d.shown == merkle.UNDELIVERED:
            outcome = DISMISSED if (d.accused, d.block) in t.reported else UNOPENED
        elif not d.panel:
            outcome = DISMISSED
        else:
            drawn, agree = self._agree(dispute, d, d.shown)
            convict: list[int] = []
            if value != d.shown:
                _, convict = self._agree(dispute, d, value)
            owner = self._owner_voter(t, d)
            veto = owner is not None and d.votes.get(3) == merkle.vote_commitment(
                dispute, owner, d.shown
            )
            if value != d.shown and drawn >= PANEL_MIN and len(convict) == drawn and not veto:
                outcome = CONVICTED
                fees = d.fee * drawn
                paid_voters = convict
            elif 2 * len(agree) > drawn:
                outcome = CLEARED
                fees = d.fee * len(agree)
                paid_voters = agree
            else:
                require(now > show_deadline, "market: no verdict yet")
                outcome = NO_VERDICT
        events: list[Event] = []
        if outcome == UNOPENED:
            to_accuser = d.bond
            self._slash(d.task, t, d.accused, FAULT_UNOPENED, events)
        elif outcome == DISMISSED:
            to_accused = d.bond
        elif outcome == CONVICTED:
            to_accuser = d.bond - fees
            self._slash(d.task, t, d.accused, FAULT_PANEL, events)
        elif outcome == CLEARED:
            to_accused = d.bond - fees
        else:
            to_accuser = d.bond
        for n in paid_voters:
            self._credit(t.bids[PROCESSING][d.panel[n]].bidder, d.fee)
        d.state = D_RESOLVED
        t.bids[PROCESSING][d.accused].open_disputes -= 1
        t.liabilities -= to_accuser + to_accused + fees
        self._credit(d.accuser, to_accuser)
        self._credit(t.bids[PROCESSING][d.accused].bidder, to_accused)
        event = DisputeResolved(dispute, d.task, outcome, value, to_accuser, to_accused, fees)
        return Result([*events, event], outcome)

    def _unpaid(self, t: TaskM, i: int) -> int:
        """A processor's pay it has not collected: closed epochs, the open epoch's direct
        root, shares of objective slashes."""
        total = self.tasks_share(t, i)
        for (p, e), pay in t.pays.items():
            if p != i or pay.collected or pay.marked or pay.forfeited:
                continue
            if pay.full and not t.closed(e):
                continue
            total += pay.amount
        return total

    @staticmethod
    def tasks_share(t: TaskM, i: int) -> int:
        return t.shares.get(i, 0)

    def _slash(self, task: int, t: TaskM, i: int, fault: int, events: list[Event]) -> None:
        p = t.bids[PROCESSING][i]
        if p.slashed:
            return  # convicted by an earlier dispute: nothing is left to forfeit
        pool = self._unpaid(t, i)
        if not p.stake_done:
            pool += t.stake(p, p.fill)
        for (q, e), pay in t.pays.items():
            if q == i and not pay.collected and not pay.marked:
                if pay.full and not t.closed(e):
                    pay.amount = 0  # the open full epoch's pay is never accrued: not spent
                pay.forfeited = True
        t.shares[i] = 0
        p.slashed = True
        p.stake_done = True
        t.active.discard(i)
        shared = 0
        if fault == FAULT_UNOPENED:
            shared = self._share(task, t, pool, events)
        self._to_reserve(task, t, pool - shared, R_SLASH, events)
        events.append(ProcessorSlashed(task, i, fault, pool, pool - shared, shared))

    def _weight(self, t: TaskM, side: int, i: int) -> int:
        b = t.bids[side][i]
        if b.bidder == t.requester:
            return 0
        if side == DATA:
            return (b.fill - b.undelivered) * b.price if b.committed else 0
        return 0 if b.slashed else b.epoch_pay

    def _share(self, task: int, t: TaskM, pool: int, events: list[Event]) -> int:
        recipients = [(DATA, i) for i in sorted(t.winners[DATA])]
        recipients += [(PROCESSING, i) for i in sorted(t.active)]
        total = sum(self._weight(t, s, i) for s, i in recipients)
        if total == 0:
            return 0
        shared = 0
        for side, i in recipients:
            w = self._weight(t, side, i)
            if w == 0:
                continue
            share = pool * w // total
            if share == 0:
                continue
            shared += share
            if side == DATA:
                t.liabilities -= share
                self._credit(t.bids[DATA][i].bidder, share)
            else:
                t.shares[i] = t.shares.get(i, 0) + share
            events.append(ShareCredited(task, side, i, share))
        return shared

    # ------------------------------------------------------------ payments

    def owed(self, task: int, side: int, index: int, now: int) -> int:
        """What ``collect(task, side, index)`` transfers now."""
        return self._owed(task, side, index, now, apply=False)

    def _owed(self, task: int, side: int, index: int, now: int, *, apply: bool) -> int:
        t = self.task(task)
        if t is None or side > PROCESSING or index >= MAX_BIDS:
            return 0
        b = t.bids[side].get(index)
        if b is None:
            return 0
        if side == DATA:
            if b.winner and b.committed and not b.paid and t.first_closed:
                if apply:
                    b.paid = True
                return (b.fill - b.undelivered) * b.price
            return 0
        owed = 0
        running = t.state in (TRAINING, FINISHED)
        if not b.refunded and (running or t.state == CANCELLED):
            owed += t.stake(b, b.amount - b.fill)
            if apply:
                b.refunded = True
        if b.winner and not b.slashed and running:
            for (p, e), pay in t.pays.items():
                if p != index or pay.collected or pay.marked or pay.forfeited:
                    continue
                if not t.closed(e):
                    continue
                owed += pay.amount
                if apply:
                    pay.collected = True
            owed += t.shares.get(index, 0)
            if apply:
                t.shares[index] = 0
            if (
                t.state == FINISHED
                and not b.stake_done
                and b.open_disputes == 0
                and now > t.deadline + self.grace
            ):
                owed += t.stake(b, b.fill)
                if apply:
                    b.stake_done = True
        return owed

    def requester_owed(self, task: int) -> int:
        t = self.task(task)
        if t is None or t.requester_paid:
            return 0
        budgets = t.data_budget + t.processing_budget
        if t.state == CANCELLED:
            return budgets
        if t.state != FINISHED:
            return 0
        data_spent = t.committed_cost() if t.first_closed else 0
        return budgets - data_spent - t.spent()

    def _settle(self, task: int, side: int, index: int, now: int) -> tuple[int, str]:
        require(side <= PROCESSING, "market: side is 0 (data) or 1 (processing)")
        require(index < MAX_BIDS, "market: no such bid")
        owed = self._owed(task, side, index, now, apply=False)
        require(owed > 0, "market: nothing owed")
        t = self.tasks[task]
        return owed, t.bids[side][index].bidder

    def collect(self, sender: str, now: int, task: int, side: int, index: int) -> Result:
        owed, who = self._settle(task, side, index, now)
        require(who == _a(sender), "market: not this bid's bidder")
        self._owed(task, side, index, now, apply=True)
        self.tasks[task].liabilities -= owed
        return Result([Collected(task, _a(who), owed)], owed)

    def claim(self, sender: str, now: int, task: int, side: int, index: int) -> Result:
        owed, who = self._settle(task, side, index, now)
        self._owed(task, side, index, now, apply=True)
        self.tasks[task].liabilities -= owed
        self._credit(who, owed)
        return Result([Claimed(task, _a(who), owed)], owed)

    def collect_requester(self, sender: str, task: int) -> Result:
        t = self.task(task)
        require(t is not None and _a(sender) == t.requester, "market: only the requester")
        assert t is not None
        owed = self.requester_owed(task)
        require(owed > 0, "market: nothing owed")
        t.requester_paid = True
        t.liabilities -= owed
        return Result([Collected(task, _a(t.requester), owed)], owed)

    def withdraw(self, sender: str) -> Result:
        amount = self.claimable.get(_a(sender), 0)
        require(amount > 0, "market: nothing to withdraw")
        self.claimable[_a(sender)] = 0
        return Result([Withdrawn(_a(sender), amount)], amount)

    def withdraw_reserve(self, sender: str) -> Result:
        require(_a(sender) == self.reserve, "market: only the reserve")
        amount = self.reserve_balance
        require(amount > 0, "market: nothing to withdraw")
        self.reserve_balance = 0
        return Result([ReserveWithdrawn(_a(sender), amount)], amount)


__all__ = [
    "ASSIGNING",
    "BIDDING",
    "CANCELLED",
    "DATA",
    "FINISHED",
    "NO_TASK",
    "PROCESSING",
    "TRAINING",
    "Bid",
    "DisputeM",
    "MarketModel",
    "Pay",
    "Result",
    "Revert",
    "TaskM",
]
