"""The Flower transport's own checks, without processes: frames, limits, identity, state."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.protocol.transport import Envelope
from fedmarket.roles.messages import ChannelKey
from fedmarket.runtime.flower import identity, records
from fedmarket.runtime.flower.node import NodeConfig, NodeStore, chain_scope

ADDRESS = "0x" + "ab" * 20


def test_envelopes_round_trip_with_fields_small_and_large() -> None:
    key = ChannelKey(task_id=3, processor=ADDRESS, public_key=b"k" * 32, signature=b"s" * 65)
    content = records.pack(Envelope.of(key, status="won", n=2))
    assert set(content.config_records) == {"envelope"} and not content.array_records
    envelope = records.unpack(content, party="node 1")
    assert envelope.fields == {"status": "won", "n": 2}
    assert envelope.one(ChannelKey, party="node 1") == key
    # past INLINE_BYTES the frames travel as arrays (Flower chunks them), fields stay put
    big = Envelope({"k": "v"}, (b"a" * records.INLINE_BYTES, b"b"))
    content = records.pack(big)
    assert set(content.array_records) == {"frames"}
    assert records.unpack(content, party="node 1") == big
    assert records.unpack(records.pack(Envelope()), party="node 1") == Envelope()


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
    cases = {
        "not a fedmarket envelope": RecordDict({"other": ConfigRecord({})}),
        "frames in no place": RecordDict({"envelope": ConfigRecord({"field:a": 1})}),
        "frames in no place or in two": RecordDict(
            {
                "envelope": ConfigRecord({"frames": [b"a"]}),
                "frames": ArrayRecord({"0": _array(b"a")}),
            }
        ),
        "unknown parts": RecordDict({"envelope": ConfigRecord({"frames": [], "odd": 1})}),
        "frame 0 is missing": RecordDict(
            {"envelope": ConfigRecord({}), "frames": ArrayRecord({"5": _array(b"a")})}
        ),
        "frame 0 is not raw bytes": RecordDict({"envelope": ConfigRecord({"frames": "text"})}),
    }
    for problem, content in cases.items():
        with pytest.raises(UntrustedInputError, match=f"node 3: .*{problem}"):
            records.unpack(content, party="node 3")


def _array(data: bytes) -> Array:
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


def test_node_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="lack chain, market, state"):
        NodeConfig.parse({"role": "owner"})
    with pytest.raises(ConfigError, match="role must be one of"):
        NodeConfig.parse({"role": "miner", "chain": "c", "market": "m", "state": "s"})
    cfg = NodeConfig.parse({"role": "processor", "chain": "c", "market": "m", "state": "s"})
    with pytest.raises(ConfigError, match="a processor node needs capacity"):
        cfg.int("capacity")


def test_state_is_kept_per_chain_market_and_task_and_large_bytes_once(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    here = chain_scope(31337, "aa" * 32, ADDRESS)
    fresh = chain_scope(31337, "bb" * 32, ADDRESS)  # anvil restarted: same id, new genesis
    context, block = b"c" * 100_000, b"b" * 10_000
    store = NodeStore(path)
    store.save(here, 0, {"task_id": 0, "keys": context, "blocks": [("o", 0, block)]})
    store.save(here, 0, {"task_id": 0, "keys": context, "blocks": [("o", 0, block)], "n": 1})
    store.save(here, 1, {"task_id": 1, "keys": context, "blocks": []})
    store.close()
    again = NodeStore(path)  # a restarted node reads it back
    assert again.latest(fresh) is None  # another chain: nothing to resume, bid afresh
    assert again.latest(here) == (1, {"task_id": 1, "keys": context, "blocks": []})
    assert again.tasks(here) == [0, 1]
    blobs = again._db.execute("SELECT COUNT(*), SUM(LENGTH(data)) FROM blob").fetchone()
    assert blobs == (2, 110_000)  # the context once for two tasks, the block once
    again.save(here, 0, {"task_id": 0, "keys": b"other" * 1000})
    assert again._db.execute("SELECT COUNT(*) FROM blob").fetchone() == (2,)  # block gone
    again.close()


def test_a_node_polls_fast_after_traffic_and_learns_to_sleep_through_an_epoch() -> None:
    import threading

    from fedmarket.runtime.flower.serve import Poller, PollPolicy

    class Clock(threading.Event):
        waited: list[float]

        def wait(self, timeout: float | None = None) -> bool:
            self.waited.append(round(timeout or 0, 4))
            return False

    stop = Clock()
    stop.waited = []
    poller = Poller(PollPolicy())
    for _ in range(15):  # nothing yet, not in a task: idle polls grow to once a second
        poller.wait(False, stop)
    assert stop.waited[-1] == 1.0
    poller.received()
    poller.answered("query.model")
    stop.waited.clear()
    for _ in range(8):  # right after a reply: 10 ms, growing to 50 ms
        poller.wait(True, stop)
    assert stop.waited[0] == 0.01 and max(stop.waited) == 0.05
    for gap in (0.4, 0.4):  # two epochs: a model came 0.4 s after each reply
        poller.replied -= gap
        poller.received()
        poller.answered("query.model")
    stop.waited.clear()
    poller.wait(True, stop)
    assert stop.waited == [0.28]  # sleeps through 70% of the usual wait, once
    poller.wait(True, stop)
    assert stop.waited[-1] == 0.01
    poller.answered("query.settle")  # a kind of reply it has no history for: no sleep
    stop.waited.clear()
    poller.wait(True, stop)
    assert stop.waited == [0.01]
