"""The ClientApp every SuperNode runs: a data owner or a processor, by its node config.

Each action is a Flower message of type ``query.<action>`` from the requester's ServerApp;
the reply carries the node's answer, or ``error`` with what went wrong (a rejected input,
a reverted transaction) so the requester can log it and go on without the node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedmarket.errors import FedmarketError
from fedmarket.runtime.flower import records
from fedmarket.runtime.flower.node import Node, NodeConfig

app = ClientApp()
log = logging.getLogger("fedmarket.node")

Handler = Callable[[Node, dict[str, Any], list[bytes], Context], Any]


def _handle(msg: Message, context: Context, handler: Handler) -> Message:
    node = None
    try:
        node = Node(NodeConfig.parse(context.node_config))
        fields, frames = records.unpack(msg.content, party="requester")
        reply = handler(node, fields, frames, context)
    except FedmarketError as exc:
        log.warning("%s: %s", msg.metadata.message_type, exc)
        reply = records.pack({"error": str(exc)})
    finally:
        if node is not None:
            node.close()
    return Message(reply, reply_to=msg)


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    return _handle(msg, context, lambda n, f, _, c: n.hello(f, c.run_id, c.node_id))


@app.query("announce")
def announce(msg: Message, context: Context) -> Message:
    return _handle(msg, context, lambda n, _, fr, __: n.announce(fr))


@app.query("channel_key")
def channel_key(msg: Message, context: Context) -> Message:
    return _handle(msg, context, lambda n, *_: n.channel_key())


@app.query("prepare")
def prepare(msg: Message, context: Context) -> Message:
    return _handle(msg, context, lambda n, *_: n.prepare())


@app.query("setup")
def setup(msg: Message, context: Context) -> Message:
    return _handle(msg, context, lambda n, _, fr, __: n.setup(fr))


@app.query("seal")
def seal(msg: Message, context: Context) -> Message:
    return _handle(msg, context, lambda n, _, fr, __: n.seal(fr))


@app.query("blocks")
def blocks(msg: Message, context: Context) -> Message:
    return _handle(msg, context, lambda n, _, fr, __: n.blocks(fr))


@app.query("model")
def model(msg: Message, context: Context) -> Message:
    return _handle(msg, context, lambda n, _, fr, __: n.model(fr))


@app.query("recompute")
def recompute(msg: Message, context: Context) -> Message:
    return _handle(msg, context, lambda n, f, fr, _: n.recompute(fr, f))


@app.query("settle")
def settle(msg: Message, context: Context) -> Message:
    return _handle(msg, context, lambda n, *_: n.settle())
