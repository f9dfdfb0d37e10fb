"""Typed protocol messages and their wire format.

Every message is a strict, frozen pydantic model. On the wire it is one frame::

    b"FMK1" | kind u16 | header length u32 | JSON header | blob count u32 | (u64 length, bytes)*

Binary fields (ciphertexts, keys, digests) travel as blobs referenced from the JSON
header, so a ciphertext is never base64-inflated. ``decode`` treats its input as
hostile: sizes are checked before anything is allocated, the kind must be the one
expected, and the fields are validated strictly; any failure is an
:class:`~fedmarket.errors.UntrustedInputError` naming the sender.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedmarket.chain.merkle import UNDELIVERED
from fedmarket.errors import UntrustedInputError

MAGIC = b"FMK1"
MAX_HEADER_BYTES = 1 << 20
MAX_BLOBS = 1 << 16
DEFAULT_MAX_BYTES = 480 << 20  # one sealed block of the deepest preset fits

Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
Digest = Annotated[bytes, Field(min_length=32, max_length=32)]
Count = Annotated[int, Field(ge=0)]

M = TypeVar("M", bound="Message")
_KINDS: dict[int, type[Message]] = {}
# Seconds this process spent encoding and decoding frames (the e2e benchmark's "serialisation").
CODEC_SECONDS = [0.0]


class Message(BaseModel):
    """Base of every protocol message; subclasses set a unique ``kind``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    kind: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind in _KINDS:
            raise TypeError(f"message kind {cls.kind} used twice")
        if cls.kind:
            _KINDS[cls.kind] = cls


class BlockRef(BaseModel):
    """One encrypted block: the owner's account and the block's index in its data."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    owner: Address
    index: Count


class TaskAnnouncement(Message):
    """Requester to everyone: the spec bidders agree to and the public CKKS context."""

    kind: ClassVar[int] = 1
    task_id: Count
    market: Address
    spec_json: bytes
    public_context: bytes


class ChannelKey(Message):
    """Processor to owners (relayed by anyone, the requester included): where to seal its
    blocks. ``signature`` is the processor's account's EIP-712 signature of (task, processor,
    key) under the market's domain (``chain.signing.channel_digest``); owners seal to no key
    whose signature does not recover to the processor the assignment names."""

    kind: ClassVar[int] = 2
    task_id: Count
    processor: Address
    public_key: Annotated[bytes, Field(min_length=32, max_length=32)]
    signature: Annotated[bytes, Field(min_length=65, max_length=65)]


class DataManifest(Message):
    """Owner to requester and processors: block sizes and digests (no data)."""

    kind: ClassVar[int] = 3
    task_id: Count
    owner: Address
    block_sizes: list[Annotated[int, Field(gt=0)]]
    digests: list[Digest]


class RecordMsg(BaseModel):
    """A processor's line of the committed assignment (``merkle.Record`` without its index)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    count: Annotated[int, Field(gt=0)]
    points: Count
    subroot: Digest


class EntryMsg(BaseModel):
    """One entry of a processor's list: the block, its id on chain and its size."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    ref: BlockRef
    block: Count  # owner bid << 32 | block index
    size: Annotated[int, Field(gt=0)]


class AssignmentShare(Message):
    """Requester to one processor: its own entries only, with its record's place in the
    committed assignment (``commit_assignment``). It can check them against the chain and
    learns nothing of anyone else's, so it cannot tell a replicated block from any other.
    Its results go in the order of ``entries``."""

    kind: ClassVar[int] = 4
    task_id: Count
    processor: Address
    processor_index: Count
    record: RecordMsg
    position: Count
    top_proof: list[Digest]
    entries: list[EntryMsg]


class Holder(BaseModel):
    """One processor an owner's block goes to, with the proof that it is in its list."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    processor: Address
    processor_index: Count
    record: RecordMsg
    position: Count
    top_proof: list[Digest]
    entry_index: Count
    entry_proof: list[Digest]


class BlockRouting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    index: Count
    block: Count
    size: Annotated[int, Field(gt=0)]
    holders: list[Holder]


