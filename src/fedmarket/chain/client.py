"""Typed client for Market.vy and DevToken.vy over web3.py.

One method per contract function, frozen dataclasses for what the views return, typed events
in every :class:`Receipt`, the contract's revert reason in :class:`ContractRevert`, and the gas
of every transaction in a shared :class:`GasLog`. Transactions are signed locally with the
acting party's key (``client.as_(account)``), so the same path runs on the embedded chain and
on any JSON-RPC node. Money is ``int`` token base units throughout.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, Generic, TypeVar, cast

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed as _TesterRevert
from eth_typing import ChecksumAddress
from eth_utils import ValidationError as EthValidationError
from eth_utils import is_address, to_checksum_address
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception

from fedmarket.chain import allocation
from fedmarket.chain.allocation import Allocation, Fill, Offer
from fedmarket.chain.compile import CompiledContract, compile_contract
from fedmarket.chain.events import (
    MARKET_EVENTS,
    TOKEN_EVENTS,
    BidPlaced,
    BidWithdrawn,
    Claimed,
    Event,
    EventDecoder,
    TaskCreated,
    Withdrawn,
    abi_type,
)
from fedmarket.errors import ChainError, ConfigError, ContractRevert

__all__ = [
    "BidView",
    "Clock",
    "GasEntry",
    "GasLog",
    "MarketClient",
    "Receipt",
    "Side",
    "Solvency",
    "Task",
    "TaskState",
    "TokenClient",
    "deploy",
    "revert_reason",
]

T = TypeVar("T")
E = TypeVar("E", bound=Event)

# Estimates can be a little short when state moves between estimate and inclusion (a
# deadline passes, another party acts); unused gas is refunded, so a margin costs nothing.
_GAS_MARGIN_NUM, _GAS_MARGIN_DEN, _GAS_MARGIN_ADD = 6, 5, 10_000
_DEV_TIP_WEI = 10**9
_ERROR_STRING_SELECTOR = "08c379a0"  # Error(string), what Vyper's `assert ..., "reason"` raises


# ---------------------------------------------------------------- values


class TaskState(IntEnum):
    """A task's state, as Market.vy numbers it."""

    NO_TASK = 0
    BIDDING = 1
    ASSIGNING = 2
    TRAINING = 3
    FINISHED = 4
    CANCELLED = 5


class Side(IntEnum):
    """Which side of the market a bid is on."""

    DATA = 0
    PROCESSING = 1


@dataclass(frozen=True)
class Task:
    """A task's fixed terms and running totals (``Market.tasks``)."""

    requester: ChecksumAddress
    spec_hash: bytes
    public_context_hash: bytes
    num_points: int
    epoch_seconds: int
    max_epochs: int
    data_budget: int
    processing_budget: int
    bidding_deadline: int
    late_penalty_bps: int
    assignment_hash: bytes
    data_committed_cost: int
    shares: int


@dataclass(frozen=True)
class Clock:
    """The per-epoch state of a task (``Market.clock_of``)."""

    state: TaskState
    epoch: int
    deadline: int
    submitted: int
    active: int
    flags: int
    spent: int

    @property
    def first_closed(self) -> bool:
        """Whether the first epoch has closed (data owners are then paid)."""
        return bool(self.flags & 1)


@dataclass(frozen=True)
class BidView:
    """One bid, decoded (``Market.get_bid``). ``amount == 0`` means withdrawn."""

    bidder: ChecksumAddress
    amount: int
    price: int
    winner: bool
    fill: int
    slashed: bool
    earned: int
    last_submitted_epoch: int
    last_late: bool
    data_root: bytes


@dataclass(frozen=True)
class Solvency:
    """The market's token balance against what it owes: equal unless someone sent tokens to
    the contract directly."""

    balance: int
    liabilities: int
    total_claimable: int

    @property
    def holds(self) -> bool:
        return self.balance == self.liabilities + self.total_claimable


