"""Where a result's totals sit in its ciphertexts: what forgers and owners' noise encrypt.

A result holds, per class group (one payload each; an mlp's G1 and G2 rows), lane j's block
total in every slot k = j (mod D) of its class lane, padding lanes zero. ``totals_layout`` is the
inverse of what ``decrypt_result`` reads back.
"""

from __future__ import annotations

import numpy as np

from fedmarket.errors import ConfigError
from fedmarket.he import mlp
from fedmarket.he.keys import PublicContext


def max_total(context: PublicContext) -> float:
    """Largest |total| the result encoding holds: |sum| * out scale < output prime / 2."""
    if context.spec.is_mlp:
        return mlp.max_total(context)
    runtime = context.runtime
    return runtime.primes[0] / 2.0 / runtime.scales.out


def result_scales(context: PublicContext) -> list[float]:
    """The scale of each result payload."""
    if context.spec.is_mlp:
        return mlp.result_scales(context)
    return [context.runtime.scales.out] * context.spec.n_groups


def check_fits(context: PublicContext, totals: np.ndarray) -> None:
    totals = np.asarray(totals, dtype=np.float64)
    limit = max_total(context)
    if totals.size and np.all(np.isfinite(totals)) and float(np.max(np.abs(totals))) >= limit:
        raise ConfigError(
            f"totals up to {float(np.max(np.abs(totals))):.4g} do not fit the result encoding "
            f"(|total| < {limit:.4g})"
        )


def totals_layout(context: PublicContext, totals: np.ndarray) -> list[np.ndarray]:
    """Per result payload, the physical slots of a result holding ``totals`` (the kind's
    weight shape): each total replicated across its lane's slots, padding lanes zero."""
    spec = context.spec
    if spec.is_mlp:
        check_fits(context, totals)
        return mlp.totals_layout(context, totals)
    totals = np.asarray(totals, dtype=np.float64)
    shape = (spec.n_outputs, spec.n_features + 1)
    if totals.shape != shape or not np.all(np.isfinite(totals)):
        raise ConfigError(f"totals must be finite with shape {shape}, got {totals.shape}")
    check_fits(context, totals)
    lanes = np.zeros((spec.n_groups * spec.class_lanes, spec.lanes))
    lanes[: shape[0], : shape[1]] = totals
    replicas = spec.length // spec.lanes
    out = []
    for group in range(spec.n_groups):
        rows = lanes[group * spec.class_lanes : (group + 1) * spec.class_lanes]
        out.append(spec.to_physical(np.tile(rows, (1, replicas))))
    return out