class RoutingShare(Message):
    """Requester to one owner: where each of its blocks goes, each holder proven against the
    committed assignment. The owner sends a block to proven holders only."""

    kind: ClassVar[int] = 8
    task_id: Count
    owner: Address
    blocks: list[BlockRouting]


class SealedBlock(Message):
    """Owner to processor: one encrypted block, sealed to the processor's channel key."""

    kind: ClassVar[int] = 5
    task_id: Count
    ref: BlockRef
    sealed: bytes


class EncryptedModel(Message):
    """Requester to processors: the model for ``epoch``, encrypted under the requester's key."""

    kind: ClassVar[int] = 6
    task_id: Count
    epoch: Count
    payload: bytes


class EpochResult(Message):
    """Processor to requester: the encrypted per-block gradient sums of ``epoch``, in the order
    of its assignment entries (an entry it reported undelivered carries an empty payload),
    the root of the tree over their digests and its EIP-712 signature of that root (which
    the requester relays on chain with every other processor's, in one transaction).

    ``block_digests()[i]`` is what leaf ``i`` of the root commits: the sha256 of payload
    ``i``, or ``merkle.UNDELIVERED``; byte-identical across honest processors.
    """

    kind: ClassVar[int] = 7
    task_id: Count
    epoch: Count
    processor: Address
    blocks: list[BlockRef]
    payloads: list[bytes]
    root: Digest = bytes(32)
    signature: Annotated[bytes, Field(max_length=65)] = b""

    def block_digests(self) -> dict[BlockRef, bytes]:
        """Each block's leaf digest: equal across honest processors."""
        if len(self.blocks) != len(self.payloads):
            raise ValueError(f"{len(self.blocks)} blocks but {len(self.payloads)} payloads")
        return {ref: leaf_digest(p) for ref, p in zip(self.blocks, self.payloads, strict=True)}


def leaf_digest(payload: bytes) -> bytes:
    """A result leaf's digest: sha256 of the payload; an empty one is an undelivered block."""
    if not payload:
        return UNDELIVERED
    return hashlib.sha256(payload).digest()


class DisputeBlock(Message):
    """Block owner to a drawn auditor (relayed): the disputed block, sealed to the auditor;
    in a private task also the noise the owner released for that block and epoch (sealed the
    same way) and the owner's signature of it (``chain.signing.noise_digest``)."""

    kind: ClassVar[int] = 9
    task_id: Count
    dispute: Count
    ref: BlockRef
    sealed: bytes
    noise: bytes = b""
    noise_signature: Annotated[bytes, Field(max_length=65)] = b""


class LeafProof(Message):
    """Requester to a disputed block's owner: the accused's committed leaf for the block (the
    digest of the result it sent) with its Merkle proof up to the accused's root on chain.
    The owner seals its block to the drawn auditors only when this proves a leaf that differs
    from its own recomputation: a false accusation gets the block to no one."""

    kind: ClassVar[int] = 13
    task_id: Count
    dispute: Count
    digest: Digest
    proof: Annotated[list[Digest], Field(max_length=64)]


class ModelReveal(Message):
    """Requester to a data owner, in a private task: the plaintext weights of ``epoch``'s model
    (float64, little-endian, the kind's weight shape) and the seed it was encrypted with, so
    that the owner re-encrypts them, compares with the digest released on chain and checks the
    weights against the kind's certified region before it releases its noise."""

    kind: ClassVar[int] = 11
    task_id: Count
    epoch: Count
    weights: bytes
    seed: Annotated[bytes, Field(min_length=16, max_length=64)]


class NoiseRelease(Message):
    """Data owner to a processor holding one of its blocks (relayed by the requester, who
    cannot open it): the owner's noise for the block and epoch (``PublicKeys.encrypt_noise``),
    sealed to the processor's channel key, and the owner's account's signature of its sha256
    (``chain.signing.noise_digest``): noise the requester made itself recovers to another
    address, and processors add no noise but the owner's."""

    kind: ClassVar[int] = 12
    task_id: Count
    epoch: Count
    ref: BlockRef
    sealed: bytes
    signature: Annotated[bytes, Field(min_length=65, max_length=65)]


