"""The MLP program: block totals of a one-hidden-layer network's gradient, all encrypted.

Network (``fedmarket.models.kinds.mlp``): ``a = W1 [x, 1]``, ``u = a**2``, ``o = W2 u``, loss
``1/2 ||o - y||**2``; per block the processor returns ``G1 = sum_s delta1 [x, 1]^T`` and
``G2 = sum_s delta2 u^T`` with ``delta2 = o - y`` and ``delta1 = 2 a * (W2^T delta2)``.

Layout (docs/he.md, "Neural networks"): the hidden units are the spec's class lanes ``R``
(physical slot ``R*k + t`` is sample k, hidden unit t; a block holds ``L = N/(2R)`` samples),
so the hidden layer is the linear program's z with one class group, on the same z and sum
layouts. Then, per output i: ``u * W2row_i`` summed over the lanes of each sample by rotations
1, 2, ..., R/2 (lane 0 then holds o_i; the other lanes mix two samples), minus the label, times
a plaintext mask that keeps lane 0, and copied back to every lane by rotations -1, -2, ...:
``Delta_i``. ``Delta_i * u`` summed over the samples is output i's row of G2;
``a * sum_i Delta_i * 2 W2col_i`` is delta1, whose sums over the samples with the sum layout
are G1. Levels, by primes left: data 7, a 6, u 5, o 4, Delta 3, the sums 2, results 1.

Like the linear program it is deterministic (evaluator operations and fixed plaintext masks
only; nothing is encrypted here) and never modifies its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal.sealapi as sa

from fedmarket.errors import ConfigError, CryptoError, UntrustedInputError
from fedmarket.he import wire
from fedmarket.he._seal import MLPScales, Ops, dump
from fedmarket.he.keys import KeyPair, PublicContext
from fedmarket.he.packing import check_block_meta, data_payloads, seal
from fedmarket.he.spec import HESpec
from fedmarket.models.mlp import split_weights

# Levels of the MLP chain (primes left).
TOP, A, U, OUTPUTS, DELTA, SUMS, OUT = 7, 6, 5, 4, 3, 2, 1
_FIELDS: dict[wire.Kind, dict[str, type]] = {
    wire.Kind.BLOCK: {"block_id": str, "n_samples": int},
    wire.Kind.MODEL: {"epoch": int},
    wire.Kind.RESULT: {"block_id": str, "epoch": int, "n_samples": int},
}
# Replicas of a total differ by rotation noise (~2^-25 of the totals' scale); per-sample values
# by O(1). Padding lanes hold noise only (the data there is exactly zero).
REPLICA_TOLERANCE = 1e-4
PADDING_TOLERANCE = 1e-3


def scales(context: PublicContext) -> MLPScales:
    found = context.runtime.mlp
    if found is None:
        raise CryptoError("internal error: not an mlp context")
    return found


def _bytes_bound(spec: HESpec, levels: list[int]) -> int:
    n = spec.preset.poly_modulus_degree
    return (
        sum(wire.ciphertext_bytes_bound(n, level) + 4 for level in levels)
        + wire.MAX_META_BYTES
        + 4096
    )


def _unpack(
    context: PublicContext, data: bytes, kind: wire.Kind, levels: list[int], party: str
) -> tuple[dict[str, Any], wire.Envelope]:
    """An mlp message of ``kind`` holding ciphertexts at ``levels``, checked for size, digest,
    count and its metadata's fields: (meta, envelope)."""
    envelope = wire.unpack(
        data,
        kind=kind,
        party=party,
        max_bytes=_bytes_bound(context.spec, levels),
        digest=context.digest,
        count=len(levels),
        max_payload_bytes=wire.ciphertext_bytes_bound(
            context.spec.preset.poly_modulus_degree, max(levels)
        ),
    )
    what = kind.name.lower()
    return wire.require_fields(envelope.meta, _FIELDS[kind], what=what, party=party), envelope


# ---- the data owner ------------------------------------------------------------------------
def block_levels(spec: HESpec) -> list[int]:
    return [TOP] * spec.lanes + [SUMS] * spec.lanes + [OUTPUTS] * spec.n_outputs


