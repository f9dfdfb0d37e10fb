"""The Flower transport's own checks, without processes: frames, limits, identity, state."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedmarket.errors import UntrustedInputError
from fedmarket.protocol.transport import Envelope
from fedmarket.roles.messages import ChannelKey
from fedmarket.runtime.flower import identity, records
from fedmarket.runtime.flower.loopback import node_config
from fedmarket.runtime.flower.node import NodeConfig, NodeStore

ADDRESS = "0x" + "ab" * 20


def test_envelopes_round_trip_with_fields() -> None:
    key = ChannelKey(task_id=3, processor=ADDRESS, public_key=b"k" * 32, signature=b"s" * 65)
    content = records.pack(Envelope.of(key, status="won", n=2))
    envelope = records.unpack(content, party="node 1")
    assert envelope.fields == {"status": "won", "n": 2}
    assert envelope.one(ChannelKey, party="node 1") == key


def test_an_oversized_message_is_rejected_before_parsing() -> None:
    content = records.pack(Envelope(frames=(b"x" * 1000, b"y" * 1000)))
    with pytest.raises(UntrustedInputError, match="exceeds the limit of 1500 bytes"):
        records.unpack(content, party="node 7", max_bytes=1500)


def test_garbage_frames_fields_and_shapes_are_rejected_with_the_sender_named() -> None:
    envelope = records.unpack(records.pack(Envelope(frames=(b"\x00garbage",))), party="node 2")
    with pytest.raises(UntrustedInputError, match="node 2"):
        envelope.one(ChannelKey, party="node 2")
    with pytest.raises(UntrustedInputError, match="sent no ChannelKey"):
        Envelope().one(ChannelKey, party="node 2")
    with pytest.raises(UntrustedInputError, match="node 4: sent an oversized field"):
        records.unpack(records.pack(Envelope({"x": "y" * 70_000})), party="node 4")
    odd = RecordDict({"fields": ConfigRecord({}), "frames": ArrayRecord({"5": _array(b"a")})})
    with pytest.raises(UntrustedInputError, match="frame 0 is missing"):
        records.unpack(odd, party="node 3")


def _array(data: bytes):  # type: ignore[no-untyped-def]
    from flwr.app import Array

    return Array(dtype="uint8", shape=(len(data),), stype="raw-bytes", data=data)


def test_identity_binds_run_node_and_nonce() -> None:
    account = Account.create()
    nonce = identity.challenge()
    signature = identity.sign(account, 5, 77, nonce)
    assert identity.recover(5, 77, nonce, signature, party="n") == account.address
    # replayed by another node, in another run, or for another challenge: someone else
    assert identity.recover(5, 78, nonce, signature, party="n") != account.address
    assert identity.recover(6, 77, nonce, signature, party="n") != account.address
    with pytest.raises(UntrustedInputError, match="invalid identity signature"):
        identity.recover(5, 77, nonce, "0x1234", party="n")


def test_node_config_and_state(tmp_path: Path) -> None:
    text = node_config({"role": "owner", "points": 3, "key": "/k.json"})
    assert text == 'role="owner" points=3 key="/k.json"'
    with pytest.raises(Exception, match="lacks chain, market, state"):
        NodeConfig.parse({"role": "owner", "key": "k"})
    store = NodeStore(str(tmp_path / "s.sqlite"))
    store.put("task", {"task_id": 4, "blocks": [b"1", b"2"]})
    store.close()
    again = NodeStore(str(tmp_path / "s.sqlite"))  # a restarted node reads it back
    assert again.get("task") == {"task_id": 4, "blocks": [b"1", b"2"]}
    assert again.get("missing", 9) == 9
