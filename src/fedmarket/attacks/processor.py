"""Dishonest processors: what they send instead of (or on top of) their honest block results.

An attack has one face, ``apply(keys, epoch, honest, n_samples, rng, memory, party=...)``, over
the protocol's crypto interface (``fedmarket.protocol.crypto.PublicKeys``): block id -> the
result message it sends. It works with the public side alone, as a real cheater must: it can
forge results holding made-up totals, multiply or add noise to honest ones, replay old ones
under a new epoch, or break their bytes. The same attack therefore runs under CKKS (what users
run) and in the plaintext twin (what the integrity benchmark runs at scale).

``n_samples`` maps every block the processor must answer for to its sample count; ``honest``
holds the honest results of those blocks, and may be ``None`` when ``needs_honest(epoch,
memory)`` is false (the cheater then skips the work). ``memory`` is the attacker's own state
across epochs, a dict the caller owns and passes back every epoch. Random draws come from
``rng`` in sorted block order.

The forged totals stay inside the honest bound (the kind's ``max_abs_total``) unless the attack
is about scale: only statistics over blocks, or replication, can catch them.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from fedmarket.protocol.crypto import PublicKeys

Results = dict[str, bytes]
DEFAULT_RANDOM_SCALE = 0.5
DEFAULT_STALE_SIGMA = 0.01
MAX_SCALE_FACTOR = 100


def _num(value: float) -> str:
    """A float as attack strings write it; ``float()`` reads it back exactly."""
    return repr(float(value))


def _require(honest: Mapping[str, Any] | None, blocks: Mapping[str, int], what: str) -> None:
    if honest is None:
        raise ValueError(f"{what} needs the honest results (needs_honest was true)")
    missing = sorted(set(blocks) - set(honest))
    if missing:
        raise ValueError(f"{what}: no honest result for blocks {missing}")


def _forge(keys: PublicKeys, epoch: int, block: str, n_samples: int, totals: np.ndarray) -> bytes:
    return keys.forge(block_id=block, epoch=epoch, n_samples=n_samples, totals=totals)


class ProcessorAttack(ABC):
    """Base of the processor attacks; subclasses are frozen dataclasses."""

    submits_late: ClassVar[bool] = False

    @property
    @abstractmethod
    def name(self) -> str:
        """The kind of attack, without parameters (``random``, ``stale``, ``crash``...)."""

    @property
    def text(self) -> str:
        """The attack as a spec writes it, parameters included (``parse_processor_attack``
        reads it back to an equal object)."""
        return self.name

    def __str__(self) -> str:
        return self.text

    def answers(self, epoch: int) -> bool:
        """Whether the processor sends anything at all in ``epoch``."""
        return True

    @abstractmethod
    def needs_honest(self, epoch: int, memory: Mapping[str, Any] | None = None) -> bool:
        """Whether ``apply`` needs the honest results this epoch.

        ``memory`` (the attacker's state) lets stateful attacks answer exactly; without it the
        answer is the conservative one.
        """

    @abstractmethod
    def apply(
        self,
        keys: PublicKeys,
        epoch: int,
        honest: Mapping[str, bytes] | None,
        n_samples: Mapping[str, int],
        rng: np.random.Generator,
        memory: dict[str, Any],
        *,
        party: str = "processor",
    ) -> Results:
        """Block id -> the result message this processor sends (``party`` names the source of
        ``honest`` in parse errors)."""


class _Forging(ProcessorAttack):
    """Attacks that skip the work and make up every block's totals (``forge``)."""

    def needs_honest(self, epoch: int, memory: Mapping[str, Any] | None = None) -> bool:
        return False

    @abstractmethod
    def forge(
        self,
        block: str,
        epoch: int,
        n_samples: int,
        shape: tuple[int, ...],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """One block's made-up totals (blocks are visited in sorted order)."""

    def apply(
        self,
        keys: PublicKeys,
        epoch: int,
        honest: Mapping[str, bytes] | None,
        n_samples: Mapping[str, int],
        rng: np.random.Generator,
        memory: dict[str, Any],
        *,
        party: str = "processor",
    ) -> Results:
        shape = keys.layout.totals_shape
        return {
            block: _forge(keys, epoch, block, n, self.forge(block, epoch, n, shape, rng))
            for block, n in sorted(n_samples.items())
        }


class _PerBlock(ProcessorAttack):
    """Attacks that compute honestly and then change each block's result on its own; they send
    nothing in an epoch they do not ``answer``."""

    def needs_honest(self, epoch: int, memory: Mapping[str, Any] | None = None) -> bool:
        return self.answers(epoch)

    @abstractmethod
    def change(self, keys: PublicKeys, result: bytes, party: str) -> bytes:
        """The sent result message of one block, from its honest one."""

    def apply(
        self,
        keys: PublicKeys,
        epoch: int,
        honest: Mapping[str, bytes] | None,
        n_samples: Mapping[str, int],
        rng: np.random.Generator,
        memory: dict[str, Any],
        *,
        party: str = "processor",
    ) -> Results:
        if not self.answers(epoch):
            return {}
        _require(honest, n_samples, self.text)
        assert honest is not None
        return {block: self.change(keys, honest[block], party) for block in sorted(n_samples)}


@dataclass(frozen=True)
class RandomTotals(_Forging):
    """``random[:SCALE]``: every total uniform in [-SCALE, SCALE] * n_samples."""

    scale: float = DEFAULT_RANDOM_SCALE

    @property
    def name(self) -> str:
        return "random"

    @property
    def text(self) -> str:
        return f"random:{_num(self.scale)}"

    def forge(
        self,
        block: str,
        epoch: int,
        n_samples: int,
        shape: tuple[int, ...],
        rng: np.random.Generator,
    ) -> np.ndarray:
        return rng.uniform(-self.scale, self.scale, shape) * n_samples


@dataclass(frozen=True)
class ZeroTotals(_Forging):
    """``zero``: the free rider reports all-zero totals without computing anything."""

    @property
    def name(self) -> str:
        return "zero"

    def forge(
        self,
        block: str,
        epoch: int,
        n_samples: int,
        shape: tuple[int, ...],
        rng: np.random.Generator,
    ) -> np.ndarray:
        return np.zeros(shape)


_STALE = "stale"  # memory key: block id -> the first epoch's honest result


@dataclass(frozen=True)
class Stale(ProcessorAttack):
    """``stale[:SIGMA]``: computes honestly once (its first epoch), then replays that result
    every later epoch plus Gaussian noise of SIGMA * n_samples per total.

    A block it has no stored result for (one assigned later) is forged from the noise alone.
    """

    sigma: float = DEFAULT_STALE_SIGMA

    @property
    def name(self) -> str:
        return "stale"

    @property
    def text(self) -> str:
        return f"stale:{_num(self.sigma)}"

    def needs_honest(self, epoch: int, memory: Mapping[str, Any] | None = None) -> bool:
        return memory is None or _STALE not in memory

    def apply(
        self,
        keys: PublicKeys,
        epoch: int,
        honest: Mapping[str, bytes] | None,
        n_samples: Mapping[str, int],
        rng: np.random.Generator,
        memory: dict[str, Any],
        *,
        party: str = "processor",
    ) -> Results:
        if _STALE not in memory:
            _require(honest, n_samples, self.text)
            assert honest is not None
            memory[_STALE] = {block: honest[block] for block in n_samples}
            return {block: honest[block] for block in sorted(n_samples)}
        stored: dict[str, bytes] = memory[_STALE]
        shape = keys.layout.totals_shape
        out = {}
        for block, n in sorted(n_samples.items()):
            noise = rng.normal(0.0, self.sigma * n, shape)
            if block in stored:
                replay = keys.restamp(stored[block], epoch=epoch, party=party)
                out[block] = keys.add_noise(replay, noise, party=party)
            else:
                out[block] = _forge(keys, epoch, block, n, noise)
        return out


_LAST = "last"  # memory key: block id -> the result sent for it last epoch
_SKIPPED = "skipped"  # memory key: the blocks skipped this epoch (sorted), for reports


@dataclass(frozen=True)
class Partial(ProcessorAttack):
    """``partial:S``: each epoch skips every block with probability S (drawn afresh from the
    rng); a skipped block gets the result sent for it the epoch before (replayed under the new
    epoch), or zeros if there is none. Over many epochs the skipped fraction tends to S."""

    fraction: float

    @property
    def name(self) -> str:
        return "partial"

    @property
    def text(self) -> str:
        return f"partial:{_num(self.fraction)}"

    def needs_honest(self, epoch: int, memory: Mapping[str, Any] | None = None) -> bool:
        return self.fraction < 1.0

    def skipped(self, n_samples: Mapping[str, int], rng: np.random.Generator) -> set[str]:
        blocks = sorted(n_samples)
        draws = rng.random(len(blocks))
        return {block for block, u in zip(blocks, draws, strict=True) if u < self.fraction}

    def apply(
        self,
        keys: PublicKeys,
        epoch: int,
        honest: Mapping[str, bytes] | None,
        n_samples: Mapping[str, int],
        rng: np.random.Generator,
        memory: dict[str, Any],
        *,
        party: str = "processor",
    ) -> Results:
        skip = self.skipped(n_samples, rng)
        last: dict[str, bytes] = memory.setdefault(_LAST, {})
        if len(skip) < len(n_samples):
            _require(honest, {b: n for b, n in n_samples.items() if b not in skip}, self.text)
        out = {}
        for block, n in sorted(n_samples.items()):
            if block not in skip:
                assert honest is not None
                out[block] = honest[block]
            elif block in last:
                out[block] = keys.restamp(last[block], epoch=epoch, party=party)
            else:
                out[block] = _forge(keys, epoch, block, n, np.zeros(keys.layout.totals_shape))
        memory[_LAST] = dict(out)
        memory[_SKIPPED] = sorted(skip)
        return out


@dataclass(frozen=True)
class Scale(_PerBlock):
    """``scale:F``: the honest totals times an integer F (F != 0, 1; |F| <= 100)."""

    factor: int

    @property
    def name(self) -> str:
        return "sign-flip" if self.factor == -1 else "scale"

    @property
    def text(self) -> str:
        return "sign-flip" if self.factor == -1 else f"scale:{self.factor}"

    def change(self, keys: PublicKeys, result: bytes, party: str) -> bytes:
        return keys.scale(result, self.factor, party=party)


@dataclass(frozen=True)
class Corrupt(_PerBlock):
    """``corrupt``: honest results with bytes flipped inside the payload (a broken or
    malicious sender): under CKKS the ciphertexts decrypt to garbage, in the twin the totals
    are no numbers; either way no honest processor can have sent it."""

    @property
    def name(self) -> str:
        return "corrupt"

    def change(self, keys: PublicKeys, result: bytes, party: str) -> bytes:
        return keys.corrupt(result)


class _Honest(_PerBlock):
    """Attacks whose results are honest; the party's runtime applies what they mark."""

    def change(self, keys: PublicKeys, result: bytes, party: str) -> bytes:
        return result


@dataclass(frozen=True)
class Late(_Honest):
    """``late``: honest results, submitted after the epoch's deadline."""

    submits_late: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "late"


@dataclass(frozen=True)
class Crash(_Honest):
    """``crash@N``: honest until it stops answering from epoch N on (``apply`` returns {})."""

    epoch: int

    @property
    def name(self) -> str:
        return "crash"

    @property
    def text(self) -> str:
        return f"crash@{self.epoch}"

    def answers(self, epoch: int) -> bool:
        return epoch < self.epoch


# The colluders' private side channel, simulated: in one process, colluding processors share
# the forged result bytes of each (keys, group, block, epoch) through this dict, as real
# colluders would over a channel of their own. Only the last two epochs are kept.
_SIDE_CHANNEL: dict[tuple[bytes, str, str, int], bytes] = {}
_SIDE_CHANNEL_LOCK = threading.Lock()


def clear_side_channel() -> None:
    """Forget every result colluders have shared (tests and benchmarks between runs)."""
    with _SIDE_CHANNEL_LOCK:
        _SIDE_CHANNEL.clear()


@dataclass(frozen=True)
class Collude(_Forging):
    """``collude:GROUP:random[:SCALE]``: processors of one GROUP return identical forged
    results for the same block and epoch, totals uniform in [-SCALE, SCALE] * n_samples, so
    replication between two colluders sees agreement. The totals come from a hash of (GROUP,
    block, epoch), not the rng; since an encryption is randomised, the colluders also share the
    bytes (through a simulated side channel in one process, or by encrypting alike)."""

    group: str
    scale: float = DEFAULT_RANDOM_SCALE

    @property
    def name(self) -> str:
        return "collude"

    @property
    def text(self) -> str:
        suffix = "" if self.scale == DEFAULT_RANDOM_SCALE else f":{_num(self.scale)}"
        return f"collude:{self.group}:random{suffix}"

    def forge(
        self,
        block: str,
        epoch: int,
        n_samples: int,
        shape: tuple[int, ...],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """The group's agreed totals for one block and epoch (``rng`` is not used)."""
        seed = hashlib.sha256(f"{self.group}\x00{block}\x00{epoch}".encode()).digest()
        local = np.random.default_rng(int.from_bytes(seed[:16], "big"))
        return local.uniform(-self.scale, self.scale, shape) * n_samples

    def apply(
        self,
        keys: PublicKeys,
        epoch: int,
        honest: Mapping[str, bytes] | None,
        n_samples: Mapping[str, int],
        rng: np.random.Generator,
        memory: dict[str, Any],
        *,
        party: str = "processor",
    ) -> Results:
        out = {}
        shape = keys.layout.totals_shape
        for block, n in sorted(n_samples.items()):
            key = (keys.digest, self.group, block, epoch)
            with _SIDE_CHANNEL_LOCK:
                shared = _SIDE_CHANNEL.get(key)
                if shared is None:
                    values = self.forge(block, epoch, n, shape, rng)
                    shared = _forge(keys, epoch, block, n, values)
                    for old in [k for k in _SIDE_CHANNEL if k[:2] == key[:2] and k[3] < epoch - 1]:
                        del _SIDE_CHANNEL[old]
                    _SIDE_CHANNEL[key] = shared
            out[block] = shared
        return out
