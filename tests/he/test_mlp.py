"""The MLP program: totals equal plaintext, byte-identical replicas, hostile bytes refused."""

from __future__ import annotations

import functools
import random
import subprocess
import sys

import numpy as np
import pytest
import tenseal.sealapi as sa

from fedmarket.errors import UntrustedInputError
from fedmarket.he import (
    HESpec,
    KeyPair,
    ProcessorPool,
    PublicContext,
    decrypt_result,
    encrypt_block,
    encrypt_model,
    encrypt_noise,
    forge_result,
    max_abs_sum,
    restamp,
    run_program,
    scale_result,
    train_encrypted,
    wire,
)
from fedmarket.he import mlp as he_mlp
from fedmarket.he._seal import dump
from fedmarket.he.program import pack_result
from fedmarket.models import TrainConfig, fit_plaintext, get_kind, score
from fedmarket.privacy.noise import draw_noise

D, K, H, N = 5, 3, 4, 300
# |encrypted - plaintext| per total at these sizes: ~1e-3 (rotations at the sums' scale)
TOLERANCE = 5e-3


@functools.cache
def setup() -> tuple[KeyPair, PublicContext]:
    spec = HESpec.for_task(kind="mlp", n_features=D, n_outputs=K, hidden=H)
    keypair = KeyPair.generate(spec)
    return keypair, PublicContext.from_bytes(keypair.public.data)


@functools.cache
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes, bytes]:
    """(X, targets, weights, block, model) for epoch 1."""
    keypair, public = setup()
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (N, D))
    targets = np.eye(K)[rng.integers(0, K, N)]
    weights = get_kind("mlp").init_weights(D, K, H, seed=1)
    weights[:, D + 1 :] = rng.normal(0, 0.5, (H, K))
    block = encrypt_block(public, X, targets, block_id="owner/0")
    return X, targets, weights, block, encrypt_model(keypair, weights, epoch=1)


def test_spec_and_preset() -> None:
    keypair, _ = setup()
    spec = keypair.spec
    assert spec.preset.name == "n16384-mlp" and spec.preset.security_bits == 128
    assert (spec.class_lanes, spec.hidden, spec.n_groups) == (4, H, 1)
    assert HESpec.from_json(spec.to_json()) == spec
    # the linear kinds' spec bytes carry no hidden field
    assert "hidden" not in HESpec.for_task(kind="logistic", n_features=3).to_json()


def test_totals_equal_plaintext_gradient() -> None:
    keypair, public = setup()
    X, targets, weights, block, model = data()
    result = run_program(public, model, block)
    sums = decrypt_result(
        keypair, result, party="p", epoch=1, bound=max_abs_sum(keypair, N, weights)
    )
    expected = get_kind("mlp").gradient_sums(weights, X, targets)
    assert sums.sums.shape == expected.shape == (H, D + 1 + K)
    assert np.max(np.abs(sums.sums - expected)) < TOLERANCE


