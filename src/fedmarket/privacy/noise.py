"""The owners' side of differential privacy: clipping, and the noise each block's totals carry.

Every epoch an owner draws, for each of its blocks, one Gaussian value per total with standard
deviation ``noise_multiplier * sensitivity`` and hands it to the processors (encrypted under
CKKS, ``PublicKeys.encrypt_noise``); the program adds it to the block's totals. The values are a
**discrete** Gaussian on the grid ``NOISE_GRID``, drawn by exact rejection sampling from uniform
integers of the caller's generator (Canonne, Kamath, Steinke, "The discrete Gaussian for
differential privacy", NeurIPS 2020): floating-point Gaussian samplers leak the noise through
their low bits (Mironov, CCS 2012). Owners pass ``secrets.SystemRandom()``; tests pass a seeded
``random.Random``. Every crypto draws the same numbers from the same generator, so the plaintext
twin's noisy totals are the ones CKKS decrypts (up to CKKS's own error).
"""

from __future__ import annotations

import hashlib
import math
import random
from fractions import Fraction

import numpy as np

from fedmarket.errors import ConfigError

# Noise values are integer multiples of this: far below any total's precision (CKKS errors are
# ~1e-3) and above float resolution for every value we encode (|noise| < 2^15).
NOISE_GRID = 2.0**-20
# Largest per-total noise std a crypto accepts: eps = 1 over 100 epochs on ten one-vs-rest
# classes needs ~355; CKKS totals must stay under 2^15 at the n8192 output prime.
MAX_NOISE_STD = 1024.0
# Bytes of the seed that drives a noise message's per-slot floods (fedmarket.he.noise).
FLOOD_SEED_BYTES = 32


def check_std(std: float) -> float:
    if not (isinstance(std, int | float) and math.isfinite(std) and 0 <= std <= MAX_NOISE_STD):
        raise ConfigError(f"noise std must be a number in [0, {MAX_NOISE_STD}], got {std!r}")
    return float(std)


def check_rng(rng: random.Random) -> random.Random:
    if not isinstance(rng, random.Random):
        raise ConfigError(
            "noise needs a random.Random (owners: secrets.SystemRandom()), got "
            f"{type(rng).__name__}"
        )
    return rng


def _bernoulli(p: Fraction, rng: random.Random) -> bool:
    return rng.randrange(p.denominator) < p.numerator


def _bernoulli_exp(gamma: Fraction, rng: random.Random) -> bool:
    """True with probability exp(-gamma), gamma >= 0 rational (CKS Algorithm 1)."""
    while gamma > 1:
        if not _bernoulli_exp(Fraction(1), rng):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k, rng):
        k += 1
    return k % 2 == 1


def _discrete_laplace(t: int, rng: random.Random) -> int:
    """P(x) proportional to exp(-|x| / t) on the integers (CKS Algorithm 2, s = 1)."""
    while True:
        u = rng.randrange(t)
        if not _bernoulli_exp(Fraction(u, t), rng):
            continue
        v = 0
        while _bernoulli_exp(Fraction(1), rng):
            v += 1
        x = u + t * v
        negative = rng.randrange(2) == 1
        if negative and x == 0:
            continue
        return -x if negative else x


def discrete_gaussian(sigma2: Fraction, rng: random.Random) -> int:
    """P(x) proportional to exp(-x^2 / (2 sigma2)) on the integers, exactly (CKS Algorithm 3)."""
    if sigma2 <= 0:
        return 0
    t = math.isqrt(sigma2.numerator // sigma2.denominator) + 1  # floor(sigma) + 1
    while True:
        y = _discrete_laplace(t, rng)
        if _bernoulli_exp((abs(y) - sigma2 / t) ** 2 / (2 * sigma2), rng):
            return y


def gaussian_totals(shape: tuple[int, ...], std: float, rng: random.Random) -> np.ndarray:
    """Discrete Gaussian noise of standard deviation ~``std`` on ``NOISE_GRID``, one value per
    total (exact floats: integers times a power of two)."""
    std = check_std(std)
    rng = check_rng(rng)
    sigma2 = (Fraction(std) / Fraction(NOISE_GRID)) ** 2
    count = math.prod(shape)
    values = [discrete_gaussian(sigma2, rng) for _ in range(count)]
    return np.array(values, dtype=np.float64).reshape(shape) * NOISE_GRID


def draw_noise(shape: tuple[int, ...], std: float, rng: random.Random) -> tuple[np.ndarray, bytes]:
    """What one noise message needs from the generator, in a fixed order: the totals' noise,
    then the flood seed (a crypto without floods draws it too, so streams stay aligned)."""
    totals = gaussian_totals(shape, std, rng)
    return totals, rng.randbytes(FLOOD_SEED_BYTES)


def flood(seed: bytes, size: int) -> np.ndarray:
    """``size`` standard normal values from SHAKE-256 of ``seed`` (Box-Muller): cryptographic
    randomness for the per-slot floods, which hide CKKS noise and need no exactness."""
    pairs = (size + 1) // 2
    words = np.frombuffer(hashlib.shake_256(seed).digest(16 * pairs), dtype="<u8")
    uniform = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    radius = np.sqrt(-2.0 * np.log(uniform[0::2]))
    angle = 2.0 * math.pi * uniform[1::2]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]
