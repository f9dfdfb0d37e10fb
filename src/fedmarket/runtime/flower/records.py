"""The protocol's envelopes inside Flower messages, with the same size limits and checks.

A Flower message between the requester and a node carries an envelope's small fields (a
``ConfigRecord``) and its frames, each one raw-bytes ``Array`` of an ``ArrayRecord`` (Flower
sends arrays in 5 MiB chunks; large ``ConfigRecord`` values are much slower). Nothing here
trusts the other side: the frame count, every frame's size and the total are bounded, and the
fields checked, before anything is parsed; every frame is then decoded by the roles' own
size-limited parser.
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedmarket.errors import UntrustedInputError
from fedmarket.protocol.transport import Envelope, check_fields

MAX_FRAMES = 4096
MAX_MESSAGE_BYTES = 512 << 20  # a processor's whole share of sealed blocks fits
FIELDS, FRAMES = "fields", "frames"


def pack(envelope: Envelope) -> RecordDict:
    """A Flower ``RecordDict`` holding ``envelope``."""
    content = RecordDict({FIELDS: ConfigRecord(dict(envelope.fields))})
    arrays = {
        str(i): Array(dtype="uint8", shape=(len(f),), stype="raw-bytes", data=f)
        for i, f in enumerate(envelope.frames)
    }
    content[FRAMES] = ArrayRecord(arrays)
    return content


def unpack(content: RecordDict, *, party: str, max_bytes: int = MAX_MESSAGE_BYTES) -> Envelope:
    """The envelope in a message from ``party``; anything malformed or oversized raises
    ``UntrustedInputError`` naming the party."""
    try:
        fields_record = content.config_records.get(FIELDS)
        frames_record = content.array_records.get(FRAMES)
    except Exception as exc:  # a RecordDict of unexpected shape
        raise UntrustedInputError(f"sent a malformed message ({exc})", party=party) from None
    fields = check_fields(dict(fields_record) if fields_record is not None else {}, party=party)
    if frames_record is None:
        return Envelope(fields)
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
    return Envelope(fields, tuple(frames))
