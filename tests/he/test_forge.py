"""Forged results (public context only) pass every format check of ``decrypt_result``."""

from __future__ import annotations

import numpy as np
import pytest

from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.he import (
    HESpec,
    KeyPair,
    PublicContext,
    add_noise,
    decrypt_result,
    encrypt_block,
    encrypt_model,
    forge_result,
    max_forgeable_total,
    restamp,
    run_program,
    scale_result,
    wire,
)

RTOL = 1e-3
ATOL = 1e-6


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[KeyPair, PublicContext]]:
    """A key pair and the processor's view of its public context, per model kind."""
    out = {}
    for name, spec in (
        ("logistic", HESpec.for_task(kind="logistic", n_features=5)),
        (  # 3 classes: one class lane each (lanes divide the outputs), 3 groups
            "multiclass",
            HESpec.for_task(kind="multiclass", n_features=5, n_outputs=3, expected_samples=100),
        ),
    ):
        keypair = KeyPair.generate(spec)
        out[name] = (keypair, PublicContext.from_bytes(keypair.public.data))
    return out


def honest_result(keypair: KeyPair, public: PublicContext, n: int, epoch: int) -> bytes:
    spec = public.spec
    rng = np.random.default_rng(7)
    X = rng.uniform(-1.0, 1.0, (n, spec.n_features))
    labels = rng.integers(0, max(2, spec.n_outputs), n)
    if spec.n_outputs > 1:
        labels = np.eye(spec.n_outputs)[labels]
    weights = rng.normal(0.0, 0.4, (spec.n_outputs, spec.n_features + 1))
    block = encrypt_block(public, X, labels, block_id="owner/0")
    return run_program(public, encrypt_model(keypair, weights, epoch=epoch), block)


@pytest.mark.parametrize("name", ["logistic", "multiclass"])
def test_forged_totals_decrypt_to_the_chosen_values(
    keys: dict[str, tuple[KeyPair, PublicContext]], name: str
) -> None:
    keypair, public = keys[name]
    spec = public.spec
    totals = np.random.default_rng(1).uniform(-300.0, 300.0, (spec.n_outputs, spec.n_features + 1))
    data = forge_result(public, block_id="owner/3", epoch=4, n_samples=100, totals=totals)
    result = decrypt_result(keypair, data, party="cheat", epoch=4, block_ids=["owner/3"])
    assert (result.block_id, result.epoch, result.n_samples) == ("owner/3", 4, 100)
    np.testing.assert_allclose(result.sums, totals, rtol=RTOL, atol=ATOL)
    # The same size as an honest result: nothing on the wire tells them apart.
    honest = honest_result(keypair, public, 100, epoch=4)
    assert len(data) == len(honest)


@pytest.mark.parametrize("name", ["logistic", "multiclass"])
def test_scale_noise_and_restamp_of_a_real_result(
    keys: dict[str, tuple[KeyPair, PublicContext]], name: str
) -> None:
    keypair, public = keys[name]
    spec = public.spec
    data = honest_result(keypair, public, 100, epoch=2)
    honest = decrypt_result(keypair, data, party="p", epoch=2).sums
    assert np.max(np.abs(honest)) > 1.0
    for factor in (-1, 3):
        scaled = decrypt_result(
            keypair, scale_result(public, data, factor, party="p"), party="p", epoch=2
        )
        np.testing.assert_allclose(scaled.sums, factor * honest, rtol=RTOL, atol=1e-4)
    noise = np.full((spec.n_outputs, spec.n_features + 1), 5.0)
    noisy = decrypt_result(keypair, add_noise(public, data, noise, party="p"), party="p", epoch=2)
    np.testing.assert_allclose(noisy.sums, honest + noise, rtol=RTOL, atol=1e-4)

    stale = restamp(public, data, epoch=9, party="p")
    before = wire.unpack(data, kind=wire.Kind.RESULT, party="p", max_bytes=len(data))
    after = wire.unpack(stale, kind=wire.Kind.RESULT, party="p", max_bytes=len(stale))
    assert after.payloads == before.payloads and after.digest == before.digest
    assert after.meta == {**before.meta, "epoch": 9}
    replayed = decrypt_result(keypair, stale, party="p", epoch=9)
    np.testing.assert_array_equal(replayed.sums, honest)


def test_forge_rejects_bad_inputs(keys: dict[str, tuple[KeyPair, PublicContext]]) -> None:
    _, public = keys["logistic"]
    good = np.zeros((1, 6))
    with pytest.raises(ConfigError, match="shape"):
        forge_result(public, block_id="b", epoch=0, n_samples=10, totals=np.zeros((1, 5)))
    with pytest.raises(ConfigError, match="do not fit"):
        forge_result(
            public, block_id="b", epoch=0, n_samples=10, totals=good + max_forgeable_total(public)
        )
    with pytest.raises(ConfigError, match="n_samples"):
        forge_result(public, block_id="b", epoch=0, n_samples=0, totals=good)
    data = forge_result(public, block_id="b", epoch=0, n_samples=10, totals=good)
    for factor in (0, 101):
        with pytest.raises(ConfigError, match="factor"):
            scale_result(public, data, factor, party="p")
    # Inputs are parsed with the checked loaders: a truncated message names its sender.
    with pytest.raises(UntrustedInputError, match="mallory"):
        restamp(public, data[:-10], epoch=1, party="mallory")