@dataclass(frozen=True)
class Receipt(Generic[T]):
    """A mined, successful transaction. ``value`` is the function's return value (read from
    its event), or None for functions that return nothing."""

    function: str
    tx_hash: str
    block_number: int
    gas_used: int
    events: tuple[Event, ...]
    value: T

    def all(self, kind: type[E]) -> list[E]:
        """Every event of type ``kind``, in log order."""
        return [e for e in self.events if isinstance(e, kind)]

    def one(self, kind: type[E]) -> E:
        """The single event of type ``kind``; :class:`ChainError` if there is not exactly one."""
        found = self.all(kind)
        if len(found) != 1:
            raise ChainError(f"{self.function} emitted {len(found)} {kind.__name__} events, not 1")
        return found[0]


@dataclass(frozen=True)
class GasEntry:
    contract: str
    function: str
    gas_used: int
    tx_hash: str
    sender: str = ""
    seconds: float = 0.0  # wall time from signing to the mined receipt


class GasLog:
    """Gas of every transaction sent through the clients that share this log, in order."""

    def __init__(self) -> None:
        self.entries: list[GasEntry] = []

    def record(self, entry: GasEntry) -> None:
        self.entries.append(entry)

    def calls(self, function: str) -> list[int]:
        """Gas of each call of ``function`` (a bare name such as ``"submit_result"``)."""
        return [e.gas_used for e in self.entries if e.function == function]

    def by_function(self) -> dict[str, list[int]]:
        grouped: dict[str, list[int]] = defaultdict(list)
        for e in self.entries:
            grouped[e.function].append(e.gas_used)
        return dict(grouped)

    def total(self, function: str | None = None) -> int:
        return sum(e.gas_used for e in self.entries if function is None or e.function == function)

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[GasEntry]:
        return iter(self.entries)


# ---------------------------------------------------------------- argument checks


def _uint(value: int, what: str) -> int:
    # Money is integers: a float or bool here is a bug upstream, not something to round.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an int, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ConfigError(f"{what} must not be negative, got {value}")
    return value


def _bytes32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ConfigError(f"{what} must be 32 bytes, got {value!r}")
    return bytes(value)


def _address(value: str, what: str) -> ChecksumAddress:
    if not isinstance(value, str) or not is_address(value):
        raise ConfigError(f"{what} must be an address, got {value!r}")
    return to_checksum_address(value)


def _from_tuple(cls: type[T], values: Sequence[Any]) -> T:
    return cls(*values)


def _check_struct(compiled: CompiledContract, function: str, cls: type[Any]) -> None:
    # A view's struct is decoded by position; a reordered or renamed field would silently
    # shuffle money into the wrong attribute, so refuse to start instead.
    for entry in compiled.abi:
        if entry.get("type") == "function" and entry.get("name") == function:
            components = [str(c["name"]) for c in entry["outputs"][0].get("components", [])]
            names = [f.name for f in fields(cls)]
            if components != names:
                raise ChainError(
                    f"{compiled.name}.{function} returns fields {components} but "
                    f"{cls.__name__} has {names}",
                    hint="update fedmarket.chain.client to match the contract",
                )
            return
    raise ChainError(f"{compiled.name} has no function {function}; the client expects one")


# ---------------------------------------------------------------- revert reasons


def _strip_revert_prefix(message: str) -> str:
    text = message.strip()
    if text.startswith("execution reverted"):
        text = text[len("execution reverted") :].lstrip(":").strip()
    # eth-tester renders an empty revert as the bytes literal.
    return "" if text in ("b''", 'b""', "0x") else text


def revert_reason(exc: BaseException) -> str | None:
    """The revert string of a reverted call on eth-tester or a JSON-RPC node ("" when the
    contract reverted without one), or None if ``exc`` is not a revert."""
    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, str) and data.removeprefix("0x").startswith(_ERROR_STRING_SELECTOR):
            try:
                return str(abi_decode(["string"], bytes.fromhex(data.removeprefix("0x")[8:]))[0])
            except (DecodingError, ValueError):
                pass
        return _strip_revert_prefix(exc.message or str(exc))
    if isinstance(exc, _TesterRevert):
        first = exc.args[0] if exc.args else ""
        return _strip_revert_prefix(str(first))
    return None