class VoteReveal(Message):
    """Auditor to requester and accused: the digest it committed for the disputed block, so
    that anyone can resolve the dispute with the agreed value."""

    kind: ClassVar[int] = 10
    task_id: Count
    dispute: Count
    voter: Address
    digest: Digest


def _split(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, bytes):
        blobs.append(value)
        return {"$blob": len(blobs) - 1}
    if isinstance(value, dict):
        return {k: _split(v, blobs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split(v, blobs) for v in value]
    return value


def _join(value: Any, blobs: list[bytes], used: set[int]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$blob"}:
            i = value["$blob"]
            if type(i) is not int or not 0 <= i < len(blobs) or i in used:
                raise ValueError(f"bad blob reference {i!r}")
            used.add(i)
            return blobs[i]
        return {k: _join(v, blobs, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, blobs, used) for v in value]
    return value


def encode(message: Message) -> bytes:
    """The message's wire bytes."""
    start = time.perf_counter()
    try:
        return _encode(message)
    finally:
        CODEC_SECONDS[0] += time.perf_counter() - start


def _encode(message: Message) -> bytes:
    blobs: list[bytes] = []
    header = json.dumps(
        _split(message.model_dump(mode="python"), blobs), separators=(",", ":")
    ).encode()
    parts = [MAGIC, struct.pack(">HI", message.kind, len(header)), header]
    parts.append(struct.pack(">I", len(blobs)))
    for blob in blobs:
        parts.append(struct.pack(">Q", len(blob)))
        parts.append(blob)
    return b"".join(parts)


def decode(data: bytes, expect: type[M], *, party: str, max_bytes: int = DEFAULT_MAX_BYTES) -> M:
    """Parse wire bytes from ``party`` into an ``expect`` message, or raise UntrustedInputError."""
    start = time.perf_counter()
    try:
        return _decode(data, expect, party=party, max_bytes=max_bytes)
    finally:
        CODEC_SECONDS[0] += time.perf_counter() - start


def _decode(data: bytes, expect: type[M], *, party: str, max_bytes: int) -> M:

    def bad(problem: str) -> UntrustedInputError:
        return UntrustedInputError(f"bad {expect.__name__} message: {problem}", party=party)

    if not isinstance(data, bytes | bytearray | memoryview):
        raise bad(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data)
    if len(view) > max_bytes:
        raise bad(f"{len(view)} bytes exceeds the limit of {max_bytes}")
    if len(view) < 14 or bytes(view[:4]) != MAGIC:
        raise bad("not a fedmarket frame (wrong magic or too short)")
    kind, header_len = struct.unpack_from(">HI", view, 4)
    if kind != expect.kind:
        got = _KINDS.get(kind)
        raise bad(f"got a {got.__name__ if got else f'unknown kind {kind}'} message")
    if header_len > MAX_HEADER_BYTES or 10 + header_len + 4 > len(view):
        raise bad("header length out of range")
    try:
        header = json.loads(bytes(view[10 : 10 + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"header is not JSON: {exc}") from None
    pos = 10 + header_len
    (count,) = struct.unpack_from(">I", view, pos)
    pos += 4
    if count > MAX_BLOBS:
        raise bad(f"{count} blobs exceeds the limit of {MAX_BLOBS}")
    blobs: list[bytes] = []
    for _ in range(count):
        if pos + 8 > len(view):
            raise bad("truncated blob length")
        (size,) = struct.unpack_from(">Q", view, pos)
        pos += 8
        if size > len(view) - pos:
            raise bad("truncated blob")
        blobs.append(bytes(view[pos : pos + size]))
        pos += size
    if pos != len(view):
        raise bad(f"{len(view) - pos} trailing bytes")
    try:
        used: set[int] = set()
        fields = _join(header, blobs, used)
        if len(used) != len(blobs):
            raise ValueError("unreferenced blobs")
        return expect.model_validate(fields)
    except ValidationError as exc:  # a ValueError subclass: test it first
        raise bad(_brief(exc)) from None
    except ValueError as exc:
        raise bad(str(exc)) from None


def _brief(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(message)"
    return f"{where}: {first['msg']} ({exc.error_count()} problem(s))"
