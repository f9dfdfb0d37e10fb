"""The requester only ever learns block totals: every decrypted slot is a total."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal.sealapi as sa

from fedmarket.errors import UntrustedInputError
from fedmarket.he import (
    EncryptedBlock,
    EncryptedModel,
    decrypt_result,
    encrypt_block,
    encrypt_model,
    process_block,
    wire,
)
from fedmarket.he._seal import OUT, dump
from fedmarket.models import gradient_sums

from .conftest import Setup, processor_weights, random_data, random_weights, setup_for


def decrypt_all_slots(setup: Setup, ct: sa.Ciphertext) -> np.ndarray:
    plain = sa.Plaintext()
    setup.keypair.decryptor.decrypt(ct, plain)
    return setup.public.runtime.decode(plain)


@pytest.mark.parametrize("name", ["logistic", "multiclass", "copies", "parts"])
def test_every_decrypted_slot_is_a_block_total_or_zero(name: str) -> None:
    setup = setup_for(name)
    spec = setup.spec
    X, labels, targets = random_data(spec, 700, seed=11)
    model_bytes = encrypt_model(setup.keypair, random_weights(spec), epoch=1)
    weights = processor_weights(setup, model_bytes)  # what the projected model holds
    model = EncryptedModel.from_bytes(setup.public, model_bytes)
    block = EncryptedBlock.from_bytes(
        setup.public, encrypt_block(setup.public, X, labels, block_id="p")
    )
    totals = np.zeros((spec.n_groups * spec.class_lanes, spec.lanes))  # padding lanes stay 0
    totals[: spec.n_outputs, : spec.n_features + 1] = gradient_sums(
        spec.kind, weights, X, targets, spec.poly
    )
    for group, ct in enumerate(process_block(setup.public, model, block)):
        slots = decrypt_all_slots(setup, ct)  # all 4096 slots, no averaging
        r = spec.class_lanes
        for slot, value in enumerate(slots):
            cls, lane = group * r + slot % r, (slot // r) % spec.lanes
            assert abs(value - totals[cls, lane]) < 0.1 + 1e-3 * abs(totals[cls, lane])


def _forged_result(setup: Setup, values: np.ndarray, scale: float) -> bytes:
    """What a cheating processor could send: per-sample values, encrypted at the output level."""
    runtime = setup.public.runtime
    ct = sa.Ciphertext()
    sa.Encryptor(runtime.context, setup.public.public_key).encrypt(
        runtime.encode(values, OUT, scale), ct
    )
    meta = {"block_id": "p", "epoch": 1, "n_samples": 700}
    return wire.pack(wire.Kind.RESULT, setup.public.digest, meta, [dump(ct)])


def test_a_result_of_per_sample_values_is_refused(logistic: Setup) -> None:
    per_sample = np.random.default_rng(0).uniform(-1, 1, logistic.spec.slots)
    forged = _forged_result(logistic, per_sample, logistic.public.runtime.scales.out)
    with pytest.raises(UntrustedInputError, match="not a vector of block totals"):
        decrypt_result(logistic.keypair, forged, party="processor-7")


def test_returning_the_owner_data_is_refused(
    logistic: Setup, logistic_block: tuple[bytes, np.ndarray, np.ndarray]
) -> None:
    """The sum-layout data is at the output level; its scale gives it away."""
    block = EncryptedBlock.from_bytes(logistic.public, logistic_block[0])
    meta = {"block_id": "owner/0", "epoch": 1, "n_samples": 1000}
    stolen = wire.pack(wire.Kind.RESULT, logistic.public.digest, meta, [dump(block.sum_data[0][1])])
    with pytest.raises(UntrustedInputError, match="does not match the task's parameters"):
        decrypt_result(logistic.keypair, stolen, party="processor-7")
