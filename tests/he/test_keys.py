"""Key pair and public context: what is published, its hash, and what it must not contain."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedmarket.errors import UntrustedInputError
from fedmarket.he import KeyPair, PublicContext, decrypt_result, encrypt_model, run_program, wire

from .conftest import Setup, random_weights


def test_public_context_holds_public_keys_and_only_the_needed_rotations(logistic: Setup) -> None:
    envelope = wire.unpack(
        logistic.public.data,
        kind=wire.Kind.PUBLIC_CONTEXT,
        party="test",
        max_bytes=wire.ABSOLUTE_MAX_BYTES,
    )
    assert set(envelope.meta) == {"spec"}
    assert len(envelope.payloads) == 3  # public key, relinearisation keys, Galois keys
    assert logistic.public.galois_keys.size() == len(logistic.spec.rotation_steps())
    # The secret key (which the key pair's own serialisation carries) is not among them.
    secret = wire.unpack(
        logistic.keypair.to_bytes(), kind=wire.Kind.KEY_PAIR, party="test", max_bytes=1 << 32
    ).payloads[0]
    assert all(secret not in payload for payload in envelope.payloads)
    assert secret not in logistic.public.data


def test_sha256_identifies_the_context(logistic: Setup) -> None:
    assert logistic.public.sha256 == hashlib.sha256(logistic.public.data).hexdigest()
    again = PublicContext.from_bytes(logistic.public.data, expected_sha256=logistic.public.sha256)
    assert again.digest == logistic.public.digest
    with pytest.raises(UntrustedInputError, match="committed sha256"):
        PublicContext.from_bytes(logistic.public.data, expected_sha256="00" * 32)


def test_each_key_generation_is_a_new_context(logistic: Setup) -> None:
    other = KeyPair.generate(logistic.spec)
    assert other.public.sha256 != logistic.public.sha256


def test_key_pair_round_trips_through_bytes(
    logistic: Setup, logistic_block: tuple[bytes, np.ndarray, np.ndarray]
) -> None:
    restored = KeyPair.from_bytes(logistic.keypair.to_bytes())
    assert restored.public.sha256 == logistic.public.sha256
    model = encrypt_model(restored, random_weights(logistic.spec), epoch=4)
    result = run_program(logistic.public, model, logistic_block[0])
    original = decrypt_result(logistic.keypair, result, party="p", epoch=4)
    np.testing.assert_allclose(
        decrypt_result(restored, result, party="p", epoch=4).sums, original.sums
    )


def test_galois_keys_beyond_the_program_are_refused(logistic: Setup) -> None:
    """A context with extra rotation keys is not what the spec asks for."""
    import tenseal.sealapi as sa

    from fedmarket.he._seal import dump, galois_element

    runtime = logistic.public.runtime
    keygen = sa.KeyGenerator(runtime.context)
    steps = [*logistic.spec.rotation_steps(), 3]
    extra = dump(keygen.create_galois_keys([galois_element(s, logistic.spec.slots) for s in steps]))
    with pytest.raises(UntrustedInputError, match="needs exactly"):
        runtime.load_galois_keys(extra, "requester")
