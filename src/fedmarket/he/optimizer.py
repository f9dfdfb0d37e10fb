"""The requester's side: decrypt block totals, combine and update (the model's encryption is
``fedmarket.he.model``).

``decrypt_result`` is the only way results are decrypted, and it returns block totals only:
it checks that every lane's value is replicated across all of its S'/D slots (a per-sample
vector would not be) and that padding lanes are empty, before it returns the averaged totals.
The update is ``fedmarket.models.optim.NesterovGD`` - the same code plaintext training runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal.sealapi as sa

from fedmarket.errors import UntrustedInputError
from fedmarket.he import mlp, wire
from fedmarket.he._seal import OUT
from fedmarket.he.keys import KeyPair
from fedmarket.he.spec import HESpec
from fedmarket.models.kinds import get_kind
from fedmarket.models.training import TrainConfig, Trainer

_RESULT_FIELDS = {"block_id": str, "epoch": int, "n_samples": int}
# Replicas of one lane differ only by the noise of the last few rotations (about 2^-30 of the
# sums' scale); a vector of per-sample values differs by O(1). Padding lanes hold sum(h * 0)
# plus the data noise, about 0.05 per 4096 samples.
REPLICA_TOLERANCE = 1e-4
PADDING_TOLERANCE_PER_SAMPLE = 1e-3


@dataclass(frozen=True)
class BlockSums:
    """Decrypted gradient sums of one block: (n_outputs, n_features + 1), bias last."""

    block_id: str
    epoch: int
    n_samples: int
    sums: np.ndarray


def max_abs_sum(keypair: KeyPair, n_samples: int, weights: np.ndarray) -> float:
    """Largest |sum| an honest block can produce for ``weights`` (|x| <= 1 per feature)."""
    spec = keypair.spec
    return get_kind(spec.kind).max_abs_total(
        weights, n_samples, spec.poly, n_features=spec.n_features
    )


def decrypt_result(
    keypair: KeyPair,
    data: bytes,
    *,
    party: str,
    epoch: int | None = None,
    block_ids: Iterable[str] | None = None,
    bound: float | None = None,
) -> BlockSums:
    """Decrypt one processor result; only block totals ever leave this function.

    ``bound`` (see ``max_abs_sum``) rejects totals no honest block could give.
    """
    spec = keypair.spec
    if spec.is_mlp:
        return _decrypt_mlp(keypair, data, party, epoch, block_ids, bound)
    runtime = keypair.public.runtime
    n = spec.preset.poly_modulus_degree
    ct_bound = wire.ciphertext_bytes_bound(n, OUT)
    envelope = wire.unpack(
        data,
        kind=wire.Kind.RESULT,
        party=party,
        max_bytes=spec.n_groups * (ct_bound + 4) + wire.MAX_META_BYTES + 4096,
        digest=keypair.public.digest,
        count=spec.n_groups,
        max_payload_bytes=ct_bound,
    )
    meta = wire.require_fields(envelope.meta, _RESULT_FIELDS, what="result", party=party)
    _check_meta(spec, meta, party, epoch, block_ids)
    sums = np.zeros((spec.n_groups * spec.class_lanes, spec.lanes))
    for group, payload in enumerate(envelope.payloads):
        ct = runtime.load_ciphertext(
            payload, level=OUT, scale=runtime.scales.out, what=f"result[{group}]", party=party
        )
        plain = sa.Plaintext()
        keypair.decryptor.decrypt(ct, plain)
        replicas = spec.result_lanes(runtime.decode(plain))  # (class lanes, replicas, lanes)
        total = replicas.mean(axis=1)
        spread = np.max(np.abs(replicas - total[:, None, :]))
        if not spread <= REPLICA_TOLERANCE * max(1.0, float(np.max(np.abs(total)))):
            raise UntrustedInputError(
                "result is not a vector of block totals (its slots are not replicated)",
                party=party,
                hint="an honest processor's output repeats each total in every slot of its lane",
            )
        sums[group * spec.class_lanes : (group + 1) * spec.class_lanes] = total
    padding = np.concatenate(
        [sums[spec.n_outputs :].ravel(), sums[:, spec.n_features + 1 :].ravel()]
    )
    if (
        padding.size
        and np.max(np.abs(padding)) > 1.0 + PADDING_TOLERANCE_PER_SAMPLE * meta["n_samples"]
    ):
        raise UntrustedInputError("result has non-zero padding lanes", party=party)
    return _block_sums(meta, sums[: spec.n_outputs, : spec.n_features + 1], bound, party)


def _block_sums(
    meta: dict[str, Any], real: np.ndarray, bound: float | None, party: str
) -> BlockSums:
    """The checked result's totals, refused above ``bound`` (what an honest block can give)."""
    if bound is not None and np.max(np.abs(real)) > bound:
        raise UntrustedInputError(
            f"result totals up to {np.max(np.abs(real)):.3g} exceed the {bound:.3g} an honest "
            "block can produce",
            party=party,
        )
    return BlockSums(meta["block_id"], meta["epoch"], meta["n_samples"], real)


def _check_meta(
    spec: HESpec,
    meta: dict[str, Any],
    party: str,
    epoch: int | None,
    block_ids: Iterable[str] | None,
) -> None:
    if epoch is not None and meta["epoch"] != epoch:
        raise UntrustedInputError(
            f"result is for epoch {meta['epoch']}, expected {epoch}", party=party
        )
    if block_ids is not None and meta["block_id"] not in set(block_ids):
        raise UntrustedInputError(f"result for unassigned block {meta['block_id']!r}", party=party)
    check_samples(spec, meta["n_samples"], party)


def check_samples(spec: HESpec, n_samples: int, party: str) -> None:
    """A result sums a whole block: between the task's floor and the block size."""
    if not spec.min_block_points <= n_samples <= spec.block_size:
        raise UntrustedInputError(
            f"result: n_samples {n_samples} out of range ({spec.min_block_points}.."
            f"{spec.block_size}: the task's floor and block size)",
            party=party,
        )


def _decrypt_mlp(
    keypair: KeyPair,
    data: bytes,
    party: str,
    epoch: int | None,
    block_ids: Iterable[str] | None,
    bound: float | None,
) -> BlockSums:
    meta, _, cts = mlp.parse_result(keypair.public, data, party)
    _check_meta(keypair.spec, meta, party, epoch, block_ids)
    return _block_sums(
        meta, mlp.decrypt_totals(keypair, cts, meta["n_samples"], party), bound, party
    )


def combine(results: Iterable[BlockSums]) -> tuple[np.ndarray, int]:
    """Total gradient and sample count over blocks."""
    results = list(results)
    if not results:
        raise ValueError("no block results to combine")
    return sum((r.sums for r in results), np.zeros_like(results[0].sums)), sum(
        r.n_samples for r in results
    )


class RequesterOptimizer(Trainer):
    """The requester's ``Trainer`` for an HE spec, also driven by decrypted block totals."""

    def __init__(self, spec: HESpec, config: TrainConfig, X_val: np.ndarray) -> None:
        super().__init__(spec.kind, spec.n_features, spec.n_outputs, config, X_val, spec.hidden)
        self.spec = spec

    def update(self, results: Iterable[BlockSums]) -> None:
        total, count = combine(results)
        self.apply(total / count)
