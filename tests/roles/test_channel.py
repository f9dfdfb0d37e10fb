"""Owner-to-processor channel: only the addressed processor opens a block; tampering is caught."""

from __future__ import annotations

import pytest

from fedmarket.errors import UntrustedInputError
from fedmarket.roles.channel import (
    ChannelKeys,
    block_digest,
    check_block,
    data_root,
    open_sealed,
    seal,
)

BLOCKS = [b"ciphertext-block-0" * 50, b"ciphertext-block-1" * 50]


def test_only_the_addressed_processor_can_open_a_block() -> None:
    processor, requester = ChannelKeys.generate(), ChannelKeys.generate()
    sealed = seal(BLOCKS[0], processor.public)
    assert BLOCKS[0] not in sealed
    assert open_sealed(sealed, processor, party="owner B", max_bytes=10_000) == BLOCKS[0]
    with pytest.raises(UntrustedInputError, match=r"owner B: .*does not open"):
        open_sealed(sealed, requester, party="owner B", max_bytes=10_000)


def test_tampered_and_oversized_sealed_blocks_are_rejected() -> None:
    processor = ChannelKeys.generate()
    sealed = bytearray(seal(BLOCKS[0], processor.public))
    sealed[40] ^= 1
    with pytest.raises(UntrustedInputError, match="does not open"):
        open_sealed(bytes(sealed), processor, party="owner B", max_bytes=10_000)
    with pytest.raises(UntrustedInputError, match="exceeds the limit"):
        open_sealed(bytes(sealed), processor, party="owner B", max_bytes=100)
    with pytest.raises(UntrustedInputError):
        open_sealed(b"short", processor, party="owner B", max_bytes=100)


def test_blocks_are_checked_against_the_committed_root() -> None:
    digests = [block_digest(b) for b in BLOCKS]
    root = data_root(digests)
    check_block(BLOCKS[1], 1, digests, root, party="owner C")
    with pytest.raises(UntrustedInputError, match="does not match its committed digest"):
        check_block(BLOCKS[0], 1, digests, root, party="owner C")
    with pytest.raises(UntrustedInputError, match="does not match the data root"):
        check_block(BLOCKS[0], 0, [digests[0]], root, party="owner C")
    with pytest.raises(UntrustedInputError, match="outside the committed data"):
        check_block(BLOCKS[0], 2, digests, root, party="owner C")


def test_root_depends_on_order_and_count() -> None:
    d = [block_digest(b) for b in BLOCKS]
    assert data_root(d) != data_root(d[::-1])
    assert data_root(d) != data_root(d[:1])
