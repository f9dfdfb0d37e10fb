"""How fast can any processor schedule be? A measured lower bound for small blocks.

The processor's epoch on a block is a chain of SEAL operations, each on one core (SEAL has no
internal threads, and its Python binding holds the GIL, so only processes run in parallel).
Whatever the packing, some of that chain is forced by the computation itself:

* z = <w, x> needs a ciphertext product at the top level and one rescale;
* the cubic sigmoid needs two more sequential products, each followed by a rescale, and since
  a product raises a ciphertext's size by one and only a key switch lowers it (rotations need
  size 2), at least three relinearisations sit on the chain (or more, lazily);
* the residual then meets the data (or z*x meets z^2: no extra depth either way), and only
  after that last per-sample product can samples be added together (a sum of products cannot
  be formed from sums of their factors);
* adding n samples' contributions into one slot needs rotations: a rotation moves, it does not
  add, so after k rounds in which each of w cores rotates once, a slot can hold at most
  (w + 1)^k samples' worth: k >= log_{w+1}(n).

``critical_path`` adds these up from the costs of the single operations measured on this
machine (``measure_op_costs``), each at the cheapest level it could run at and in the cheapest
order, and leaves out everything else (parsing the model, the lane bookkeeping, serialising
the result, any transfer between cores). Whatever the layout, no epoch on n samples can take
less; the benchmark compares it with the time its throughput target allows.

``ring_noise`` measures what rules out the next smaller ring: the noise of a fresh encryption
and of rotations at the output level for N=4096 with the best 128-bit chain, from which
``max_precision_bits`` derives how many bits of the block totals any such chain could keep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tenseal.sealapi as sa

from fedmarket.he._seal import OUT, runtime_for
from fedmarket.he.params import HE_STANDARD_MAX_BITS
from fedmarket.he.spec import HESpec

LEVELS = (4, 3, 2, 1)  # primes left: TOP, SQUARE, H, OUT
# NTT-friendly primes (q = 1 mod 2N) SEAL finds three distinct of at N=4096: 18 bits.
MIN_RESCALE_PRIME_BITS_4096 = 18


@dataclass(frozen=True)
class OpCosts:
    """Milliseconds per SEAL operation, by level (primes left), fastest of many runs."""

    multiply: dict[int, float]  # ciphertext x ciphertext, size 2 x size 2
    relinearize: dict[int, float]  # size 3 -> 2
    rescale2: dict[int, float]  # rescale of a size-2 ciphertext
    rescale3: dict[int, float]  # rescale of a size-3 ciphertext
    rotate: dict[int, float]

    def to_json(self) -> dict[str, dict[str, float]]:
        return {name: {str(k): v for k, v in table.items()} for name, table in asdict(self).items()}


def _best_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _level_costs(
    ev: sa.Evaluator,
    ct: sa.Ciphertext,
    relin_keys: sa.RelinKeys,
    galois_keys: sa.GaloisKeys,
    repeat: int,
) -> dict[str, float]:
    big = sa.Ciphertext()
    ev.multiply(ct, ct, big)
    out = sa.Ciphertext()
    costs = {
        "multiply": _best_ms(lambda: ev.multiply(ct, ct, out), repeat),
        "relinearize": _best_ms(lambda: ev.relinearize(big, relin_keys, out), repeat),
        "rotate": _best_ms(lambda: ev.rotate_vector(ct, 1, galois_keys, out), repeat),
    }
    if ct.coeff_modulus_size() > OUT:
        costs["rescale2"] = _best_ms(lambda: ev.rescale_to_next(ct, out), repeat)
        costs["rescale3"] = _best_ms(lambda: ev.rescale_to_next(big, out), repeat)
    return costs


def measure_op_costs(spec: HESpec, repeat: int = 30) -> OpCosts:
    """Time each operation the processor's chain needs, at every level of ``spec``'s chain."""
    runtime = runtime_for(spec)
    keygen = sa.KeyGenerator(runtime.context)
    relin_keys = sa.RelinKeys()
    keygen.create_relin_keys(relin_keys)
    galois_keys = sa.GaloisKeys()
    keygen.create_galois_keys([3], galois_keys)  # the Galois element of a rotation by 1
    encryptor = sa.Encryptor(runtime.context, keygen.secret_key())
    ev = runtime.evaluator
    values = np.random.default_rng(0).uniform(-1.0, 1.0, spec.slots)
    table: dict[str, dict[int, float]] = {
        "multiply": {},
        "relinearize": {},
        "rescale2": {},
        "rescale3": {},
        "rotate": {},
    }
    for level in LEVELS:
        ct = sa.Ciphertext()
        # A scale whose square fits the level's modulus (the last prime has 60 bits).
        scale = 2.0 ** (30 if level > OUT else 25)
        encryptor.encrypt_symmetric(runtime.encode(values, level, scale), ct)
        for name, ms in _level_costs(ev, ct, relin_keys, galois_keys, repeat).items():
            table[name][level] = ms
    return OpCosts(**table)


@dataclass(frozen=True)
class CriticalPath:
    """The least time any schedule of one epoch on ``samples`` samples can take."""

    samples: int
    workers: int
    residual_ms: float  # z, the cubic and their rescales and relinearisations
    rotation_rounds: float
    rotations_ms: float

    @property
    def total_ms(self) -> float:
        return self.residual_ms + self.rotations_ms

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total_ms": self.total_ms}


def critical_path(costs: OpCosts, samples: int, workers: int = 2) -> CriticalPath:
    """Sum of the operations every schedule must run one after another (see the module doc)."""
    if samples < 1 or workers < 1:
        raise ValueError("samples and workers must be positive")
    mul, relin, r2, r3, rot = (
        costs.multiply,
        costs.relinearize,
        costs.rescale2,
        costs.rescale3,
        costs.rotate,
    )

    def product_then_rescale(level: int) -> float:
        # Relinearise before the rescale (at this level) or after it (one level down).
        return mul[level] + min(relin[level] + r2[level], r3[level] + relin[level - 1])

    eager = product_then_rescale(4) + product_then_rescale(3) + product_then_rescale(2)
    # Or lazily, z never relinearised: z^2 then has size 5 (three key switches at two primes)
    # and z * z^2 size 4 (two at one prime). Larger ciphertexts' products and rescales are
    # counted at the size-2 cost, which only lowers the bound.
    lazy = mul[4] + r3[4] + mul[3] + r3[3] + 3 * relin[2] + mul[2] + r3[2] + 2 * relin[1]
    rounds = math.log(samples) / math.log(workers + 1)
    return CriticalPath(
        samples=samples,
        workers=workers,
        residual_ms=min(eager, lazy),
        rotation_rounds=rounds,
        rotations_ms=rounds * rot[1],
    )


@dataclass(frozen=True)
class RingNoise:
    """Noise (log2 of the largest absolute slot error times the scale) of one small ring."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    fresh_bits: float
    rotated_bits: float  # after ``rotations`` rotations at the output level
    rotations: int


