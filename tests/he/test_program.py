"""The processor's program against the plaintext reference, padding, and input immutability."""

from __future__ import annotations

import numpy as np
import pytest

from fedmarket.he import (
    EncryptedBlock,
    EncryptedModel,
    decrypt_result,
    encrypt_block,
    encrypt_model,
    process_block,
    run_program,
)
from fedmarket.he._seal import OUT, dump
from fedmarket.models import gradient_sums

from .conftest import (
    MODEL_ATOL,
    SETUPS,
    Setup,
    processor_weights,
    random_data,
    random_weights,
    setup_for,
)

# CKKS noise on a block total: about 0.01-0.05 for 4096 samples (docs/he.md); the totals
# themselves are O(n). A per-mille relative term covers the scale of each total.
ATOL = 0.1
RTOL = 1e-3


def encrypted_sums(setup: Setup, block: bytes, model: bytes) -> np.ndarray:
    result = run_program(setup.public, model, block)
    return decrypt_result(setup.keypair, result, party="processor", epoch=1).sums


@pytest.mark.parametrize("name", SETUPS)
def test_encrypted_sums_match_plaintext(name: str) -> None:
    setup = setup_for(name)
    X, labels, targets = random_data(setup.spec, setup.spec.block_size, seed=3)
    weights = random_weights(setup.spec)
    block = encrypt_block(setup.public, X, labels, block_id="full")
    model = encrypt_model(setup.keypair, weights, epoch=1)
    # The processor computes with the projected compact model: the requester's weights up to
    # the model's precision, and the program's totals are exact for those weights.
    used = processor_weights(setup, model)
    np.testing.assert_allclose(used, weights, rtol=0, atol=MODEL_ATOL)
    expected = gradient_sums(setup.spec.kind, used, X, targets, setup.spec.poly)
    np.testing.assert_allclose(encrypted_sums(setup, block, model), expected, rtol=RTOL, atol=ATOL)


def test_padding_adds_nothing(logistic: Setup) -> None:
    """A partial block's sums are those of its real samples, and blocks add up."""
    X, labels, targets = random_data(logistic.spec, 1000, seed=5)
    model = encrypt_model(logistic.keypair, random_weights(logistic.spec, scale=1.0), epoch=1)
    weights = processor_weights(logistic, model)
    expected = gradient_sums("logistic", weights, X, targets, logistic.spec.poly)
    whole = encrypted_sums(logistic, encrypt_block(logistic.public, X, labels, block_id="a"), model)
    halves = sum(
        encrypted_sums(
            logistic, encrypt_block(logistic.public, X[part], labels[part], block_id="h"), model
        )
        for part in (slice(0, 300), slice(300, 1000))
    )
    np.testing.assert_allclose(whole, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(halves, expected, rtol=RTOL, atol=2 * ATOL)
    # The bias lane sums the residual over real samples only: 1000, not 4096, terms.
    assert abs(whole[0, -1] - expected[0, -1]) < ATOL


def test_program_never_changes_its_inputs(
    multiclass: Setup, logistic: Setup, logistic_block: tuple[bytes, np.ndarray, np.ndarray]
) -> None:
    for setup, block_bytes in (
        (logistic, logistic_block[0]),
        (
            multiclass,
            encrypt_block(multiclass.public, *random_data(multiclass.spec, 50)[:2], block_id="b"),
        ),
    ):
        model = EncryptedModel.from_bytes(
            setup.public, encrypt_model(setup.keypair, random_weights(setup.spec), epoch=2)
        )
        block = EncryptedBlock.from_bytes(setup.public, block_bytes)
        inputs = model.ciphertexts() + block.ciphertexts()
        before = [dump(ct) for ct in inputs]
        levels = [ct.coeff_modulus_size() for ct in inputs]
        process_block(setup.public, model, block)
        assert [dump(ct) for ct in inputs] == before
        assert [ct.coeff_modulus_size() for ct in inputs] == levels


def test_result_is_one_compact_ciphertext_per_class_group(multiclass: Setup) -> None:
    X, labels, _ = random_data(multiclass.spec, 200)
    model = EncryptedModel.from_bytes(
        multiclass.public,
        encrypt_model(multiclass.keypair, random_weights(multiclass.spec), epoch=0),
    )
    block = EncryptedBlock.from_bytes(
        multiclass.public, encrypt_block(multiclass.public, X, labels, block_id="c")
    )
    results = process_block(multiclass.public, model, block)
    assert len(results) == multiclass.spec.n_groups == 2
    for ct in results:
        # One prime left: 2 * 8192 * 8 bytes before compression, whatever the block size.
        assert ct.coeff_modulus_size() == OUT
        assert ct.scale == multiclass.public.runtime.scales.out
