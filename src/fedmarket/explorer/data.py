"""The explorer's one window on the chain: the market's events and views as plain records.

Everything the explorer shows about the chain is read here, through ``fedmarket.chain``
(``MarketClient`` for views, ``EventDecoder`` for the market's logs), and handed out as frozen
dataclasses of ints and strings. A contract change is then one change in this module: the
pages and tests only see these records. Money stays ``int`` token base units throughout.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_utils import function_abi_to_4byte_selector, is_address, to_checksum_address
from web3.exceptions import Web3Exception

from fedmarket.chain import merkle
from fedmarket.chain.backends import rpc
from fedmarket.chain.client import MarketClient, Outcome, Side, TaskState, compile_market
from fedmarket.chain.events import (
    MARKET_EVENTS,
    BidEvicted,
    BidPlaced,
    BidWithdrawn,
    Claimed,
    Collected,
    DataCommitted,
    DisputeOpened,
    DisputeResolved,
    EpochClosed,
    EpochRoots,
    Event,
    EventDecoder,
    LeafShown,
    ModelReleased,
    PanelDrawn,
    ProcessorSlashed,
    ReserveCredited,
    RootSubmitted,
    ShareCredited,
    TaskCancelled,
    TaskCreated,
    TaskFinished,
    TaskResolved,
    TimeoutClaimed,
    VoteCommitted,
    Withdrawn,
)
from fedmarket.errors import ChainError, ConfigError

__all__ = [
    "BidRow",
    "DisputeRow",
    "EpochRow",
    "GasRow",
    "MarketInfo",
    "MarketReader",
    "PartyFlow",
    "PartyTask",
    "PartyView",
    "ResultRow",
    "SlashRow",
    "Stamp",
    "TaskDetail",
    "TaskSummary",
]

STATE_NAMES = {
    TaskState.BIDDING: "bidding",
    TaskState.ASSIGNING: "assigning",
    TaskState.TRAINING: "training",
    TaskState.FINISHED: "finished",
    TaskState.CANCELLED: "cancelled",
}
SIDE_NAMES = {Side.DATA: "data", Side.PROCESSING: "processing"}
# the chain is asked for its head at most this often; pages opened together share one look
_HEAD_TTL = 0.5
_ERC20_META_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": name,
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": kind}],
    }
    for name, kind in (("decimals", "uint8"), ("symbol", "string"))
]


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Stamp:
    """Where something happened on chain: block, its timestamp, the transaction."""

    block: int
    time: int
    tx: str


@dataclass(frozen=True)
class MarketInfo:
    chain: str
    market: str
    token: str
    symbol: str
    decimals: int
    grace_seconds: int
    head: int  # latest block
    now: int  # its timestamp: the chain's clock, which a dev chain may have moved ahead


@dataclass(frozen=True)
class TaskSummary:
    """One task as the market list shows it."""

    id: int
    state: str  # bidding | assigning | training | finished | cancelled
    requester: str
    spec_hash: str  # 0x hex
    public_context_hash: str
    num_points: int
    epoch_seconds: int
    max_epochs: int
    data_budget: int
    processing_budget: int
    bidding_deadline: int
    late_penalty_bps: int
    epoch: int  # the open epoch while training
    deadline: int  # of the open epoch (or the assignment window); 0 when none
    epochs_closed: int
    spent: int  # processing pay accrued so far
    open_bids: dict[str, int]  # side -> bids not withdrawn or evicted
    created: Stamp
    timed_out: bool = False
    dispute_bond_bps: int = 0  # an accuser's bond, as a share of the accused's stake
    audit_fee: int = 0  # each auditor on the winning side of a dispute, from the bond
    min_fill: int = 0  # the fewest points of any data fill (the privacy floor)

    @property
    def budget(self) -> int:
        return self.data_budget + self.processing_budget


@dataclass(frozen=True)
class BidRow:
    task: int
    side: str  # data | processing
    index: int
    bidder: str
    amount: int  # points offered (data) or capacity per epoch (processing), as placed
    price: int  # per point
    stake: int  # escrowed with a processing bid
    withdrawn: bool
    winner: bool
    fill: int  # points won (data) or per epoch (processing)
    slashed: bool
    earned: int  # processing pay its recorded roots earned (0 for results not received)
    data_committed: bool  # a winning owner committed its manifest (block sizes and digests)
    placed: Stamp


@dataclass(frozen=True)
class ResultRow:
    """One processor's result root for one epoch, as recorded on chain (relayed with the
    others on time, or sent by itself). ``pay`` is what it earns for the epoch: the late
    penalty taken, 0 when the requester marked the results not received."""

    epoch: int
    processor: str
    on_time: bool
    pay: int
    digest: str  # the root over its per-block result digests
    at: Stamp
    received: bool = True


@dataclass(frozen=True)
class SlashRow:
    """A processor slashed by a dispute over its result for ``epoch``: everything it had not
    been paid and its stake are forfeited, to the reserve (a panel's conviction) or shared
    with the other participants by what they are paid (a leaf nobody opened)."""

    epoch: int
    processor: str
    forfeited: int
    to_reserve: int
    to_participants: int
    fault: str  # panel | unopened
    dispute: int
    at: Stamp


@dataclass(frozen=True)
class DisputeRow:
    """One accusation: a block of the accused's assignment in a closed epoch, bonded."""

    dispute: int
    epoch: int
    accuser: str
    accused: str
    block: str  # owner bid / block index
    bond: int
    panel: tuple[str, ...]  # the auditors drawn after the accusation
    outcome: str  # open | drawn | unopened | dismissed | convicted | cleared | no_verdict
    to_accuser: int
    to_accused: int
    fees: int
    opened: Stamp
    resolved: Stamp | None


@dataclass(frozen=True)
class EpochRow:
    epoch: int
    deadline: int  # results due by then (chain time)
    closed: Stamp | None  # None: the open epoch
    go_on: bool | None
    results: tuple[ResultRow, ...]
    missing: tuple[str, ...]  # winning, unslashed processors with no result (closed epochs)
    waiting: tuple[str, ...]  # the same, for the open epoch
    slashes: tuple[SlashRow, ...]
    by_timeout: bool = False
    model_digest: str = ""  # sha256 of the encrypted model released for it (0x hex)
    not_received: tuple[str, ...] = ()  # roots on chain whose results the requester never got

    @property
    def on_time(self) -> tuple[str, ...]:
        return tuple(r.processor for r in self.results if r.on_time)

    @property
    def late(self) -> tuple[str, ...]:
        return tuple(r.processor for r in self.results if not r.on_time)

    @property
    def pay(self) -> int:
        return sum(r.pay for r in self.results)


@dataclass(frozen=True)
class PartyFlow:
    """One account's tokens in one task, in base units.

    ``paid_in`` went to the market (escrow, stakes, dispute bonds); ``refunded`` came back at
    once (a withdrawn or evicted processing bid's stake); ``credited`` the task has already
    paid or credited it (collected, claimed, bonds returned, audit fees, shares of a slash);
    ``owed`` it could collect now. ``net`` is what the task leaves the account with, so far.
    """

    address: str
    roles: tuple[str, ...]
    paid_in: int
    refunded: int
    credited: int
    owed: int
    data_pay: int  # an owner's delivered points x price, once the first epoch closed
    processing_pay: int  # what its recorded results earned
    slashed: int  # forfeited pay and stake

    @property
    def entitled(self) -> int:
        return self.credited + self.owed

    @property
    def net(self) -> int:
        return self.entitled + self.refunded - self.paid_in


@dataclass(frozen=True)
class GasRow:
    function: str
    calls: int
    gas: int

    @property
    def mean(self) -> int:
        return self.gas // self.calls if self.calls else 0


@dataclass(frozen=True)
class TaskDetail:
    summary: TaskSummary
    bids: tuple[BidRow, ...]
    resolution: TaskResolved | None
    epochs: tuple[EpochRow, ...]
    flows: tuple[PartyFlow, ...]
    gas: tuple[GasRow, ...]
    assignment_hash: str  # the assignment's Merkle root (0x hex), zero before it
    liabilities: int  # what the task still holds for anyone
    dust: int  # what the task put in the market's reserve (penalties, marks, slashes)
    cancelled_by: str | None
    finished: Stamp | None
    fingerprint: str  # changes whenever anything on this page could
    disputes: tuple[DisputeRow, ...] = ()


@dataclass(frozen=True)
class PartyTask:
    summary: TaskSummary
    roles: tuple[str, ...]
    bids: tuple[BidRow, ...]
    flow: PartyFlow
    results: tuple[ResultRow, ...]  # this account's, as a processor
    slashes: tuple[SlashRow, ...]


@dataclass(frozen=True)
class PartyView:
    address: str
    tasks: tuple[PartyTask, ...]
    claimable: int  # credited across tasks, not yet withdrawn
    withdrawn: int  # transferred out of the market to this account, all tasks

    @property
    def net(self) -> int:
        return sum(t.flow.net for t in self.tasks)


# ---------------------------------------------------------------- reading


@dataclass
class _Log:
    event: Event
    block: int
    tx: str
    index: int


@dataclass
class _Scan:
    """Every market log read so far, decoded, and what is derived from them."""

    next_block: int = 0
    logs: list[_Log] = field(default_factory=list)
    by_task: dict[int, list[_Log]] = field(default_factory=lambda: defaultdict(list))
    task_of_dispute: dict[int, int] = field(default_factory=dict)


class MarketReader:
    """A read-only view of one market on one chain, refreshed from new blocks on demand.

    Thread-safe: the web server calls it from several worker threads.
    """

    def __init__(self, chain_url: str, market: str, *, timeout: float = 10.0) -> None:
        if not isinstance(market, str) or not is_address(market):
            raise ConfigError(
                f"--market {market!r} is not an address",
                hint="pass the 0x address `fedmarket chain deploy` or `fedmarket run` printed",
            )
        if not chain_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"--chain {chain_url!r}: the explorer reads a node over JSON-RPC (http:// or "
                "https://); an embedded chain lives only inside the process that runs it",
                hint="start a node with `fedmarket chain up` and pass its URL",
            )
        try:
            chain = rpc(chain_url, timeout=timeout)
        except ChainError as exc:
            raise ChainError(
                exc.message, hint="start the node (e.g. `fedmarket chain up`) or check --chain"
            ) from None
        self.chain_name = chain.name
        self.w3 = chain.w3
        code = self._rpc(lambda: self.w3.eth.get_code(to_checksum_address(market)), "eth_getCode")
        if not code:
            raise ChainError(
                f"no contract at {to_checksum_address(market)} on {chain.name}",
                hint="check --market (and that --chain is the node it was deployed on)",
            )
        # a read-only look: a throwaway account signs nothing
        try:
            self.client = MarketClient.at(self.w3, market, Account.create())
        except ChainError:
            raise ChainError(
                f"the contract at {to_checksum_address(market)} on {chain.name} is not a "
                "fedmarket market (it does not answer the market's views)",
                hint="check --market: pass the market's address, not its token's",
            ) from None
        self.address = self.client.address
        compiled = compile_market()  # the market's address answers for its three contracts
        self._decoder = EventDecoder("Market", compiled.abi, MARKET_EVENTS)
        functions: list[Any] = [e for e in compiled.abi if e.get("type") == "function"]
        # which function a transaction called, from its selector (for gas per function)
        self._functions: dict[bytes, str] = {
            function_abi_to_4byte_selector(entry): str(entry["name"]) for entry in functions
        }
        self.token = self.client.token()
        self.grace_seconds = self.client.grace_seconds()
        self.decimals, self.symbol = self._token_meta()
        self._lock = threading.RLock()
        self._scan = _Scan()
        self._times: dict[int, int] = {}
        self._gas: dict[str, tuple[str, int]] = {}
        self._head = (-1, 0)  # (block, its timestamp)
        self._head_checked = 0.0
        self.refresh()

    # ------------------------------------------------------------ chain access

    def _rpc(self, thunk: Any, what: str) -> Any:
        try:
            return thunk()
        except (OSError, Web3Exception, ValueError) as exc:
            raise ChainError(f"the chain at {self.chain_name} failed on {what}: {exc}") from exc

    def _token_meta(self) -> tuple[int, str]:
        # decimals() and symbol() are optional in ERC-20; without them, base units of "tokens"
        token = self.w3.eth.contract(address=self.token, abi=_ERC20_META_ABI)
        try:
            decimals = int(token.functions.decimals().call())
        except (OSError, Web3Exception, ValueError, OverflowError):
            decimals = 0
        try:
            symbol = str(token.functions.symbol().call())[:16]
        except (OSError, Web3Exception, ValueError, OverflowError):
            symbol = ""
        return decimals, symbol or "tokens"

    def refresh(self) -> int:
        """Read the logs of blocks not seen yet; returns the head block."""
        with self._lock:
            if time.monotonic() - self._head_checked < _HEAD_TTL:
                return self._head[0]
            block = self._rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
            head = int(block["number"])
            self._head = (head, int(block["timestamp"]))
            self._head_checked = time.monotonic()
            scan = self._scan
            if head >= scan.next_block:
                raw = self._rpc(
                    lambda: self.w3.eth.get_logs(
                        {"address": self.address, "fromBlock": scan.next_block, "toBlock": head}
                    ),
                    "eth_getLogs",
                )
                for log in sorted(raw, key=lambda x: (x["blockNumber"], x["logIndex"])):
                    event = self._decoder.decode(log)
                    if event is None:
                        continue
                    entry = _Log(
                        event,
                        int(log["blockNumber"]),
                        "0x" + bytes(log["transactionHash"]).hex(),
                        int(log["logIndex"]),
                    )
                    scan.logs.append(entry)
                    task = getattr(event, "task", None)
                    dispute = getattr(event, "dispute", None)
                    if task is not None and dispute is not None:
                        scan.task_of_dispute[int(dispute)] = int(task)
                    elif task is None and dispute is not None:
                        task = scan.task_of_dispute.get(int(dispute))  # votes, shown leaves
                    if task is not None:
                        scan.by_task[int(task)].append(entry)
                scan.next_block = head + 1
            return head

    def _time(self, block: int) -> int:
        if block not in self._times:
            found = self._rpc(lambda: self.w3.eth.get_block(block), "eth_getBlockByNumber")
            self._times[block] = int(found["timestamp"])
        return self._times[block]

    def _stamp(self, log: _Log) -> Stamp:
        return Stamp(log.block, self._time(log.block), log.tx)

    # ------------------------------------------------------------ queries

    def info(self) -> MarketInfo:
        with self._lock:
            self.refresh()
            return MarketInfo(
                chain=self.chain_name,
                market=self.address,
                token=self.token,
                symbol=self.symbol,
                decimals=self.decimals,
                grace_seconds=self.grace_seconds,
                head=self._head[0],
                now=self._head[1],
            )

    def num_tasks(self) -> int:
        with self._lock:
            return self.client.num_tasks()

    def tasks(self) -> list[TaskSummary]:
        """Every task on the market, newest first."""
        with self._lock:
            self.refresh()
            return [self._summary(t) for t in reversed(range(self.num_tasks()))]

    def _of(self, task: int, kind: type[Any]) -> list[tuple[Any, _Log]]:
        return [(x.event, x) for x in self._scan.by_task.get(task, []) if isinstance(x.event, kind)]

    def _summary(self, task: int) -> TaskSummary:
        terms = self.client.terms(task)
        clock = self.client.clock_of(task)
        created = self._of(task, TaskCreated)
        if not created:
            raise ChainError(
                f"task {task} exists on {self.address} but its TaskCreated event was not found",
                hint="the node may have pruned old logs; use an archive node",
            )
        announced = created[0][0]
        closed = self._of(task, EpochClosed)
        finished = self._of(task, TaskFinished)
        book = self.client.book_of(task)
        open_bids: dict[str, int] = {}
        for side, name in SIDE_NAMES.items():
            if clock.state == TaskState.BIDDING:
                open_bids[name] = bin(book[int(side)]).count("1")
            else:
                placed = sum(1 for e, _ in self._of(task, BidPlaced) if e.side == side)
                gone = sum(
                    1
                    for kind in (BidWithdrawn, BidEvicted)
                    for e, _ in self._of(task, kind)
                    if e.side == side
                )
                open_bids[name] = placed - gone
        return TaskSummary(
            id=task,
            state=STATE_NAMES.get(clock.state, clock.state.name.lower()),
            requester=str(terms.requester),
            spec_hash="0x" + bytes(announced.spec_hash).hex(),
            public_context_hash="0x" + bytes(announced.public_context_hash).hex(),
            num_points=terms.num_points,
            epoch_seconds=terms.epoch_seconds,
            max_epochs=terms.max_epochs,
            data_budget=terms.data_budget,
            processing_budget=terms.processing_budget,
            bidding_deadline=terms.bidding_deadline,
            late_penalty_bps=terms.late_penalty_bps,
            epoch=clock.epoch,
            deadline=clock.deadline,
            epochs_closed=len(closed),
            spent=clock.spent,
            open_bids=open_bids,
            created=self._stamp(created[0][1]),
            timed_out=any(e.timed_out for e, _ in finished),
            dispute_bond_bps=terms.dispute_bond_bps,
            audit_fee=terms.audit_fee,
            min_fill=terms.min_fill,
        )

    def task(self, task: int) -> TaskDetail | None:
        """Everything about one task, or None if the market has no such task."""
        with self._lock:
            self.refresh()
            if not 0 <= task < self.num_tasks():
                return None
            summary = self._summary(task)
            results = self._results(task)
            bids = self._bids(task, results)
            disputes = self._disputes(task)
            epochs = self._epochs(task, summary, bids, results, disputes)
            resolved = self._of(task, TaskResolved)
            cancelled = self._of(task, TaskCancelled)
            finished = self._of(task, TaskFinished)
            terms = self.client.terms(task)
            logs = self._scan.by_task.get(task, [])
            return TaskDetail(
                summary=summary,
                bids=tuple(bids),
                resolution=resolved[-1][0] if resolved else None,
                epochs=tuple(epochs),
                flows=tuple(self._flows(task, summary, bids, results, disputes)),
                gas=tuple(self._gas_rows(logs)),
                assignment_hash="0x" + bytes(terms.assignment_root).hex(),
                liabilities=int(self.client.liabilities(task)),
                dust=sum(int(e.amount) for e, _ in self._of(task, ReserveCredited)),
                cancelled_by=str(cancelled[0][0].by) if cancelled else None,
                finished=self._stamp(finished[0][1]) if finished else None,
                fingerprint=f"{len(logs)}:{summary.state}:{summary.epoch}",
                disputes=tuple(disputes),
            )

    def _bidder(self, task: int, side: Side, index: int) -> str:
        return str(self.client.get_bid(task, side, index).bidder)

    def _results(self, task: int) -> list[ResultRow]:
        """Every recorded root: relayed epochs (one event, every processor on time) and roots
        sent one by one; results marked not received earn nothing."""
        marked: dict[int, int] = {
            int(e.epoch): int(e.not_received) for e, _ in self._of(task, EpochClosed)
        }
        rows: list[ResultRow] = []
        for kind_log in self._scan.by_task.get(task, []):
            e = kind_log.event
            if isinstance(e, EpochRoots):
                bits = [i for i in range(128) if int(e.processors) >> i & 1]
                for i, root in zip(bits, e.roots, strict=True):
                    view = self.client.get_bid(task, Side.PROCESSING, i)
                    pay = view.epoch_pay or view.fill * view.price
                    rows.append(
                        self._result(task, int(e.epoch), i, True, pay, root, kind_log, marked)
                    )
            elif isinstance(e, RootSubmitted):
                rows.append(
                    self._result(
                        task,
                        int(e.epoch),
                        int(e.processor),
                        bool(e.on_time),
                        int(e.pay),
                        e.root,
                        kind_log,
                        marked,
                    )
                )
        return rows

    def _result(
        self,
        task: int,
        epoch: int,
        index: int,
        on_time: bool,
        pay: int,
        root: bytes,
        log: _Log,
        marked: dict[int, int],
    ) -> ResultRow:
        received = not marked.get(epoch, 0) >> index & 1
        return ResultRow(
            epoch,
            self._bidder(task, Side.PROCESSING, index),
            on_time,
            pay if received else 0,
            "0x" + bytes(root).hex(),
            self._stamp(log),
            received,
        )

    def _bids(self, task: int, results: list[ResultRow]) -> list[BidRow]:
        rows: list[BidRow] = []
        committed = {int(e.bid) for e, _ in self._of(task, DataCommitted)}
        # a slot is reused after a withdrawal or an eviction: each placement is its own row
        placements = self._of(task, BidPlaced)
        for n, (placed, log) in enumerate(placements):
            side = Side(placed.side)
            index = int(placed.bid)
            reused = any(
                int(later.bid) == index and later.side == placed.side
                for later, _ in placements[n + 1 :]
            )
            view = self.client.get_bid(task, side, index)
            gone = reused or view.amount == 0 or str(view.bidder) != str(placed.bidder)
            earned = sum(
                r.pay
                for r in results
                if side == Side.PROCESSING and not gone and r.processor == str(placed.bidder)
            )
            rows.append(
                BidRow(
                    task=task,
                    side=SIDE_NAMES[side],
                    index=index,
                    bidder=str(placed.bidder),
                    amount=int(placed.amount),
                    price=int(placed.price),
                    stake=int(placed.stake),
                    withdrawn=gone,
                    winner=view.winner and not gone,
                    fill=int(view.fill) if not gone else 0,
                    slashed=view.slashed and not gone,
                    earned=earned,
                    data_committed=side == Side.DATA and not gone and index in committed,
                    placed=self._stamp(log),
                )
            )
        return rows

    def _disputes(self, task: int) -> list[DisputeRow]:
        drawn = {int(e.dispute): e for e, _ in self._of(task, PanelDrawn)}
        resolved = {int(e.dispute): (e, log) for e, log in self._of(task, DisputeResolved)}
        rows = []
        for e, log in self._of(task, DisputeOpened):
            d = int(e.dispute)
            panel = drawn.get(d)
            verdict = resolved.get(d)
            outcome = "open" if panel is None else "drawn"
            if verdict is not None:
                outcome = Outcome(int(verdict[0].outcome)).name.lower()
            rows.append(
                DisputeRow(
                    dispute=d,
                    epoch=int(e.epoch),
                    accuser=str(e.accuser),
                    accused=self._bidder(task, Side.PROCESSING, int(e.accused)),
                    block=f"{int(e.owner_bid)}/{int(e.block_index)}",
                    bond=int(e.bond),
                    panel=tuple(
                        self._bidder(task, Side.PROCESSING, int(i))
                        for i in (panel.panel if panel is not None else [])
                    ),
                    outcome=outcome,
                    to_accuser=int(verdict[0].to_accuser) if verdict else 0,
                    to_accused=int(verdict[0].to_accused) if verdict else 0,
                    fees=int(verdict[0].fees) if verdict else 0,
                    opened=self._stamp(log),
                    resolved=self._stamp(verdict[1]) if verdict else None,
                )
            )
        return rows

    def _slashes(self, task: int, disputes: list[DisputeRow]) -> list[SlashRow]:
        by_tx = {d.resolved.tx: d for d in disputes if d.resolved is not None}
        rows = []
        for s, log in self._of(task, ProcessorSlashed):
            d = by_tx.get(log.tx)
            rows.append(
                SlashRow(
                    epoch=d.epoch if d is not None else -1,
                    processor=self._bidder(task, Side.PROCESSING, int(s.processor)),
                    forfeited=int(s.forfeited),
                    to_reserve=int(s.to_reserve),
                    to_participants=int(s.to_participants),
                    fault="unopened" if int(s.fault) == 1 else "panel",
                    dispute=d.dispute if d is not None else -1,
                    at=self._stamp(log),
                )
            )
        return rows

    def _epochs(
        self,
        task: int,
        summary: TaskSummary,
        bids: list[BidRow],
        results: list[ResultRow],
        disputes: list[DisputeRow],
    ) -> list[EpochRow]:
        released = {int(e.epoch): e for e, _ in self._of(task, ModelReleased)}
        if not released:
            return []
        winners = [b.bidder for b in bids if b.side == "processing" and b.winner]
        by_epoch: dict[int, list[ResultRow]] = defaultdict(list)
        for r in results:
            by_epoch[r.epoch].append(r)
        slashes = self._slashes(task, disputes)
        closes = {int(e.epoch): (e, log) for e, log in self._of(task, EpochClosed)}
        # claim_timeout closes an unclosed epoch in its own transaction
        timeouts = {log.tx for _, log in self._of(task, TimeoutClaimed)}
        out: list[EpochRow] = []
        last = max(closes) if closes else -1
        open_epoch = summary.state == "training"
        for epoch in range(last + 1 + (1 if open_epoch else 0)):
            close = closes.get(epoch)
            until = close[1].block if close else None
            gone = {s.processor.lower() for s in slashes if until is None or s.at.block <= until}
            done = {r.processor.lower() for r in by_epoch[epoch]}
            expected = tuple(w for w in winners if w.lower() not in gone and w.lower() not in done)
            release = released.get(epoch)
            out.append(
                EpochRow(
                    epoch=epoch,
                    deadline=int(release.deadline) if release is not None else 0,
                    closed=self._stamp(close[1]) if close else None,
                    go_on=bool(close[0].go_on) if close else None,
                    results=tuple(by_epoch[epoch]),
                    missing=expected if close else (),
                    waiting=() if close else expected,
                    slashes=tuple(s for s in slashes if s.epoch == epoch),
                    by_timeout=close is not None and close[1].tx in timeouts,
                    model_digest="0x" + bytes(release.model_digest).hex() if release else "",
                    not_received=tuple(r.processor for r in by_epoch[epoch] if not r.received),
                )
            )
        return out

    def _flows(
        self,
        task: int,
        summary: TaskSummary,
        bids: list[BidRow],
        results: list[ResultRow],
        disputes: list[DisputeRow],
    ) -> list[PartyFlow]:
        roles: dict[str, list[str]] = defaultdict(list)
        roles[summary.requester].append("requester")
        for b in bids:
            role = "owner" if b.side == "data" else "processor"
            if role not in roles[b.bidder]:
                roles[b.bidder].append(role)
        for d in disputes:
            for who in (d.accuser, *d.panel):
                roles.setdefault(who, [])
        slashes = self._slashes(task, disputes)
        credits = self._dispute_credits(task, disputes)
        return [
            self._flow(task, summary, bids, results, slashes, credits, disputes, a, tuple(r))
            for a, r in roles.items()
        ]

    def _dispute_credits(self, task: int, disputes: list[DisputeRow]) -> dict[str, int]:
        """What resolved disputes credited each account: the bond back or to the accused,
        and the auditors' fees (to each drawn auditor who committed the winning digest)."""
        out: dict[str, int] = defaultdict(int)
        resolved = {int(e.dispute): e for e, _ in self._of(task, DisputeResolved)}
        shown = {int(e.dispute): bytes(e.digest) for e, _ in self._of(task, LeafShown)}
        votes: dict[int, dict[str, bytes]] = defaultdict(dict)
        for e, _ in self._of(task, VoteCommitted):
            votes[int(e.dispute)][str(e.voter).lower()] = bytes(e.commitment)
        fee = self._summary(task).audit_fee
        for d in disputes:
            verdict = resolved.get(d.dispute)
            if verdict is None:
                continue
            out[d.accuser.lower()] += int(verdict.to_accuser)
            out[d.accused.lower()] += int(verdict.to_accused)
            outcome = int(verdict.outcome)
            if outcome == Outcome.CONVICTED:
                paid_for = bytes(verdict.value)
            elif outcome == Outcome.CLEARED:
                paid_for = shown.get(d.dispute, b"")
            else:
                continue
            for auditor in d.panel:
                commitment = votes[d.dispute].get(auditor.lower())
                if commitment == merkle.vote_commitment(d.dispute, auditor, paid_for):
                    out[auditor.lower()] += fee
        return out

    def _flow(
        self,
        task: int,
        summary: TaskSummary,
        bids: list[BidRow],
        results: list[ResultRow],
        slashes: list[SlashRow],
        credits: dict[str, int],
        disputes: list[DisputeRow],
        address: str,
        roles: tuple[str, ...],
    ) -> PartyFlow:
        me = address.lower()
        paid_in = summary.budget if me == summary.requester.lower() else 0
        paid_in += sum(int(e.stake) for e, _ in self._of(task, BidPlaced) if e.bidder.lower() == me)
        paid_in += sum(d.bond for d in disputes if d.accuser.lower() == me)
        refunded = sum(
            int(e.refunded)
            for kind in (BidWithdrawn, BidEvicted)
            for e, _ in self._of(task, kind)
            if e.bidder.lower() == me
        )
        credited = sum(
            int(e.amount)
            for kind in (Collected, Claimed)
            for e, _ in self._of(task, kind)
            if e.account.lower() == me
        )
        credited += credits.get(me, 0)
        # an owner's share of a leaf nobody opened is credited at once (a processor's joins its pay)
        credited += sum(
            int(e.amount)
            for e, _ in self._of(task, ShareCredited)
            if e.side == Side.DATA and self._bidder(task, Side.DATA, int(e.bid)).lower() == me
        )
        owed = int(self.client.owed(task, address))
        first_closed = bool(self._of(task, EpochClosed))
        data_pay = 0
        if first_closed:
            for b in bids:
                if b.side == "data" and b.bidder.lower() == me and b.winner and b.data_committed:
                    view = self.client.get_bid(task, Side.DATA, b.index)
                    data_pay += (b.fill - view.undelivered) * b.price
        return PartyFlow(
            address=address,
            roles=roles,
            paid_in=paid_in,
            refunded=refunded,
            credited=credited,
            owed=owed,
            data_pay=data_pay,
            processing_pay=sum(r.pay for r in results if r.processor.lower() == me),
            slashed=sum(s.forfeited for s in slashes if s.processor.lower() == me),
        )

    def _gas_rows(self, logs: Iterable[_Log]) -> list[GasRow]:
        calls: dict[str, list[int]] = defaultdict(list)
        for tx in dict.fromkeys(x.tx for x in logs):
            if tx not in self._gas:
                sent = self._rpc(lambda h=tx: self.w3.eth.get_transaction(h), "eth_getTransaction")
                receipt = self._rpc(
                    lambda h=tx: self.w3.eth.get_transaction_receipt(h), "eth_getTransactionReceipt"
                )
                selector = bytes(sent["input"])[:4]
                name = self._functions.get(selector, "0x" + selector.hex())
                self._gas[tx] = (name, int(receipt["gasUsed"]))
            name, gas = self._gas[tx]
            calls[name].append(gas)
        return [GasRow(name, len(g), sum(g)) for name, g in calls.items()]

    # ------------------------------------------------------------ parties

    def party(self, address: str) -> PartyView | None:
        """One account across every task of the market, or None if it never took part."""
        if not is_address(address):
            return None
        who = to_checksum_address(address)
        with self._lock:
            self.refresh()
            me = who.lower()
            tasks: list[PartyTask] = []
            for task in range(self.num_tasks()):
                involved = any(
                    (isinstance(x.event, TaskCreated) and x.event.requester.lower() == me)
                    or (isinstance(x.event, BidPlaced) and x.event.bidder.lower() == me)
                    or (isinstance(x.event, DisputeOpened) and x.event.accuser.lower() == me)
                    for x in self._scan.by_task.get(task, [])
                )
                if not involved:
                    continue
                summary = self._summary(task)
                all_results = self._results(task)
                bids = self._bids(task, all_results)
                disputes = self._disputes(task)
                slashes_all = self._slashes(task, disputes)
                credits = self._dispute_credits(task, disputes)
                roles = [] if summary.requester.lower() != me else ["requester"]
                mine = tuple(b for b in bids if b.bidder.lower() == me)
                roles += [
                    r
                    for r, side in (("owner", "data"), ("processor", "processing"))
                    if any(b.side == side for b in mine)
                ]
                results = tuple(r for r in all_results if r.processor.lower() == me)
                slashes = tuple(s for s in slashes_all if s.processor.lower() == me)
                tasks.append(
                    PartyTask(
                        summary=summary,
                        roles=tuple(roles),
                        bids=mine,
                        flow=self._flow(
                            task,
                            summary,
                            bids,
                            all_results,
                            slashes_all,
                            credits,
                            disputes,
                            who,
                            tuple(roles),
                        ),
                        results=results,
                        slashes=slashes,
                    )
                )
            withdrawn = sum(
                int(x.event.amount)
                for x in self._scan.logs
                if isinstance(x.event, Withdrawn) and x.event.account.lower() == me
            )
            if not tasks and not withdrawn:
                return None
            return PartyView(
                address=who,
                tasks=tuple(tasks),
                claimable=int(self.client.claimable(who)),
                withdrawn=withdrawn,
            )
