"""The requester's CKKS key pair and the public context it publishes.

The public context holds the spec, the public key (for data owners), the relinearisation keys
and exactly the Galois keys the processor's program rotates by (for processors) - never the
secret key. Its sha256 identifies the task's cryptographic setup: the requester commits it on
chain and every HE message carries it.
"""

from __future__ import annotations

import hashlib
import json

import tenseal.sealapi as sa

from fedmarket.errors import UntrustedInputError
from fedmarket.he import wire
from fedmarket.he._seal import SealRuntime, dump, runtime_for
from fedmarket.he.spec import HESpec

# Keys are seed-compressed (about half size); these bounds are for the uncompressed worst case.
_KEY_SLACK = 1 << 20
# Above any valid context: the largest preset (N=16384) with a dozen rotation keys is ~100 MB
# uncompressed. The exact per-key limits follow from the spec once it is parsed.
MAX_PUBLIC_CONTEXT_BYTES = 256 * 1024 * 1024


def _key_bytes_bound(spec: HESpec) -> tuple[int, int, int]:
    n = spec.preset.poly_modulus_degree
    key_primes = len(spec.preset.coeff_mod_bit_sizes)
    one = 2 * n * key_primes * 8  # one key-switching ciphertext at the key level
    data_primes = key_primes - 1
    public = one + _KEY_SLACK
    relin = data_primes * one + _KEY_SLACK
    galois = len(spec.rotation_steps()) * data_primes * one + _KEY_SLACK
    return public, relin, galois


class PublicContext:
    """A validated public context: its bytes, sha256, spec, SEAL runtime and public keys."""

    __slots__ = ("data", "digest", "galois_keys", "public_key", "relin_keys", "runtime", "spec")

    def __init__(
        self,
        data: bytes,
        spec: HESpec,
        runtime: SealRuntime,
        public_key: sa.PublicKey,
        relin_keys: sa.RelinKeys,
        galois_keys: sa.GaloisKeys,
    ) -> None:
        self.data = data
        self.digest = hashlib.sha256(data).digest()
        self.spec = spec
        self.runtime = runtime
        self.public_key = public_key
        self.relin_keys = relin_keys
        self.galois_keys = galois_keys

    @property
    def sha256(self) -> str:
        """Hex digest of the serialised context (what the requester commits on chain)."""
        return self.digest.hex()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        party: str = "requester",
        expected_sha256: str | None = None,
        max_bytes: int = MAX_PUBLIC_CONTEXT_BYTES,
    ) -> PublicContext:
        """Parse and check a public context received from ``party``."""
        if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
            raise UntrustedInputError(
                "public context does not match the committed sha256", party=party
            )
        # The spec is needed for the exact limits, so bound the first pass by the largest
        # context any valid spec can have.
        envelope = wire.unpack(
            data,
            kind=wire.Kind.PUBLIC_CONTEXT,
            party=party,
            max_bytes=max_bytes,
            count=3,
        )
        meta = wire.require_fields(
            envelope.meta, {"spec": dict}, what="public context", party=party
        )
        try:
            spec = HESpec.from_json(meta["spec"])
        except ValueError as exc:
            raise UntrustedInputError(f"public context: {exc}", party=party) from None
        if envelope.digest != wire.NO_DIGEST:
            raise UntrustedInputError("public context: digest field must be empty", party=party)
        for payload, bound, name in zip(
            envelope.payloads,
            _key_bytes_bound(spec),
            ("public key", "relinearisation keys", "Galois keys"),
            strict=True,
        ):
            if len(payload) > bound:
                raise UntrustedInputError(f"public context: {name} too large", party=party)
        runtime = runtime_for(spec)
        public_bytes, relin_bytes, galois_bytes = envelope.payloads
        return cls(
            bytes(data),
            spec,
            runtime,
            runtime.load_public_key(public_bytes, party),
            runtime.load_relin_keys(relin_bytes, party),
            runtime.load_galois_keys(galois_bytes, party),
        )


class KeyPair:
    """The requester's secret key with its public context. Never send this object's bytes."""

    __slots__ = ("decryptor", "public", "secret_key")

    def __init__(self, public: PublicContext, secret_key: sa.SecretKey) -> None:
        self.public = public
        self.secret_key = secret_key
        self.decryptor = sa.Decryptor(public.runtime.context, secret_key)

    @property
    def spec(self) -> HESpec:
        return self.public.spec

    @classmethod
    def generate(cls, spec: HESpec) -> KeyPair:
        runtime = runtime_for(spec)
        keygen = sa.KeyGenerator(runtime.context)
        # sealapi binds no seed-compressed public key, so that one key is stored in full;
        # the relinearisation and Galois keys (the bulk) are seed-compressed.
        public_key = sa.PublicKey()
        keygen.create_public_key(public_key)
        payloads = [
            dump(public_key),
            dump(keygen.create_relin_keys()),
            dump(keygen.create_galois_keys(list(runtime.galois_elements))),
        ]
        data = wire.pack(
            wire.Kind.PUBLIC_CONTEXT, wire.NO_DIGEST, {"spec": spec.to_json()}, payloads
        )
        return cls(PublicContext.from_bytes(data, party="self"), keygen.secret_key())

    def to_bytes(self) -> bytes:
        """The secret key and public context, for the requester's own storage only."""
        return wire.pack(
            wire.Kind.KEY_PAIR,
            self.public.digest,
            {},
            [dump(self.secret_key), self.public.data],
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "key file") -> KeyPair:
        envelope = wire.unpack(
            data,
            kind=wire.Kind.KEY_PAIR,
            party=source,
            max_bytes=MAX_PUBLIC_CONTEXT_BYTES + (1 << 20),
            count=2,
        )
        wire.require_fields(envelope.meta, {}, what="key pair", party=source)
        secret_bytes, public_bytes = envelope.payloads
        public = PublicContext.from_bytes(public_bytes, party=source)
        if public.digest != envelope.digest:
            raise UntrustedInputError("key pair: public context digest mismatch", party=source)
        return cls(public, public.runtime.load_secret_key(secret_bytes, source))


def describe(context: PublicContext) -> str:
    """One line for logs: preset, security, sizes, digest."""
    spec = context.spec
    return json.dumps(
        {
            "preset": spec.preset.name,
            "security_bits": spec.preset.security_bits,
            "bytes": len(context.data),
            "rotations": list(spec.rotation_steps()),
            "sha256": context.sha256,
        }
    )
