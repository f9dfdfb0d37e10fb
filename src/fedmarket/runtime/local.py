"""In-process transport: every party in this process, messages crossing as wire bytes.

``LocalTransport`` implements the protocol's transport over ``PartyNode``s held in memory. Each
request and reply is encoded, counted per party and decoded on the other side with the
receiver's size limits, so parse costs, sizes and hostile-input handling are the real ones.
Nothing here knows about ML, HE or the chain.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from fedmarket.protocol.party import PartyNode
from fedmarket.protocol.transport import (
    MAX_MESSAGE_BYTES,
    Envelope,
    Peer,
    Traffic,
    Transport,
    check_fields,
)

Frame = tuple[str, str, str, bytes]


def _copy(envelope: Envelope, *, party: str, max_bytes: int) -> Envelope:
    """The envelope as the other side receives it: fields checked, frames size-limited."""
    if envelope.size > max_bytes:
        return Envelope.error(f"message of {envelope.size} bytes exceeds the limit of {max_bytes}")
    return Envelope(check_fields(dict(envelope.fields), party=party), tuple(envelope.frames))


class LocalTransport(Transport):
    """The requester's view of in-process parties; ``name`` is the requester's own name."""

    def __init__(
        self,
        nodes: Sequence[PartyNode],
        *,
        name: str = "requester",
        max_bytes: int = MAX_MESSAGE_BYTES,
        capture: list[Frame] | None = None,
    ) -> None:
        self.nodes = {n.address.lower(): n for n in nodes}
        self.name = name
        self.max_bytes = max_bytes
        # (sender, recipient, action, frame) of every frame, when a test inspects the wire
        self.capture = capture
        self.traffic = Traffic()
        self.problems: list[str] = []

    def peers(self) -> list[Peer]:
        return [Peer(n.address, n.name, n.roles) for n in self.nodes.values()]

    def ask(
        self,
        action: str,
        requests: Mapping[str, Envelope],
        *,
        timeout: float | None = None,
    ) -> dict[str, Envelope]:
        replies: dict[str, Envelope] = {}
        for address, request in requests.items():
            node = self.nodes.get(address.lower())
            if node is None:
                self.problems.append(f"{action}: no party at {address}")
                continue
            start = time.perf_counter()
            self.traffic.sent[self.name] += request.size
            self.traffic.received[node.name] += request.size
            self.traffic.messages[action] += 1
            inbound = _copy(request, party=self.name, max_bytes=self.max_bytes)
            if self.capture is not None:
                self.capture += [(self.name, node.name, action, f) for f in request.frames]
            self.traffic.codec_seconds += time.perf_counter() - start
            reply = node.handle(action, inbound)
            if reply is None:
                self.problems.append(f"{action}: no answer from {node.name}")
                continue
            start = time.perf_counter()
            self.traffic.sent[node.name] += reply.size
            self.traffic.received[self.name] += reply.size
            reply = _copy(reply, party=node.name, max_bytes=self.max_bytes)
            if self.capture is not None:
                self.capture += [(node.name, self.name, action, f) for f in reply.frames]
            self.traffic.codec_seconds += time.perf_counter() - start
            if reply.problem is not None:
                self.problems.append(f"{action}: {node.name}: {reply.problem}")
                continue
            replies[address] = reply
        return replies

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
