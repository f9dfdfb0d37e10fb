"""SEAL plumbing: one runtime per spec, byte (de)serialisation, ciphertext checks, and the
evaluator wrappers (``Ops``) every kind's processor program is written in.

We drive Microsoft SEAL through ``tenseal.sealapi`` (TenSEAL's complete SEAL binding) rather
than TenSEAL's CKKSVector: the processor's program needs rotations by chosen steps, lazy
relinearisation and exact scale bookkeeping, and its operations must never mutate their inputs.
sealapi (de)serialises only through file paths, so bytes go through an anonymous in-memory file
(``memfd``) named by its /proc path; nothing touches a disk.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import tenseal.sealapi as sa

from fedmarket.errors import CryptoError, UntrustedInputError
from fedmarket.he.spec import HESpec

if TYPE_CHECKING:
    from fedmarket.he.keys import PublicContext

# SEAL's serialisation header (seal/serialization.h): magic, header size, version, compression
# mode, reserved, total size; little-endian, 16 bytes.
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E
_SEAL_COMPR_MODES = (0, 1, 2)  # none, zlib, zstd

# Level names: how many primes of the chain a ciphertext still has.
TOP, SQUARE, H, OUT = 4, 3, 2, 1


class _Saveable(Protocol):
    def save(self, path: str) -> None: ...


class _Scratch:
    """An in-memory file SEAL can open by path; one per process, guarded by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path = ""
        self._pid = 0

    def _open(self) -> None:
        # A forked child inherits the parent's descriptor: the same file. Two processes
        # writing one scratch file corrupt each other's bytes, so each process opens its own.
        if self._fd is not None and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        if hasattr(os, "memfd_create"):
            self._fd = os.memfd_create("fedmarket-seal", os.MFD_CLOEXEC)
            self._path = f"/proc/self/fd/{self._fd}"
        else:  # not Linux: a private temporary file; SEAL reopens it by name
            self._fd, self._path = tempfile.mkstemp(prefix="fedmarket-seal-")

    def dump(self, obj: _Saveable) -> bytes:
        with self._lock:
            self._open()
            assert self._fd is not None
            obj.save(self._path)
            size = os.fstat(self._fd).st_size
            return os.pread(self._fd, size, 0)

    def fill(self, obj: Any, context: sa.SEALContext, data: bytes) -> None:
        with self._lock:
            self._open()
            assert self._fd is not None
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
            obj.load(context, self._path)


_SCRATCH = _Scratch()


def dump(obj: _Saveable) -> bytes:
    """Serialise any SEAL object (including SEAL's seed-compressed ``Serializable`` results)."""
    return _SCRATCH.dump(obj)


def galois_element(step: int, slots: int) -> int:
    """SEAL's Galois element for a left rotation by ``step`` (GaloisTool::get_elt_from_step)."""
    if step == 0 or abs(step) >= slots:
        raise ValueError(f"rotation step {step} out of range for {slots} slots")
    exponent = step if step > 0 else slots + step
    return pow(3, exponent, 4 * slots)


@dataclass(frozen=True)
class Scales:
    """The exact scale of every ciphertext the program reads or writes.

    Computed with the same double operations SEAL performs (a product multiplies scales, a
    rescale divides by the dropped prime), so the parties agree bit for bit and SEAL's
    same-scale checks pass.
    """

    data: float  # X, the features for z
    model: float  # M, the model
    z: float
    square: float  # z~^2 + c1/kappa
    h_pre: float  # the residual before its rescale; the labels are encrypted at this scale
    h: float
    sums_data: float  # Z, the features for the gradient sums
    out: float  # the gradient sums

    @classmethod
    def for_spec(cls, spec: HESpec, primes: list[int]) -> Scales:
        _, q_h, q_square, q_model = (float(p) for p in primes[:4])
        data = 2.0**spec.preset.data_scale_bits
        # Encoding the model at exactly the prime z is rescaled by makes z come out at exactly
        # the data scale. (Linear regression never rescales z: its residual stays at
        # model * data, which the chain makes about 2^60 as well.)
        model = q_model
        z = model * data / q_model
        square = z * z / q_square
        h_pre = z * square if spec.is_logistic else model * data
        h = h_pre / q_h
        sums_data = 2.0 ** (spec.preset.sum_scale_bits - round(math.log2(h)))
        return cls(data, model, z, square, h_pre, h, sums_data, h * sums_data)


