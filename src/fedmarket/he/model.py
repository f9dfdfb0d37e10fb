"""The model message: compact, verifiable, and made well-formed by the processor before use.

The requester sends one ciphertext per class group holding the weights tiled with period D
(``HESpec.model_layout(w, 0)``), encoded at the model scale divided by the L/D copies, and
encrypts it with the **public key** under a SEAL context whose PRNG is Blake2xb seeded from a
secret ``seed``: whoever holds (weights, seed) re-encrypts the same bytes (an owner compares them
with the digest the processors received before it releases its noise, docs/privacy.md), and
nobody without the seed learns anything (the seed must stay secret from processors: with it,
the randomness and so the model follow from the ciphertext). A fixed-seed SEAL PRNG factory
hands every encryption the same stream, so two ciphertexts from one seed would share their
randomness and their difference would be a plaintext; each ciphertext therefore gets its own
seed, derived from (seed, context, epoch, index).

Before use, every processor (every worker of its pool) projects each group's ciphertext: it
adds the rotations by r*D, 2r*D, ..., r*L/2 (the all-reduce's keys), which leaves in every slot
the sum of the L/D slots that must hold one weight, and relabels the scale to the model scale,
which divides by L/D exactly and costs no level. Whatever the requester encrypted, the processor
then holds the well-formed model of the averaged weights. The diagonals the program multiplies
follow by left rotations (``M[b] = rot(M[b - low(b)], r*low(b))``). All of it is SEAL's
evaluator on fixed inputs: deterministic, so replicas stay byte-identical.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as sa

from fedmarket.errors import ConfigError
from fedmarket.he import wire
from fedmarket.he._seal import TOP, SealRuntime, dump
from fedmarket.he.keys import KeyPair, PublicContext
from fedmarket.he.spec import HESpec
from fedmarket.models.kinds import get_kind
from fedmarket.privacy.owner import check_seed

_MODEL_FIELDS = {"epoch": int}


def weight_shape(spec: HESpec) -> tuple[int, int]:
    """The weight matrix of the spec's kind (an mlp's depends on its hidden width)."""
    return get_kind(spec.kind).weight_shape(spec.n_features, spec.n_outputs, spec.hidden)


def check_model_inputs(
    spec: HESpec, weights: np.ndarray, epoch: int, seed: bytes | None
) -> tuple[np.ndarray, bytes]:
    """(weights as float64, the seed to use): ``ConfigError`` for bad arguments; no seed means
    a fresh secret one (then nobody can re-encrypt the model: for tasks without owners' checks)."""
    if type(epoch) is not int or epoch < 0:
        raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
    weights = np.asarray(weights, dtype=np.float64)
    shape = weight_shape(spec)
    if weights.shape != shape or not np.all(np.isfinite(weights)):
        raise ConfigError(f"model weights must be finite with shape {shape}")
    return weights, check_seed(seed)


class SeededEncryptor:
    """Public-key encryptions whose randomness follows from (seed, context, epoch, index).

    Each ciphertext is made under its own SEAL context (a fixed-seed PRNG factory repeats its
    stream for every encryption); the context holds only the key and top levels (~5 ms at
    N = 8192). Lower levels are reached by a modulus switch, which is deterministic.
    """

    def __init__(self, context: PublicContext, seed: bytes, epoch: int) -> None:
        self._context = context
        self._prefix = b"fedmarket/model-seed/v5" + context.digest + epoch.to_bytes(8, "big")
        self._key = seed
        self._count = 0

    def _words(self) -> list[int]:
        material = hashlib.blake2b(
            self._prefix + self._count.to_bytes(4, "big"), key=self._key, digest_size=64
        ).digest()
        self._count += 1
        return [int.from_bytes(material[8 * i : 8 * i + 8], "little") for i in range(8)]

    def encrypt(self, values: np.ndarray, level: int, scale: float) -> sa.Ciphertext:
        runtime: SealRuntime = self._context.runtime
        preset = runtime.spec.preset
        parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(preset.poly_modulus_degree)
        parms.set_coeff_modulus(
            sa.CoeffModulus.Create(preset.poly_modulus_degree, list(preset.coeff_mod_bit_sizes))
        )
        parms.set_random_generator(sa.Blake2xbPRNGFactory(self._words()))
        seeded = sa.SEALContext(parms, False, runtime.security_level)
        ct = sa.Ciphertext()
        top = len(preset.coeff_mod_bit_sizes) - 1
        sa.Encryptor(seeded, self._context.public_key).encrypt(
            runtime.encode(values, top, scale), ct
        )
        if level == top:
            return ct
        out = sa.Ciphertext()
        runtime.evaluator.mod_switch_to(ct, runtime.parms_id[level], out)
        return out


def compact_scale(context: PublicContext) -> float:
    """The compact model's scale: the model scale over the L/D copies the processor adds."""
    return context.runtime.scales.model / context.spec.model_copies


def encrypt_model(
    context: PublicContext | KeyPair,
    weights: np.ndarray,
    *,
    epoch: int,
    seed: bytes | None = None,
) -> bytes:
    """The model message for one epoch (requester), or its re-encryption from a revealed
    (weights, seed) (an owner checking it): the same inputs give the same bytes.

    ``weights`` as ``weight_shape(spec)`` (for the linear kinds (n_outputs, n_features + 1),
    bias last); ``seed`` 16..64 secret bytes (None: a fresh one nobody else knows).
    """
    public = context.public if isinstance(context, KeyPair) else context
    spec = public.spec
    weights, seed = check_model_inputs(spec, weights, epoch, seed)
    encryptor = SeededEncryptor(public, seed, epoch)
    if spec.is_mlp:
        from fedmarket.he import mlp

        payloads = mlp.encrypt_model(public, weights, encryptor)
    else:
        if spec.is_logistic:
            weights = spec.poly.kappa * weights
        scale = compact_scale(public)
        payloads = []
        for group in range(spec.n_groups):
            rows = weights[group * spec.class_lanes : (group + 1) * spec.class_lanes]
            values = spec.to_physical(spec.model_layout(rows, 0))
            payloads.append(dump(encryptor.encrypt(values, TOP, scale)))
    return wire.pack(wire.Kind.MODEL, public.digest, {"epoch": epoch}, payloads)


def model_bytes_limit(spec: HESpec) -> int:
    count = spec.n_groups
    bound = wire.ciphertext_bytes_bound(spec.preset.poly_modulus_degree, TOP)
    return count * (bound + 4) + wire.MAX_META_BYTES + 4096


def average_copies(
    context: PublicContext, ct: sa.Ciphertext, first: int, stop: int, scale: float
) -> sa.Ciphertext:
    """ct + rot(ct, first) + rot(., 2 first) + ... (strides < stop), with the scale relabelled
    to ``scale``: each slot becomes the average of its stop/first copies (exact when the
    ciphertext was encoded at ``scale`` / copies), whatever the copies held."""
    runtime = context.runtime
    stride = first
    while stride < stop:
        rotated = sa.Ciphertext()
        runtime.evaluator.rotate_vector(ct, stride, context.galois_keys, rotated)
        total = sa.Ciphertext()
        runtime.evaluator.add(ct, rotated, total)
        ct, stride = total, stride * 2
    # a fresh ciphertext when there were copies to add; with none the scale is already this
    ct.scale = scale
    return ct


def expand_diagonals(
    context: PublicContext, compact: sa.Ciphertext, columns: range | tuple[int, ...]
) -> dict[int, sa.Ciphertext]:
    """The model diagonals ``columns`` (and those they are built from) from the projected
    compact ciphertext: M[0] = it, M[b] = rot(M[b - low(b)], r*low(b))."""
    spec = context.spec
    needed: set[int] = set()
    for b in columns:
        while b not in needed:
            needed.add(b)
            b -= b & -b
    out = {0: compact}
    for b in sorted(needed - {0}):
        low = b & -b
        rotated = sa.Ciphertext()
        context.runtime.evaluator.rotate_vector(
            out[b - low], spec.class_lanes * low, context.galois_keys, rotated
        )
        out[b] = rotated
    return out


@dataclass(frozen=True)
class EncryptedModel:
    """A parsed, checked and projected model: ``diagonals[group][i]`` is model diagonal
    ``columns[i]`` of that class group, at the top level (every diagonal unless parsed with
    ``columns``)."""

    epoch: int
    diagonals: tuple[tuple[sa.Ciphertext, ...], ...]
    columns: tuple[int, ...]

    def pick(self, group: int, columns: range) -> tuple[sa.Ciphertext, ...]:
        """The group's model diagonals for ``columns`` (which must have been expanded)."""
        index = {column: i for i, column in enumerate(self.columns)}
        return tuple(self.diagonals[group][index[column]] for column in columns)

    @staticmethod
    def envelope(context: PublicContext, data: bytes, *, party: str) -> tuple[int, wire.Envelope]:
        """Check the envelope and metadata only, without parsing ciphertexts: (epoch, envelope)."""
        spec = context.spec
        envelope = wire.unpack(
            data,
            kind=wire.Kind.MODEL,
            party=party,
            max_bytes=model_bytes_limit(spec),
            digest=context.digest,
            count=spec.n_groups,
            max_payload_bytes=wire.ciphertext_bytes_bound(spec.preset.poly_modulus_degree, TOP),
        )
        meta = wire.require_fields(envelope.meta, _MODEL_FIELDS, what="model", party=party)
        return meta["epoch"], envelope

    @classmethod
    def from_bytes(
        cls,
        context: PublicContext,
        data: bytes,
        *,
        party: str = "requester",
        groups: list[int] | None = None,
        columns: list[int] | None = None,
    ) -> EncryptedModel:
        """Parse, check and project the model; ``groups`` and ``columns`` expand only those
        class groups and diagonals (a part of the program needs only its own)."""
        spec = context.spec
        runtime = context.runtime
        epoch, envelope = cls.envelope(context, data, party=party)
        wanted = set(range(spec.n_groups) if groups is None else groups)
        loaded = tuple(range(spec.model_baby)) if columns is None else tuple(sorted(set(columns)))
        r = spec.class_lanes
        diagonals = []
        for group in range(spec.n_groups):
            if group not in wanted:
                diagonals.append(())
                continue
            compact = runtime.load_ciphertext(
                envelope.payloads[group],
                level=TOP,
                scale=compact_scale(context),
                what=f"model[{group}]",
                party=party,
            )
            projected = average_copies(
                context, compact, r * spec.lanes, r * spec.length, runtime.scales.model
            )
            expanded = expand_diagonals(context, projected, loaded)
            diagonals.append(tuple(expanded[b] for b in loaded))
        return cls(epoch, tuple(diagonals), loaded)

    def ciphertexts(self) -> list[sa.Ciphertext]:
        return [ct for row in self.diagonals for ct in row]
