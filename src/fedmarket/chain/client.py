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

from fedmarket.chain import allocation, merkle
from fedmarket.chain.allocation import Allocation, Fill, Offer
from fedmarket.chain.compile import CompiledContract, compile_contract
from fedmarket.chain.events import (
    MARKET_EVENTS,
    TOKEN_EVENTS,
    BidPlaced,
    BidWithdrawn,
    Claimed,
    Collected,
    DisputeOpened,
    DisputeResolved,
    EpochClosed,
    EpochRoots,
    Event,
    EventDecoder,
    ModelReleased,
    ReserveCredited,
    ReserveWithdrawn,
    RootSubmitted,
    TaskCreated,
    Withdrawn,
    abi_type,
)
from fedmarket.chain.signing import SignedRoot
from fedmarket.errors import ChainError, ConfigError, ContractRevert

__all__ = [
    "BidView",
    "Clock",
    "DisputeState",
    "DisputeView",
    "Floors",
    "GasEntry",
    "GasLog",
    "MarketClient",
    "Outcome",
    "Receipt",
    "Side",
    "Solvency",
    "Task",
    "TaskState",
    "Terms",
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
class Floors:
    """A task's floors (0: none): processing price, stake per point and epoch, data price."""

    min_processing_price: int = 0
    stake_per_point_epoch: int = 0
    min_data_price: int = 0

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.min_processing_price, self.stake_per_point_epoch, self.min_data_price)


@dataclass(frozen=True)
class Terms:
    """A task's fixed terms (``Market.terms``; bidding fields as last reopened)."""

    requester: ChecksumAddress
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
    terms_hash: bytes  # keccak(0x0b | spec_hash | public_context_hash)
    assignment_root: bytes


NO_FLOORS = Floors()

# the name the roles and reports used before the terms were split from the clock
Task = Terms


@dataclass(frozen=True)
class Clock:
    """The per-epoch state of a task (``Market.clock_of``)."""

    state: TaskState
    epoch: int
    deadline: int  # of the epoch or the assignment window; the finish time once over
    submitted: int
    active: int
    flags: int
    full_epochs: int
    spent: int

    @property
    def first_closed(self) -> bool:
        """Whether the first epoch has closed (data owners are then paid)."""
        return bool(self.flags & 1)

    @property
    def relayed(self) -> bool:
        """Whether every active processor's root of this epoch was relayed on time."""
        return bool(self.flags & 2)


@dataclass(frozen=True)
class BidView:
    """One bid, decoded (``Market.get_bid``). ``amount == 0`` means an empty slot."""

    bidder: ChecksumAddress
    amount: int
    price: int
    stake_price: int
    winner: bool
    fill: int
    committed: bool
    slashed: bool
    undelivered: int
    epoch_pay: int
    last_submitted_epoch: int
    open_disputes: int


class Outcome(IntEnum):
    """How a dispute ended (``DisputeResolved.outcome``)."""

    UNOPENED = 1  # the accused's leaf was never shown: slashed (objective fault)
    DISMISSED = 2  # an undelivered block it reported, or no panel could be drawn
    CONVICTED = 3  # every drawn auditor agreed on another digest: slashed to the reserve
    CLEARED = 4  # most drawn auditors agreed with its leaf: the bond goes to it
    NO_VERDICT = 5  # neither: the bond returns to the accuser


class DisputeState(IntEnum):
    NONE = 0
    OPEN = 1
    DRAWN = 2
    RESOLVED = 3


@dataclass(frozen=True)
class DisputeView:
    """One dispute, decoded (``Market.dispute_of``)."""

    task: int
    accuser: ChecksumAddress
    accused: int
    owner_bid: int
    block_index: int
    epoch: int
    entry_index: int
    state: DisputeState
    open_block: int
    panel: tuple[int, ...]
    vote_deadline: int
    show_deadline: int
    bond: int
    fee: int
    accused_root: bytes
    shown: bytes


@dataclass(frozen=True)
class Solvency:
    """The market's token balance against what it owes and holds in its reserve: equal
    unless someone sent tokens to the contract directly."""

    balance: int
    liabilities: int
    total_claimable: int
    reserve: int = 0

    @property
    def holds(self) -> bool:
        return self.balance == self.liabilities + self.total_claimable + self.reserve


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
        constructor = next((e for e in compiled.abi if e.get("type") == "constructor"), None)
        types = [abi_type(i) for i in constructor["inputs"]] if constructor else []
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