def _revert(exc: BaseException, function: str) -> ContractRevert:
    reason = revert_reason(exc) or ""
    hint = None
    if not reason:
        hint = "the contract reverted without a reason: checked arithmetic, or a token call failed"
    return ContractRevert(reason, function=function, hint=hint)


# ---------------------------------------------------------------- transport


def _chain_name(w3: Web3) -> str:
    return str(getattr(w3.provider, "endpoint_uri", None) or "embedded")


class _Transactor:
    """Signs, sends and decodes for every client on one chain; shared by ``as_`` copies."""

    def __init__(self, w3: Web3, gas_log: GasLog, receipt_timeout: float = 120.0) -> None:
        self.w3 = w3
        self.gas_log = gas_log
        self.name = _chain_name(w3)
        self.receipt_timeout = receipt_timeout
        self.decoders: dict[str, EventDecoder] = {}
        self._chain_id: int | None = None
        self._dev_chain = isinstance(w3.provider, EthereumTesterProvider)

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._rpc(lambda: self.w3.eth.chain_id, "eth_chainId"))
        return self._chain_id

    def _rpc(self, thunk: Callable[[], T], what: str) -> T:
        try:
            return thunk()
        except (ContractLogicError, _TesterRevert, TimeExhausted):
            raise  # the callers turn these into ContractRevert / a clearer ChainError
        except (OSError, Web3Exception, EthValidationError) as exc:
            # eth-tester rejects invalid transactions (unaffordable gas, bad nonce) with
            # eth_utils' ValidationError where a node answers with a JSON-RPC error.
            raise ChainError(f"the chain at {self.name} failed on {what}: {exc}") from exc

    def _fees(self) -> dict[str, int]:
        block = self._rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
        base = block.get("baseFeePerGas")
        if base is None:
            return {"gasPrice": int(self._rpc(lambda: self.w3.eth.gas_price, "eth_gasPrice"))}
        if self._dev_chain:
            tip = _DEV_TIP_WEI
        else:
            with warnings.catch_warnings():
                # web3 warns when it falls back to fee history; that fallback is fine here.
                warnings.simplefilter("ignore")
                tip = int(self._rpc(lambda: self.w3.eth.max_priority_fee, "max priority fee"))
        # Twice the base fee survives several full blocks of base-fee increases.
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * int(base) + tip}

    def call(self, contract: Contract, name: str, function: str, args: Sequence[Any]) -> Any:
        fn = contract.get_function_by_name(function)(*args)
        try:
            return self._rpc(lambda: fn.call(), f"{name}.{function}")
        except (ContractLogicError, _TesterRevert) as exc:
            raise _revert(exc, f"{name}.{function}") from exc

    def transact(
        self,
        account: LocalAccount,
        to: ChecksumAddress | None,
        data: bytes,
        *,
        contract: str,
        function: str,
    ) -> tuple[Mapping[str, Any], tuple[Event, ...]]:
        label = f"{contract}.{function}"
        started = time.perf_counter()
        tx: dict[str, Any] = {
            "from": account.address,
            "data": data,
            "value": 0,
            "chainId": self.chain_id(),
        }
        if to is not None:
            tx["to"] = to
        # Estimating first makes a revert surface with the contract's reason, before any gas
        # is spent, on every backend.
        try:
            estimate = self._rpc(lambda: self.w3.eth.estimate_gas(cast(Any, tx)), label)
        except (ContractLogicError, _TesterRevert) as exc:
            raise _revert(exc, label) from exc
        except ChainError as exc:
            self._raise_if_unfunded(exc, account, label)
            raise
        tx["gas"] = estimate * _GAS_MARGIN_NUM // _GAS_MARGIN_DEN + _GAS_MARGIN_ADD
        tx.update(self._fees())
        tx["nonce"] = self._rpc(
            lambda: self.w3.eth.get_transaction_count(account.address, "pending"), "nonce"
        )
        signed = account.sign_transaction(tx)
        try:
            tx_hash = self._rpc(
                lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction), label
            )
        except ChainError as exc:
            self._raise_if_unfunded(exc, account, label)
            raise
        try:
            receipt = self._rpc(
                lambda: self.w3.eth.wait_for_transaction_receipt(
                    tx_hash, timeout=self.receipt_timeout, poll_latency=0.05
                ),
                label,
            )
        except TimeExhausted as exc:
            raise ChainError(
                f"{label} was sent to {self.name} but not mined within {self.receipt_timeout}s",
                hint=f"transaction {tx_hash.to_0x_hex()} may still be mined; check the node",
            ) from exc
        # A failed transaction still costs gas, so it is logged too.
        self.gas_log.record(
            GasEntry(
                contract,
                function,
                int(receipt["gasUsed"]),
                tx_hash.to_0x_hex(),
                account.address,
                time.perf_counter() - started,
            )
        )
        if receipt["status"] != 1:
            raise self._explain_failure(tx, receipt, label)
        events = tuple(e for log in receipt["logs"] if (e := self._decode(log)) is not None)
        return receipt, events

    def _raise_if_unfunded(self, exc: ChainError, account: LocalAccount, label: str) -> None:
        # Nodes word it differently; all mean the sender cannot pay for gas.
        if any(m in str(exc).lower() for m in ("insufficient funds", "cannot afford")):
            raise ChainError(
                f"{account.address} cannot pay gas for {label} on {self.name}",
                hint="fund the account with the chain's native currency",
            ) from exc

    def _explain_failure(
        self, tx: dict[str, Any], receipt: Mapping[str, Any], label: str
    ) -> ChainError:
        # The estimate passed, so the state changed before inclusion, or gas ran out. Replaying
        # on the parent block recovers the reason when the revert is deterministic.
        replay = {k: tx[k] for k in ("from", "to", "data", "gas") if k in tx}
        try:
            self.w3.eth.call(cast(Any, replay), block_identifier=int(receipt["blockNumber"]) - 1)
        except (ContractLogicError, _TesterRevert) as exc:
            return _revert(exc, label)
        except (OSError, Web3Exception):
            pass
        used, limit = int(receipt["gasUsed"]), int(tx["gas"])
        reason = "out of gas" if used >= limit else ""
        return ContractRevert(
            reason,
            function=label,
            hint=f"transaction {receipt['transactionHash'].to_0x_hex()} failed on chain after "
            "a successful estimate (state changed in between)",
        )

    def _decode(self, log: Mapping[str, Any]) -> Event | None:
        decoder = self.decoders.get(str(log["address"]).lower())
        return decoder.decode(log) if decoder is not None else None

    def register(self, address: str, decoder: EventDecoder) -> None:
        self.decoders[address.lower()] = decoder

    def deploy(
        self, account: LocalAccount, compiled: CompiledContract, args: Sequence[Any]
    ) -> ChecksumAddress:
        constructor = next(e for e in compiled.abi if e.get("type") == "constructor")
        types = [abi_type(i) for i in constructor["inputs"]]
        data = compiled.bytecode + abi_encode(types, list(args))
        receipt, _ = self.transact(account, None, data, contract=compiled.name, function="deploy")
        return to_checksum_address(receipt["contractAddress"])


