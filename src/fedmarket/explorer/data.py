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

from fedmarket.chain.backends import rpc
from fedmarket.chain.client import MarketClient, Side, TaskState
from fedmarket.chain.compile import compile_contract
from fedmarket.chain.events import (
    MARKET_EVENTS,
    AssignmentCommitted,
    BidPlaced,
    BidWithdrawn,
    DataCommitted,
    EpochClosed,
    Event,
    EventDecoder,
    ProcessorSlashed,
    ResultSubmitted,
    TaskCancelled,
    TaskCreated,
    TaskFinished,
    TaskResolved,
    TimeoutClaimed,
    Withdrawn,
)
from fedmarket.errors import ChainError, ConfigError

__all__ = [
    "BidRow",
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
    open_bids: dict[str, int]  # side -> bids not withdrawn
    created: Stamp
    timed_out: bool = False

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
    earned: int  # processing pay accrued (the contract's view)
    data_committed: bool  # a winning owner committed its blocks' root
    placed: Stamp


@dataclass(frozen=True)
class ResultRow:
    epoch: int
    processor: str
    on_time: bool
    pay: int
    digest: str
    at: Stamp


@dataclass(frozen=True)
class SlashRow:
    epoch: int
    processor: str
    forfeited_pay: int
    forfeited_stake: int
    share_per_participant: int
    at: Stamp


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

    ``paid_in`` went to the market (escrow, stakes); ``refunded`` came back at once (a
    withdrawn processing bid's stake); ``credited`` the task has already credited it (claimed),
    ``owed`` it would credit now. ``net`` is what the task leaves the account with, so far.
    """

    address: str
    roles: tuple[str, ...]
    paid_in: int
    refunded: int
    credited: int
    owed: int
    data_pay: int  # an owner's fill x price, once the first epoch closed and its data was committed
    processing_pay: int  # a processor's results, less what a slash forfeited
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
    assignment_hash: str  # 0x hex, zero before the assignment
    liabilities: int  # what the task still holds for anyone
    dust: int
    cancelled_by: str | None
    finished: Stamp | None
    fingerprint: str  # changes whenever anything on this page could


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
        compiled = compile_contract("Market")
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
        terms = self.client.tasks(task)
        clock = self.client.clock_of(task)
        created = self._of(task, TaskCreated)
        if not created:
            raise ChainError(
                f"task {task} exists on {self.address} but its TaskCreated event was not found",
                hint="the node may have pruned old logs; use an archive node",
            )
        closed = self._of(task, EpochClosed)
        finished = self._of(task, TaskFinished)
        open_bids: dict[str, int] = {}
        for side, name in SIDE_NAMES.items():
            placed = sum(1 for e, _ in self._of(task, BidPlaced) if e.side == side)
            gone = sum(1 for e, _ in self._of(task, BidWithdrawn) if e.side == side)
            open_bids[name] = placed - gone
        return TaskSummary(
            id=task,
            state=STATE_NAMES.get(clock.state, clock.state.name.lower()),
            requester=str(terms.requester),
            spec_hash="0x" + terms.spec_hash.hex(),
            public_context_hash="0x" + terms.public_context_hash.hex(),
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
        )

    def task(self, task: int) -> TaskDetail | None:
        """Everything about one task, or None if the market has no such task."""
        with self._lock:
            self.refresh()
            if not 0 <= task < self.num_tasks():
                return None
            summary = self._summary(task)
            bids = self._bids(task)
            epochs = self._epochs(task, summary, bids)
            resolved = self._of(task, TaskResolved)
            cancelled = self._of(task, TaskCancelled)
            finished = self._of(task, TaskFinished)
            terms = self.client.tasks(task)
            logs = self._scan.by_task.get(task, [])
            return TaskDetail(
                summary=summary,
                bids=tuple(bids),
                resolution=resolved[0][0] if resolved else None,
                epochs=tuple(epochs),
                flows=tuple(self._flows(task, summary, bids)),
                gas=tuple(self._gas_rows(logs)),
                assignment_hash="0x" + terms.assignment_hash.hex(),
                liabilities=int(self.client.liabilities(task)),
                dust=int(self.client.dust(task)),
                cancelled_by=str(cancelled[0][0].by) if cancelled else None,
                finished=self._stamp(finished[0][1]) if finished else None,
                fingerprint=f"{len(logs)}:{summary.state}:{summary.epoch}",
            )

    def _bids(self, task: int) -> list[BidRow]:
        rows: list[BidRow] = []
        committed = {e.owner.lower() for e, _ in self._of(task, DataCommitted)}
        for placed, log in self._of(task, BidPlaced):
            side = Side(placed.side)
            view = self.client.get_bid(task, side, int(placed.bid))
            rows.append(
                BidRow(
                    task=task,
                    side=SIDE_NAMES[side],
                    index=int(placed.bid),
                    bidder=str(placed.bidder),
                    amount=int(placed.amount),
                    price=int(placed.price),
                    stake=int(placed.stake),
                    withdrawn=view.amount == 0,
                    winner=view.winner,
                    fill=int(view.fill),
                    slashed=view.slashed,
                    earned=int(view.earned),
                    data_committed=side == Side.DATA and placed.bidder.lower() in committed,
                    placed=self._stamp(log),
                )
            )
        return rows

    def _epochs(self, task: int, summary: TaskSummary, bids: list[BidRow]) -> list[EpochRow]:
        assigned = self._of(task, AssignmentCommitted)
        if not assigned:
            return []
        winners = [b.bidder for b in bids if b.side == "processing" and b.winner]
        results: dict[int, list[ResultRow]] = defaultdict(list)
        for r, log in self._of(task, ResultSubmitted):
            results[int(r.epoch)].append(
                ResultRow(
                    int(r.epoch),
                    str(r.processor),
                    bool(r.on_time),
                    int(r.pay),
                    "0x" + r.digest.hex(),
                    self._stamp(log),
                )
            )
        slashes: dict[int, list[SlashRow]] = defaultdict(list)
        for s, log in self._of(task, ProcessorSlashed):
            slashes[int(s.epoch)].append(
                SlashRow(
                    int(s.epoch),
                    str(s.processor),
                    int(s.forfeited_pay),
                    int(s.forfeited_stake),
                    int(s.share_per_participant),
                    self._stamp(log),
                )
            )
        closes = {int(e.epoch): (e, log) for e, log in self._of(task, EpochClosed)}
        # claim_timeout closes an unclosed epoch in its own transaction
        timeouts = {log.tx for _, log in self._of(task, TimeoutClaimed)}
        deadline = int(assigned[0][0].epoch_deadline)
        out: list[EpochRow] = []
        gone: set[str] = set()  # slashed in an earlier epoch
        last = max(closes) if closes else -1
        open_epoch = summary.state == "training"
        for epoch in range(last + 1 + (1 if open_epoch else 0)):
            close = closes.get(epoch)
            done = {r.processor.lower() for r in results[epoch]}
            expected = tuple(w for w in winners if w.lower() not in gone and w.lower() not in done)
            out.append(
                EpochRow(
                    epoch=epoch,
                    deadline=deadline,
                    closed=self._stamp(close[1]) if close else None,
                    go_on=bool(close[0].go_on) if close else None,
                    results=tuple(results[epoch]),
                    missing=expected if close else (),
                    waiting=() if close else expected,
                    slashes=tuple(slashes[epoch]),
                    by_timeout=close is not None and close[1].tx in timeouts,
                )
            )
            gone |= {s.processor.lower() for s in slashes[epoch]}
            if close is not None:
                deadline = int(close[0].next_deadline)
        return out

    def _flows(self, task: int, summary: TaskSummary, bids: list[BidRow]) -> list[PartyFlow]:
        roles: dict[str, list[str]] = defaultdict(list)
        roles[summary.requester].append("requester")
        for b in bids:
            role = "owner" if b.side == "data" else "processor"
            if role not in roles[b.bidder]:
                roles[b.bidder].append(role)
        return [self._flow(task, summary, bids, a, tuple(r)) for a, r in roles.items()]

    def _flow(
        self,
        task: int,
        summary: TaskSummary,
        bids: list[BidRow],
        address: str,
        roles: tuple[str, ...],
    ) -> PartyFlow:
        me = address.lower()
        paid_in = summary.budget if me == summary.requester.lower() else 0
        paid_in += sum(b.stake for b in bids if b.bidder.lower() == me)
        refunded = sum(
            int(e.refunded) for e, _ in self._of(task, BidWithdrawn) if e.bidder.lower() == me
        )
        credited = int(self.client.credited(task, address))
        owed = int(self.client.owed(task, address))
        first_closed = bool(self._of(task, EpochClosed))
        data_pay = sum(
            b.fill * b.price
            for b in bids
            if b.side == "data"
            and b.bidder.lower() == me
            and b.winner
            and b.data_committed
            and first_closed
        )
        pay = sum(
            int(e.pay) for e, _ in self._of(task, ResultSubmitted) if e.processor.lower() == me
        )
        slashes = [e for e, _ in self._of(task, ProcessorSlashed) if e.processor.lower() == me]
        forfeited_pay = sum(int(e.forfeited_pay) for e in slashes)
        return PartyFlow(
            address=address,
            roles=roles,
            paid_in=paid_in,
            refunded=refunded,
            credited=credited,
            owed=owed,
            data_pay=data_pay,
            processing_pay=pay - forfeited_pay,
            slashed=sum(int(e.forfeited_pay) + int(e.forfeited_stake) for e in slashes),
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
                    for x in self._scan.by_task.get(task, [])
                )
                if not involved:
                    continue
                summary = self._summary(task)
                bids = self._bids(task)
                roles = [] if summary.requester.lower() != me else ["requester"]
                mine = tuple(b for b in bids if b.bidder.lower() == me)
                roles += [
                    r
                    for r, side in (("owner", "data"), ("processor", "processing"))
                    if any(b.side == side for b in mine)
                ]
                results = tuple(
                    ResultRow(
                        int(r.epoch),
                        str(r.processor),
                        bool(r.on_time),
                        int(r.pay),
                        "0x" + r.digest.hex(),
                        self._stamp(log),
                    )
                    for r, log in self._of(task, ResultSubmitted)
                    if r.processor.lower() == me
                )
                slashes = tuple(
                    SlashRow(
                        int(s.epoch),
                        str(s.processor),
                        int(s.forfeited_pay),
                        int(s.forfeited_stake),
                        int(s.share_per_participant),
                        self._stamp(log),
                    )
                    for s, log in self._of(task, ProcessorSlashed)
                    if s.processor.lower() == me
                )
                tasks.append(
                    PartyTask(
                        summary=summary,
                        roles=tuple(roles),
                        bids=mine,
                        flow=self._flow(task, summary, bids, who, tuple(roles)),
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
