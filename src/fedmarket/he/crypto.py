"""CKKS as the protocol's crypto (``fedmarket.protocol.crypto``): what users run."""

from __future__ import annotations

import numpy as np

from fedmarket.he.forge import add_noise, forge_result, restamp, scale_result
from fedmarket.he.keys import KeyPair, PublicContext
from fedmarket.he.optimizer import decrypt_result, encrypt_model
from fedmarket.he.packing import block_bytes_limit, encrypt_block
from fedmarket.he.pool import ProcessorPool
from fedmarket.he.program import run_program
from fedmarket.he.spec import HESpec
from fedmarket.models.kinds import ModelKind, get_kind
from fedmarket.protocol.crypto import BlockTotals, Crypto, Layout, Pool, PublicKeys, TaskKeys


class _CKKSPool(Pool):
    def __init__(self, pool: ProcessorPool) -> None:
        self._pool = pool

    def add_block(self, data: bytes, *, party: str) -> None:
        self._pool.add_block(data, party=party)

    def run_epoch(self, model: bytes, *, party: str) -> dict[str, bytes]:
        return self._pool.run_epoch(model, party=party)

    def close(self) -> None:
        self._pool.close()


class CKKSPublic(PublicKeys):
    """A parsed public context (the SEAL runtime, public, relinearisation and Galois keys)."""

    def __init__(self, context: PublicContext) -> None:
        self.context = context
        self.data = context.data
        self.digest = context.digest
        spec = context.spec
        self.layout = Layout(
            get_kind(spec.kind), spec.n_features, spec.n_outputs, spec.block_size, spec.hidden
        )

    def encrypt_block(self, X: np.ndarray, targets: np.ndarray, *, block_id: str) -> bytes:
        return encrypt_block(self.context, X, targets, block_id=block_id)

    @property
    def max_block_bytes(self) -> int:
        return block_bytes_limit(self.context.spec)

    def pool(self, workers: int) -> Pool:
        return _CKKSPool(ProcessorPool(self.data, workers=workers))

    def run_program(
        self, model: bytes, block: bytes, *, model_party: str, block_party: str
    ) -> bytes:
        return run_program(
            self.context, model, block, model_party=model_party, block_party=block_party
        )

    def forge(self, *, block_id: str, epoch: int, n_samples: int, totals: np.ndarray) -> bytes:
        return forge_result(
            self.context, block_id=block_id, epoch=epoch, n_samples=n_samples, totals=totals
        )

    def scale(self, result: bytes, factor: int, *, party: str) -> bytes:
        return scale_result(self.context, result, factor, party=party)

    def add_noise(self, result: bytes, noise: np.ndarray, *, party: str) -> bytes:
        return add_noise(self.context, result, noise, party=party)

    def restamp(self, result: bytes, *, epoch: int, party: str) -> bytes:
        return restamp(self.context, result, epoch=epoch, party=party)

    def corrupt(self, result: bytes) -> bytes:
        data = bytearray(result)
        for at in range(len(data) // 2, len(data) - 64, max(1, len(data) // 64)):
            data[at] ^= 0x5A  # deep inside the ciphertext payload, past the envelope
        return bytes(data)


class CKKSKeys(TaskKeys):
    def __init__(self, keypair: KeyPair) -> None:
        self.keypair = keypair
        self.public = CKKSPublic(keypair.public)

    def encrypt_model(self, weights: np.ndarray, *, epoch: int) -> bytes:
        return encrypt_model(self.keypair, weights, epoch=epoch)

    def decrypt_result(
        self,
        data: bytes,
        *,
        party: str,
        epoch: int,
        block_id: str,
        bound: float | None = None,
    ) -> BlockTotals:
        sums = decrypt_result(
            self.keypair, data, party=party, epoch=epoch, block_ids=[block_id], bound=bound
        )
        return BlockTotals(sums.block_id, sums.epoch, sums.n_samples, sums.sums)


class CKKS(Crypto):
    """Microsoft SEAL's CKKS through TenSEAL, with the packing and program of ``fedmarket.he``."""

    name = "ckks"

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
        spec = HESpec.for_task(
            kind=kind.name,
            n_features=n_features,
            n_outputs=n_outputs,
            preset=preset,
            expected_samples=expected_samples,
            hidden=hidden or None,
        )
        return CKKSKeys(KeyPair.generate(spec))

    def public(self, data: bytes, *, party: str) -> PublicKeys:
        return CKKSPublic(PublicContext.from_bytes(data, party=party))
