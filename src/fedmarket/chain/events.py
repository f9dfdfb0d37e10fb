"""Typed events of Market.vy and DevToken.vy, and the decoder that turns receipt logs into them.

Each class mirrors one contract event field for field (names and order); :class:`EventDecoder`
checks that against the compiled ABI, so a contract change that the client does not know
about fails loudly at startup instead of mis-decoding money.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address

from fedmarket.errors import ChainError

__all__ = [
    "MARKET_EVENTS",
    "TOKEN_EVENTS",
    "Approval",
    "AssignmentCommitted",
    "BidPlaced",
    "BidWithdrawn",
    "Claimed",
    "DataCommitted",
    "EpochClosed",
    "Event",
    "EventDecoder",
    "MinterChanged",
    "ProcessorSlashed",
    "ResultSubmitted",
    "TaskCancelled",
    "TaskCreated",
    "TaskFinished",
    "TaskResolved",
    "TimeoutClaimed",
    "Transfer",
    "Withdrawn",
    "abi_type",
]


@dataclass(frozen=True)
class Event:
    """Base of every decoded event; ``contract`` names the contract that emits it."""

    contract: ClassVar[str] = ""


# ---------------------------------------------------------------- Market.vy


@dataclass(frozen=True)
class TaskCreated(Event):
    contract: ClassVar[str] = "Market"
    task: int
    requester: ChecksumAddress
    spec_hash: bytes
    public_context_hash: bytes
    num_points: int
    data_budget: int
    processing_budget: int
    bidding_deadline: int


@dataclass(frozen=True)
class BidPlaced(Event):
    contract: ClassVar[str] = "Market"
    task: int
    side: int
    bidder: ChecksumAddress
    bid: int
    amount: int
    price: int
    stake: int


@dataclass(frozen=True)
class BidWithdrawn(Event):
    contract: ClassVar[str] = "Market"
    task: int
    side: int
    bidder: ChecksumAddress
    bid: int
    refunded: int


@dataclass(frozen=True)
class TaskResolved(Event):
    contract: ClassVar[str] = "Market"
    task: int
    data_cost: int
    processing_cost_per_epoch: int
    data_winners: int
    processing_winners: int
    assignment_deadline: int


@dataclass(frozen=True)
class TaskCancelled(Event):
    contract: ClassVar[str] = "Market"
    task: int
    by: ChecksumAddress


@dataclass(frozen=True)
class AssignmentCommitted(Event):
    contract: ClassVar[str] = "Market"
    task: int
    assignment_hash: bytes
    epoch_deadline: int


@dataclass(frozen=True)
class DataCommitted(Event):
    contract: ClassVar[str] = "Market"
    task: int
    owner: ChecksumAddress
    root: bytes


@dataclass(frozen=True)
class ResultSubmitted(Event):
    contract: ClassVar[str] = "Market"
    task: int
    epoch: int
    processor: ChecksumAddress
    digest: bytes
    on_time: bool
    pay: int


@dataclass(frozen=True)
class ProcessorSlashed(Event):
    contract: ClassVar[str] = "Market"
    task: int
    epoch: int
    processor: ChecksumAddress
    forfeited_pay: int
    forfeited_stake: int
    share_per_participant: int


@dataclass(frozen=True)
class EpochClosed(Event):
    contract: ClassVar[str] = "Market"
    task: int
    epoch: int
    go_on: bool
    flagged: int
    next_deadline: int


@dataclass(frozen=True)
class TaskFinished(Event):
    contract: ClassVar[str] = "Market"
    task: int
    epochs_closed: int
    timed_out: bool


@dataclass(frozen=True)
class TimeoutClaimed(Event):
    contract: ClassVar[str] = "Market"
    task: int
    state: int
    by: ChecksumAddress


@dataclass(frozen=True)
class Claimed(Event):
    contract: ClassVar[str] = "Market"
    task: int
    account: ChecksumAddress
    amount: int


@dataclass(frozen=True)
class Withdrawn(Event):
    contract: ClassVar[str] = "Market"
    account: ChecksumAddress
    amount: int


# ---------------------------------------------------------------- DevToken.vy (ERC-20)


@dataclass(frozen=True)
class Transfer(Event):
    contract: ClassVar[str] = "DevToken"
    sender: ChecksumAddress
    receiver: ChecksumAddress
    value: int


@dataclass(frozen=True)
class Approval(Event):
    contract: ClassVar[str] = "DevToken"
    owner: ChecksumAddress
    spender: ChecksumAddress
    value: int


@dataclass(frozen=True)
class MinterChanged(Event):
    contract: ClassVar[str] = "DevToken"
    minter: ChecksumAddress


MARKET_EVENTS: tuple[type[Event], ...] = (
    TaskCreated,
    BidPlaced,
    BidWithdrawn,
    TaskResolved,
    TaskCancelled,
    AssignmentCommitted,
    DataCommitted,
    ResultSubmitted,
    ProcessorSlashed,
    EpochClosed,
    TaskFinished,
    TimeoutClaimed,
    Claimed,
    Withdrawn,
)
TOKEN_EVENTS: tuple[type[Event], ...] = (Transfer, Approval, MinterChanged)


def abi_type(param: Mapping[str, Any]) -> str:
    """The canonical ABI type string of one ABI parameter, tuples spelled out."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def _normalize(kind: str, value: Any) -> Any:
    if kind == "address":
        return to_checksum_address(value)
    return value