def encrypt_block(
    context: PublicContext, X: np.ndarray, targets: np.ndarray, *, block_id: str
) -> bytes:
    """An mlp block: D z-layout and D sum-layout ciphertexts (the hidden units' lanes hold
    copies of the data) and one label ciphertext per output (0/1, copied across the lanes)."""
    spec = context.spec
    sc = scales(context)
    encryptor = sa.Encryptor(context.runtime.context, context.public_key)
    payloads = data_payloads(context, encryptor, X, z=(TOP, sc.data), sums=(SUMS, sc.sums_data))
    for i in range(spec.n_outputs):
        column = np.zeros(spec.length)
        column[: X.shape[0]] = targets[:, i]
        payloads.append(seal(context, encryptor, column, OUTPUTS, sc.o))
    meta = {"block_id": block_id, "n_samples": int(X.shape[0])}
    return wire.pack(wire.Kind.BLOCK, context.digest, meta, payloads)


@dataclass(frozen=True)
class MLPBlock:
    """A parsed, checked mlp block (what a processor keeps for the whole task)."""

    block_id: str
    n_samples: int
    z_data: tuple[tuple[sa.Ciphertext, ...], ...]  # [giant][baby], 7 primes
    sum_data: tuple[tuple[sa.Ciphertext, ...], ...]  # [giant][baby], 2 primes
    labels: tuple[sa.Ciphertext, ...]  # one per output, 4 primes

    @classmethod
    def from_bytes(
        cls, context: PublicContext, data: bytes, *, party: str = "data owner"
    ) -> MLPBlock:
        spec = context.spec
        runtime = context.runtime
        sc = scales(context)
        meta, envelope = _unpack(context, data, wire.Kind.BLOCK, block_levels(spec), party)
        check_block_meta(spec, meta, party)
        payloads = iter(envelope.payloads)

        def load(level: int, scale: float, what: str) -> sa.Ciphertext:
            return runtime.load_ciphertext(
                next(payloads), level=level, scale=scale, what=what, party=party
            )

        z = tuple(
            tuple(load(TOP, sc.data, f"block z-layout[{g}][{b}]") for b in range(spec.model_baby))
            for g in range(spec.model_giant)
        )
        sums = tuple(
            tuple(
                load(SUMS, sc.sums_data, f"block sum-layout[{g}][{b}]")
                for b in range(spec.sum_baby)
            )
            for g in range(spec.sum_giant)
        )
        labels = tuple(load(OUTPUTS, sc.o, f"block labels[{i}]") for i in range(spec.n_outputs))
        return cls(meta["block_id"], meta["n_samples"], z, sums, labels)

    def ciphertexts(self) -> list[sa.Ciphertext]:
        return (
            [ct for row in self.z_data for ct in row]
            + [ct for row in self.sum_data for ct in row]
            + list(self.labels)
        )


# ---- the requester's model -------------------------------------------------------------------
# Compact like the linear kinds' (fedmarket.he.model): one ciphertext for W1 (its diagonal 0,
# the L/D copies of each weight averaged by the processor), and per output i its weights by row
# and 2 x the same by column, each one value per hidden lane that every sample's slots must
# share (the L copies averaged). No new Galois keys: the sample strides r, 2r, ... are the
# program's own.
def model_levels(spec: HESpec) -> list[int]:
    return [TOP] + [U] * spec.n_outputs + [A] * spec.n_outputs


def _model_scales(context: PublicContext) -> list[float]:
    """The scale each model payload is encrypted at: its use scale over its copies."""
    spec = context.spec
    sc = scales(context)
    k = spec.n_outputs
    return [sc.w1 / spec.model_copies] + [sc.w2 / spec.length] * k + [sc.w2col / spec.length] * k


def model_vectors(spec: HESpec, weights: np.ndarray) -> list[np.ndarray]:
    """The physical slots of every model payload: W1 tiled with period D (lane t = hidden
    unit t), then per output i its weights by row (lane t = W2[i, t]) and 2 x the same as the
    backward pass uses them; every sample's lanes hold the same values."""
    W1, W2 = split_weights(weights, spec.n_features)
    out = [spec.to_physical(spec.model_layout(W1, 0))]

    def lanes(row: np.ndarray) -> np.ndarray:
        virtual = np.zeros((spec.class_lanes, spec.length))
        virtual[: row.size] = row[:, None]
        return spec.to_physical(virtual)

    out += [lanes(W2[i]) for i in range(spec.n_outputs)]
    out += [lanes(2.0 * W2[i]) for i in range(spec.n_outputs)]
    return out


def encrypt_model(context: PublicContext, weights: np.ndarray, encryptor: Any) -> list[bytes]:
    """The model payloads, each a seeded public-key encryption (``fedmarket.he.model``)."""
    spec = context.spec
    return [
        dump(encryptor.encrypt(values, level, scale))
        for values, level, scale in zip(
            model_vectors(spec, weights), model_levels(spec), _model_scales(context), strict=True
        )
    ]


