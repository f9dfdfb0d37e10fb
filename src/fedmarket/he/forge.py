"""What a dishonest processor can do to result messages with the public context alone.

A processor holds the public key, the relinearisation and Galois keys, never the secret key.
With them it can encrypt any totals it likes in the result layout and combine ciphertexts
additively, so it can forge, scale, perturb and replay results. Everything here produces
messages that pass every format check of ``decrypt_result`` (level, scale, each lane total
replicated across its slots, zero padding lanes): only statistics over the decrypted totals or
replication (a second processor computing the same block) can catch them. These functions
exist for the attack catalogue (``fedmarket.attacks``) and the tests of the integrity checks;
an honest processor never calls them.

* ``forge_result``: a fresh public-key encryption of chosen totals.
* ``scale_result``: an integer multiple of a result (negation and repeated addition: a
  plaintext multiplication would change the scale, which ``decrypt_result`` rejects).
* ``add_noise``: a result plus a fresh encryption of chosen totals.
* ``restamp``: the same ciphertexts under another epoch (a stale result replayed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tenseal.sealapi as sa

from fedmarket.errors import ConfigError
from fedmarket.he import mlp, wire
from fedmarket.he._seal import OUT, dump
from fedmarket.he.keys import PublicContext
from fedmarket.he.program import pack_result

_RESULT_FIELDS = {"block_id": str, "epoch": int, "n_samples": int}
MAX_FACTOR = 100


def max_forgeable_total(context: PublicContext) -> float:
    """Largest |total| the result encoding holds: |sum| * out scale < output prime / 2."""
    runtime = context.runtime
    if context.spec.is_mlp:
        return mlp.max_total(context)
    return runtime.primes[0] / 2.0 / runtime.scales.out


def _totals_layout(context: PublicContext, totals: np.ndarray) -> list[np.ndarray]:
    """Per class group, the physical slots of a result holding ``totals`` (inverse of
    ``spec.result_lanes``): lane j's total in every slot k = j (mod D), padding lanes zero."""
    spec = context.spec
    if spec.is_mlp:
        _check_fits(context, totals)
        return mlp.totals_layout(context, totals)
    totals = np.asarray(totals, dtype=np.float64)
    shape = (spec.n_outputs, spec.n_features + 1)
    if totals.shape != shape or not np.all(np.isfinite(totals)):
        raise ConfigError(f"totals must be finite with shape {shape}, got {totals.shape}")
    limit = max_forgeable_total(context)
    if totals.size and float(np.max(np.abs(totals))) >= limit:
        raise ConfigError(
            f"totals up to {float(np.max(np.abs(totals))):.4g} do not fit the result encoding "
            f"(|total| < {limit:.4g})"
        )
    lanes = np.zeros((spec.n_groups * spec.class_lanes, spec.lanes))
    lanes[: shape[0], : shape[1]] = totals
    replicas = spec.length // spec.lanes
    out = []
    for group in range(spec.n_groups):
        rows = lanes[group * spec.class_lanes : (group + 1) * spec.class_lanes]
        out.append(spec.to_physical(np.tile(rows, (1, replicas))))
    return out


def _check_fits(context: PublicContext, totals: np.ndarray) -> None:
    totals = np.asarray(totals, dtype=np.float64)
    limit = max_forgeable_total(context)
    if totals.size and np.all(np.isfinite(totals)) and float(np.max(np.abs(totals))) >= limit:
        raise ConfigError(
            f"totals up to {float(np.max(np.abs(totals))):.4g} do not fit the result encoding "
            f"(|total| < {limit:.4g})"
        )


def _result_scales(context: PublicContext) -> list[float]:
    if context.spec.is_mlp:
        return mlp.result_scales(context)
    return [context.runtime.scales.out] * context.spec.n_groups


def _encrypt_totals(context: PublicContext, totals: np.ndarray) -> list[sa.Ciphertext]:
    """One fresh public-key ciphertext per result payload, at the result's level and scale."""
    runtime = context.runtime
    encryptor = sa.Encryptor(runtime.context, context.public_key)
    out = []
    for physical, scale in zip(
        _totals_layout(context, totals), _result_scales(context), strict=True
    ):
        ct = sa.Ciphertext()
        encryptor.encrypt(runtime.encode(physical, OUT, scale), ct)
        out.append(ct)
    return out


