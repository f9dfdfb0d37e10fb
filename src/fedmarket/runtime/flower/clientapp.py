"""The ClientApp every SuperNode runs: the protocol's party side behind Flower messages.

Each action is a Flower message of type ``query.<action>`` from the requester's ServerApp; the
node (``fedmarket.runtime.flower.node``) hands it to the party's dispatcher and replies with
its envelope, or with ``error`` (a rejected input, a reverted transaction) so the requester can
note it and go on without the node, or ``silent`` (a simulated crash: the requester treats it
as no answer).
"""

from __future__ import annotations

import logging

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedmarket.errors import FedmarketError
from fedmarket.protocol.party import ACTIONS
from fedmarket.protocol.transport import Envelope
from fedmarket.runtime.flower import records
from fedmarket.runtime.flower.node import Node, NodeConfig

app = ClientApp()
log = logging.getLogger("fedmarket.node")
SILENT = "silent"


def _handle(msg: Message, context: Context) -> Message:
    action = msg.metadata.message_type.removeprefix("query.")
    node = None
    try:
        node = Node(NodeConfig.parse(context.node_config))
        request = records.unpack(msg.content, party="requester")
        if action == "hello":
            reply: Envelope | None = node.hello(request.fields, context.run_id, context.node_id)
        elif action in ACTIONS:
            reply = node.handle(action, request)
        else:
            reply = Envelope.error(f"unknown action {action!r}")
    except FedmarketError as exc:
        log.warning("%s: %s", action, exc)
        reply = Envelope.error(str(exc))
    finally:
        if node is not None:
            node.close()
    if reply is None:
        reply = Envelope({SILENT: True})
    return Message(records.pack(reply), reply_to=msg)


for _action in ("hello", *ACTIONS):  # Flower routes "query.<action>" by its full name
    app.query(_action)(_handle)
