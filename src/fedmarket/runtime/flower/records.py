"""Our wire frames inside Flower messages, with the same size limits and checks.

A Flower message between the requester and a node carries a few small fields (a
``ConfigRecord``) and a list of fedmarket wire frames (``roles.messages.encode``), each as
one raw-bytes ``Array`` of an ``ArrayRecord`` (Flower sends arrays in 5 MiB chunks; large
``ConfigRecord`` values are much slower). Nothing here trusts the other side: the frame
count, every frame's size and the total are bounded before anything is parsed, and every
frame is then decoded by the roles' own size-limited parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedmarket.errors import UntrustedInputError
from fedmarket.roles.messages import DEFAULT_MAX_BYTES, Message, decode, encode

M = TypeVar("M", bound=Message)

MAX_FRAMES = 4096
MAX_MESSAGE_BYTES = 512 << 20  # a processor's whole share of sealed blocks fits
FIELDS, FRAMES = "fields", "frames"


def pack(fields: Mapping[str, Any] | None = None, frames: list[bytes] | None = None) -> RecordDict:
    """A Flower ``RecordDict`` with small ``fields`` and raw ``frames``."""
    content = RecordDict({FIELDS: ConfigRecord(dict(fields or {}))})
    arrays = {
        str(i): Array(dtype="uint8", shape=(len(f),), stype="raw-bytes", data=f)
        for i, f in enumerate(frames or [])
    }
    content[FRAMES] = ArrayRecord(arrays)
    return content


def pack_messages(fields: Mapping[str, Any] | None, messages: list[Message]) -> RecordDict:
    return pack(fields, [encode(m) for m in messages])


def unpack(
    content: RecordDict, *, party: str, max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[dict[str, Any], list[bytes]]:
    """(fields, frames) of a message from ``party``; anything malformed or oversized raises
    ``UntrustedInputError`` naming the party."""
    try:
        fields_record = content.config_records.get(FIELDS)
        frames_record = content.array_records.get(FRAMES)
    except Exception as exc:  # a RecordDict of unexpected shape
        raise UntrustedInputError(f"sent a malformed message ({exc})", party=party) from None
    fields = dict(fields_record) if fields_record is not None else {}
    if frames_record is None:
        return fields, []
    if len(frames_record) > MAX_FRAMES:
        raise UntrustedInputError(
            f"sent {len(frames_record)} frames (limit {MAX_FRAMES})", party=party
        )
    frames: list[bytes] = []
    total = 0
    for i in range(len(frames_record)):
        array = frames_record.get(str(i))
        if array is None or array.stype != "raw-bytes" or not isinstance(array.data, bytes):
            raise UntrustedInputError(f"frame {i} is missing or not raw bytes", party=party)
        total += len(array.data)
        if total > max_bytes:
            raise UntrustedInputError(
                f"message exceeds the limit of {max_bytes} bytes",
                party=party,
                hint="a task this large needs smaller blocks or more processors",
            )
        frames.append(array.data)
    return fields, frames


def one(frames: list[bytes], expect: type[M], *, party: str, index: int = 0) -> M:
    """Frame ``index`` decoded as ``expect`` (size-limited, validated)."""
    if index >= len(frames):
        raise UntrustedInputError(f"message has no frame {index}", party=party)
    return decode(frames[index], expect, party=party, max_bytes=DEFAULT_MAX_BYTES)


def many(frames: list[bytes], expect: type[M], *, party: str, start: int = 0) -> list[M]:
    return [decode(f, expect, party=party, max_bytes=DEFAULT_MAX_BYTES) for f in frames[start:]]
