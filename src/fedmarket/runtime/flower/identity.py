"""Which chain account is behind a SuperNode: a signed challenge.

Flower node ids are random per connection and say nothing about who runs the node. The
requester sends each node a fresh random challenge; the node signs
``fedmarket-node|<run>|<node id>|<challenge>`` with its Ethereum key (EIP-191 personal
message), and the requester recovers the address. Binding the run and the node id stops a
signature from being replayed by another node or in another run. The requester then talks
only to nodes whose recovered address won on chain.
"""

from __future__ import annotations

import secrets

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from fedmarket.errors import UntrustedInputError


def challenge() -> str:
    return secrets.token_hex(32)


def _text(run_id: int, node_id: int, nonce: str) -> str:
    return f"fedmarket-node|{run_id}|{node_id}|{nonce}"


def sign(account: LocalAccount, run_id: int, node_id: int, nonce: str) -> str:
    message = encode_defunct(text=_text(run_id, node_id, nonce))
    return "0x" + bytes(account.sign_message(message).signature).hex()


def recover(run_id: int, node_id: int, nonce: str, signature: str, *, party: str) -> str:
    """The address that signed the challenge; a bad signature is an UntrustedInputError."""
    try:
        message = encode_defunct(text=_text(run_id, node_id, nonce))
        return str(Account.recover_message(message, signature=signature))
    except Exception:
        raise UntrustedInputError("sent an invalid identity signature", party=party) from None