MARKET_PARTS = ("Market", "MarketSetup", "MarketCourt")


def compile_market() -> CompiledContract:
    """Market.vy with the functions and events of the two contracts it delegates to
    (MarketSetup, MarketCourt) in one ABI: what a client of the market's address sees."""
    parts = [compile_contract(name) for name in MARKET_PARTS]
    abi: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for part in parts:
        for entry in part.abi:
            if entry.get("type") in ("constructor", "fallback") and part is not parts[0]:
                continue
            key = (str(entry.get("type")), str(entry.get("name", "")))
            if key in seen:
                continue
            seen.add(key)
            abi.append(entry)
    return CompiledContract(
        name="Market",
        abi=abi,
        bytecode=parts[0].bytecode,
        vyper_version=parts[0].vyper_version,
        source_sha256=parts[0].source_sha256,
        from_cache=parts[0].from_cache,
    )


def _task_topic_position(decoder: EventDecoder, kind: type[Event]) -> int | None:
    """Which topic (1-based) of ``kind`` holds the task id, if the task is indexed."""
    for names in (decoder.indexed_names(kind),):
        if "task" in names:
            return names.index("task") + 1
    return None


class MarketClient(_Client):
    """The market as one party sees it: ``market.as_(owner).bid_data(...)``.

    One address, three contracts' functions (``compile_market``). Transactions return a
    :class:`Receipt`; views return ints, bools, bytes, addresses or frozen dataclasses. A
    revert raises :class:`ContractRevert` with the contract's reason.
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
        compiled = compile_market()
        _check_struct(compiled, "terms", Terms)
        _check_struct(compiled, "clock_of", Clock)
        _check_struct(compiled, "get_bid", BidView)
        _check_struct(compiled, "dispute_of", DisputeView)
        _check_struct(compiled, "floors_of", Floors)
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

    def chain_id(self) -> int:
        return self._tx.chain_id()

    # ------------------------------------------------------------ logs

    def logs(self, kind: type[E], *, task: int | None = None, from_block: int = 0) -> list[E]:
        """Every ``kind`` event this market emitted (for ``task``, if given), oldest first.

        When the event indexes its task the filter runs on the node, else here.
        """
        decoder = self._tx.decoders[self.address.lower()]
        topics: list[Any] = ["0x" + decoder.topic_of(kind).hex()]
        position = _task_topic_position(decoder, kind) if task is not None else None
        if task is not None and position is not None:
            topics += [None] * (position - 1) + ["0x" + task.to_bytes(32, "big").hex()]
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
        out = [e for e in (decoder.decode(log) for log in raw) if isinstance(e, kind)]
        if task is not None and position is None:
            out = [e for e in out if getattr(e, "task", task) == task]
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
            _uint(dispute_bond_bps, "dispute_bond_bps"),
            _uint(audit_fee, "audit_fee"),
            _uint(min_fill, "min_fill"),
            tuple(_uint(v, "floor") for v in floors.as_tuple()),
            value=_first(TaskCreated, "task"),
        )

    def bid_data(
        self, task: int, points: int, price_per_point: int, evict: int = 0
    ) -> Receipt[int]:
        """Offer ``points`` data points; ``value`` is the bid's index on the data side.
        ``evict`` (index + 1) names a pricier bid to replace when the side is full."""
        return self._receipt(
            "bid_data",
            _uint(task, "task"),
            _uint(points, "points"),
            _uint(price_per_point, "price_per_point"),
            _uint(evict, "evict"),
            value=_first(BidPlaced, "bid"),
        )

    def bid_processing(
        self, task: int, capacity_per_epoch: int, price_per_point: int, evict: int = 0
    ) -> Receipt[int]:
        """Offer processing capacity, staking capacity x max(price, stake floor) x max_epochs
        (approve it first); ``value`` is the bid's index on the processing side."""
        return self._receipt(
            "bid_processing",
            _uint(task, "task"),
            _uint(capacity_per_epoch, "capacity_per_epoch"),
            _uint(price_per_point, "price_per_point"),
            _uint(evict, "evict"),
            value=_first(BidPlaced, "bid"),
        )

    def withdraw_bid(self, task: int, side: Side | int, index: int) -> Receipt[int]:
        """``value`` is the stake credited back (withdrawable at once)."""
        return self._receipt(
            "withdraw_bid",
            _uint(task, "task"),
            int(side),
            _uint(index, "index"),
            value=_first(BidWithdrawn, "refunded"),
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

    def reopen(self, task: int, floors: Floors, bidding_seconds: int) -> Receipt[None]:
        """Reopen bidding with floors no lower than before (bids below them are refunded)."""
        return self._receipt(
            "reopen",
            _uint(task, "task"),
            tuple(_uint(v, "floor") for v in floors.as_tuple()),
            _uint(bidding_seconds, "bidding_seconds"),
            value=_none,
        )

    def cancel(self, task: int) -> Receipt[None]:
        return self._receipt("cancel", _uint(task, "task"), value=_none)

    # ------------------------------------------------------------ assignment and data

    def commit_data(
        self, task: int, owner_bid: int, block_sizes: Sequence[int], digests: Sequence[bytes]
    ) -> Receipt[None]:
        """Publish an owner's manifest (block sizes and digests) in the event log."""
        return self._receipt(
            "commit_data",
            _uint(task, "task"),
            _uint(owner_bid, "owner_bid"),
            [_uint(s, "block size") for s in block_sizes],
            [_bytes32(d, "block digest") for d in digests],
            value=_none,
        )

    def commit_assignment(
        self, task: int, records: Sequence[merkle.Record], model_digest: bytes
    ) -> Receipt[None]:
        """Commit the assignment's records and epoch 0's model digest (starts epoch 0)."""
        return self._receipt(
            "commit_assignment",
            _uint(task, "task"),
            [r.as_tuple() for r in records],
            _bytes32(model_digest, "model_digest"),
            value=_none,
        )

    def report_undelivered(
        self, task: int, processor: int, blocks: Sequence[tuple[int, int, merkle.EntryProof]]
    ) -> Receipt[None]:
        """Report blocks (owner bid, block index, entry proof) this processor never received."""
        return self._receipt(
            "report_undelivered",
            _uint(task, "task"),
            _uint(processor, "processor"),
            [(o, i, e.as_tuple()) for o, i, e in blocks],
            value=_none,
        )

    # ------------------------------------------------------------ epochs

    def relay_epoch(self, task: int, epoch: int, signed: Sequence[SignedRoot]) -> Receipt[None]:
        """Record every active processor's signed root, in bid order, on time."""
        return self._receipt(
            "relay_epoch",
            _uint(task, "task"),
            _uint(epoch, "epoch"),
            [s.as_tuple() for s in signed],
            value=_none,
        )

    def submit_root(
        self, task: int, epoch: int, processor: int, signed: SignedRoot
    ) -> Receipt[None]:
        """Record one processor's root (its own, or relayed with its signature)."""
        return self._receipt(
            "submit_root",
            _uint(task, "task"),
            _uint(epoch, "epoch"),
            _uint(processor, "processor"),
            signed.as_tuple(),
            value=_none,
        )

    def close_epoch(
        self,
        task: int,
        epoch: int,
        next_model_digest: bytes,
        go_on: bool = True,
        not_received: int = 0,
    ) -> Receipt[None]:
        """Close ``epoch`` and release the next model (its digest); ``not_received`` is a
        bitmap of processors whose results never arrived (their pay goes to the reserve)."""
        return self._receipt(
            "close_epoch",
            _uint(task, "task"),
            _uint(epoch, "epoch"),
            _bytes32(next_model_digest, "next_model_digest"),
            bool(go_on),
            _uint(not_received, "not_received"),
            value=_none,
        )

    def claim_timeout(self, task: int, side: Side | int, index: int) -> Receipt[None]:
        return self._receipt(
            "claim_timeout", _uint(task, "task"), int(side), _uint(index, "index"), value=_none
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
        """Accuse processor ``accused`` of a wrong result for one block in a closed epoch,
        posting the bond (approve it first); ``value`` is the dispute's id."""
        return self._receipt(
            "open_dispute",
            _uint(task, "task"),
            _uint(epoch, "epoch"),
            _uint(accused, "accused"),
            _uint(owner_bid, "owner_bid"),
            _uint(block_index, "block_index"),
            entry.as_tuple(),
            where.as_tuple(),
            value=_first(DisputeOpened, "dispute"),
        )

    def draw(self, dispute: int) -> Receipt[None]:
        return self._receipt("draw", _uint(dispute, "dispute"), value=_none)

    def commit_vote(self, dispute: int, commitment: bytes) -> Receipt[None]:
        return self._receipt(
            "commit_vote",
            _uint(dispute, "dispute"),
            _bytes32(commitment, "commitment"),
            value=_none,
        )

    def show_leaf(self, dispute: int, digest: bytes, proof: Sequence[bytes]) -> Receipt[None]:
        return self._receipt(
            "show_leaf",
            _uint(dispute, "dispute"),
            _bytes32(digest, "digest"),
            [_bytes32(p, "proof node") for p in proof],
            value=_none,
        )

    def resolve_dispute(self, dispute: int, value: bytes) -> Receipt[Outcome]:
        """``value``: the digest the panel agreed on (the leaf's, or another)."""
        receipt = self._receipt(
            "resolve_dispute",
            _uint(dispute, "dispute"),
            _bytes32(value, "value"),
            value=_first(DisputeResolved, "outcome"),
        )
        return Receipt(
            receipt.function,
            receipt.tx_hash,
            receipt.block_number,
            receipt.gas_used,
            receipt.events,
            Outcome(receipt.value),
        )

    # ------------------------------------------------------------ payments

    def collect(self, task: int, side: Side | int, index: int) -> Receipt[int]:
        """Transfer what one of the acting party's bids can collect now."""
        return self._receipt(
            "collect",
            _uint(task, "task"),
            int(side),
            _uint(index, "index"),
            value=_first(Collected, "amount"),
        )

    def claim(self, task: int, side: Side | int, index: int) -> Receipt[int]:
        """Credit a bid's bidder (anyone may call it); ``value`` is the amount credited."""
        return self._receipt(
            "claim",
            _uint(task, "task"),
            int(side),
            _uint(index, "index"),
            value=_sum(Claimed, "amount"),
        )

    def collect_requester(self, task: int) -> Receipt[int]:
        return self._receipt(
            "collect_requester", _uint(task, "task"), value=_first(Collected, "amount")
        )

    def withdraw(self) -> Receipt[int]:
        """Transfer everything credited to the acting party; ``value`` is the amount."""
        return self._receipt("withdraw", value=_first(Withdrawn, "amount"))

    def withdraw_reserve(self) -> Receipt[int]:
        return self._receipt("withdraw_reserve", value=_first(ReserveWithdrawn, "amount"))

    # ------------------------------------------------------------ views

    def terms(self, task: int) -> Terms:
        return _from_tuple(Terms, self._view("terms", _uint(task, "task")))

    tasks = terms

    def floors_of(self, task: int) -> Floors:
        return _from_tuple(Floors, self._view("floors_of", _uint(task, "task")))

    def clock_of(self, task: int) -> Clock:
        values = list(self._view("clock_of", _uint(task, "task")))
        values[0] = TaskState(values[0])
        return _from_tuple(Clock, values)

    def get_bid(self, task: int, side: Side | int, index: int) -> BidView:
        return _from_tuple(
            BidView, self._view("get_bid", _uint(task, "task"), int(side), _uint(index, "index"))
        )

    def book_of(self, task: int) -> tuple[int, int]:
        """(data, processing) bitmaps: the open bids while bidding, the winners after."""
        data, processing = self._view("book_of", _uint(task, "task"))
        return int(data), int(processing)

    def active_of(self, task: int) -> tuple[int, int]:
        """(active processors bitmap, their pay per full epoch)."""
        bitmap, cost = self._view("active_of", _uint(task, "task"))
        return int(bitmap), int(cost)

    def epoch_commitments(self, task: int) -> tuple[bytes, bytes]:
        acc, history = self._view("epoch_commitments", _uint(task, "task"))
        return bytes(acc), bytes(history)

    def dispute_of(self, dispute: int) -> DisputeView:
        values = list(self._view("dispute_of", _uint(dispute, "dispute")))
        values[7] = DisputeState(values[7])
        values[9] = tuple(values[9])
        return _from_tuple(DisputeView, values)

    def vote_of(self, dispute: int, slot: int) -> bytes:
        return bytes(self._view("vote_of", _uint(dispute, "dispute"), _uint(slot, "slot")))

    def is_reported(self, task: int, processor: int, block: int) -> bool:
        return bool(
            self._view(
                "is_reported",
                _uint(task, "task"),
                _uint(processor, "processor"),
                _uint(block, "block"),
            )
        )

    def num_disputes(self) -> int:
        return int(self._view("num_disputes"))

    def is_disputed(self, task: int, block: int, accused: int, epoch: int) -> bool:
        return bool(
            self._view(
                "is_disputed",
                _uint(task, "task"),
                _uint(block, "block"),
                _uint(accused, "accused"),
                _uint(epoch, "epoch"),
            )
        )

    def data_money_of(self, task: int) -> tuple[int, int]:
        """(cost of the committed owners' fills, of the points reported undelivered)."""
        committed, undelivered = self._view("data_money_of", _uint(task, "task"))
        return int(committed), int(undelivered)

    def bids(self, task: int, side: Side | int) -> list[tuple[int, BidView]]:
        """(index, bid) of every open bid on one side while bidding, every winner after."""
        bitmap = self.book_of(task)[int(side)]
        return [(i, self.get_bid(task, side, i)) for i in range(128) if bitmap >> i & 1]

    def all_bids(self, task: int, side: Side | int) -> list[tuple[int, BidView]]:
        """(index, bid) of every non-empty slot (losers included, once resolved)."""
        seen = {e.bid for e in self.logs(BidPlaced, task=task) if e.side == int(side)}
        out = [(i, self.get_bid(task, side, i)) for i in sorted(seen)]
        return [(i, b) for i, b in out if b.amount > 0]

    def bid_index(self, task: int, side: Side | int, account: str) -> int:
        """The index + 1 of ``account``'s latest bid on ``side`` that still holds its slot,
        or 0 (read from its BidPlaced events)."""
        who = _address(account, "account")
        placed = [
            e for e in self.logs(BidPlaced, task=task) if e.side == int(side) and e.bidder == who
        ]
        for e in reversed(placed):
            bid = self.get_bid(task, side, e.bid)
            if bid.bidder == who and bid.amount > 0:
                return e.bid + 1
        return 0

    def owed(self, task: int, side: Side | int | str, index: int | None = None) -> int:
        """What ``collect(task, side, index)`` would transfer now; given an address instead
        of a side, everything that account can collect from ``task`` (its bids and, for the
        requester, what is left of the budgets)."""
        if isinstance(side, str):
            who = _address(side, "account")
            total = 0
            for s in Side:
                placed = {
                    e.bid
                    for e in self.logs(BidPlaced, task=task)
                    if e.side == s and e.bidder == who
                }
                for i in placed:
                    if self.get_bid(task, s, i).bidder == who:
                        total += self.owed(task, s, i)
            if self.terms(task).requester == who:
                total += self.requester_owed(task)
            return total
        assert index is not None
        return int(self._view("owed", _uint(task, "task"), int(side), _uint(index, "index")))

    def requester_owed(self, task: int) -> int:
        return int(self._view("requester_owed", _uint(task, "task")))

    def claimable(self, account: str) -> int:
        return int(self._view("claimable", _address(account, "account")))

    def liabilities(self, task: int) -> int:
        return int(self._view("liabilities", _uint(task, "task")))

    def total_claimable(self) -> int:
        return int(self._view("total_claimable"))

    def reserve_balance(self) -> int:
        return int(self._view("reserve_balance"))

    def reserve(self) -> ChecksumAddress:
        return to_checksum_address(self._view("reserve"))

    def reserved(self, task: int) -> int:
        """What ``task`` has put in the reserve (late penalties, marks, undelivered data,
        slashes), from its ReserveCredited events."""
        return sum(e.amount for e in self.logs(ReserveCredited, task=task))

    def dust(self, task: int) -> int:
        """What ``task`` took from its parties for good: nothing is left as dust any more,
        so this is what it put in the reserve (:meth:`reserved`)."""
        return self.reserved(task)

    def num_tasks(self) -> int:
        return int(self._view("num_tasks"))

    def grace_seconds(self) -> int:
        return int(self._view("grace_seconds"))

    def draw_delay_blocks(self) -> int:
        return int(self._view("draw_delay_blocks"))

    def domain_separator(self) -> bytes:
        """The EIP-712 domain of signed roots (cached: it never changes)."""
        if not hasattr(self, "_domain"):
            self._domain = bytes(self._view("DOMAIN_SEPARATOR"))
        return self._domain

    DOMAIN_SEPARATOR = domain_separator

    def token(self) -> ChecksumAddress:
        return to_checksum_address(self._view("token"))

    # ------------------------------------------------------------ helpers

    def resolve_greedy(self, task: int) -> Receipt[Allocation]:
        """Read the bid book, compute the allocation the contract accepts
        (:func:`fedmarket.chain.allocation.allocate`) and submit it. ``value`` is the
        allocation; :class:`InfeasibleAllocation` says why none fits."""
        terms = self.terms(task)
        offers = {
            side: [Offer(i, b.amount, b.price) for i, b in self.bids(task, side)] for side in Side
        }
        chosen = allocation.allocate(
            offers[Side.DATA],
            offers[Side.PROCESSING],
            num_points=terms.num_points,
            max_epochs=terms.max_epochs,
            data_budget=terms.data_budget,
            processing_budget=terms.processing_budget,
            min_fill=terms.min_fill,
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

    def epoch_book(self, task: int, *, from_block: int = 0) -> merkle.EpochBook:
        """The task's epochs as the chain recorded them (model digests, roots in order,
        epochs closed), from which a closed epoch's :class:`~merkle.EpochProof` follows."""
        return epoch_book_from_logs(self, task, from_block=from_block)

    def solvency(self) -> Solvency:
        """The market's token balance against Σ liabilities + total claimable + reserve."""
        token = TokenClient(self._tx, compile_contract("DevToken"), self.token(), self.account)
        return Solvency(
            balance=token.balance_of(self.address),
            liabilities=sum(self.liabilities(t) for t in range(self.num_tasks())),
            total_claimable=self.total_claimable(),
            reserve=self.reserve_balance(),
        )


def epoch_book_from_logs(market: Any, task: int, *, from_block: int = 0) -> merkle.EpochBook:
    """An :class:`~merkle.EpochBook` rebuilt from a market's logs (client or in memory)."""
    book = merkle.EpochBook(task)
    events: list[tuple[int, int, int, Event]] = []
    # the model of an epoch is released before its roots, which come before its close
    for rank, kinds in enumerate(((ModelReleased,), (EpochRoots, RootSubmitted), (EpochClosed,))):
        for kind in kinds:
            for i, e in enumerate(market.logs(kind, task=task, from_block=from_block)):
                events.append((int(getattr(e, "epoch")), rank, i, e))  # noqa: B009
    for _, _, _, e in sorted(events, key=lambda x: x[:3]):
        if isinstance(e, ModelReleased):
            book.release(e.epoch, e.model_digest)
        elif isinstance(e, EpochRoots):
            bits = [i for i in range(128) if e.processors >> i & 1]
            for p, root in zip(bits, e.roots, strict=True):
                book.record(e.epoch, p, root)
        elif isinstance(e, RootSubmitted):
            book.record(e.epoch, e.processor, e.root)
        elif isinstance(e, EpochClosed):
            book.closed = max(book.closed, e.epoch + 1)
    return book


def deploy(
    w3: Web3,
    account: LocalAccount,
    grace_seconds: int,
    *,
    reserve: str | None = None,
    draw_delay_blocks: int = 1,
    token_address: str | None = None,
    gas_log: GasLog | None = None,
    token_name: str = "fedmarket dev token",
    token_symbol: str = "FMDEV",
) -> tuple[MarketClient, TokenClient]:
    """Deploy a market paid in ``token_address`` (by default a fresh DevToken whose minter is
    ``account``): MarketCourt, then MarketSetup on it, then Market on that. Both clients act
    as ``account`` and log gas to ``gas_log``. ``reserve`` (default ``account``) may withdraw
    the reserve; ``draw_delay_blocks`` is 1 on a development chain, >= 128 on Ethereum L1."""
    tx = _Transactor(w3, gas_log if gas_log is not None else GasLog())
    if token_address is None:
        token_address = tx.deploy(
            account, compile_contract("DevToken"), [token_name, token_symbol, 18]
        )
    token = TokenClient._attach(tx, token_address, account)
    court = tx.deploy(account, compile_contract("MarketCourt"), [])
    setup = tx.deploy(account, compile_contract("MarketSetup"), [court])
    market_address = tx.deploy(
        account,
        compile_contract("Market"),
        [
            token.address,
            _uint(grace_seconds, "grace_seconds"),
            _address(reserve or account.address, "reserve"),
            _uint(draw_delay_blocks, "draw_delay_blocks"),
            setup,
        ],
    )
    return MarketClient._attach(tx, market_address, account), token