@dataclass(frozen=True)
class MLPModel:
    """A parsed, checked and projected mlp model."""

    epoch: int
    w1: tuple[sa.Ciphertext, ...]  # the Bz diagonals of W1
    w2row: tuple[sa.Ciphertext, ...]
    w2col: tuple[sa.Ciphertext, ...]

    @staticmethod
    def envelope(context: PublicContext, data: bytes, *, party: str) -> tuple[int, wire.Envelope]:
        meta, envelope = _unpack(context, data, wire.Kind.MODEL, model_levels(context.spec), party)
        return meta["epoch"], envelope

    @classmethod
    def from_bytes(
        cls, context: PublicContext, data: bytes, *, party: str = "requester"
    ) -> MLPModel:
        from fedmarket.he.model import average_copies, expand_diagonals

        spec = context.spec
        sc = scales(context)
        epoch, envelope = cls.envelope(context, data, party=party)
        cts = [
            context.runtime.load_ciphertext(
                payload, level=level, scale=scale, what=f"model[{i}]", party=party
            )
            for i, (payload, level, scale) in enumerate(
                zip(envelope.payloads, model_levels(spec), _model_scales(context), strict=True)
            )
        ]
        r, k = spec.class_lanes, spec.n_outputs
        w1 = average_copies(context, cts[0], r * spec.lanes, spec.slots, sc.w1)
        diagonals = expand_diagonals(context, w1, range(spec.model_baby))
        rows = [average_copies(context, ct, r, spec.slots, sc.w2) for ct in cts[1 : 1 + k]]
        cols = [average_copies(context, ct, r, spec.slots, sc.w2col) for ct in cts[1 + k :]]
        return cls(
            epoch, tuple(diagonals[b] for b in range(spec.model_baby)), tuple(rows), tuple(cols)
        )


# ---- the processor ---------------------------------------------------------------------------
def _lane_mask(context: PublicContext) -> sa.Plaintext:
    """1 in lane 0 of every sample, 0 elsewhere: a fixed plaintext (no randomness)."""
    spec = context.spec
    virtual = np.zeros((spec.class_lanes, spec.length))
    virtual[0] = 1.0
    return context.runtime.encode(spec.to_physical(virtual), OUTPUTS, scales(context).mask)


def process_block(context: PublicContext, model: MLPModel, block: MLPBlock) -> list[sa.Ciphertext]:
    """The block's result ciphertexts: G1 (lane t, slot k = hidden unit t's total for feature
    k mod D), then per output i its G2 row (lane t = the total for hidden unit t)."""
    spec = context.spec
    ops = Ops(context)
    r = spec.class_lanes
    slots = spec.slots
    # a = W1 [x, 1]: the linear program's z with the hidden units as class lanes
    rows = [list(row) for row in block.z_data]
    a = ops.relin(ops.rescale(ops.horner(list(model.w1), rows, -r * spec.model_baby)))
    u = ops.relin(ops.rescale(ops.mul(a, a)))
    # a * 2 W2[i, :] now, so that delta1 = sum_i Delta_i * (a * 2 W2[i, :]) costs no level
    aw = [ops.drop_to(ops.relin(ops.rescale(ops.mul(a, w))), DELTA) for w in model.w2col]
    mask = _lane_mask(context)
    deltas = []
    for i in range(spec.n_outputs):
        q = ops.relin(ops.rescale(ops.mul(u, model.w2row[i])))
        o = ops.doubling(q, 1, r, +1)  # lane 0: sum over the sample's lanes
        err = sa.Ciphertext()
        ops.ev.sub(o, block.labels[i], err)
        masked = sa.Ciphertext()
        ops.ev.multiply_plain(err, mask, masked)
        # copied to every lane while the scale is ~2^80: the key switches' noise is negligible
        deltas.append(ops.rescale(ops.doubling(masked, 1, r, -1)))
    u3 = ops.drop_to(u, DELTA)
    g2 = [
        # summed over the samples at scale ~2^80 (negligible key-switch noise), then rescaled
        ops.drop_to(ops.rescale(ops.doubling(ops.relin(ops.mul(d, u3)), r, slots, +1)), OUT)
        for d in deltas
    ]
    d1 = ops.relin(ops.rescale(ops.dot(deltas, aw)))
    # G1: the linear program's gradient sums with residual delta1 (each class lane a unit),
    # at two primes, rescaled once after the giant steps
    rotated = [d1]
    for b in range(1, spec.sum_baby):
        low = b & -b
        rotated.append(ops.rotate(rotated[b - low], r * low))
    sum_rows = [list(row) for row in block.sum_data]
    sums = ops.relin(ops.horner(rotated, sum_rows, r * spec.sum_baby))
    g1 = ops.doubling(ops.rescale(sums), r * spec.lanes, slots, +1)
    results = [g1, *g2]
    expected = result_scales(context)
    for ct, scale in zip(results, expected, strict=True):
        if ct.parms_id() != context.runtime.parms_id[OUT] or ct.scale != scale:
            raise CryptoError("internal error: an mlp result is not at the expected level/scale")
    return results


