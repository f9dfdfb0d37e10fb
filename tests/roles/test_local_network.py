"""The in-process transport counts real wire bytes and parses like a remote peer."""

from __future__ import annotations

from fedmarket.roles.messages import EncryptedModel, encode
from fedmarket.runtime.local import LocalNetwork


def test_delivery_counts_bytes_for_sender_relay_and_recipient() -> None:
    net = LocalNetwork()
    message = EncryptedModel(task_id=1, epoch=0, payload=b"x" * 1000)
    size = len(encode(message))
    got = net.deliver("owner", "processor", message, via="requester")
    assert got == message and got is not message
    assert net.sent == {"owner": size, "requester": size}
    assert net.received == {"requester": size, "processor": size}
    assert net.messages == {"EncryptedModel": 1}
