"""The requester's side: encrypt the model, decrypt block totals, combine and update.

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

from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.he import mlp, wire
from fedmarket.he._seal import OUT, TOP, dump
from fedmarket.he.keys import KeyPair
from fedmarket.he.spec import HESpec
from fedmarket.models.kinds import get_kind
from fedmarket.models.training import TrainConfig

_RESULT_FIELDS = {"block_id": str, "epoch": int, "n_samples": int}
# Replicas of one lane differ only by the noise of the last few rotations (about 2^-30 of the
# sums' scale); a vector of per-sample values differs by O(1). Padding lanes hold sum(h * 0)
# plus the data noise, about 0.05 per 4096 samples.
REPLICA_TOLERANCE = 1e-4
PADDING_TOLERANCE_PER_SAMPLE = 1e-3


def weight_shape(spec: HESpec) -> tuple[int, int]:
    """The weight matrix of the spec's kind (an mlp's depends on its hidden width)."""
    return get_kind(spec.kind).weight_shape(spec.n_features, spec.n_outputs, spec.hidden)


def encrypt_model(keypair: KeyPair, weights: np.ndarray, *, epoch: int) -> bytes:
    """The model message for one epoch: ``weights`` as ``weight_shape(spec)`` (for the linear
    kinds (n_outputs, n_features + 1), bias last)."""
    spec = keypair.spec
    if type(epoch) is not int or epoch < 0:
        raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
    weights = np.asarray(weights, dtype=np.float64)
    shape = weight_shape(spec)
    if weights.shape != shape or not np.all(np.isfinite(weights)):
        raise ConfigError(f"model weights must be finite with shape {shape}")
    if spec.is_mlp:
        return mlp.encrypt_model(keypair, weights, epoch=epoch)
    if spec.is_logistic:
        weights = spec.poly.kappa * weights
    runtime = keypair.public.runtime
    payloads = []
    for group in range(spec.n_groups):
        rows = weights[group * spec.class_lanes : (group + 1) * spec.class_lanes]
        for j in range(spec.model_ciphertexts):
            plain = runtime.encode(
                spec.to_physical(spec.model_layout(rows, j)), TOP, runtime.scales.model
            )
            payloads.append(dump(keypair.symmetric_encryptor.encrypt_symmetric(plain)))
    return wire.pack(wire.Kind.MODEL, keypair.public.digest, {"epoch": epoch}, payloads)


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
    if epoch is not None and meta["epoch"] != epoch:
        raise UntrustedInputError(
            f"result is for epoch {meta['epoch']}, expected {epoch}", party=party
        )
    if block_ids is not None and meta["block_id"] not in set(block_ids):
        raise UntrustedInputError(f"result for unassigned block {meta['block_id']!r}", party=party)
    if not 1 <= meta["n_samples"] <= spec.block_size:
        raise UntrustedInputError("result: n_samples out of range", party=party)
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
    real = sums[: spec.n_outputs, : spec.n_features + 1]
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
    if not 1 <= meta["n_samples"] <= spec.block_size:
        raise UntrustedInputError("result: n_samples out of range", party=party)


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
    real = mlp.decrypt_totals(keypair, cts, meta["n_samples"], party)
    if bound is not None and np.max(np.abs(real)) > bound:
        raise UntrustedInputError(
            f"result totals up to {np.max(np.abs(real)):.3g} exceed the {bound:.3g} an honest "
            "block can produce",
            party=party,
        )
    return BlockSums(meta["block_id"], meta["epoch"], meta["n_samples"], real)


def combine(results: Iterable[BlockSums]) -> tuple[np.ndarray, int]:
    """Total gradient and sample count over blocks."""
    results = list(results)
    if not results:
        raise ValueError("no block results to combine")
    return sum((r.sums for r in results), np.zeros_like(results[0].sums)), sum(
        r.n_samples for r in results
    )


class RequesterOptimizer:
    """Optimiser state plus the interval guard, driven by decrypted block totals."""

    def __init__(self, spec: HESpec, config: TrainConfig, X_val: np.ndarray) -> None:
        self.spec = spec
        self.config = config
        self.state = config.start(spec.kind, spec.n_features, spec.n_outputs, spec.hidden)
        self.guard = get_kind(spec.kind).guard(X_val, config.radius(spec.kind))

    @property
    def lookahead(self) -> np.ndarray:
        """The weights to encrypt and send next (the gradient is taken there)."""
        return self.state.lookahead

    @property
    def weights(self) -> np.ndarray:
        return self.state.weights

    def update(self, results: Iterable[BlockSums]) -> None:
        total, count = combine(results)
        self.apply(total / count)

    def apply(self, mean_gradient: np.ndarray) -> None:
        """One step with an already-combined per-sample gradient (e.g. a robust aggregate)."""
        self.state.step(mean_gradient, project=self.guard)
