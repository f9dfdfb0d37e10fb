"""The envelope every HE message travels in, and the limits applied before anything is parsed.

Layout (big-endian)::

    magic "FMHE" | format u16 | kind u8 | flags u8 (0) | context sha256 (32 bytes)
    | meta length u32 | meta (canonical JSON) | count u32 | count x (length u32 | SEAL bytes)

The context digest binds every block, model and result to one task's public context: a
ciphertext made under another key or parameter set is rejected before SEAL sees it. All
lengths are checked against the caller's limits and the actual size before any allocation.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from fedmarket.errors import UntrustedInputError

MAGIC = b"FMHE"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sHBB32sI")
_U32 = struct.Struct(">I")
MAX_META_BYTES = 64 * 1024
# Ceiling for any HE message whatever the spec says (a block of the largest preset with a few
# thousand features stays well under it); a per-message limit from the spec applies first.
ABSOLUTE_MAX_BYTES = 8 * 1024**3
NO_DIGEST = bytes(32)


class Kind(IntEnum):
    PUBLIC_CONTEXT = 1
    BLOCK = 2
    MODEL = 3
    RESULT = 4
    KEY_PAIR = 5
    NOISE = 6  # an owner's noise for one block and epoch (fedmarket.he.noise)


@dataclass(frozen=True)
class Envelope:
    kind: Kind
    digest: bytes
    meta: dict[str, Any]
    payloads: tuple[bytes, ...]


def pack(kind: Kind, digest: bytes, meta: dict[str, Any], payloads: list[bytes]) -> bytes:
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    parts = [_PREFIX.pack(MAGIC, FORMAT_VERSION, kind, 0, digest, len(meta_bytes)), meta_bytes]
    parts.append(_U32.pack(len(payloads)))
    for payload in payloads:
        parts.append(_U32.pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


def unpack(
    data: bytes,
    *,
    kind: Kind,
    party: str,
    max_bytes: int,
    digest: bytes | None = None,
    count: int | None = None,
    max_payload_bytes: int | None = None,
) -> Envelope:
    """Parse an envelope; every problem raises ``UntrustedInputError`` naming ``party``.

    ``digest`` (the public context's sha256) and ``count`` (payloads) are checked when given;
    ``max_payload_bytes`` caps each payload.
    """
    what = kind.name.lower().replace("_", " ")

    def fail(problem: str, hint: str | None = None) -> UntrustedInputError:
        return UntrustedInputError(f"{what}: {problem}", party=party, hint=hint)

    if not isinstance(data, bytes | bytearray | memoryview):
        raise fail(f"expected bytes, got {type(data).__name__}")
    size = len(data)
    limit = min(max_bytes, ABSOLUTE_MAX_BYTES)
    if size > limit:
        raise fail(f"{size} bytes is over the {limit}-byte limit for this task")
    view = memoryview(data)
    if size < _PREFIX.size:
        raise fail(f"truncated ({size} bytes)")
    magic, version, got_kind, flags, got_digest, meta_len = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise fail("not a fedmarket HE message (bad magic)")
    if version != FORMAT_VERSION:
        raise fail(
            f"format version {version}, this fedmarket reads {FORMAT_VERSION}",
            hint="all parties must run compatible fedmarket versions",
        )
    if got_kind != kind:
        name = Kind(got_kind).name if got_kind in Kind._value2member_map_ else str(got_kind)
        raise fail(f"is a {name} message")
    if flags != 0:
        raise fail("unknown flags set")
    if digest is not None and got_digest != digest:
        raise fail(
            "made for another public context (key or parameters)",
            hint="check it belongs to this task and was encrypted with its current key",
        )
    offset = _PREFIX.size
    if meta_len > MAX_META_BYTES or offset + meta_len + _U32.size > size:
        raise fail("metadata length is corrupt")
    try:
        meta = json.loads(bytes(view[offset : offset + meta_len]))
    except (UnicodeDecodeError, ValueError):
        raise fail("metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise fail("metadata is not an object")
    offset += meta_len
    (n_payloads,) = _U32.unpack_from(view, offset)
    offset += _U32.size
    if count is not None and n_payloads != count:
        raise fail(f"holds {n_payloads} ciphertexts, expected {count}")
    # Each payload costs at least its 4-byte length, so this bounds the loop before it runs.
    if n_payloads * _U32.size > size - offset:
        raise fail("payload count is corrupt")
    payloads = []
    for index in range(n_payloads):
        if offset + _U32.size > size:
            raise fail(f"truncated before payload {index}")
        (length,) = _U32.unpack_from(view, offset)
        offset += _U32.size
        if max_payload_bytes is not None and length > max_payload_bytes:
            raise fail(
                f"payload {index} is {length} bytes, over the {max_payload_bytes}-byte limit"
            )
        if offset + length > size:
            raise fail(f"truncated inside payload {index}")
        payloads.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != size:
        raise fail(f"{size - offset} unexpected trailing bytes")
    return Envelope(Kind(got_kind), bytes(got_digest), meta, tuple(payloads))


def require_fields(
    meta: dict[str, Any], fields: Mapping[str, type], *, what: str, party: str
) -> dict[str, Any]:
    """Check metadata has exactly ``fields`` with those types (bool is not an int here)."""
    if set(meta) != set(fields):
        raise UntrustedInputError(
            f"{what}: metadata fields {sorted(meta)} != expected {sorted(fields)}", party=party
        )
    for name, kind in fields.items():
        value = meta[name]
        if type(value) is not kind:
            raise UntrustedInputError(
                f"{what}: field {name!r} must be {kind.__name__}", party=party
            )
        if isinstance(value, int) and not 0 <= value < 1 << 53:
            raise UntrustedInputError(f"{what}: field {name!r} is out of range", party=party)
        if isinstance(value, str) and len(value) > 256:
            raise UntrustedInputError(f"{what}: field {name!r} is too long", party=party)
    return meta


def ciphertext_bytes_bound(poly_modulus_degree: int, primes: int) -> int:
    """Upper bound on a serialised ciphertext: raw coefficients, compression slack, metadata."""
    raw = 2 * poly_modulus_degree * primes * 8
    return raw + raw // 64 + 1024