@dataclass(frozen=True)
class MLPScales:
    """The exact scale of every ciphertext the MLP program (``fedmarket.he.mlp``) reads or
    writes, computed with SEAL's own double operations. Levels count the primes left: the
    data at 7, then a (6), u = a^2 and a * 2 W2[i] (5), the outputs o and the labels (4), the
    output errors after their lane mask (3), delta1 and the sum-layout data (2), results (1)."""

    data: float  # X, the z-layout features
    w1: float  # the input weights' diagonals (= the prime a is rescaled by)
    a: float
    u: float
    w2: float  # the output weights by row (= the prime o is rescaled by)
    o: float  # the outputs; the labels are encrypted at this scale
    mask: float  # the plaintext lane-0 mask
    delta: float  # the output errors, copied across lanes
    g2: float  # the output-layer totals
    w2col: float  # 2 x the output weights by column (= the prime a is rescaled by)
    aw: float  # a * 2 W2[i, :]
    d1: float  # delta1 = sum_i delta_i * a * 2 W2[i, :]
    sums_data: float  # the sum-layout features
    g1: float  # the hidden-layer totals

    @classmethod
    def for_spec(cls, spec: HESpec, primes: list[int]) -> MLPScales:
        q = [float(p) for p in primes]  # q[0] the output prime, q[7] special
        data = 2.0**spec.preset.data_scale_bits
        w1 = q[6]
        a = data * w1 / q[6]
        u = a * a / q[5]
        w2col = q[5]
        aw = a * w2col / q[5]
        w2 = q[4]
        o = u * w2 / q[4]
        # 2^-10 below the prime it is rescaled by: the errors and so the output-layer totals
        # sit ~2^35, which leaves |total| < 2^24 room at the 60-bit output prime.
        mask = q[3] / 1024.0
        delta = o * mask / q[3]
        g2 = delta * u / q[2]
        d1 = delta * aw / q[2]
        # delta1 * x is rescaled by q[1]: the data's scale puts the totals at ~2^sum_scale_bits
        sums_data = 2.0 ** round(spec.preset.sum_scale_bits + math.log2(q[1]) - math.log2(d1))
        g1 = d1 * sums_data / q[1]
        return cls(data, w1, a, u, w2, o, mask, delta, g2, w2col, aw, d1, sums_data, g1)


