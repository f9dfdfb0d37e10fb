"""The protocol's one crypto interface: what each party does with ciphertexts, in bytes.

The requester makes the task's keys (``Crypto.keygen``) and publishes ``TaskKeys.public``;
owners and processors parse those bytes (``Crypto.public``). Owners encrypt blocks,
processors run the program on them (a ``Pool`` keeps a processor's blocks), the requester
encrypts models and decrypts only block totals. Simulated cheaters forge or alter results
with the public side alone (``forge``, ``scale``, ``add_noise``, ``restamp``).

Privacy (docs/privacy.md) is the same in every crypto: the task's ``Privacy`` travels in the
published keys (``Layout`` shows it); ``encrypt_block`` refuses blocks below the floor and
samples over the clip; a model is encrypted reproducibly from (weights, seed), so an owner given
both re-encrypts the very bytes processors received; processors make any model well-formed
before use (CKKS projects it; a plaintext model is well-formed by construction); owners'
noise (``encrypt_noise``) is added by the program, and a task with ``Layout.private`` computes
no block without it.

Two implementations: CKKS (``fedmarket.he.crypto``, what users run) and plaintext
(``fedmarket.protocol.plaintext``, the twin the integrity benchmark runs at scale). The driver,
the roles, the checks and the attacks are the same code over either; only this differs.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

import numpy as np

from fedmarket.models.kinds import ModelKind
from fedmarket.privacy import PROTOCOL_FLOOR as PROTOCOL_FLOOR  # the floor callers check


@dataclass(frozen=True)
class Privacy:
    """What a task's ``[privacy]`` asks of the crypto layer; every crypto enforces it.

    ``min_block_points``: the fewest samples per block (``encrypt_block`` refuses fewer,
    processors refuse such blocks, ``decrypt_result`` such results). ``clip_norm``: the L2 bound
    on each sample's scaled features (0: none beyond the [-1, 1] scaling, i.e. sqrt(n_features)).
    ``noise``: every result must carry its block owner's noise. The default asks nothing: what
    tasks get until the roles pass their spec's ``[privacy]``.
    """

    min_block_points: int = 1
    clip_norm: float = 0.0
    noise: bool = False


@dataclass(frozen=True)
class BlockTotals:
    """Decrypted gradient totals of one block: ``sums`` has the kind's weight shape."""

    block_id: str
    epoch: int
    n_samples: int
    sums: np.ndarray


@dataclass(frozen=True)
class Layout:
    """What every party agrees on about the task's model and blocks."""

    kind: ModelKind
    n_features: int
    n_outputs: int
    block_size: int  # most samples one block may hold
    hidden: int = 0  # hidden units of a network kind
    min_block_points: int = 1  # fewest samples one block may hold (the task's floor)
    clip_norm: float = 0.0  # L2 bound on a sample's scaled features (0 until set: see clip)
    private: bool = False  # every result must carry its block owner's noise

    @property
    def totals_shape(self) -> tuple[int, int]:
        return self.kind.weight_shape(self.n_features, self.n_outputs, self.hidden)

    @property
    def clip(self) -> float:
        """The L2 bound owners' samples are held to (sqrt(n_features) without a clip)."""
        return self.clip_norm or float(np.sqrt(self.n_features))

    @property
    def sensitivity(self) -> float:
        """Replace-one L2 sensitivity of one block's totals (``ModelKind.sensitivity``): the
        owners' noise std is the noise multiplier times this."""
        return self.kind.sensitivity(self.n_features, self.n_outputs, self.clip, self.hidden)


