"""The protocol's envelopes inside Flower messages, with the same size limits and checks.

A message of up to ``INLINE_BYTES`` of frames is one ``ConfigRecord``: the envelope's fields
under ``field:<name>`` and its frames as a list of bytes under ``frames`` (three Flower objects
per message, so three object transfers). A larger one (a processor's sealed blocks) keeps its
fields there and its frames in an ``ArrayRecord`` of raw-bytes arrays, which Flower moves in
5 MiB chunks; the driver keeps every message within ``Transport.max_bytes``
(``MAX_MESSAGE_BYTES``: bulk steps are cut into messages of at most half of it), and ``unpack``
refuses anything larger. Nothing here trusts the other side: the frame count, every frame's
size and the total are bounded, and the fields checked, before anything is parsed; every frame
is then decoded by the roles' own size-limited parser.
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedmarket.errors import UntrustedInputError
from fedmarket.protocol.transport import MAX_FIELDS, MAX_MESSAGE_BYTES, Envelope, check_fields

MAX_FRAMES = 4096
# the most Flower objects a message may take: Message, RecordDict, two records, and the
# arrays and 5 MiB chunks of the frames
MAX_OBJECTS = 4 + 2 * MAX_FRAMES + (MAX_MESSAGE_BYTES >> 20) // 5 + 1
INLINE_BYTES = 4 << 20
ENVELOPE, FRAMES, FIELD = "envelope", "frames", "field:"
SILENT = "silent"  # the one field of a party's reply that means "no answer" (a simulated crash)


def pack(envelope: Envelope) -> RecordDict:
    """A Flower ``RecordDict`` holding ``envelope``."""
    record: dict[str, object] = {FIELD + k: v for k, v in envelope.fields.items()}
    content = RecordDict()
    if envelope.size <= INLINE_BYTES:
        record[FRAMES] = list(envelope.frames)
    else:
        content[FRAMES] = ArrayRecord(
            {
                str(i): Array(dtype="uint8", shape=(len(f),), stype="raw-bytes", data=f)
                for i, f in enumerate(envelope.frames)
            }
        )
    content[ENVELOPE] = ConfigRecord(record)  # type: ignore[arg-type]
    return content


def unpack(content: RecordDict, *, party: str, max_bytes: int = MAX_MESSAGE_BYTES) -> Envelope:
    """The envelope in a message from ``party``; anything malformed or oversized raises
    ``UntrustedInputError`` naming the party."""
    try:
        record = content.config_records.get(ENVELOPE)
        arrays = content.array_records.get(FRAMES)
        extra = set(content.keys()) - {ENVELOPE, FRAMES}
    except Exception as exc:  # a RecordDict of unexpected shape
        raise UntrustedInputError(f"sent a malformed message ({exc})", party=party) from None
    if record is None or extra:
        raise UntrustedInputError("sent a message that is not a fedmarket envelope", party=party)
    if len(record) > MAX_FIELDS + 1:
        raise UntrustedInputError(f"sent {len(record)} fields (limit {MAX_FIELDS})", party=party)
    named = {k.removeprefix(FIELD): v for k, v in record.items() if k.startswith(FIELD)}
    if len(named) + (FRAMES in record) != len(record):
        raise UntrustedInputError("sent a message with unknown parts", party=party)
    fields = check_fields(named, party=party)
    inline = record.get(FRAMES)
    if (inline is None) == (arrays is None):
        raise UntrustedInputError("sent frames in no place or in two", party=party)
    items: list[object]
    if inline is not None:
        items = list(inline) if isinstance(inline, list) else [inline]
    else:
        assert arrays is not None
        items = []
        for i in range(min(len(arrays), MAX_FRAMES + 1)):
            array = arrays.get(str(i))
            if array is None or array.stype != "raw-bytes":
                raise UntrustedInputError(f"frame {i} is missing or not raw bytes", party=party)
            items.append(array.data)
    if len(items) > MAX_FRAMES:
        raise UntrustedInputError(f"sent more than {MAX_FRAMES} frames", party=party)
    frames: list[bytes] = []
    total = 0
    for i, item in enumerate(items):
        if not isinstance(item, bytes):
            raise UntrustedInputError(f"frame {i} is not raw bytes", party=party)
        total += len(item)
        if total > max_bytes:
            raise UntrustedInputError(
                f"message exceeds the limit of {max_bytes} bytes",
                party=party,
                hint="a task this large needs smaller blocks or more processors",
            )
        frames.append(item)
    return Envelope(fields, tuple(frames))