def result_scales(context: PublicContext) -> list[float]:
    sc = scales(context)
    return [sc.g1] + [sc.g2] * context.spec.n_outputs


# ---- results: parsing (requester, forging) and the totals' layout ----------------------------
def parse_result(
    context: PublicContext, data: bytes, party: str
) -> tuple[dict[str, Any], tuple[bytes, ...], list[sa.Ciphertext]]:
    """A result message checked for size, fields, level and scale: (meta, payloads, cts)."""
    levels = [OUT] * (1 + context.spec.n_outputs)
    meta, envelope = _unpack(context, data, wire.Kind.RESULT, levels, party)
    cts = [
        context.runtime.load_ciphertext(
            payload, level=OUT, scale=scale, what=f"result[{i}]", party=party
        )
        for i, (payload, scale) in enumerate(
            zip(envelope.payloads, result_scales(context), strict=True)
        )
    ]
    return meta, envelope.payloads, cts


def _spread_problem(replicas: np.ndarray, total: np.ndarray) -> bool:
    spread = float(np.max(np.abs(replicas - total)))
    return not spread <= REPLICA_TOLERANCE * max(1.0, float(np.max(np.abs(total))))


def decrypt_totals(
    keypair: KeyPair, cts: list[sa.Ciphertext], n_samples: int, party: str
) -> np.ndarray:
    """Hidden-unit-major totals (hidden, n_features + 1 + n_outputs); only block totals leave:
    every total must be replicated across its slots and every padding lane empty."""
    spec = keypair.spec
    runtime = keypair.public.runtime
    r, d, h = spec.class_lanes, spec.n_features, spec.hidden

    def decode(ct: sa.Ciphertext) -> np.ndarray:
        plain = sa.Plaintext()
        keypair.decryptor.decrypt(ct, plain)
        return runtime.decode(plain)

    not_totals = UntrustedInputError(
        "result is not a vector of block totals (its slots are not replicated)",
        party=party,
        hint="an honest processor's output repeats each total in every slot of its lane",
    )
    replicas = spec.result_lanes(decode(cts[0]))  # (R, L/D, D)
    g1 = replicas.mean(axis=1)
    if _spread_problem(replicas, g1[:, None, :]):
        raise not_totals
    g2 = np.zeros((spec.n_outputs, r))
    for i, ct in enumerate(cts[1:]):
        lanes = decode(ct).reshape(spec.length, r)  # (samples, lanes)
        g2[i] = lanes.mean(axis=0)
        if _spread_problem(lanes, g2[i][None, :]):
            raise not_totals
    padding = np.concatenate([g1[h:].ravel(), g1[:, d + 1 :].ravel(), g2[:, h:].ravel()])
    if padding.size and np.max(np.abs(padding)) > 1.0 + PADDING_TOLERANCE * n_samples:
        raise UntrustedInputError("result has non-zero padding lanes", party=party)
    return np.hstack([g1[:h, : d + 1], g2[:, :h].T])


def totals_layout(context: PublicContext, totals: np.ndarray) -> list[np.ndarray]:
    """The physical slots of an honest result holding ``totals`` (the inverse of
    ``decrypt_totals``): what a forger encrypts."""
    spec = context.spec
    r, d, h = spec.class_lanes, spec.n_features, spec.hidden
    shape = (h, d + 1 + spec.n_outputs)
    totals = np.asarray(totals, dtype=np.float64)
    if totals.shape != shape or not np.all(np.isfinite(totals)):
        raise ConfigError(f"totals must be finite with shape {shape}, got {totals.shape}")
    g1 = np.zeros((r, spec.lanes))
    g1[:h, : d + 1] = totals[:, : d + 1]
    out = [spec.to_physical(np.tile(g1, (1, spec.length // spec.lanes)))]
    for i in range(spec.n_outputs):
        lanes = np.zeros((r, spec.length))
        lanes[:h] = totals[:, d + 1 + i][:, None]
        out.append(spec.to_physical(lanes))
    return out


def max_total(context: PublicContext) -> float:
    """Largest |total| every result ciphertext holds: |total| * scale < output prime / 2."""
    return context.runtime.primes[0] / 2.0 / max(result_scales(context))
