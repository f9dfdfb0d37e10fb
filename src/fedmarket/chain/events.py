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
    "BidEvicted",
    "BidPlaced",
    "BidWithdrawn",
    "BlockUndelivered",
    "Claimed",
    "Collected",
    "DataCommitted",
    "DisputeOpened",
    "DisputeResolved",
    "DrawRetargeted",
    "EpochClosed",
    "EpochRoots",
    "Event",
    "EventDecoder",
    "LeafShown",
    "MinterChanged",
    "ModelReleased",
    "PanelDrawn",
    "ProcessorSlashed",
    "ReserveCredited",
    "ReserveWithdrawn",
    "RootSubmitted",
    "ShareCredited",
    "TaskCancelled",
    "TaskCreated",
    "TaskFinished",
    "TaskReopened",
    "TaskResolved",
    "TimeoutClaimed",
    "Transfer",
    "VoteCommitted",
    "Withdrawn",
    "abi_type",
]


@dataclass(frozen=True)
class Event:
    """Base of every decoded event; ``contract`` names the contract that emits it."""

    contract: ClassVar[str] = ""


# ------------------------------------------------- Market.vy, MarketSetup.vy, MarketCourt.vy


@dataclass(frozen=True)
class TaskCreated(Event):
    contract: ClassVar[str] = "Market"
    task: int
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
    dispute_bond_bps: int
    audit_fee: int
    min_fill: int
    floors: tuple[int, int, int]


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
class BidEvicted(Event):
    contract: ClassVar[str] = "Market"
    task: int
    side: int
    bidder: ChecksumAddress
    bid: int
    refunded: int


@dataclass(frozen=True)
class BidWithdrawn(Event):
    contract: ClassVar[str] = "Market"
    task: int
    side: int
    bidder: ChecksumAddress
    bid: int
    refunded: int


@dataclass(frozen=True)
class TaskReopened(Event):
    contract: ClassVar[str] = "Market"
    task: int
    bidding_deadline: int
    floors: tuple[int, int, int]
    refunded_bids: int


@dataclass(frozen=True)
class TaskResolved(Event):
    contract: ClassVar[str] = "Market"
    task: int
    data_cost: int
    processing_cost_per_epoch: int
    data_points: int
    data_winners: int
    processing_winners: int
    assignment_deadline: int


@dataclass(frozen=True)
class TaskCancelled(Event):
    contract: ClassVar[str] = "Market"
    task: int
    by: ChecksumAddress


@dataclass(frozen=True)
class DataCommitted(Event):
    contract: ClassVar[str] = "Market"
    task: int
    owner: ChecksumAddress
    bid: int
    block_sizes: list[int]
    digests: list[bytes]


@dataclass(frozen=True)
class AssignmentCommitted(Event):
    contract: ClassVar[str] = "Market"
    task: int
    root: bytes
    processors: list[int]
    counts: list[int]
    points: list[int]
    subroots: list[bytes]


@dataclass(frozen=True)
class ModelReleased(Event):
    contract: ClassVar[str] = "Market"
    task: int
    epoch: int
    model_digest: bytes
    deadline: int


@dataclass(frozen=True)
class BlockUndelivered(Event):
    contract: ClassVar[str] = "Market"
    task: int
    processor: int
    owner_bid: int
    block_index: int
    points: int


@dataclass(frozen=True)
class EpochRoots(Event):
    contract: ClassVar[str] = "Market"
    task: int
    epoch: int
    processors: int
    roots: list[bytes]


@dataclass(frozen=True)
class RootSubmitted(Event):
    contract: ClassVar[str] = "Market"
    task: int
    epoch: int
    processor: int
    root: bytes
    on_time: bool
    pay: int


@dataclass(frozen=True)
class EpochClosed(Event):
    contract: ClassVar[str] = "Market"
    task: int
    epoch: int
    go_on: bool
    not_received: int
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
class DisputeOpened(Event):
    contract: ClassVar[str] = "Market"
    dispute: int
    task: int
    accuser: ChecksumAddress
    accused: int
    epoch: int
    owner_bid: int
    block_index: int
    entry_index: int
    bond: int


@dataclass(frozen=True)
class PanelDrawn(Event):
    contract: ClassVar[str] = "Market"
    dispute: int
    task: int
    panel: list[int]
    vote_deadline: int


@dataclass(frozen=True)
class DrawRetargeted(Event):
    contract: ClassVar[str] = "Market"
    dispute: int
    open_block: int


@dataclass(frozen=True)
class VoteCommitted(Event):
    contract: ClassVar[str] = "Market"
    dispute: int
    voter: ChecksumAddress
    commitment: bytes


@dataclass(frozen=True)
class LeafShown(Event):
    contract: ClassVar[str] = "Market"
    dispute: int
    digest: bytes


@dataclass(frozen=True)
class DisputeResolved(Event):
    contract: ClassVar[str] = "Market"
    dispute: int
    task: int
    outcome: int
    value: bytes
    to_accuser: int
    to_accused: int
    fees: int


@dataclass(frozen=True)
class ProcessorSlashed(Event):
    contract: ClassVar[str] = "Market"
    task: int
    processor: int
    fault: int
    forfeited: int
    to_reserve: int
    to_participants: int


@dataclass(frozen=True)
class ShareCredited(Event):
    contract: ClassVar[str] = "Market"
    task: int
    side: int
    bid: int
    amount: int


@dataclass(frozen=True)
class ReserveCredited(Event):
    contract: ClassVar[str] = "Market"
    task: int
    amount: int
    reason: int


@dataclass(frozen=True)
class ReserveWithdrawn(Event):
    contract: ClassVar[str] = "Market"
    to: ChecksumAddress
    amount: int


@dataclass(frozen=True)
class Collected(Event):
    contract: ClassVar[str] = "Market"
    task: int
    account: ChecksumAddress
    amount: int


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
    BidEvicted,
    BidWithdrawn,
    TaskReopened,
    TaskResolved,
    TaskCancelled,
    DataCommitted,
    AssignmentCommitted,
    ModelReleased,
    BlockUndelivered,
    EpochRoots,
    RootSubmitted,
    EpochClosed,
    TaskFinished,
    TimeoutClaimed,
    DisputeOpened,
    PanelDrawn,
    DrawRetargeted,
    VoteCommitted,
    LeafShown,
    DisputeResolved,
    ProcessorSlashed,
    ShareCredited,
    ReserveCredited,
    ReserveWithdrawn,
    Collected,
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
    if kind.endswith("[]"):
        return [_normalize(kind[:-2], v) for v in value]
    if kind.startswith("(") and isinstance(value, tuple):
        return tuple(value)
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

    def indexed_names(self, kind: type[Event]) -> list[str]:
        """The names of ``kind``'s indexed fields, in topic order."""
        for spec in self._by_topic.values():
            if spec.cls is kind:
                return [name for name, _ in spec.indexed]
        raise ChainError(f"{self.contract} emits no {kind.__name__} event")

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