class Pool(ABC):
    """A processor's blocks, kept across epochs; ``run_epoch`` computes every block's result."""

    @abstractmethod
    def add_block(self, data: bytes, *, party: str) -> None:
        """Take an owner's (already opened and checked) block message."""

    @abstractmethod
    def run_epoch(
        self, model: bytes, *, party: str, noise: Mapping[str, bytes] | None = None
    ) -> dict[str, bytes]:
        """Block id -> result message for every block held, each plus its owner's noise where
        ``noise`` (block id -> ``encrypt_noise`` message, relayed by ``party``) has it.

        With ``Layout.private`` exactly the blocks ``noise`` covers are computed (no noise, no
        result) and ``noise=None`` is refused. Noise for a block not held, for another epoch or
        under other keys raises ``UntrustedInputError``."""

    @abstractmethod
    def close(self) -> None:
        """Release the workers."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PublicKeys(ABC):
    """The published side of a task's keys, as owners and processors hold it."""

    data: bytes  # the published bytes (their sha256 is on chain)
    digest: bytes  # sha256 of ``data``
    layout: Layout

    @abstractmethod
    def encrypt_block(self, X: np.ndarray, targets: np.ndarray, *, block_id: str) -> bytes:
        """An owner's block: features scaled into [-1, 1], each row of L2 norm at most
        ``layout.clip`` (``fedmarket.privacy.noise.clip_rows``), at least
        ``layout.min_block_points`` rows, and the kind's target matrix; ``ConfigError``
        otherwise."""

    @abstractmethod
    def encrypt_model(self, weights: np.ndarray, *, epoch: int, seed: bytes | None = None) -> bytes:
        """The model message for ``epoch``, reproducibly: the same (weights, epoch, seed) give
        the same bytes in any process, so an owner given the weights and the seed checks what
        processors received. ``seed``: 16..64 secret bytes (None: a fresh one nobody else
        knows, for tasks whose owners do not check models)."""

    @abstractmethod
    def encrypt_noise(self, *, block_id: str, epoch: int, std: float, rng: random.Random) -> bytes:
        """An owner's noise for one block and epoch: a discrete Gaussian of std ``std`` on every
        total (``fedmarket.privacy.noise``; ``rng`` a ``secrets.SystemRandom()`` for real
        owners), laid out like a result's totals; the program adds it."""

    @property
    @abstractmethod
    def max_block_bytes(self) -> int:
        """The most bytes an honest block message takes (larger ones are refused unread)."""

    @abstractmethod
    def pool(self, workers: int) -> Pool:
        """A processor's pool (``workers`` processes; 0 runs in this process)."""

    @abstractmethod
    def run_program(
        self,
        model: bytes,
        block: bytes,
        *,
        noise: bytes | None = None,
        model_party: str,
        block_party: str,
    ) -> bytes:
        """One block's result, plus its owner's ``noise`` (an owner recomputing its own block
        in an audit passes the noise it released). ``UntrustedInputError`` when the task is
        private and there is no noise, or the noise is not for this block, epoch and keys."""

    # ---- what a dishonest processor can do with the public side alone -----------------
    @abstractmethod
    def forge(self, *, block_id: str, epoch: int, n_samples: int, totals: np.ndarray) -> bytes:
        """A result message holding made-up totals, indistinguishable in form from honest."""

    @abstractmethod
    def scale(self, result: bytes, factor: int, *, party: str) -> bytes:
        """An honest result with every total multiplied by the integer ``factor``."""

    @abstractmethod
    def add_noise(self, result: bytes, noise: np.ndarray, *, party: str) -> bytes:
        """A result with ``noise`` added to its totals."""

    @abstractmethod
    def restamp(self, result: bytes, *, epoch: int, party: str) -> bytes:
        """A result replayed under another epoch."""

    @abstractmethod
    def corrupt(self, result: bytes) -> bytes:
        """A result whose payload bytes are broken (no honest processor sends it)."""


class TaskKeys(ABC):
    """The requester's keys for one task: the secret side never leaves this object."""

    public: PublicKeys

    def encrypt_model(self, weights: np.ndarray, *, epoch: int, seed: bytes | None = None) -> bytes:
        """The model message for ``epoch`` (``PublicKeys.encrypt_model``: the public side makes
        the same bytes from the same weights and seed)."""
        return self.public.encrypt_model(weights, epoch=epoch, seed=seed)

    @abstractmethod
    def decrypt_result(
        self,
        data: bytes,
        *,
        party: str,
        epoch: int,
        block_id: str,
        bound: float | None = None,
    ) -> BlockTotals:
        """One block's totals (never per-sample values); ``UntrustedInputError`` for anything
        no honest processor can produce (wrong block or epoch, not totals, above ``bound``)."""


def default_crypto() -> Crypto:
    """CKKS: what every party uses unless a simulation plugs in the plaintext twin."""
    from fedmarket.he.crypto import CKKS

    return CKKS()


class Crypto(ABC):
    """A way to keep the owners' data and the model from the processors."""

    name: str

    @abstractmethod
    def keygen(
        self,
        *,
        kind: ModelKind,
        n_features: int,
        n_outputs: int,
        preset: str,
        expected_samples: int,
        hidden: int = 0,
        privacy: Privacy | None = None,
    ) -> TaskKeys:
        """The requester's keys for a task (the packing may depend on its size; ``hidden`` is a
        network kind's hidden width, 0 for its default; ``privacy`` what the published keys
        hold every party to, ``Privacy()`` when None)."""

    @abstractmethod
    def public(self, data: bytes, *, party: str) -> PublicKeys:
        """Parse and check published keys received from ``party``."""