class _Client:
    """What the market and token clients share: a contract at an address, an acting account."""

    _name = ""

    def __init__(
        self, tx: _Transactor, compiled: CompiledContract, address: str, account: LocalAccount
    ) -> None:
        self._tx = tx
        self._compiled = compiled
        self.address = _address(address, f"{compiled.name} address")
        self.account = account
        self._contract = tx.w3.eth.contract(address=self.address, abi=compiled.abi)

    @property
    def w3(self) -> Web3:
        return self._tx.w3

    @property
    def gas_log(self) -> GasLog:
        return self._tx.gas_log

    def _view(self, function: str, *args: Any) -> Any:
        return self._tx.call(self._contract, self._compiled.name, function, args)

    def _send(self, function: str, *args: Any) -> tuple[Mapping[str, Any], tuple[Event, ...]]:
        data = bytes.fromhex(self._contract.encode_abi(function, args=list(args))[2:])
        return self._tx.transact(
            self.account, self.address, data, contract=self._compiled.name, function=function
        )

    def _receipt(
        self, function: str, *args: Any, value: Callable[[tuple[Event, ...]], T]
    ) -> Receipt[T]:
        receipt, events = self._send(function, *args)
        return Receipt(
            function=function,
            tx_hash=receipt["transactionHash"].to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=events,
            value=value(events),
        )


