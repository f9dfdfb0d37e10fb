"""The ClientApp named in fedmarket's Flower app: it answers nothing.

Flower requires an app to name a ClientApp. fedmarket's owners and processors run
``fedmarket node``, which never loads an app (``fedmarket.runtime.flower.pin``); a stock
``flower-supernode`` that joins a fedmarket federation gets this app, which refuses every
message with what to do instead.
"""

from __future__ import annotations

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp

from fedmarket.protocol.party import ACTIONS

app = ClientApp()
NOT_A_NODE = "a stock SuperNode is not a fedmarket node: run `fedmarket node` instead"


def _refuse(msg: Message, context: Context) -> Message:
    return Message(Error(code=0, reason=NOT_A_NODE), reply_to=msg)


for _action in ("hello", *ACTIONS):  # Flower routes "query.<action>" by its full name
    app.query(_action)(_refuse)
