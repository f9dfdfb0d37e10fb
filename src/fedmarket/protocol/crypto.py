"""The protocol's one crypto interface: what each party does with ciphertexts, in bytes.

The requester makes the task's keys (``Crypto.keygen``) and publishes ``TaskKeys.public``;
owners and processors parse those bytes (``Crypto.public``). Owners encrypt blocks,
processors run the program on them (a ``Pool`` keeps a processor's blocks), the requester
encrypts models and decrypts only block totals. Simulated cheaters forge or alter results
with the public side alone (``forge``, ``scale``, ``add_noise``, ``restamp``).

Two implementations: CKKS (``fedmarket.he.crypto``, what users run) and plaintext
(``fedmarket.protocol.plaintext``, the twin the integrity benchmark runs at scale). The driver,
the roles, the checks and the attacks are the same code over either; only this differs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Self

import numpy as np

from fedmarket.models.kinds import ModelKind


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

    @property
    def totals_shape(self) -> tuple[int, int]:
        return self.kind.weight_shape(self.n_features, self.n_outputs, self.hidden)


class Pool(ABC):
    """A processor's blocks, kept across epochs; ``run_epoch`` computes every block's result."""

    @abstractmethod
    def add_block(self, data: bytes, *, party: str) -> None:
        """Take an owner's (already opened and checked) block message."""

    @abstractmethod
    def run_epoch(self, model: bytes, *, party: str) -> dict[str, bytes]:
        """Block id -> result message for every block held."""

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
        """An owner's block: features scaled into [-1, 1] and the kind's target matrix."""

    @property
    @abstractmethod
    def max_block_bytes(self) -> int:
        """The most bytes an honest block message takes (larger ones are refused unread)."""

    @abstractmethod
    def pool(self, workers: int) -> Pool:
        """A processor's pool (``workers`` processes; 0 runs in this process)."""

    @abstractmethod
    def run_program(
        self, model: bytes, block: bytes, *, model_party: str, block_party: str
    ) -> bytes:
        """One block's result (an owner recomputing its own block in an audit)."""

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

    @abstractmethod
    def encrypt_model(self, weights: np.ndarray, *, epoch: int) -> bytes:
        """The model message for ``epoch``."""

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
    ) -> TaskKeys:
        """The requester's keys for a task (the packing may depend on its size; ``hidden`` is a
        network kind's hidden width, 0 for its default)."""

    @abstractmethod
    def public(self, data: bytes, *, party: str) -> PublicKeys:
        """Parse and check published keys received from ``party``."""
