"""The data owner's side: encrypt a block of samples for the processors, and parse such blocks.

A block holds ``spec.min_block_points`` to ``spec.block_size`` samples (N/2 for binary and
linear models, less with class lanes), each with scaled features of L2 norm at most the spec's
clip (the owner clips; ``encrypt_block`` asserts it). It is encrypted column-wise in the two
diagonal layouts of ``fedmarket.he.spec``: ``D`` z-layout ciphertexts (D lanes: features,
bias/mask, zero padding to a power of two), ``D`` sum-layout ciphertexts, plus one label
ciphertext per class group. The bias lane is 1 for every real sample and 0 for padding, and
padded samples have all-zero features and labels, so z = 0 and the residual h = 0 there: a
partial block adds exactly nothing beyond its real samples to any sum.

Bytes per block (N=8192, uncompressed upper bound; SEAL's zstd saves about a third):
``D*2*N*4*8 + D*2*N*1*8 + groups*2*N*2*8``, i.e. ``160*D + 64*groups`` bytes per sample
for a full block (the z layout keeps all 4 primes, the sum layout only the last
one); docs/he.md lists measured sizes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal.sealapi as sa

from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.he import wire
from fedmarket.he._seal import OUT, TOP, H, dump
from fedmarket.he.keys import PublicContext
from fedmarket.he.spec import HESpec
from fedmarket.privacy.owner import check_rows

_BLOCK_FIELDS = {"block_id": str, "n_samples": int}


def label_vectors(spec: HESpec, targets: np.ndarray) -> np.ndarray:
    """(n_groups, S) physical label slots: y - 1/2 (sigmoid kinds) or y (linear), 0 when padded.

    ``targets`` is the kind's (n, n_outputs) target matrix. Encoding y - 1/2 folds the cubic's
    constant term into the labels, so the processor's residual is z~(z~^2 + c1/kappa) -
    (y - 1/2) = p(z) - y with no extra operation, and it is exactly 0 on padded samples.
    """
    n = targets.shape[0]
    rows = np.zeros((spec.n_groups * spec.class_lanes, n))
    # lanes of outputs that do not exist stay empty
    rows[: spec.n_outputs] = targets.T - (0.5 if spec.is_logistic else 0.0)
    out = []
    for group in range(spec.n_groups):
        virtual = np.zeros((spec.class_lanes, spec.length))
        virtual[:, :n] = rows[group * spec.class_lanes : (group + 1) * spec.class_lanes]
        out.append(spec.to_physical(virtual))
    return np.array(out)


def _check_owner_data(
    spec: HESpec, X: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    targets = np.asarray(targets)
    if X.ndim != 2 or X.shape[1] != spec.n_features:
        raise ConfigError(f"block features must have shape (n, {spec.n_features}), got {X.shape}")
    n = X.shape[0]
    check_rows(X, floor=spec.min_block_points, block_size=spec.block_size, clip=spec.clip)
    if targets.ndim == 1 and spec.n_outputs == 1:
        targets = targets[:, None]
    if targets.shape != (n, spec.n_outputs):
        raise ConfigError(f"expected ({n}, {spec.n_outputs}) targets, got shape {targets.shape}")
    targets = targets.astype(np.float64)
    if spec.is_logistic:
        if not np.all((targets == 0) | (targets == 1)):
            raise ConfigError(f"{spec.kind} targets must be 0/1 indicators (the kind's targets)")
    elif not np.all(np.isfinite(targets)) or np.max(np.abs(targets)) > 1.0:
        raise ConfigError(
            "regression targets must be finite and scaled into [-1, 1]",
            hint="the spec's labels.target_center and labels.target_scale say how",
        )
    return X, targets


def encrypt_block(
    context: PublicContext, X: np.ndarray, targets: np.ndarray, *, block_id: str
) -> bytes:
    """Encrypt up to ``block_size`` samples for the processors (data owner side).

    ``targets``: the kind's (n, n_outputs) targets (``ModelKind.targets``): 0/1 indicators
    for the sigmoid kinds, values in [-1, 1] for linear. Returns the block message, bound to
    ``context`` by its digest.
    """
    spec = context.spec
    X, targets = _check_owner_data(spec, X, targets)
    if not 0 < len(block_id) <= 256:
        raise ConfigError("block_id must be 1..256 characters")
    if spec.is_mlp:
        from fedmarket.he import mlp

        return mlp.encrypt_block(context, X, targets, block_id=block_id)
    runtime = context.runtime
    encryptor = sa.Encryptor(runtime.context, context.public_key)
    scales = runtime.scales
    payloads = data_payloads(
        context, encryptor, X, z=(TOP, scales.data), sums=(OUT, scales.sums_data)
    )
    for physical in label_vectors(spec, targets):
        ct = sa.Ciphertext()
        encryptor.encrypt(runtime.encode(physical, H, scales.h_pre), ct)
        payloads.append(dump(ct))
    meta = {"block_id": block_id, "n_samples": int(X.shape[0])}
    return wire.pack(wire.Kind.BLOCK, context.digest, meta, payloads)


def seal(
    context: PublicContext, encryptor: sa.Encryptor, values: np.ndarray, level: int, scale: float
) -> bytes:
    """One serialised ciphertext of the logical vector ``values`` at ``level`` and ``scale``."""
    runtime = context.runtime
    ct = sa.Ciphertext()
    encryptor.encrypt(runtime.encode(context.spec.to_physical(values), level, scale), ct)
    return dump(ct)


def data_payloads(
    context: PublicContext,
    encryptor: sa.Encryptor,
    X: np.ndarray,
    *,
    z: tuple[int, float],
    sums: tuple[int, float],
) -> list[bytes]:
    """A block's data ciphertexts, every kind's: the z layout (``model_giant`` x
    ``model_ciphertexts``) at ``z`` = (level, scale), then the sum layout (``sum_giant`` x
    ``sum_baby``) at ``sums``."""
    spec = context.spec
    F = spec.block_matrix(X)
    payloads = [
        seal(context, encryptor, spec.z_layout(F, g, b), *z)
        for g in range(spec.model_giant)
        for b in range(spec.model_ciphertexts)
    ]
    payloads += [
        seal(context, encryptor, spec.sum_layout(F, g, b), *sums)
        for g in range(spec.sum_giant)
        for b in range(spec.sum_baby)
    ]
    return payloads


def block_bytes_limit(spec: HESpec) -> int:
    """The most bytes an honest block message of ``spec`` takes."""
    if spec.is_mlp:
        from fedmarket.he import mlp

        return mlp._bytes_bound(spec, mlp.block_levels(spec))
    n = spec.preset.poly_modulus_degree
    return (
        spec.z_ciphertexts * wire.ciphertext_bytes_bound(n, TOP)
        + spec.lanes * wire.ciphertext_bytes_bound(n, OUT)
        + spec.n_groups * wire.ciphertext_bytes_bound(n, H)
        + 4 * (spec.z_ciphertexts + spec.lanes + spec.n_groups)
        + wire.MAX_META_BYTES
        + 4096
    )


def check_block_meta(spec: HESpec, meta: dict[str, Any], party: str) -> None:
    """A processor's checks of a block's metadata: a block id, and the task's floor."""
    floor, size = spec.min_block_points, spec.block_size
    if not floor <= meta["n_samples"] <= size or not meta["block_id"]:
        raise UntrustedInputError(
            f"block: n_samples must be {floor}..{size} (the task's floor and block size) and "
            "block_id non-empty",
            party=party,
        )