class SealRuntime:
    """SEAL context, encoder and evaluator for one spec, plus typed loaders for its objects."""

    def __init__(self, spec: HESpec) -> None:
        self.spec = spec
        preset = spec.preset
        parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(preset.poly_modulus_degree)
        parms.set_coeff_modulus(
            sa.CoeffModulus.Create(preset.poly_modulus_degree, list(preset.coeff_mod_bit_sizes))
        )
        level = {128: sa.SEC_LEVEL_TYPE.TC128, 192: sa.SEC_LEVEL_TYPE.TC192}.get(
            preset.security_bits, sa.SEC_LEVEL_TYPE.TC256
        )
        self.security_level = level
        self.context = sa.SEALContext(parms, True, level)
        if not self.context.parameters_set():
            raise CryptoError(
                f"SEAL rejects preset {preset.name}: {self.context.parameters_error_message()}"
            )
        self.primes = [m.value() for m in parms.coeff_modulus()]
        self.encoder = sa.CKKSEncoder(self.context)
        self.evaluator = sa.Evaluator(self.context)
        self.parms_id: dict[int, Any] = {}
        data = self.context.first_context_data()
        while data is not None:
            self.parms_id[len(data.parms().coeff_modulus())] = data.parms_id()
            data = data.next_context_data()
        levels = len(preset.coeff_mod_bit_sizes) - 1
        if sorted(self.parms_id) != list(range(1, levels + 1)):
            raise CryptoError(
                f"preset {preset.name} does not give the {levels}-level chain the program needs"
            )
        self.key_parms_id = self.context.key_parms_id()
        self.scales = Scales.for_spec(spec, self.primes)
        self.mlp = MLPScales.for_spec(spec, self.primes) if spec.is_mlp else None
        self.galois_elements = tuple(
            sorted(galois_element(step, spec.slots) for step in spec.rotation_steps())
        )
        # SEAL writes its own version into every header; accept exactly that version.
        probe = _SEAL_HEADER.unpack_from(dump(parms))
        self._seal_version = (probe[2], probe[3])

    # ---- encoding ----------------------------------------------------------------------
    def encode(self, values: np.ndarray, level: int, scale: float) -> sa.Plaintext:
        plain = sa.Plaintext()
        self.encoder.encode(
            np.asarray(values, dtype=np.float64).tolist(), self.parms_id[level], scale, plain
        )
        return plain

    def encode_complex(self, values: np.ndarray, level: int, scale: float) -> sa.Plaintext:
        """Complex slot values (the owners' noise floods the imaginary parts too)."""
        plain = sa.Plaintext()
        self.encoder.encode(
            [complex(v) for v in np.asarray(values, dtype=np.complex128)],
            self.parms_id[level],
            scale,
            plain,
        )
        return plain

    def encode_constant(self, value: float, level: int, scale: float) -> sa.Plaintext:
        plain = sa.Plaintext()
        self.encoder.encode(float(value), self.parms_id[level], scale, plain)
        return plain

    def decode(self, plain: sa.Plaintext) -> np.ndarray:
        return np.asarray(self.encoder.decode_double(plain), dtype=np.float64)

    # ---- untrusted bytes -> SEAL objects -------------------------------------------------
    def _check_header(self, data: bytes, what: str, party: str) -> None:
        if len(data) < _SEAL_HEADER.size:
            raise UntrustedInputError(f"{what} is truncated ({len(data)} bytes)", party=party)
        magic, header_size, major, minor, compr, _reserved, size = _SEAL_HEADER.unpack_from(data)
        if magic != _SEAL_MAGIC or header_size != _SEAL_HEADER.size:
            raise UntrustedInputError(f"{what} is not a SEAL object", party=party)
        if (major, minor) != self._seal_version:
            raise UntrustedInputError(
                f"{what} was written by SEAL {major}.{minor}, this runtime uses "
                f"{self._seal_version[0]}.{self._seal_version[1]}",
                party=party,
                hint="all parties must run the same fedmarket/TenSEAL version",
            )
        if compr not in _SEAL_COMPR_MODES or size != len(data):
            raise UntrustedInputError(f"{what} has a corrupt SEAL header", party=party)

    def _load(self, obj: Any, data: bytes, what: str, party: str) -> None:
        self._check_header(data, what, party)
        try:
            _SCRATCH.fill(obj, self.context, data)
        except Exception as exc:  # SEAL raises many C++ exception types; all mean "bad bytes"
            raise UntrustedInputError(f"{what} does not parse: {exc}", party=party) from None

    def load_ciphertext(
        self, data: bytes, *, level: int, scale: float, what: str, party: str
    ) -> sa.Ciphertext:
        """Parse a ciphertext and check it is exactly what the program expects at this point."""
        ct = sa.Ciphertext()
        self._load(ct, data, what, party)
        problems = []
        if ct.parms_id() != self.parms_id[level]:
            problems.append(
                f"it is at the wrong level ({ct.coeff_modulus_size()} primes, expected {level})"
            )
        if ct.size() != 2:
            problems.append(f"it has {ct.size()} polynomials, expected 2")
        if not ct.is_ntt_form():
            problems.append("it is not in NTT form")
        if ct.is_transparent():
            problems.append("it is transparent (not encrypted)")
        if ct.scale != scale:  # also true for a NaN scale
            got = f"2^{math.log2(ct.scale):.4f}" if ct.scale > 0 else repr(ct.scale)
            problems.append(f"its scale is {got}, expected 2^{math.log2(scale):.4f}")
        if problems:
            raise UntrustedInputError(
                f"{what} does not match the task's parameters: {'; '.join(problems)}",
                party=party,
                hint="it was made for another task, key or parameter set, or corrupted",
            )
        return ct

    def load_public_key(self, data: bytes, party: str) -> sa.PublicKey:
        key = sa.PublicKey()
        self._load(key, data, "public key", party)
        if key.parms_id() != self.key_parms_id:
            raise UntrustedInputError("public key is for other parameters", party=party)
        return key

    def load_relin_keys(self, data: bytes, party: str) -> sa.RelinKeys:
        keys = sa.RelinKeys()
        self._load(keys, data, "relinearisation keys", party)
        if keys.parms_id() != self.key_parms_id or keys.size() != 1:
            raise UntrustedInputError("relinearisation keys are for other parameters", party=party)
        return keys

    def load_galois_keys(self, data: bytes, party: str) -> sa.GaloisKeys:
        keys = sa.GaloisKeys()
        self._load(keys, data, "Galois keys", party)
        if keys.parms_id() != self.key_parms_id:
            raise UntrustedInputError("Galois keys are for other parameters", party=party)
        present = keys.size()
        if present != len(self.galois_elements) or not all(
            keys.has_key(elt) for elt in self.galois_elements
        ):
            raise UntrustedInputError(
                f"Galois keys hold {present} rotations, the program needs exactly "
                f"{len(self.galois_elements)} ({list(self.spec.rotation_steps())})",
                party=party,
            )
        return keys

    def load_secret_key(self, data: bytes, party: str) -> sa.SecretKey:
        key = sa.SecretKey()
        self._load(key, data, "secret key", party)
        if key.parms_id() != self.key_parms_id:
            raise UntrustedInputError("secret key is for other parameters", party=party)
        return key