def _none(_: tuple[Event, ...]) -> None:
    return None


def _first(kind: type[E], attr: str) -> Callable[[tuple[Event, ...]], int]:
    def pick(events: tuple[Event, ...]) -> int:
        for e in events:
            if isinstance(e, kind):
                return int(getattr(e, attr))
        raise ChainError(f"the transaction emitted no {kind.__name__} event")

    return pick


def _sum(kind: type[E], attr: str) -> Callable[[tuple[Event, ...]], int]:
    return lambda events: sum(int(getattr(e, attr)) for e in events if isinstance(e, kind))


# ---------------------------------------------------------------- token


class TokenClient(_Client):
    """An ERC-20 (DevToken on development chains) as one party sees it."""

    @classmethod
    def at(
        cls, w3: Web3, address: str, account: LocalAccount, *, gas_log: GasLog | None = None
    ) -> TokenClient:
        """Attach to a deployed token (DevToken's ABI covers any ERC-20's common functions)."""
        return cls._attach(
            _Transactor(w3, gas_log if gas_log is not None else GasLog()), address, account
        )

    @classmethod
    def _attach(cls, tx: _Transactor, address: str, account: LocalAccount) -> TokenClient:
        compiled = compile_contract("DevToken")
        client = cls(tx, compiled, address, account)
        tx.register(client.address, EventDecoder("DevToken", compiled.abi, TOKEN_EVENTS))
        return client

    def as_(self, account: LocalAccount) -> TokenClient:
        """The same token, acting as ``account``; shares this client's gas log."""
        return TokenClient(self._tx, self._compiled, self.address, account)

    def mint(self, receiver: str, amount: int) -> Receipt[None]:
        """Create ``amount`` tokens for ``receiver`` (DevToken's minter only)."""
        return self._receipt(
            "mint", _address(receiver, "receiver"), _uint(amount, "amount"), value=_none
        )

    def approve(self, spender: str, amount: int) -> Receipt[None]:
        return self._receipt(
            "approve", _address(spender, "spender"), _uint(amount, "amount"), value=_none
        )

    def transfer(self, receiver: str, amount: int) -> Receipt[None]:
        return self._receipt(
            "transfer", _address(receiver, "receiver"), _uint(amount, "amount"), value=_none
        )

    def balance_of(self, account: str) -> int:
        return int(self._view("balanceOf", _address(account, "account")))

    def allowance(self, owner: str, spender: str) -> int:
        return int(self._view("allowance", _address(owner, "owner"), _address(spender, "spender")))

    def total_supply(self) -> int:
        return int(self._view("totalSupply"))


# ---------------------------------------------------------------- market


