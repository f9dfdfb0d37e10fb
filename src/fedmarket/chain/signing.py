"""EIP-712 signatures: epoch roots (a processor signs, the market checks), channel keys
(a processor signs, owners check before sealing a block to it) and noise releases (a data
owner signs its noise for a block and epoch, processors check before adding it).

Domain ``{name: "fedmarket", version: "2", chainId, verifyingContract: market}``; type
``EpochRoot(uint256 task,uint256 epoch,bytes32 root)``. A processor signs its root with its
chain account and hands it to the requester with its results; the requester relays every
root of an epoch in one ``relay_epoch``. The digest is computed here directly (it equals
``eth_account.messages.encode_typed_data``'s, which a test checks) so that simulations of
thousands of epochs do not pay for the generic encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32
from eth_utils import keccak, to_checksum_address

DOMAIN_TYPEHASH = bytes(
    keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
)
ROOT_TYPEHASH = bytes(keccak(b"EpochRoot(uint256 task,uint256 epoch,bytes32 root)"))
CHANNEL_TYPEHASH = bytes(keccak(b"ChannelKey(uint256 task,address processor,bytes32 key)"))
NOISE_TYPEHASH = bytes(
    keccak(b"NoiseRelease(uint256 task,uint256 epoch,address owner,uint256 block,bytes32 noise)")
)
NAME, VERSION = "fedmarket", "2"


def _u(value: int) -> bytes:
    return value.to_bytes(32, "big")


def domain_separator(chain_id: int, market: str) -> bytes:
    address = bytes(12) + bytes.fromhex(to_checksum_address(market)[2:])
    return bytes(
        keccak(
            DOMAIN_TYPEHASH
            + bytes(keccak(NAME.encode()))
            + bytes(keccak(VERSION.encode()))
            + _u(chain_id)
            + address
        )
    )


def root_digest(domain: bytes, task: int, epoch: int, root: bytes) -> bytes:
    """The 32-byte hash a processor signs for its ``root`` of ``epoch``."""
    struct = bytes(keccak(ROOT_TYPEHASH + _u(task) + _u(epoch) + root))
    return bytes(keccak(b"\x19\x01" + domain + struct))


@dataclass(frozen=True)
class SignedRoot:
    """A root and its signature; encodes as the contract's ``SignedRoot`` tuple."""

    root: bytes
    v: int
    r: bytes
    s: bytes

    def as_tuple(self) -> tuple[bytes, int, bytes, bytes]:
        return (self.root, self.v, self.r, self.s)

    @classmethod
    def unsigned(cls, root: bytes) -> SignedRoot:
        """A root its own processor sends (the contract then ignores the signature)."""
        return cls(root, 0, bytes(32), bytes(32))

    def signer(self, domain: bytes, task: int, epoch: int) -> str | None:
        """The account that signed, or None for a malformed signature."""
        try:
            return str(
                Account._recover_hash(
                    root_digest(domain, task, epoch, self.root),
                    vrs=(self.v, int.from_bytes(self.r, "big"), int.from_bytes(self.s, "big")),
                )
            )
        except Exception:  # a malformed signature is simply not anyone's
            return None


def sign_root(
    account: LocalAccount, domain: bytes, task: int, epoch: int, root: bytes
) -> SignedRoot:
    signed = account.unsafe_sign_hash(Hash32(root_digest(domain, task, epoch, root)))
    return SignedRoot(
        root, int(signed.v), signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")
    )


def channel_digest(domain: bytes, task: int, processor: str, key: bytes) -> bytes:
    """The 32-byte hash a processor signs to bind its channel ``key`` for ``task`` to its
    account on this chain and market (the domain): a key the requester swapped in, or one
    signed for another task, chain or market, recovers to another address."""
    if len(key) != 32:
        raise ValueError("a channel key is 32 bytes")
    who = bytes(12) + bytes.fromhex(to_checksum_address(processor)[2:])
    struct = bytes(keccak(CHANNEL_TYPEHASH + _u(task) + who + key))
    return bytes(keccak(b"\x19\x01" + domain + struct))


def sign_channel_key(account: LocalAccount, domain: bytes, task: int, key: bytes) -> bytes:
    """65 bytes ``r || s || v``: the account's signature of its channel key for ``task``."""
    return _sign(account, channel_digest(domain, task, account.address, key))


def _recover(digest: bytes, signature: bytes) -> str | None:
    """The account behind a 65-byte ``r || s || v`` signature of ``digest`` (None: nobody's)."""
    if len(signature) != 65:
        return None
    try:
        return str(
            Account._recover_hash(
                digest,
                vrs=(
                    signature[64],
                    int.from_bytes(signature[:32], "big"),
                    int.from_bytes(signature[32:64], "big"),
                ),
            )
        )
    except Exception:  # a malformed signature is simply not anyone's
        return None


def _sign(account: LocalAccount, digest: bytes) -> bytes:
    signed = account.unsafe_sign_hash(Hash32(digest))
    return signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v])


def noise_digest(
    domain: bytes, task: int, epoch: int, owner: str, block: int, noise: bytes
) -> bytes:
    """The 32-byte hash a data owner signs for its noise message of block ``block`` (its index
    in the owner's data) in ``epoch``: ``noise`` is the sha256 of the message. Noise the
    requester made itself (zero, or noise it can subtract) recovers to another address."""
    if len(noise) != 32:
        raise ValueError("a noise digest is 32 bytes")
    who = bytes(12) + bytes.fromhex(to_checksum_address(owner)[2:])
    struct = bytes(keccak(NOISE_TYPEHASH + _u(task) + _u(epoch) + who + _u(block) + noise))
    return bytes(keccak(b"\x19\x01" + domain + struct))


def sign_noise(
    account: LocalAccount, domain: bytes, task: int, epoch: int, block: int, noise: bytes
) -> bytes:
    """65 bytes ``r || s || v``: an owner's signature of its noise digest for one block."""
    return _sign(account, noise_digest(domain, task, epoch, account.address, block, noise))


def noise_signer(
    domain: bytes, task: int, epoch: int, owner: str, block: int, noise: bytes, signature: bytes
) -> str | None:
    """The account that signed this noise release (it is ``owner``'s only when equal)."""
    return _recover(noise_digest(domain, task, epoch, owner, block, noise), signature)


def channel_key_signer(
    domain: bytes, task: int, processor: str, key: bytes, signature: bytes
) -> str | None:
    """The account that signed ``key`` for ``processor`` (or None for a malformed signature);
    the key is ``processor``'s only when this equals it."""
    return _recover(channel_digest(domain, task, processor, key), signature)


__all__ = [
    "SignedRoot",
    "channel_digest",
    "channel_key_signer",
    "domain_separator",
    "noise_digest",
    "noise_signer",
    "root_digest",
    "sign_channel_key",
    "sign_noise",
    "sign_root",
]