_RUNTIMES: dict[bytes, SealRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def runtime_for(spec: HESpec) -> SealRuntime:
    """The (cached) runtime for a spec: building a SEALContext costs tens of milliseconds."""
    key = spec.canonical_bytes()
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(key)
        if runtime is None:
            runtime = _RUNTIMES[key] = SealRuntime(spec)
        return runtime


class Ops:
    """Thin non-mutating wrappers over SEAL's evaluator for the processors' programs (every
    kind's): each returns a fresh ciphertext."""

    def __init__(self, context: PublicContext) -> None:
        self.ev = context.runtime.evaluator
        self.relin_keys = context.relin_keys
        self.galois_keys = context.galois_keys
        self.runtime = context.runtime

    def dot(self, left: Sequence[sa.Ciphertext], right: Sequence[sa.Ciphertext]) -> sa.Ciphertext:
        """sum(l * r) left unrelinearised (size 3): one relinearisation serves the whole sum."""
        acc = sa.Ciphertext()
        self.ev.multiply(left[0], right[0], acc)
        product = sa.Ciphertext()
        for a, b in zip(left[1:], right[1:], strict=True):
            self.ev.multiply(a, b, product)
            self.ev.add_inplace(acc, product)
        return acc

    def relin(self, ct: sa.Ciphertext) -> sa.Ciphertext:
        out = sa.Ciphertext()
        self.ev.relinearize(ct, self.relin_keys, out)
        return out

    def rotate(self, ct: sa.Ciphertext, step: int) -> sa.Ciphertext:
        out = sa.Ciphertext()
        self.ev.rotate_vector(ct, step, self.galois_keys, out)
        return out

    def rescale(self, ct: sa.Ciphertext) -> sa.Ciphertext:
        out = sa.Ciphertext()
        self.ev.rescale_to_next(ct, out)
        return out

    def mul(self, a: sa.Ciphertext, b: sa.Ciphertext) -> sa.Ciphertext:
        out = sa.Ciphertext()
        self.ev.multiply(a, b, out)
        return out

    def add(self, a: sa.Ciphertext, b: sa.Ciphertext) -> sa.Ciphertext:
        out = sa.Ciphertext()
        self.ev.add(a, b, out)
        return out

    def drop_to(self, ct: sa.Ciphertext, level: int) -> sa.Ciphertext:
        out = sa.Ciphertext()
        self.ev.mod_switch_to(ct, self.runtime.parms_id[level], out)
        return out

    def doubling(self, ct: sa.Ciphertext, first: int, stop: int, sign: int) -> sa.Ciphertext:
        """ct + rot(ct, sign*first) + ... with strides first, 2*first, ... < stop (log2 of
        stop/first rotations). With sign +1 every ``first``-slot copy becomes the sum of all
        ``stop / first`` copies."""
        stride = first
        while stride < stop:
            ct = self.add(ct, self.rotate(ct, sign * stride))
            stride *= 2
        return ct

    def horner(
        self,
        left: Sequence[sa.Ciphertext],
        right: Sequence[Sequence[sa.Ciphertext]],
        step: int,
    ) -> sa.Ciphertext:
        """sum_g rot(dot(left, right[g]), g*step), evaluated from the last giant step inward.

        Returned unrelinearised (size 3): a caller that rescales next relinearises after the
        rescale, where key switching costs about a third less (one prime fewer).
        """
        acc = self.dot(left, right[-1])
        for g in range(len(right) - 2, -1, -1):
            acc = self.rotate(self.relin(acc), step)
            self.ev.add_inplace(acc, self.dot(left, right[g]))
        return acc