class MarketClient(_Client):
    """Market.vy as one party sees it: ``market.as_(owner).bid_data(...)``.

    Transactions return a :class:`Receipt`; views return ints, bools, addresses or frozen
    dataclasses. A revert raises :class:`ContractRevert` with the contract's reason.
    """

    @classmethod
    def at(
        cls, w3: Web3, address: str, account: LocalAccount, *, gas_log: GasLog | None = None
    ) -> MarketClient:
        """Attach to a deployed market; its token's events are decoded too."""
        return cls._attach(
            _Transactor(w3, gas_log if gas_log is not None else GasLog()), address, account
        )

    @classmethod
    def _attach(cls, tx: _Transactor, address: str, account: LocalAccount) -> MarketClient:
        compiled = compile_contract("Market")
        _check_struct(compiled, "tasks", Task)
        _check_struct(compiled, "clock_of", Clock)
        _check_struct(compiled, "get_bid", BidView)
        client = cls(tx, compiled, address, account)
        tx.register(client.address, EventDecoder("Market", compiled.abi, MARKET_EVENTS))
        try:
            token = client.token()
        except ChainError as exc:
            raise ChainError(
                f"no market at {client.address} on {tx.name}: {exc.message}",
                hint="check the market address",
            ) from exc
        if token.lower() not in tx.decoders:
            # Token events inside market transactions (stake pulls, withdrawals) decode too.
            tx.register(
                token, EventDecoder("DevToken", compile_contract("DevToken").abi, TOKEN_EVENTS)
            )
        return client

    def as_(self, account: LocalAccount) -> MarketClient:
        """The same market, acting as ``account``; shares this client's gas log."""
        return MarketClient(self._tx, self._compiled, self.address, account)

    def block_number(self) -> int:
        """The chain's latest block (event queries from here see only what comes next)."""
        return int(self._tx._rpc(lambda: self._tx.w3.eth.block_number, "eth_blockNumber"))

    def now(self) -> int:
        """The latest block's timestamp."""
        block = self._tx._rpc(lambda: self._tx.w3.eth.get_block("latest"), "eth_getBlock")
        return int(block["timestamp"])

    # ------------------------------------------------------------ logs

    def logs(self, kind: type[E], *, task: int | None = None, from_block: int = 0) -> list[E]:
        """Every ``kind`` event this market emitted (for ``task``, if given), oldest first.

        The first indexed field of every market event is the task id, so the filter runs on
        the node, not here.
        """
        decoder = self._tx.decoders[self.address.lower()]
        topics: list[Any] = ["0x" + decoder.topic_of(kind).hex()]
        if task is not None:
            topics.append("0x" + task.to_bytes(32, "big").hex())
        try:
            raw = self._tx.w3.eth.get_logs(
                {
                    "address": self.address,
                    "fromBlock": from_block,
                    "toBlock": "latest",
                    "topics": topics,
                }
            )
        except (Web3Exception, OSError, ValueError) as exc:
            raise ChainError(f"cannot read {kind.__name__} logs on {self._tx.name}: {exc}") from exc
        out = [decoder.decode(log) for log in raw]
        return [e for e in out if isinstance(e, kind)]

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
        """Announce a task and escrow both budgets (approve the market for their sum first).
        ``value`` is the new task's id."""
        return self._receipt(
            "create_task",
            _bytes32(spec_hash, "spec_hash"),
            _bytes32(public_context_hash, "public_context_hash"),
            _uint(num_points, "num_points"),
            _uint(epoch_seconds, "epoch_seconds"),
            _uint(max_epochs, "max_epochs"),
            _uint(data_budget, "data_budget"),
            _uint(processing_budget, "processing_budget"),
            _uint(bidding_seconds, "bidding_seconds"),
            _uint(late_penalty_bps, "late_penalty_bps"),
            value=_first(TaskCreated, "task"),
        )

    def bid_data(self, task: int, points: int, price_per_point: int) -> Receipt[int]:
        """Offer ``points`` data points; ``value`` is the bid's index on the data side."""
        return self._receipt(
            "bid_data",
            _uint(task, "task"),
            _uint(points, "points"),
            _uint(price_per_point, "price_per_point"),
            value=_first(BidPlaced, "bid"),
        )

    def bid_processing(
        self, task: int, capacity_per_epoch: int, price_per_point: int
    ) -> Receipt[int]:
        """Offer processing capacity, staking capacity x price x max_epochs (approve it
        first); ``value`` is the bid's index on the processing side."""
        return self._receipt(
            "bid_processing",
            _uint(task, "task"),
            _uint(capacity_per_epoch, "capacity_per_epoch"),
            _uint(price_per_point, "price_per_point"),
            value=_first(BidPlaced, "bid"),
        )

    def withdraw_data_bid(self, task: int) -> Receipt[None]:
        return self._receipt("withdraw_data_bid", _uint(task, "task"), value=_none)

    def withdraw_processing_bid(self, task: int) -> Receipt[int]:
        """``value`` is the stake credited back (withdrawable at once)."""
        return self._receipt(
            "withdraw_processing_bid", _uint(task, "task"), value=_first(BidWithdrawn, "refunded")
        )

    def resolve(
        self, task: int, data_fills: Sequence[Fill], processing_fills: Sequence[Fill]
    ) -> Receipt[None]:
        """Submit the greedy allocation (see :meth:`resolve_greedy` to compute it)."""
        return self._receipt(
            "resolve",
            _uint(task, "task"),
            [f.as_tuple() for f in data_fills],
            [f.as_tuple() for f in processing_fills],
            value=_none,
        )

    def cancel(self, task: int) -> Receipt[None]:
        return self._receipt("cancel", _uint(task, "task"), value=_none)

    def commit_assignment(self, task: int, assignment_hash: bytes) -> Receipt[None]:
        return self._receipt(
            "commit_assignment",
            _uint(task, "task"),
            _bytes32(assignment_hash, "assignment_hash"),
            value=_none,
        )

    def commit_data(self, task: int, root: bytes) -> Receipt[None]:
        return self._receipt(
            "commit_data", _uint(task, "task"), _bytes32(root, "root"), value=_none
        )

    def submit_result(self, task: int, epoch: int, digest: bytes) -> Receipt[None]:
        return self._receipt(
            "submit_result",
            _uint(task, "task"),
            _uint(epoch, "epoch"),
            _bytes32(digest, "digest"),
            value=_none,
        )

    def close_epoch(
        self, task: int, epoch: int, flagged: Sequence[str] = (), go_on: bool = True
    ) -> Receipt[None]:
        """Close ``epoch``, slashing ``flagged`` processors; the task ends unless ``go_on``."""
        return self._receipt(
            "close_epoch",
            _uint(task, "task"),
            _uint(epoch, "epoch"),
            [_address(a, "flagged processor") for a in flagged],
            bool(go_on),
            value=_none,
        )

    def claim_timeout(self, task: int) -> Receipt[None]:
        return self._receipt("claim_timeout", _uint(task, "task"), value=_none)

    def claim(self, task: int, account: str | None = None) -> Receipt[int]:
        """Credit ``account`` (default: the acting party) with what ``task`` owes it;
        ``value`` is the amount newly credited."""
        who = self.account.address if account is None else _address(account, "account")
        return self._receipt("claim", _uint(task, "task"), who, value=_sum(Claimed, "amount"))

    def withdraw(self) -> Receipt[int]:
        """Transfer everything credited to the acting party; ``value`` is the amount."""
        return self._receipt("withdraw", value=_first(Withdrawn, "amount"))

    def collect(self, task: int) -> Receipt[int]:
        """Claim what ``task`` owes the acting party and withdraw everything credited, in one
        transaction; ``value`` is the amount transferred."""
        return self._receipt("collect", _uint(task, "task"), value=_first(Withdrawn, "amount"))

    # ------------------------------------------------------------ views

    def tasks(self, task: int) -> Task:
        return _from_tuple(Task, self._view("tasks", _uint(task, "task")))

    get_task = tasks

    def clock_of(self, task: int) -> Clock:
        values = list(self._view("clock_of", _uint(task, "task")))
        values[0] = TaskState(values[0])
        return _from_tuple(Clock, values)

    def get_bid(self, task: int, side: Side | int, index: int) -> BidView:
        return _from_tuple(
            BidView, self._view("get_bid", _uint(task, "task"), int(side), _uint(index, "index"))
        )

    def bids(self, task: int, side: Side | int) -> list[BidView]:
        """Every bid on one side, in index order (withdrawn ones have ``amount == 0``)."""
        return [self.get_bid(task, side, i) for i in range(self.num_bids(task, side))]

    def bid_index(self, task: int, side: Side | int, account: str) -> int:
        """The index + 1 of ``account``'s open bid on ``side``, or 0."""
        return int(
            self._view("bid_index", _uint(task, "task"), int(side), _address(account, "account"))
        )

    def has_submitted(self, task: int, epoch: int, account: str) -> bool:
        return bool(
            self._view(
                "has_submitted",
                _uint(task, "task"),
                _uint(epoch, "epoch"),
                _address(account, "account"),
            )
        )

    def owed(self, task: int, account: str) -> int:
        """What ``claim(task, account)`` would credit now."""
        return int(self._view("owed", _uint(task, "task"), _address(account, "account")))

    def claimable(self, account: str) -> int:
        return int(self._view("claimable", _address(account, "account")))

    def liabilities(self, task: int) -> int:
        return int(self._view("liabilities", _uint(task, "task")))

    def credited(self, task: int, account: str) -> int:
        return int(self._view("credited", _uint(task, "task"), _address(account, "account")))

    def total_claimable(self) -> int:
        return int(self._view("total_claimable"))

    def dust(self, task: int) -> int:
        return int(self._view("dust", _uint(task, "task")))

    def slash_acc(self, task: int) -> int:
        return int(self._view("slash_acc", _uint(task, "task")))

    def num_bids(self, task: int, side: Side | int) -> int:
        return int(self._view("num_bids", _uint(task, "task"), int(side)))

    def num_tasks(self) -> int:
        return int(self._view("num_tasks"))

    def grace_seconds(self) -> int:
        return int(self._view("grace_seconds"))

    def token(self) -> ChecksumAddress:
        return to_checksum_address(self._view("token"))

    # ------------------------------------------------------------ helpers

    def resolve_greedy(self, task: int) -> Receipt[Allocation]:
        """Read the bid book, compute the allocation the contract accepts
        (:func:`fedmarket.chain.allocation.allocate`) and submit it. ``value`` is the
        allocation; :class:`InfeasibleAllocation` says why none fits."""
        terms = self.tasks(task)
        offers = {
            side: [Offer(i, b.amount, b.price) for i, b in enumerate(self.bids(task, side))]
            for side in Side
        }
        chosen = allocation.allocate(
            offers[Side.DATA],
            offers[Side.PROCESSING],
            num_points=terms.num_points,
            max_epochs=terms.max_epochs,
            data_budget=terms.data_budget,
            processing_budget=terms.processing_budget,
        )
        receipt = self.resolve(task, chosen.data, chosen.processing)
        return Receipt(
            function=receipt.function,
            tx_hash=receipt.tx_hash,
            block_number=receipt.block_number,
            gas_used=receipt.gas_used,
            events=receipt.events,
            value=chosen,
        )

    def solvency(self) -> Solvency:
        """The market's token balance against Σ liabilities of all tasks + total claimable."""
        token = TokenClient(self._tx, compile_contract("DevToken"), self.token(), self.account)
        return Solvency(
            balance=token.balance_of(self.address),
            liabilities=sum(self.liabilities(t) for t in range(self.num_tasks())),
            total_claimable=self.total_claimable(),
        )


def deploy(
    w3: Web3,
    account: LocalAccount,
    grace_seconds: int,
    *,
    token_address: str | None = None,
    gas_log: GasLog | None = None,
    token_name: str = "fedmarket dev token",
    token_symbol: str = "FMDEV",
) -> tuple[MarketClient, TokenClient]:
    """Deploy a Market paid in ``token_address`` (by default a fresh DevToken whose minter is
    ``account``), both acting as ``account`` and logging gas to ``gas_log``."""
    tx = _Transactor(w3, gas_log if gas_log is not None else GasLog())
    if token_address is None:
        token_address = tx.deploy(
            account, compile_contract("DevToken"), [token_name, token_symbol, 18]
        )
    token = TokenClient._attach(tx, token_address, account)
    market_address = tx.deploy(
        account, compile_contract("Market"), [token.address, _uint(grace_seconds, "grace_seconds")]
    )
    return MarketClient._attach(tx, market_address, account), token