def test_identical_bytes_across_processes_and_workers() -> None:
    _, public = setup()
    _, _, _, block, model = data()
    here = run_program(public, model, block)
    script = (
        "import sys; from fedmarket.he import PublicContext, run_program\n"
        "ctx, model, block = (open(p, 'rb').read() for p in sys.argv[1:4])\n"
        "sys.stdout.buffer.write(run_program(PublicContext.from_bytes(ctx), model, block))\n"
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, blob in (("ctx", public.data), ("model", model), ("block", block)):
            path = Path(tmp) / name
            path.write_bytes(blob)
            paths.append(str(path))
        other = subprocess.run(
            [sys.executable, "-c", script, *paths], capture_output=True, check=True
        ).stdout
    assert other == here
    for workers in (0, 2):
        with ProcessorPool(public.data, workers=workers) as pool:
            pool.add_block(block)
            assert pool.run_epoch(model) == {"owner/0": here}


def test_hostile_inputs_are_refused() -> None:
    _, public = setup()
    _, _, _, block, model = data()
    envelope = wire.unpack(block, kind=wire.Kind.BLOCK, party="t", max_bytes=1 << 32)
    cases = {
        "truncated": block[:-100],
        "oversized": block + bytes(10),
        # a label ciphertext where a z-layout one belongs: wrong level and scale
        "wrong level": wire.pack(
            wire.Kind.BLOCK,
            public.digest,
            envelope.meta,
            [envelope.payloads[-1], *envelope.payloads[1:]],
        ),
        "wrong context": wire.pack(
            wire.Kind.BLOCK, bytes(32), envelope.meta, list(envelope.payloads)
        ),
    }
    for name, bad in cases.items():
        with pytest.raises(UntrustedInputError, match="owner-7") as caught:
            run_program(public, model, bad, block_party="owner-7")
        assert caught.value.party == "owner-7", name
    with pytest.raises(UntrustedInputError, match="requester"):
        run_program(public, model[:-5], block)


def test_result_that_is_not_block_totals_is_refused() -> None:
    keypair, public = setup()
    _, _, _, block, model = data()
    result = run_program(public, model, block)
    meta, payloads, _ = he_mlp.parse_result(public, result, "p")
    # a G2 row whose slots hold different (per-sample) values
    runtime = public.runtime
    ct = sa.Ciphertext()
    values = np.random.default_rng(3).normal(0, 1, public.spec.slots)
    plain = runtime.encode(values, he_mlp.OUT, he_mlp.result_scales(public)[1])
    sa.Encryptor(runtime.context, public.public_key).encrypt(plain, ct)
    forged = pack_result(public, payloads=[payloads[0], dump(ct), *payloads[2:]], **meta)
    with pytest.raises(UntrustedInputError, match="not a vector of block totals"):
        decrypt_result(keypair, forged, party="processor-2")
    with pytest.raises(UntrustedInputError, match="exceed"):
        decrypt_result(keypair, result, party="processor-2", bound=1e-3)
    with pytest.raises(UntrustedInputError, match="epoch"):
        decrypt_result(keypair, restamp(public, result, epoch=5, party="p"), party="p", epoch=1)


def test_forged_and_scaled_results_decrypt_as_chosen() -> None:
    keypair, public = setup()
    _, _, weights, block, model = data()
    totals = np.random.default_rng(4).normal(0, 10, weights.shape)
    forged = forge_result(public, block_id="owner/0", epoch=1, n_samples=N, totals=totals)
    assert np.allclose(decrypt_result(keypair, forged, party="p").sums, totals, atol=1e-3)
    honest = decrypt_result(keypair, run_program(public, model, block), party="p").sums
    doubled = scale_result(public, run_program(public, model, block), 2, party="p")
    assert np.allclose(decrypt_result(keypair, doubled, party="p").sums, 2 * honest, atol=1e-2)


@pytest.mark.slow
def test_small_encrypted_training_matches_plaintext() -> None:
    rng = np.random.default_rng(5)
    centers = rng.normal(0, 0.5, (3, D))
    labels = rng.integers(0, 3, 400)
    X = np.clip(centers[labels] + rng.normal(0, 0.25, (400, D)), -1, 1)
    X_train, y_train, X_val, y_val = X[:300], labels[:300], X[300:], labels[300:]
    config = TrainConfig(epochs=8, hidden=H)
    encrypted = train_encrypted(
        X_train, y_train, kind="mlp", X_val=X_val, y_val=y_val, config=config, workers=0
    )
    plain = fit_plaintext(X_train, y_train, kind="mlp", X_val=X_val, y_val=y_val, config=config)
    assert score(encrypted.model, X_val, y_val) == score(plain.model, X_val, y_val)
    assert plain.history[-1].metric > plain.history[0].metric
    assert np.max(np.abs(encrypted.model.W1 - plain.model.W1)) < 1e-3


def test_owners_noise_is_added_to_the_mlp_totals() -> None:
    """The owners' noise covers both layers' totals (G1 and G2 rows) under encryption."""
    keypair, public = setup()
    _, _, _, block, model = data()
    noise = encrypt_noise(public, block_id="owner/0", epoch=1, std=4.0, rng=random.Random(3))
    drawn, _ = draw_noise((H, D + 1 + K), 4.0, random.Random(3))
    clean = decrypt_result(keypair, run_program(public, model, block), party="p", epoch=1)
    noisy = decrypt_result(
        keypair, run_program(public, model, block, noise=noise), party="p", epoch=1
    )
    assert np.max(np.abs(noisy.sums - clean.sums - drawn)) < TOLERANCE
    with pytest.raises(UntrustedInputError, match="epoch 2, not the model's 1"):
        other = encrypt_noise(public, block_id="owner/0", epoch=2, std=4.0, rng=random.Random())
        run_program(public, model, block, noise=other)
