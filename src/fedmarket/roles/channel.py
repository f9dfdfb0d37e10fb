"""The owner-to-processor channel: blocks sealed to the processor, checked against the chain.

Encrypted blocks are CKKS ciphertexts under the requester's key, so the requester must
never receive them (it could decrypt per-sample values). Owners therefore seal every
block to the processor's X25519 key (libsodium sealed boxes): whoever relays the bytes,
the requester included, cannot open them. Before using a block the processor checks its
sha256 against the list of digests the owner committed on chain (the *data root*).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from fedmarket.errors import UntrustedInputError

ROOT_DOMAIN = b"fedmarket/data-root/v1"
DIGEST_BYTES = 32


@dataclass(frozen=True)
class ChannelKeys:
    """A processor's X25519 key pair for receiving sealed blocks."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> ChannelKeys:
        key = PrivateKey.generate()
        return cls(private=bytes(key), public=bytes(key.public_key))


def seal(payload: bytes, recipient_public: bytes) -> bytes:
    """Encrypt ``payload`` so only the holder of ``recipient_public``'s private key can read it."""
    return bytes(SealedBox(PublicKey(recipient_public)).encrypt(payload))


def open_sealed(sealed: bytes, keys: ChannelKeys, *, party: str, max_bytes: int) -> bytes:
    """Open a sealed block from ``party``; oversize or tampered input is an UntrustedInputError."""
    if len(sealed) > max_bytes:
        raise UntrustedInputError(
            f"sealed block of {len(sealed)} bytes exceeds the limit of {max_bytes}", party=party
        )
    try:
        return bytes(SealedBox(PrivateKey(keys.private)).decrypt(sealed))
    except (NaclCryptoError, ValueError, TypeError):
        raise UntrustedInputError(
            "sealed block does not open with this processor's key (tampered or misaddressed)",
            party=party,
        ) from None


def block_digest(block: bytes) -> bytes:
    """sha256 of one serialised encrypted block."""
    return hashlib.sha256(block).digest()


def data_root(digests: Sequence[bytes]) -> bytes:
    """The 32-byte commitment to an owner's ordered block digests (goes to ``commit_data``)."""
    if any(len(d) != DIGEST_BYTES for d in digests):
        raise ValueError("every block digest must be 32 bytes")
    h = hashlib.sha256(ROOT_DOMAIN)
    h.update(len(digests).to_bytes(4, "big"))
    for d in digests:
        h.update(d)
    return h.digest()


def check_block(
    block: bytes, index: int, digests: Sequence[bytes], root: bytes, *, party: str
) -> None:
    """Check ``block`` is block ``index`` of the data ``party`` committed to with ``root``."""
    if data_root(digests) != root:
        raise UntrustedInputError(
            "the digest list does not match the data root committed on chain", party=party
        )
    if not 0 <= index < len(digests):
        raise UntrustedInputError(f"block index {index} is outside the committed data", party=party)
    if block_digest(block) != digests[index]:
        raise UntrustedInputError(
            f"block {index} does not match its committed digest (altered in transit?)", party=party
        )