@dataclass(frozen=True)
class _EventSpec:
    cls: type[Event]
    indexed: tuple[tuple[str, str], ...]  # (name, type) in topic order
    data: tuple[tuple[str, str], ...]  # (name, type) in data order


class EventDecoder:
    """Decodes the logs one contract emits into the typed events given for it."""

    def __init__(
        self, contract: str, abi: Sequence[Mapping[str, Any]], types: Iterable[type[Event]]
    ):
        self.contract = contract
        known = {cls.__name__: cls for cls in types}
        self._by_topic: dict[bytes, _EventSpec] = {}
        for entry in abi:
            if entry.get("type") != "event":
                continue
            name = str(entry["name"])
            inputs = list(entry["inputs"])
            cls = known.get(name)
            abi_fields = [str(i["name"]) for i in inputs]
            if cls is None:
                raise ChainError(
                    f"{contract}'s event {name}({', '.join(abi_fields)}) has no class in "
                    "fedmarket.chain.events",
                    hint="add the event class there (the contract changed under the client)",
                )
            class_fields = [f.name for f in fields(cls)]
            if class_fields != abi_fields:
                raise ChainError(
                    f"{contract}'s event {name} has fields {abi_fields} but "
                    f"fedmarket.chain.events.{name} has {class_fields}",
                    hint="update the event class to match the contract",
                )
            signature = f"{name}({','.join(abi_type(i) for i in inputs)})"
            self._by_topic[keccak(text=signature)] = _EventSpec(
                cls=cls,
                indexed=tuple((str(i["name"]), abi_type(i)) for i in inputs if i["indexed"]),
                data=tuple((str(i["name"]), abi_type(i)) for i in inputs if not i["indexed"]),
            )

    def topic_of(self, kind: type[Event]) -> bytes:
        """The topic-0 (signature hash) of event ``kind``, for log filters."""
        for topic, spec in self._by_topic.items():
            if spec.cls is kind:
                return topic
        raise ChainError(f"{self.contract} emits no {kind.__name__} event")

    def decode(self, log: Mapping[str, Any]) -> Event | None:
        """The typed event in ``log``, or None if this contract declares no such event."""
        topics = [bytes(t) for t in log["topics"]]
        if not topics:
            return None
        spec = self._by_topic.get(topics[0])
        if spec is None or len(topics) - 1 != len(spec.indexed):
            return None
        values: dict[str, Any] = {}
        try:
            for (name, kind), topic in zip(spec.indexed, topics[1:], strict=True):
                # Indexed dynamic values are only their hash; keep the topic bytes then.
                dynamic = kind in ("string", "bytes") or kind.endswith("]") or "(" in kind
                values[name] = topic if dynamic else _normalize(kind, abi_decode([kind], topic)[0])
            decoded = abi_decode([kind for _, kind in spec.data], bytes(log["data"]))
        except DecodingError as exc:
            raise ChainError(
                f"malformed {spec.cls.__name__} log from {self.contract}: {exc}"
            ) from exc
        for (name, kind), value in zip(spec.data, decoded, strict=True):
            values[name] = _normalize(kind, value)
        return spec.cls(**values)
