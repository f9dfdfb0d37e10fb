"""An in-memory ledger with the market's client interface, for simulations at scale.

``MemoryMarket`` and ``MemoryToken`` answer the same calls as ``MarketClient`` and
``TokenClient`` (same arguments, same receipts and typed events, same ``ContractRevert``
reasons), but every rule comes from the contract's reference model
(``fedmarket.chain.reference.MarketModel``), which the contract's stateful test checks the
market's contracts against after every step of random call sequences. So a task played on
this ledger makes the decisions it would make on chain, without an EVM: the plaintext twin of
the integrity benchmark settles here. ``tests/chain/test_memory.py`` plays whole tasks on
both and compares. Block hashes (what dispute panels are drawn from) come from a seeded hash
chain; signatures are checked (``trust_signatures`` skips that, for speed, when every
signer is simulated honestly).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from fedmarket.chain import allocation, merkle
from fedmarket.chain.allocation import Allocation, Fill
from fedmarket.chain.client import (
    NO_FLOORS,
    BidView,
    Clock,
    DisputeState,
    DisputeView,
    Floors,
    GasLog,
    Outcome,
    Receipt,
    Side,
    Solvency,
    TaskState,
    Terms,
    epoch_book_from_logs,
)
from fedmarket.chain.events import (
    BidPlaced,
    Event,
    ReserveCredited,
    Transfer,
)
from fedmarket.chain.reference import (
    DATA,
    PROCESSING,
    TRAINING,
    MarketModel,
    Result,
    Revert,
)
from fedmarket.chain.signing import SignedRoot, domain_separator
from fedmarket.errors import ChainError, ContractRevert

E = TypeVar("E", bound=Event)
GENESIS = 1_700_000_000
CHAIN_ID = 31_337
ZERO = "0x" + "00" * 20


@dataclass
class Ledger:
    """The shared state: a clock and block numbers, token balances, the market, the log."""

    grace: int
    now: int = GENESIS
    block: int = 1
    seed: bytes = b"fedmarket/memory-chain"
    balances: dict[str, int] = field(default_factory=dict)
    allowances: dict[tuple[str, str], int] = field(default_factory=dict)
    model: MarketModel | None = None
    log: list[tuple[int, Event]] = field(default_factory=list)
    gas_log: GasLog = field(default_factory=GasLog)
    _hashes: itertools.count[int] = field(default_factory=itertools.count)

    def blockhash(self, number: int) -> bytes:
        """The hash of block ``number`` (a seeded chain of hashes; zero outside the window the
        EVM's BLOCKHASH serves, as a revert would be)."""
        if not self.block - 256 <= number < self.block:
            raise ContractRevert("", function="draw", hint="block hash outside the last 256 blocks")
        return bytes(keccak(self.seed + number.to_bytes(32, "big")))

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
        event = Transfer(to_checksum_address(ZERO), to_checksum_address(receiver), amount)
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
    """The market in memory (``MarketClient``'s interface), its rules from ``MarketModel``."""

    def __init__(
        self, ledger: Ledger, address: str, token: MemoryToken, account: LocalAccount | None
    ) -> None:
        self.ledger = ledger
        self.address = to_checksum_address(address)
        self._token = token
        self.account = account

    @property
    def model(self) -> MarketModel:
        assert self.ledger.model is not None
        return self.ledger.model

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

    def block_number(self) -> int:
        return self.ledger.block

    def now(self) -> int:
        """The timestamp the next transaction sees."""
        return self.ledger.now + 1

    def chain_id(self) -> int:
        return CHAIN_ID

    def _funds(self, pulls: list[tuple[str, int]]) -> Callable[[str, int], bool]:
        def ok(sender: str, amount: int) -> bool:
            enough = self._token.allowance(sender, self.address) >= amount
            enough = enough and self._token.balance_of(sender) >= amount
            if enough:
                pulls.append((sender, amount))
            return enough

        return ok

    def _tx(
        self,
        function: str,
        action: Callable[[int, int, Callable[[str, int], bool]], Result],
        *,
        pay: bool = False,
    ) -> Receipt[Any]:
        """Run one action as the next block: the reason the contract reverts with, or its
        effects, token pulls (and the payment, when ``pay``) and events."""
        pulls: list[tuple[str, int]] = []
        try:
            result = action(self.now(), self.ledger.block + 1, self._funds(pulls))
        except Revert as exc:
            hint = (
                "the token transfer failed: approve and fund first"
                if "token" in exc.reason
                else None
            )
            raise ContractRevert(exc.reason, function=function, hint=hint) from None
        for sender, amount in pulls:
            self.ledger.allowances[(_key(sender), _key(self.address))] -= amount
            self._token.move(sender, self.address, amount)
        if pay and result.value:
            receiver = next(
                getattr(e, "account", None) or getattr(e, "to", None)
                for e in result.events
                if hasattr(e, "amount")
            )
            self._token.move(self.address, str(receiver), int(result.value))
        return self.ledger.mine(result.events, function, result.value)

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

    # ------------------------------------------------------------ tasks and bids

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
        dispute_bond_bps: int = 2_500,
        audit_fee: int = 0,
        min_fill: int = 64,
        floors: Floors = NO_FLOORS,
    ) -> Receipt[int]:
        me = self._me
        return self._tx(
            "create_task",
            lambda now, _b, funds: self.model.create_task(
                me, now, funds, bytes(spec_hash), bytes(public_context_hash), num_points,
                epoch_seconds, max_epochs, data_budget, processing_budget, bidding_seconds,
                late_penalty_bps, dispute_bond_bps, audit_fee, min_fill, floors.as_tuple(),
            ),
        )  # fmt: skip

    def bid_data(
        self, task: int, points: int, price_per_point: int, evict: int = 0
    ) -> Receipt[int]:
        me = self._me
        return self._tx(
            "bid_data",
            lambda now, _b, funds: self.model.bid_data(
                me, now, funds, task, points, price_per_point, evict
            ),
        )

    def bid_processing(
        self, task: int, capacity_per_epoch: int, price_per_point: int, evict: int = 0
    ) -> Receipt[int]:
        me = self._me
        return self._tx(
            "bid_processing",
            lambda now, _b, funds: self.model.bid_processing(
                me, now, funds, task, capacity_per_epoch, price_per_point, evict
            ),
        )

    def withdraw_bid(self, task: int, side: Side | int, index: int) -> Receipt[int]:
        me = self._me
        return self._tx(
            "withdraw_bid",
            lambda now, _b, _f: self.model.withdraw_bid(me, now, task, int(side), index),
        )

    def resolve(
        self, task: int, data_fills: Sequence[Fill], processing_fills: Sequence[Fill]
    ) -> Receipt[None]:
        me = self._me
        data = [f.as_tuple() for f in data_fills]
        processing = [f.as_tuple() for f in processing_fills]
        return self._tx(
            "resolve", lambda now, _b, _f: self.model.resolve(me, now, task, data, processing)
        )

    def resolve_greedy(self, task: int) -> Receipt[Allocation]:
        model = self.model.task(task)
        if model is None or model.state != 1:
            raise ContractRevert("market: task is not in bidding", function="resolve")
        if self.now() <= model.bidding_deadline:
            raise ContractRevert("market: bidding still open", function="resolve")
        t = self.terms(task)
        offers = {
            side: self.model.tasks[task].offers(side) if task < len(self.model.tasks) else []
            for side in (DATA, PROCESSING)
        }
        chosen = allocation.allocate(
            offers[DATA],
            offers[PROCESSING],
            num_points=t.num_points,
            max_epochs=t.max_epochs,
            data_budget=t.data_budget,
            processing_budget=t.processing_budget,
            min_fill=t.min_fill,
        )
        r = self.resolve(task, chosen.data, chosen.processing)
        return Receipt(r.function, r.tx_hash, r.block_number, 0, r.events, chosen)

    def reopen(self, task: int, floors: Floors, bidding_seconds: int) -> Receipt[None]:
        me = self._me
        return self._tx(
            "reopen",
            lambda now, _b, _f: self.model.reopen(
                me, now, task, floors.as_tuple(), bidding_seconds
            ),
        )

    def cancel(self, task: int) -> Receipt[None]:
        me = self._me
        return self._tx("cancel", lambda _n, _b, _f: self.model.cancel(me, task))

    # ------------------------------------------------------------ assignment and data

    def commit_data(
        self, task: int, owner_bid: int, block_sizes: Sequence[int], digests: Sequence[bytes]
    ) -> Receipt[None]:
        me = self._me
        return self._tx(
            "commit_data",
            lambda _n, _b, _f: self.model.commit_data(
                me, task, owner_bid, list(block_sizes), [bytes(d) for d in digests]
            ),
        )

    def commit_assignment(
        self, task: int, records: Sequence[merkle.Record], model_digest: bytes
    ) -> Receipt[None]:
        me = self._me
        return self._tx(
            "commit_assignment",
            lambda now, _b, _f: self.model.commit_assignment(
                me, now, task, list(records), bytes(model_digest)
            ),
        )

    def report_undelivered(
        self, task: int, processor: int, blocks: Sequence[tuple[int, int, merkle.EntryProof]]
    ) -> Receipt[None]:
        me = self._me
        return self._tx(
            "report_undelivered",
            lambda _n, _b, _f: self.model.report_undelivered(me, task, processor, list(blocks)),
        )

    # ------------------------------------------------------------ epochs

    def relay_epoch(self, task: int, epoch: int, signed: Sequence[SignedRoot]) -> Receipt[None]:
        me = self._me
        return self._tx(
            "relay_epoch",
            lambda now, _b, _f: self.model.relay_epoch(me, now, task, epoch, list(signed)),
        )

    def submit_root(
        self, task: int, epoch: int, processor: int, signed: SignedRoot
    ) -> Receipt[None]:
        me = self._me
        return self._tx(
            "submit_root",
            lambda now, _b, _f: self.model.submit_root(me, now, task, epoch, processor, signed),
        )

    def close_epoch(
        self,
        task: int,
        epoch: int,
        next_model_digest: bytes,
        go_on: bool = True,
        not_received: int = 0,
    ) -> Receipt[None]:
        me = self._me
        return self._tx(
            "close_epoch",
            lambda now, _b, _f: self.model.close_epoch(
                me, now, task, epoch, bytes(next_model_digest), bool(go_on), not_received
            ),
        )

    def claim_timeout(self, task: int, side: Side | int, index: int) -> Receipt[None]:
        me = self._me
        return self._tx(
            "claim_timeout",
            lambda now, _b, _f: self.model.claim_timeout(me, now, task, int(side), index),
        )

    # ------------------------------------------------------------ disputes

    def open_dispute(
        self,
        task: int,
        epoch: int,
        accused: int,
        owner_bid: int,
        block_index: int,
        entry: merkle.EntryProof,
        where: merkle.EpochProof,
    ) -> Receipt[int]:
        me = self._me
        return self._tx(
            "open_dispute",
            lambda now, block, funds: self.model.open_dispute(
                me, now, block, funds, task, epoch, accused, owner_bid, block_index, entry, where
            ),
        )

    def draw(self, dispute: int) -> Receipt[None]:
        me = self._me
        return self._tx("draw", lambda now, block, _f: self.model.draw(me, now, block, dispute))

    def commit_vote(self, dispute: int, commitment: bytes) -> Receipt[None]:
        me = self._me
        return self._tx(
            "commit_vote",
            lambda now, _b, _f: self.model.commit_vote(me, now, dispute, bytes(commitment)),
        )

    def show_leaf(self, dispute: int, digest: bytes, proof: Sequence[bytes]) -> Receipt[None]:
        me = self._me
        return self._tx(
            "show_leaf",
            lambda now, _b, _f: self.model.show_leaf(
                me, now, dispute, bytes(digest), [bytes(p) for p in proof]
            ),
        )

    def resolve_dispute(self, dispute: int, value: bytes) -> Receipt[Outcome]:
        me = self._me
        r = self._tx(
            "resolve_dispute",
            lambda now, _b, _f: self.model.resolve_dispute(me, now, dispute, bytes(value)),
        )
        return Receipt(r.function, r.tx_hash, r.block_number, 0, r.events, Outcome(r.value))

    # ------------------------------------------------------------ payments

    def collect(self, task: int, side: Side | int, index: int) -> Receipt[int]:
        me = self._me
        return self._tx(
            "collect",
            lambda now, _b, _f: self.model.collect(me, now, task, int(side), index),
            pay=True,
        )

    def claim(self, task: int, side: Side | int, index: int) -> Receipt[int]:
        me = self._me
        return self._tx(
            "claim", lambda now, _b, _f: self.model.claim(me, now, task, int(side), index)
        )

    def collect_requester(self, task: int) -> Receipt[int]:
        me = self._me
        return self._tx(
            "collect_requester", lambda _n, _b, _f: self.model.collect_requester(me, task), pay=True
        )

    def withdraw(self) -> Receipt[int]:
        me = self._me
        return self._tx("withdraw", lambda _n, _b, _f: self.model.withdraw(me), pay=True)

    def withdraw_reserve(self) -> Receipt[int]:
        me = self._me
        return self._tx(
            "withdraw_reserve", lambda _n, _b, _f: self.model.withdraw_reserve(me), pay=True
        )

    # ------------------------------------------------------------ views

    def terms(self, task: int) -> Terms:
        t = self.model.task(task)
        if t is None:
            return Terms(
                to_checksum_address(ZERO), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, bytes(32), bytes(32)
            )
        return Terms(
            to_checksum_address(t.requester), t.num_points, t.epoch_seconds, t.max_epochs,
            t.data_budget, t.processing_budget, t.bidding_deadline, t.bidding_seconds,
            t.late_penalty_bps, t.dispute_bond_bps, t.audit_fee, t.min_fill, t.terms_hash,
            t.assignment_root,
        )  # fmt: skip

    tasks = terms

    def floors_of(self, task: int) -> Floors:
        t = self.model.task(task)
        return Floors(*(t.floors if t else (0, 0, 0)))

    def clock_of(self, task: int) -> Clock:
        t = self.model.task(task)
        if t is None:
            return Clock(TaskState.NO_TASK, 0, 0, 0, 0, 0, 0, 0)
        flags = int(t.first_closed) | (2 if t.full else 0) | (4 if t.requester_paid else 0)
        submitted = self.model._submitted(t) if t.state >= TRAINING else 0
        return Clock(
            TaskState(t.state), t.epoch, t.deadline, submitted, len(t.active), flags,
            t.full_epochs, t.spent(),
        )  # fmt: skip

    def get_bid(self, task: int, side: Side | int, index: int) -> BidView:
        t = self.model.task(task)
        side = int(side)
        bid = t.bids[side].get(index) if t else None
        bidder, floor = t.slots.get((side, index), (ZERO, 0)) if t else (ZERO, 0)
        if bid is None:
            return BidView(to_checksum_address(bidder), 0, 0, floor if side else 0, False, 0,
                           False, False, 0, 0, 0, 0)  # fmt: skip
        return BidView(
            bidder=to_checksum_address(bid.bidder),
            amount=bid.amount,
            price=bid.price,
            stake_price=bid.stake_price if side == PROCESSING else 0,
            winner=bid.winner,
            fill=bid.fill,
            committed=bid.committed,
            slashed=bid.slashed,
            undelivered=bid.undelivered,
            epoch_pay=bid.epoch_pay if side == PROCESSING and bid.winner else 0,
            last_submitted_epoch=bid.last_submitted if side == PROCESSING else 0,
            open_disputes=bid.open_disputes if side == PROCESSING else 0,
        )

    def book_of(self, task: int) -> tuple[int, int]:
        t = self.model.task(task)
        if t is None:
            return 0, 0
        if t.state <= 1:  # bidding (or none): the open bids
            return tuple(sum(1 << i for i in t.bids[s]) for s in (DATA, PROCESSING))  # type: ignore[return-value]
        return tuple(sum(1 << i for i in t.winners[s]) for s in (DATA, PROCESSING))  # type: ignore[return-value]

    def active_of(self, task: int) -> tuple[int, int]:
        t = self.model.task(task)
        if t is None:
            return 0, 0
        bitmap = sum(1 << i for i in t.active)
        return bitmap, sum(t.bids[PROCESSING][i].epoch_pay for i in t.active)

    def epoch_commitments(self, task: int) -> tuple[bytes, bytes]:
        t = self.model.task(task)
        if t is None or t.book is None or t.state < TRAINING:
            return bytes(32), bytes(32)
        book = t.book
        acc = book.acc(book.closed) if book.closed in book.models else book.acc(book.closed - 1)
        return acc, book.history()

    def dispute_of(self, dispute: int) -> DisputeView:
        if not 0 <= dispute < len(self.model.disputes):
            return DisputeView(0, to_checksum_address(ZERO), 0, 0, 0, 0, 0, DisputeState.NONE, 0,
                               (), 0, 0, 0, 0, bytes(32), bytes(32))  # fmt: skip
        d = self.model.disputes[dispute]
        show = d.vote_deadline + self.model.grace if d.vote_deadline else 0
        return DisputeView(
            d.task, to_checksum_address(d.accuser), d.accused, d.owner_bid, d.block_index,
            d.epoch, d.entry_index, DisputeState(d.state), d.open_block, tuple(d.panel),
            d.vote_deadline, show, d.bond, d.fee, d.root, d.shown,
        )  # fmt: skip

    def vote_of(self, dispute: int, slot: int) -> bytes:
        return self.model.disputes[dispute].votes.get(slot, bytes(32))

    def is_reported(self, task: int, processor: int, block: int) -> bool:
        t = self.model.task(task)
        return t is not None and (processor, block) in t.reported

    def num_disputes(self) -> int:
        return len(self.model.disputes)

    def bids(self, task: int, side: Side | int) -> list[tuple[int, BidView]]:
        bitmap = self.book_of(task)[int(side)]
        return [(i, self.get_bid(task, side, i)) for i in range(128) if bitmap >> i & 1]

    def all_bids(self, task: int, side: Side | int) -> list[tuple[int, BidView]]:
        t = self.model.task(task)
        return [(i, self.get_bid(task, side, i)) for i in sorted(t.bids[int(side)])] if t else []

    def bid_index(self, task: int, side: Side | int, account: str) -> int:
        who = to_checksum_address(account)
        placed = [
            e for e in self.logs(BidPlaced, task=task) if e.side == int(side) and e.bidder == who
        ]
        for e in reversed(placed):
            bid = self.get_bid(task, side, e.bid)
            if bid.bidder == who and bid.amount > 0:
                return e.bid + 1
        return 0

    def owed(self, task: int, side: Side | int | str, index: int | None = None) -> int:
        if isinstance(side, str):
            who = to_checksum_address(side)
            t = self.model.task(task)
            if t is None:
                return 0
            total = sum(
                self.model.owed(task, s, i, self.now())
                for s in (DATA, PROCESSING)
                for i, b in t.bids[s].items()
                if b.bidder == who
            )
            if t.requester == who:
                total += self.model.requester_owed(task)
            return total
        assert index is not None
        return self.model.owed(task, int(side), index, self.now())

    def requester_owed(self, task: int) -> int:
        return self.model.requester_owed(task)

    def claimable(self, account: str) -> int:
        return self.model.claimable.get(to_checksum_address(account), 0)

    def liabilities(self, task: int) -> int:
        t = self.model.task(task)
        return t.liabilities if t else 0

    def total_claimable(self) -> int:
        return self.model.total_claimable

    def reserve_balance(self) -> int:
        return self.model.reserve_balance

    def reserve(self) -> str:
        return self.model.reserve

    def reserved(self, task: int) -> int:
        return sum(e.amount for e in self.logs(ReserveCredited, task=task))

    def dust(self, task: int) -> int:
        return self.reserved(task)

    def num_tasks(self) -> int:
        return len(self.model.tasks)

    def grace_seconds(self) -> int:
        return self.ledger.grace

    def draw_delay_blocks(self) -> int:
        return self.model.draw_delay

    def domain_separator(self) -> bytes:
        return self.model.domain

    def token(self) -> str:
        return self._token.address

    def epoch_book(self, task: int, *, from_block: int = 0) -> merkle.EpochBook:
        return epoch_book_from_logs(self, task, from_block=from_block)

    def solvency(self) -> Solvency:
        return Solvency(
            balance=self._token.balance_of(self.address),
            liabilities=sum(self.liabilities(t) for t in range(self.num_tasks())),
            total_claimable=self.total_claimable(),
            reserve=self.reserve_balance(),
        )


