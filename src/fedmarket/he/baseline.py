"""The layout of TenSEAL's Tutorial 1 (encrypted logistic regression), as a speed baseline.

Tutorial 1 ("Training and Evaluation of Logistic Regression on Encrypted Data", TenSEAL's
tutorials/) encrypts each sample as its own CKKSVector and, per sample, runs
``enc_x.dot(w) + b``, the cubic ``polyval([0.5, 0.197, 0, -0.004])``, ``out - y`` and
``delta_w += enc_x * (out - y)``. This module reproduces that per-sample work with the
tutorial's parameters so the benchmark can time it on the same machine and data as our
column-wise program. It is measurement code only; nothing in fedmarket trains this way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tenseal as ts

# The tutorial's training context: N=8192, a 40/21x6/40 chain, scale 2^21.
TUTORIAL_POLY_MODULUS_DEGREE = 8192
TUTORIAL_COEFF_MOD_BIT_SIZES = [40, 21, 21, 21, 21, 21, 21, 40]
TUTORIAL_SCALE_BITS = 21
TUTORIAL_SIGMOID = [0.5, 0.197, 0.0, -0.004]


@dataclass(frozen=True)
class TutorialTiming:
    n_samples: int
    n_features: int
    seconds_per_sample: float  # forward + backward, the processor's share of an epoch
    encrypt_seconds_per_sample: float  # the owner's share (once)
    bytes_per_sample: int  # one serialised sample (features and label)


def time_tutorial_layout(X: np.ndarray, y: np.ndarray, *, seed: int = 0) -> TutorialTiming:
    """Run one tutorial epoch over ``X, y`` (kept small: it is ~0.1 s per sample) and time it."""
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        TUTORIAL_POLY_MODULUS_DEGREE,
        -1,
        TUTORIAL_COEFF_MOD_BIT_SIZES,
    )
    context.global_scale = 2**TUTORIAL_SCALE_BITS
    context.generate_galois_keys()
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    enc_x = [ts.ckks_vector(context, row.tolist()) for row in np.asarray(X, dtype=float)]
    enc_y = [ts.ckks_vector(context, [float(label)]) for label in y]
    encrypt_seconds = time.perf_counter() - start
    sample_bytes = len(enc_x[0].serialize()) + len(enc_y[0].serialize())
    weight = ts.ckks_vector(context, np.asarray(rng.normal(0.0, 0.1, X.shape[1])).tolist())
    bias = ts.ckks_vector(context, [0.0])
    start = time.perf_counter()
    delta_w = None
    delta_b = None
    for x, label in zip(enc_x, enc_y, strict=True):
        out = (x.dot(weight) + bias).polyval(TUTORIAL_SIGMOID)
        out_minus_y = out - label
        grad = x * out_minus_y
        delta_w = grad if delta_w is None else delta_w + grad
        delta_b = out_minus_y if delta_b is None else delta_b + out_minus_y
    seconds = time.perf_counter() - start
    n = len(enc_x)
    return TutorialTiming(n, X.shape[1], seconds / n, encrypt_seconds / n, sample_bytes)