def _parse(
    context: PublicContext, data: bytes, party: str
) -> tuple[dict[str, Any], tuple[bytes, ...], list[sa.Ciphertext]]:
    """A result message checked as ``decrypt_result`` checks it: (meta, payloads, ciphertexts)."""
    spec = context.spec
    if spec.is_mlp:
        return mlp.parse_result(context, data, party)
    runtime = context.runtime
    ct_bound = wire.ciphertext_bytes_bound(spec.preset.poly_modulus_degree, OUT)
    envelope = wire.unpack(
        data,
        kind=wire.Kind.RESULT,
        party=party,
        max_bytes=spec.n_groups * (ct_bound + 4) + wire.MAX_META_BYTES + 4096,
        digest=context.digest,
        count=spec.n_groups,
        max_payload_bytes=ct_bound,
    )
    meta = wire.require_fields(envelope.meta, _RESULT_FIELDS, what="result", party=party)
    cts = [
        runtime.load_ciphertext(
            payload, level=OUT, scale=runtime.scales.out, what=f"result[{group}]", party=party
        )
        for group, payload in enumerate(envelope.payloads)
    ]
    return meta, envelope.payloads, cts


def _repack(context: PublicContext, meta: dict[str, Any], payloads: list[bytes]) -> bytes:
    return pack_result(
        context,
        block_id=meta["block_id"],
        epoch=meta["epoch"],
        n_samples=meta["n_samples"],
        payloads=payloads,
    )


def forge_result(
    context: PublicContext, *, block_id: str, epoch: int, n_samples: int, totals: np.ndarray
) -> bytes:
    """A result message whose totals decrypt to ``totals`` ((n_outputs, n_features + 1)).

    Public-key encrypted at the result's level and scale, each total replicated in every slot
    of its lane and padding lanes zero: ``decrypt_result`` accepts it like an honest result.
    """
    spec = context.spec
    if not isinstance(block_id, str) or not 0 < len(block_id) <= 256:
        raise ConfigError("block_id must be 1..256 characters")
    if type(epoch) is not int or epoch < 0:
        raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
    if type(n_samples) is not int or not 1 <= n_samples <= spec.block_size:
        raise ConfigError(f"n_samples must be 1..{spec.block_size}, got {n_samples!r}")
    return pack_result(
        context,
        block_id=block_id,
        epoch=epoch,
        n_samples=n_samples,
        payloads=[dump(ct) for ct in _encrypt_totals(context, totals)],
    )


def scale_result(context: PublicContext, data: bytes, factor: int, *, party: str) -> bytes:
    """The result ``data`` with every total multiplied by ``factor`` (an integer, 0 < |f| <= 100).

    Level and scale are unchanged: the multiple is built by negation and double-and-add, never a
    plaintext product (which would multiply the scale). ``factor`` 0 would give a transparent
    ciphertext, which SEAL refuses; forge zeros with ``forge_result`` instead. The caller keeps
    |factor * total| below ``max_forgeable_total`` or the totals wrap around on decryption.
    """
    if type(factor) is not int or factor == 0 or abs(factor) > MAX_FACTOR:
        raise ConfigError(
            f"factor must be a non-zero integer in [-{MAX_FACTOR}, {MAX_FACTOR}], got {factor!r}"
        )
    meta, _, cts = _parse(context, data, party)
    evaluator = context.runtime.evaluator
    payloads = []
    for ct in cts:
        # Every step writes a new ciphertext: nothing parsed is modified in place.
        base = ct
        if factor < 0:
            base = sa.Ciphertext()
            evaluator.negate(ct, base)
        acc: sa.Ciphertext | None = None
        remaining = abs(factor)
        while True:
            if remaining & 1:
                if acc is None:
                    acc = base
                else:
                    total = sa.Ciphertext()
                    evaluator.add(acc, base, total)
                    acc = total
            remaining >>= 1
            if not remaining:
                break
            doubled = sa.Ciphertext()
            evaluator.add(base, base, doubled)
            base = doubled
        assert acc is not None
        payloads.append(dump(acc))
    return _repack(context, meta, payloads)


def add_noise(
    context: PublicContext, data: bytes, noise_totals: np.ndarray, *, party: str
) -> bytes:
    """The result ``data`` plus a fresh encryption of ``noise_totals`` (same metadata)."""
    meta, _, cts = _parse(context, data, party)
    evaluator = context.runtime.evaluator
    payloads = []
    for ct, noise in zip(cts, _encrypt_totals(context, noise_totals), strict=True):
        out = sa.Ciphertext()
        evaluator.add(ct, noise, out)
        payloads.append(dump(out))
    return _repack(context, meta, payloads)


def restamp(context: PublicContext, data: bytes, *, epoch: int, party: str) -> bytes:
    """The same ciphertexts (byte for byte) under epoch ``epoch``: a stale result replayed."""
    if type(epoch) is not int or epoch < 0:
        raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
    meta, payloads, _ = _parse(context, data, party)
    return _repack(context, {**meta, "epoch": epoch}, list(payloads))