@dataclass
class MemoryChain:
    """A chain in memory: accounts (anvil's dev keys), a clock and blocks that move on request."""

    accounts: list[LocalAccount]
    ledger: Ledger
    name: str = "memory"

    def timestamp(self) -> int:
        return self.ledger.now + 1

    def time_travel(self, seconds: int) -> None:
        if seconds < 0:
            raise ChainError("cannot travel back in time")
        self.ledger.now += seconds

    def mine(self, blocks: int) -> None:
        """Empty blocks, a second apart (what a dispute's draw waits for)."""
        self.ledger.block += blocks
        self.ledger.now += blocks


MARKET_ADDRESS = "0x" + "3a" * 20


def memory_chain(
    keys: Sequence[str],
    *,
    grace_seconds: int,
    reserve: str | None = None,
    draw_delay_blocks: int = 1,
    trust_signatures: bool = False,
    seed: int = 0,
) -> tuple[MemoryChain, MemoryMarket, MemoryToken]:
    """A fresh ledger with a market and its token, acting as the first account (also the
    reserve, by default, as ``fedmarket chain deploy`` makes the deployer)."""
    accounts = [Account.from_key(k) for k in keys]
    ledger = Ledger(grace=grace_seconds, seed=b"fedmarket/memory-chain/" + str(seed).encode())
    ledger.model = MarketModel(
        grace=grace_seconds,
        reserve=reserve or accounts[0].address,
        draw_delay=draw_delay_blocks,
        domain=domain_separator(CHAIN_ID, MARKET_ADDRESS),
        beacon=ledger.blockhash,
        trust_signatures=trust_signatures,
    )
    token = MemoryToken(ledger, "0x" + "70" * 20, accounts[0])
    market = MemoryMarket(ledger, MARKET_ADDRESS, token, accounts[0])
    return MemoryChain(accounts, ledger), market, token


__all__ = ["Ledger", "MemoryChain", "MemoryMarket", "MemoryToken", "memory_chain"]
