"""The wire format: every message round-trips; hostile bytes always give a clear error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmarket.errors import UntrustedInputError
from fedmarket.roles.messages import (
    AssignmentShare,
    BlockRef,
    BlockRouting,
    ChannelKey,
    DataManifest,
    DisputeBlock,
    EncryptedModel,
    EntryMsg,
    EpochResult,
    Holder,
    Message,
    RecordMsg,
    RoutingShare,
    SealedBlock,
    TaskAnnouncement,
    VoteReveal,
    decode,
    encode,
)

A = "0x" + "ab" * 20
B = "0x" + "cd" * 20

SAMPLES: list[Message] = [
    TaskAnnouncement(task_id=3, market=A, spec_json=b'{"x":1}', public_context=b"\x00ctx" * 100),
    ChannelKey(task_id=3, processor=A, public_key=b"k" * 32, signature=b"s" * 65),
    DataManifest(task_id=3, owner=B, block_sizes=[4096, 17], digests=[b"d" * 32, b"e" * 32]),
    AssignmentShare(
        task_id=3,
        processor=A,
        processor_index=1,
        record=RecordMsg(count=1, points=64, subroot=b"s" * 32),
        position=0,
        top_proof=[b"p" * 32],
        entries=[EntryMsg(ref=BlockRef(owner=B, index=0), block=1 << 32, size=64)],
    ),
    RoutingShare(
        task_id=3,
        owner=B,
        blocks=[
            BlockRouting(
                index=0,
                block=0,
                size=64,
                holders=[
                    Holder(
                        processor=A,
                        processor_index=1,
                        record=RecordMsg(count=2, points=128, subroot=b"s" * 32),
                        position=1,
                        top_proof=[b"p" * 32],
                        entry_index=1,
                        entry_proof=[b"q" * 32],
                    )
                ],
            )
        ],
    ),
    DisputeBlock(task_id=3, dispute=7, ref=BlockRef(owner=B, index=0), sealed=b"\xee" * 100),
    VoteReveal(task_id=3, dispute=7, voter=A, digest=b"v" * 32),
    SealedBlock(task_id=3, ref=BlockRef(owner=B, index=1), sealed=b"\xff" * 1000),
    EncryptedModel(task_id=3, epoch=2, payload=b"m" * 500),
    EpochResult(
        task_id=3,
        epoch=2,
        processor=A,
        blocks=[BlockRef(owner=B, index=0)],
        payloads=[b"r" * 64],
        root=b"t" * 32,
        signature=b"g" * 65,
    ),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    assert decode(encode(message), type(message), party="peer") == message


def test_binary_fields_are_not_inflated() -> None:
    payload = bytes(range(256)) * 4096
    wire = encode(EncryptedModel(task_id=0, epoch=0, payload=payload))
    assert len(wire) < len(payload) + 200


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_is_rejected_cleanly(message: Message) -> None:
    wire = encode(message)
    for cut in range(len(wire)):
        with pytest.raises(UntrustedInputError, match="peer: bad"):
            decode(wire[:cut], type(message), party="peer")


def test_wrong_kind_oversize_and_trailing_bytes_are_named() -> None:
    wire = encode(next(m for m in SAMPLES if isinstance(m, EncryptedModel)))
    with pytest.raises(UntrustedInputError, match="got a EncryptedModel message"):
        decode(wire, EpochResult, party="processor D")
    with pytest.raises(UntrustedInputError, match="exceeds the limit"):
        decode(wire, EncryptedModel, party="processor D", max_bytes=100)
    with pytest.raises(UntrustedInputError, match="trailing bytes"):
        decode(wire + b"\x00", EncryptedModel, party="processor D")


def test_field_violations_are_rejected() -> None:
    good = encode(ChannelKey(task_id=1, processor=A, public_key=b"k" * 32, signature=b"s" * 65))
    bad_key = good.replace(b"k" * 32, b"k" * 31 + b"")
    with pytest.raises(UntrustedInputError):
        decode(bad_key, ChannelKey, party="p")
    bad_address = good.replace(A[2:].encode(), b"zz" * 20)
    with pytest.raises(UntrustedInputError, match="processor"):
        decode(bad_address, ChannelKey, party="p")


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_bit_flips_give_an_error_or_a_valid_message(position: int, bit: int) -> None:
    wire = bytearray(encode(SAMPLES[6]))
    wire[position % len(wire)] ^= 1 << bit
    try:
        decoded = decode(bytes(wire), EpochResult, party="p")
    except UntrustedInputError:
        return
    assert isinstance(decoded, EpochResult)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    with pytest.raises(UntrustedInputError):
        decode(b"FMK1" + data, EpochResult, party="p")
