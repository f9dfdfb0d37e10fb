"""The protocol's transport interface: the requester reaches every other party through it.

As Flower's ``Grid`` is to a ServerApp, ``Transport.ask`` sends one action to a set of parties,
each with its own ``Envelope`` (a few small fields and encoded protocol messages), and returns
the replies that came back within the deadline. A party that fails, refuses with an error or
stays silent is absent from the replies; why is in ``Transport.problems``. Nothing here knows
about ML, HE or the chain: ``fedmarket.runtime.local`` (in process) and
``fedmarket.runtime.flower`` (one process per party) implement it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from fedmarket.errors import UntrustedInputError
from fedmarket.roles.messages import DEFAULT_MAX_BYTES, Message, decode, encode

M = TypeVar("M", bound=Message)
Field = str | int | float | bool
MAX_FIELDS = 64
MAX_FIELD_CHARS = 1 << 16
# The largest message a transport carries (Flower's gRPC limit); the driver splits bulk steps
# (sealed blocks) into messages of at most half of this.
MAX_MESSAGE_BYTES = 512 << 20


@dataclass(frozen=True)
class Envelope:
    """What one party sends another in one step: small ``fields`` and encoded ``frames``."""

    fields: Mapping[str, Field] = field(default_factory=dict)
    frames: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, *messages: Message, **fields: Field) -> Envelope:
        return cls(dict(fields), tuple(encode(m) for m in messages))

    @classmethod
    def error(cls, text: str) -> Envelope:
        return cls({"error": text[:MAX_FIELD_CHARS]})

    @property
    def size(self) -> int:
        """Bytes of the frames (what the counters count)."""
        return sum(len(f) for f in self.frames)

    @property
    def problem(self) -> str | None:
        """The error the party answered with, if any."""
        value = self.fields.get("error")
        return None if value is None else str(value)

    def one(self, expect: type[M], *, party: str, index: int = 0) -> M:
        """Frame ``index`` decoded as ``expect`` (size-limited, validated)."""
        if index >= len(self.frames):
            raise UntrustedInputError(f"sent no {expect.__name__} message", party=party)
        return decode(self.frames[index], expect, party=party, max_bytes=DEFAULT_MAX_BYTES)

    def many(self, expect: type[M], *, party: str, start: int = 0) -> list[M]:
        return [
            decode(f, expect, party=party, max_bytes=DEFAULT_MAX_BYTES) for f in self.frames[start:]
        ]

    def text(self, key: str, default: str = "") -> str:
        value = self.fields.get(key, default)
        return value if isinstance(value, str) else str(value)

    def integer(self, key: str, *, party: str) -> int:
        value = self.fields.get(key)
        if type(value) is not int:
            raise UntrustedInputError(f"field {key!r} is missing or not an integer", party=party)
        return value


def check_fields(fields: Mapping[str, object], *, party: str) -> dict[str, Field]:
    """Small fields only, of simple types: what a transport accepts from another party."""
    if len(fields) > MAX_FIELDS:
        raise UntrustedInputError(f"sent {len(fields)} fields (limit {MAX_FIELDS})", party=party)
    out: dict[str, Field] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or not isinstance(value, str | int | float | bool):
            raise UntrustedInputError(f"sent a field {key!r} of an unexpected type", party=party)
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            raise UntrustedInputError(f"sent an oversized field {key!r}", party=party)
        out[key] = value
    return out


@dataclass(frozen=True)
class Peer:
    """A party the transport can reach: its chain account, a display name, its roles."""

    address: str
    name: str
    roles: tuple[str, ...]  # "owner", "processor"


@dataclass
class Traffic:
    """Bytes of protocol frames per party name, both ways, as a transport counts them."""

    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)  # per action
    codec_seconds: float = 0.0


class Transport(ABC):
    """How the requester's driver reaches the other parties (see the module docstring)."""

    traffic: Traffic
    problems: list[str]  # one line per party that failed, refused or stayed silent
    max_bytes: int = MAX_MESSAGE_BYTES  # per message, each way

    @abstractmethod
    def peers(self) -> list[Peer]:
        """Every party reachable now (after restarts, under their current identity)."""

    @abstractmethod
    def ask(
        self,
        action: str,
        requests: Mapping[str, Envelope],
        *,
        timeout: float | None = None,
    ) -> dict[str, Envelope]:
        """Send ``action`` to each address in ``requests``; the good replies by address."""

    def close(self) -> None:  # noqa: B027 - most transports hold nothing
        """Release what the transport holds (connections, processes it started)."""