def ring_noise(
    poly_modulus_degree: int = 4096,
    coeff_mod_bit_sizes: tuple[int, ...] = (28, 18, 18, 18, 27),
    rotations: int = 8,
) -> RingNoise:
    """Measure fresh and rotation noise at the output level of a chain (128-bit if it fits)."""
    parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(poly_modulus_degree)
    parms.set_coeff_modulus(sa.CoeffModulus.Create(poly_modulus_degree, list(coeff_mod_bit_sizes)))
    context = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise ValueError(f"SEAL rejects the chain: {context.parameters_error_message()}")
    keygen = sa.KeyGenerator(context)
    galois_keys = sa.GaloisKeys()
    keygen.create_galois_keys([3], galois_keys)
    public_key = sa.PublicKey()
    keygen.create_public_key(public_key)
    encryptor = sa.Encryptor(context, public_key)  # as a data owner encrypts
    decryptor = sa.Decryptor(context, keygen.secret_key())
    encoder = sa.CKKSEncoder(context)
    evaluator = sa.Evaluator(context)
    slots = poly_modulus_degree // 2
    values = np.random.default_rng(1).uniform(-1.0, 1.0, slots)
    scale = 2.0**12

    def noise_bits(ct: sa.Ciphertext, expected: np.ndarray) -> float:
        plain = sa.Plaintext()
        decryptor.decrypt(ct, plain)
        error = np.max(np.abs(np.asarray(encoder.decode_double(plain)) - expected))
        return float(np.log2(error * scale))

    plain = sa.Plaintext()
    encoder.encode(values.tolist(), context.last_parms_id(), scale, plain)
    ct = sa.Ciphertext()
    encryptor.encrypt(plain, ct)
    fresh = noise_bits(ct, values)
    for _ in range(rotations):
        out = sa.Ciphertext()
        evaluator.rotate_vector(ct, 1, galois_keys, out)
        ct = out
    rotated = noise_bits(ct, np.roll(values, -rotations))
    return RingNoise(poly_modulus_degree, coeff_mod_bit_sizes, fresh, rotated, rotations)


def max_precision_bits(
    noise: RingNoise,
    total_bits: float,
    *,
    rescale_primes: int = 3,
    min_prime_bits: int = MIN_RESCALE_PRIME_BITS_4096,
) -> int:
    """Most bits of precision any 128-bit chain of this ring leaves the block totals, or -1.

    Every scale must exceed the fresh noise by p bits (the data, the model and the residual
    are each rescaled by a prime about their scale, and at N=4096 SEAL finds three distinct
    NTT primes of no fewer than 18 bits); the output prime must hold totals of up to 2^total_bits at
    a scale p bits above the rotation noise, with a sign bit; and the special prime must be at
    least the output prime, or key switching adds q_out / P times more noise.
    """
    budget = HE_STANDARD_MAX_BITS[128][noise.poly_modulus_degree]
    best = -1
    for p in range(0, 61):
        prime = max(min_prime_bits, math.ceil(noise.fresh_bits) + p)
        output = math.ceil(noise.rotated_bits + p + total_bits + 1)
        if rescale_primes * prime + 2 * output <= budget:
            best = p
    return best
