"""In-process transport: messages cross as wire bytes, exactly as on a network.

Every delivery encodes the message, counts its bytes for sender and recipient, and decodes
it on the other side with the recipient's size limit, so parse costs, sizes and hostile-input
handling are the real ones. Nothing here knows about ML or HE.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

from fedmarket.roles.messages import DEFAULT_MAX_BYTES, Message, decode, encode

M = TypeVar("M", bound=Message)


@dataclass
class LocalNetwork:
    """Carries messages between named parties and counts bytes per party."""

    max_bytes: int = DEFAULT_MAX_BYTES
    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    # (sender, recipient, wire bytes) of every delivery, when a test wants to inspect the wire
    capture: list[tuple[str, str, bytes]] | None = None
    codec_seconds: float = 0.0  # time spent encoding and decoding frames

    def deliver(self, sender: str, recipient: str, message: M, *, via: str | None = None) -> M:
        """``message`` as ``recipient`` parses it; ``via`` relays it (counted for the relay too)."""
        start = time.perf_counter()
        data = encode(message)
        self.sent[sender] += len(data)
        if via is not None:
            self.received[via] += len(data)
            self.sent[via] += len(data)
        self.received[recipient] += len(data)
        self.messages[type(message).__name__] += 1
        if self.capture is not None:
            self.capture.append((sender, recipient, data))
        parsed = decode(data, type(message), party=sender, max_bytes=self.max_bytes)
        self.codec_seconds += time.perf_counter() - start
        return parsed
