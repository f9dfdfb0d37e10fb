"""The plaintext twin mirrors CKKS in privacy: the same refusals through the same API, and the
same owners' noise, so its noisy totals are the numbers CKKS decrypts (up to CKKS error)."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest

from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.he.crypto import CKKS
from fedmarket.models.kinds import get_kind
from fedmarket.privacy.owner import clip_rows
from fedmarket.protocol.crypto import Crypto, Privacy, PublicKeys, TaskKeys
from fedmarket.protocol.plaintext import Plaintext

PRIVATE = Privacy(min_block_points=64, clip_norm=1.0, noise=True)
SEED = bytes(range(32))
CRYPTOS = {"plaintext": Plaintext, "ckks": CKKS}


@functools.cache
def task(name: str) -> tuple[TaskKeys, PublicKeys]:
    crypto: Crypto = CRYPTOS[name]()
    keys = crypto.keygen(
        kind=get_kind("logistic"),
        n_features=5,
        n_outputs=1,
        preset="n8192",
        expected_samples=300,
        privacy=PRIVATE,
    )
    return keys, crypto.public(keys.public.data, party="requester")


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return clip_rows(rng.uniform(-1, 1, (n, 5)), 1.0), rng.integers(0, 2, n).astype(float)


@pytest.mark.parametrize("name", sorted(CRYPTOS))
def test_the_same_refusals(name: str) -> None:
    keys, public = task(name)
    assert (public.layout.min_block_points, public.layout.clip, public.layout.private) == (
        64,
        1.0,
        True,
    )
    X, y = data(100)
    with pytest.raises(ConfigError, match=r"64\.\.\d+ samples, got 63 \(the task's floor"):
        public.encrypt_block(X[:63], y[:63], block_id="tiny")
    loud = X.copy()
    loud[0] = 1.0
    with pytest.raises(ConfigError, match="over the task's clip"):
        public.encrypt_block(loud, y, block_id="loud")
    with pytest.raises(ConfigError, match="seed"):
        keys.encrypt_model(np.zeros((1, 6)), epoch=0, seed=b"short")
    block = public.encrypt_block(X, y, block_id="b")
    model = keys.encrypt_model(np.zeros((1, 6)), epoch=0, seed=SEED)
    with pytest.raises(UntrustedInputError, match="without its owner's noise"):
        public.run_program(model, block, model_party="requester", block_party="o")
    with public.pool(workers=0) as pool:
        pool.add_block(block, party="o")
        with pytest.raises(UntrustedInputError, match="without the owners' noise"):
            pool.run_epoch(model, party="requester")
        assert pool.run_epoch(model, party="requester", noise={}) == {}
    wrong = public.encrypt_noise(block_id="b", epoch=1, std=1.0, rng=random.Random(0))
    with pytest.raises(UntrustedInputError, match="epoch 1"):
        public.run_program(model, block, noise=wrong, model_party="relay", block_party="o")


def test_the_twin_decrypts_what_ckks_decrypts() -> None:
    X, y = data(200, seed=3)
    W = get_kind("logistic").certify(np.random.default_rng(4).normal(0, 2, (1, 6)), 5, 1.0)
    totals = {}
    for name in CRYPTOS:
        keys, public = task(name)
        block = public.encrypt_block(X, y, block_id="b")
        model = keys.encrypt_model(W, epoch=2, seed=SEED)
        noise = public.encrypt_noise(block_id="b", epoch=2, std=5.0, rng=random.Random(11))
        result = public.run_program(model, block, noise=noise, model_party="r", block_party="o")
        totals[name] = keys.decrypt_result(result, party="p", epoch=2, block_id="b").sums
    clean = get_kind("logistic").gradient_sums(W, X, y[:, None])
    assert np.max(np.abs(totals["plaintext"] - clean)) > 1.0  # the noise is there
    np.testing.assert_allclose(totals["ckks"], totals["plaintext"], atol=0.1)