@dataclass(frozen=True)
class EncryptedBlock:
    """A parsed, checked block: what a processor holds for the whole task."""

    block_id: str
    n_samples: int
    z_data: tuple[tuple[sa.Ciphertext, ...], ...]  # [giant][model ciphertext], top level
    sum_data: tuple[tuple[sa.Ciphertext, ...], ...]  # [giant][baby], last level
    labels: tuple[sa.Ciphertext, ...]  # one per class group, two primes

    @classmethod
    def from_bytes(
        cls, context: PublicContext, data: bytes, *, party: str = "data owner"
    ) -> EncryptedBlock:
        spec = context.spec
        runtime = context.runtime
        n = spec.preset.poly_modulus_degree
        envelope = wire.unpack(
            data,
            kind=wire.Kind.BLOCK,
            party=party,
            max_bytes=block_bytes_limit(spec),
            digest=context.digest,
            count=spec.z_ciphertexts + spec.lanes + spec.n_groups,
            max_payload_bytes=wire.ciphertext_bytes_bound(n, TOP),
        )
        meta = wire.require_fields(envelope.meta, _BLOCK_FIELDS, what="block", party=party)
        check_block_meta(spec, meta, party)
        payloads = iter(envelope.payloads)
        scales = runtime.scales

        def grid(
            giant: int, baby: int, level: int, scale: float, name: str
        ) -> tuple[tuple[sa.Ciphertext, ...], ...]:
            return tuple(
                tuple(
                    runtime.load_ciphertext(
                        next(payloads),
                        level=level,
                        scale=scale,
                        what=f"block {name}[{g}][{b}]",
                        party=party,
                    )
                    for b in range(baby)
                )
                for g in range(giant)
            )

        z_data = grid(spec.model_giant, spec.model_ciphertexts, TOP, scales.data, "z-layout")
        sum_data = grid(spec.sum_giant, spec.sum_baby, OUT, scales.sums_data, "sum-layout")
        labels = tuple(
            runtime.load_ciphertext(
                next(payloads),
                level=H,
                scale=scales.h_pre,
                what=f"block labels[{group}]",
                party=party,
            )
            for group in range(spec.n_groups)
        )
        return cls(meta["block_id"], meta["n_samples"], z_data, sum_data, labels)

    def ciphertexts(self) -> list[sa.Ciphertext]:
        return (
            [ct for row in self.z_data for ct in row]
            + [ct for row in self.sum_data for ct in row]
            + list(self.labels)
        )


def split_into_blocks(
    X: np.ndarray, targets: np.ndarray, spec: HESpec
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut a data set into blocks of at most ``block_size`` samples, sizes as even as possible."""
    n = X.shape[0]
    count = -(-n // spec.block_size)
    bounds = np.linspace(0, n, count + 1).round().astype(int)
    return [(X[a:b], targets[a:b]) for a, b in itertools.pairwise(bounds)]
