"""The crypto layer's privacy pieces under real CKKS (docs/privacy.md): the seeded model an owner
re-encrypts and checks, the processor's projection of crafted models, the owners' noise added
under encryption, and the floor and clip every block is held to.

Each test plays the party the defence is against: a requester that sends a model other than the
one it reveals, or a per-slot crafted one; a relay that strips, swaps or replays noise; an owner
(or a requester's spec) that would encrypt a tiny or unclipped block.
"""

from __future__ import annotations

import functools
import hashlib
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tenseal.sealapi as sa

from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.he import wire
from fedmarket.he._seal import TOP, dump
from fedmarket.he.crypto import CKKS, CKKSKeys
from fedmarket.he.model import EncryptedModel, SeededEncryptor, compact_scale
from fedmarket.models import gradient_sums
from fedmarket.models.kinds import get_kind
from fedmarket.privacy.noise import draw_noise
from fedmarket.privacy.owner import check_revealed_model, clip_rows
from fedmarket.protocol.crypto import Privacy, PublicKeys

from .conftest import MODEL_ATOL, Setup, processor_weights

PRIVATE = Privacy(min_block_points=64, clip_norm=1.0, noise=True)
SEED = bytes(range(32))
# CKKS error on a block total of a few hundred samples (docs/he.md), the compact model included.
ATOL = 0.1


@functools.cache
def task(kind: str = "logistic", privacy: Privacy = PRIVATE) -> tuple[CKKSKeys, PublicKeys]:
    """The requester's keys and the public side as an owner or processor parses it."""
    outputs = 4 if kind == "multiclass" else 1
    keys = CKKS().keygen(
        kind=get_kind(kind),
        n_features=6,
        n_outputs=outputs,
        preset="n8192",
        expected_samples=400,
        privacy=privacy,
    )
    assert isinstance(keys, CKKSKeys)
    return keys, CKKS().public(keys.public.data, party="requester")


def setup_of(keys: CKKSKeys) -> Setup:
    return Setup(keys.keypair, keys.keypair.public)


def owner_data(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clipped features, targets matrix) as an owner of the task encrypts them."""
    rng = np.random.default_rng(seed)
    X = clip_rows(rng.uniform(-1, 1, (n, 6)), 1.0)
    if kind == "multiclass":
        return X, np.eye(4)[rng.integers(0, 4, n)]
    return X, rng.integers(0, 2, n)[:, None].astype(float)


def certified(kind: str, seed: int = 1) -> np.ndarray:
    k = get_kind(kind)
    rows = 4 if kind == "multiclass" else 1
    W = np.random.default_rng(seed).normal(0, 2.0, (rows, 7))
    return k.certify(W, 6, 1.0)


# ---- the seeded model -----------------------------------------------------------------------
def test_a_model_is_a_function_of_weights_epoch_and_seed() -> None:
    keys, public = task()
    W = certified("logistic")
    model = keys.encrypt_model(W, epoch=3, seed=SEED)
    # the owner, from the public side alone, re-encrypts the very bytes
    assert public.encrypt_model(W, epoch=3, seed=SEED) == model
    # anything else changes them
    others = [
        public.encrypt_model(W, epoch=4, seed=SEED),
        public.encrypt_model(W, epoch=3, seed=bytes(32)),
        public.encrypt_model(W * 1.01, epoch=3, seed=SEED),
        keys.encrypt_model(W, epoch=3),  # a fresh secret seed
        keys.encrypt_model(W, epoch=3),
    ]
    assert len({model, *others}) == 6
    # one seed gives each ciphertext its own randomness: no two share a mask
    context = keys.keypair.public
    values = np.zeros(context.spec.slots)
    first = SeededEncryptor(context, SEED, 3)
    a, b = (dump(first.encrypt(values, TOP, 2.0**20)) for _ in range(2))
    assert a != b
    assert dump(SeededEncryptor(context, SEED, 3).encrypt(values, TOP, 2.0**20)) == a


SUBPROCESS = """
import sys
from pathlib import Path
import numpy as np
from fedmarket.he.crypto import CKKS
folder = Path(sys.argv[1])
public = CKKS().public((folder / "keys").read_bytes(), party="requester")
W = np.load(folder / "w.npy")
(folder / "model").write_bytes(public.encrypt_model(W, epoch=7, seed=bytes(range(32))))
"""


def test_another_process_re_encrypts_the_same_bytes(tmp_path: Path) -> None:
    """What an owner's machine computes: no state of the requester's process is involved."""
    keys, _ = task()
    W = certified("logistic", seed=4)
    (tmp_path / "keys").write_bytes(keys.public.data)
    np.save(tmp_path / "w.npy", W)
    subprocess.run([sys.executable, "-c", SUBPROCESS, str(tmp_path)], check=True)
    assert (tmp_path / "model").read_bytes() == keys.encrypt_model(W, epoch=7, seed=SEED)


@pytest.mark.parametrize("seed", [b"short", bytes(65), "a string of thirty-two characters"])
def test_bad_seeds_are_refused(seed: object) -> None:
    keys, _ = task()
    with pytest.raises(ConfigError, match="seed"):
        keys.encrypt_model(certified("logistic"), epoch=0, seed=seed)  # type: ignore[arg-type]


def test_the_owner_checks_the_revealed_model_against_the_digest() -> None:
    keys, public = task()
    W = certified("logistic")
    digest = hashlib.sha256(keys.encrypt_model(W, epoch=2, seed=SEED)).digest()
    check_revealed_model(public, digest, W, epoch=2, seed=SEED)  # the honest reveal
    lies = {
        "another seed": (W, 2, bytes(32)),
        "another epoch": (W, 3, SEED),
        "other weights": (W * 0.9, 2, SEED),
    }
    for what, (weights, epoch, seed) in lies.items():
        with pytest.raises(UntrustedInputError, match="does not re-encrypt"):
            check_revealed_model(public, digest, weights, epoch=epoch, seed=seed)
        assert what
    # huge weights are refused before any encryption, even with the matching digest
    huge = 1000.0 * W
    digest_huge = hashlib.sha256(keys.encrypt_model(huge, epoch=2, seed=SEED)).digest()
    with pytest.raises(UntrustedInputError, match="certified"):
        check_revealed_model(public, digest_huge, huge, epoch=2, seed=SEED)


def _crafted_model(keys: CKKSKeys, values: np.ndarray, epoch: int) -> bytes:
    """A requester's own compact ciphertext holding arbitrary slot values (one group)."""
    public = keys.keypair.public
    runtime = public.runtime
    ct = sa.Ciphertext()
    sa.Encryptor(runtime.context, public.public_key).encrypt(
        runtime.encode(values, TOP, compact_scale(public)), ct
    )
    return wire.pack(wire.Kind.MODEL, public.digest, {"epoch": epoch}, [dump(ct)])


def test_a_per_slot_crafted_model_is_made_well_formed_and_fails_the_owners_check() -> None:
    """The attack: weights w* only in the slots that serve the first D samples, zeros
    elsewhere, so that the totals would single those samples out. The processor's projection
    turns it into the well-formed model of the averaged weights (every copy of a lane equal),
    so the totals are those of a model applied to every sample alike; and no owner accepts it,
    since it is no honest encryption of w*."""
    keys, public = task()
    spec = keys.keypair.spec
    setup = setup_of(keys)
    kappa = abs(spec.poly.kappa)  # negative: the cubic's c3 is
    w_star = np.zeros((1, spec.lanes))
    w_star[0, :7] = certified("logistic")[0]
    values = np.zeros(spec.length)
    values[: spec.lanes] = spec.poly.kappa * w_star[0]  # one period only
    crafted = _crafted_model(keys, values, epoch=1)

    model = EncryptedModel.from_bytes(setup.public, crafted)
    plain = sa.Plaintext()
    keys.keypair.decryptor.decrypt(model.pick(0, range(1))[0], plain)
    copies = spec.result_lanes(setup.public.runtime.decode(plain))[0]  # (copies, lanes)
    # before: one copy held kappa * w*, the others 0; after: every copy holds the average, up
    # to CKKS noise (largest in slot 0: 0.6e-3 to 3.9e-3 over 11 key pairs, against 0.3 crafted)
    before = kappa * float(np.max(np.abs(w_star)))
    spread = np.abs(copies - copies.mean(axis=0))
    assert np.max(spread) < 0.05 * before
    assert np.median(spread) < MODEL_ATOL * kappa
    averaged = processor_weights(setup, crafted)
    np.testing.assert_allclose(averaged, w_star[:, :7] / spec.model_copies, atol=MODEL_ATOL)

    # the totals of a block are those of the averaged model, for every sample alike
    X, T = owner_data("logistic", 200)
    block = public.encrypt_block(X, T, block_id="victim")
    noise = public.encrypt_noise(block_id="victim", epoch=1, std=0.0, rng=random.Random(0))
    result = public.run_program(
        crafted, block, noise=noise, model_party="requester", block_party="owner"
    )
    got = keys.decrypt_result(result, party="p", epoch=1, block_id="victim").sums
    expected = gradient_sums("logistic", averaged, X, T, spec.poly)
    np.testing.assert_allclose(got, expected, atol=ATOL)

    digest = hashlib.sha256(crafted).digest()
    with pytest.raises(UntrustedInputError, match="does not re-encrypt"):
        check_revealed_model(public, digest, w_star[:, :7], epoch=1, seed=SEED)


# ---- the owners' noise ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["logistic", "multiclass"])
def test_noise_is_added_to_the_totals_under_encryption(kind: str) -> None:
    keys, public = task(kind)
    setup = setup_of(keys)
    X, T = owner_data(kind, 300, seed=2)
    block = public.encrypt_block(X, T, block_id="b")
    model = keys.encrypt_model(certified(kind), epoch=5, seed=SEED)
    std = 3.0
    noise = public.encrypt_noise(block_id="b", epoch=5, std=std, rng=random.Random(9))
    drawn, _ = draw_noise(public.layout.totals_shape, std, random.Random(9))
    assert 0.5 * std < float(np.std(drawn)) < 2.0 * std  # the owner's draw, not zeros

    result = public.run_program(model, block, noise=noise, model_party="r", block_party="o")
    got = keys.decrypt_result(result, party="p", epoch=5, block_id="b").sums
    clean = gradient_sums(kind, processor_weights(setup, model), X, T, keys.keypair.spec.poly)
    np.testing.assert_allclose(got, clean + drawn, atol=ATOL)
    # the pool (what processors run) gives the same bytes: replicas stay identical with noise
    with public.pool(workers=0) as pool:
        pool.add_block(block, party="o")
        assert pool.run_epoch(model, party="r", noise={"b": noise}) == {"b": result}


def test_a_private_task_computes_no_block_without_its_noise() -> None:
    keys, public = task()
    X, T = owner_data("logistic", 100)
    blocks = {name: public.encrypt_block(X, T, block_id=name) for name in ("a", "b")}
    model = keys.encrypt_model(certified("logistic"), epoch=1, seed=SEED)
    noise_a = public.encrypt_noise(block_id="a", epoch=1, std=1.0, rng=random.Random(1))
    with pytest.raises(UntrustedInputError, match="without its owner's noise"):
        public.run_program(model, blocks["a"], model_party="requester", block_party="o")
    with public.pool(workers=0) as pool:
        for data in blocks.values():
            pool.add_block(data, party="o")
        with pytest.raises(UntrustedInputError, match="without the owners' noise"):
            pool.run_epoch(model, party="requester")
        # no noise, no result: only block a is computed
        assert set(pool.run_epoch(model, party="requester", noise={"a": noise_a})) == {"a"}


def test_noise_for_another_block_epoch_or_task_is_refused() -> None:
    keys, public = task()
    X, T = owner_data("logistic", 100)
    block = public.encrypt_block(X, T, block_id="a")
    model = keys.encrypt_model(certified("logistic"), epoch=1, seed=SEED)
    fresh = CKKS().keygen(
        kind=get_kind("logistic"),
        n_features=6,
        n_outputs=1,
        preset="n8192",
        expected_samples=400,
        privacy=PRIVATE,
    )
    replays = {
        "for block 'b'": public.encrypt_noise(block_id="b", epoch=1, std=1.0, rng=random.Random()),
        "for epoch 0": public.encrypt_noise(block_id="a", epoch=0, std=1.0, rng=random.Random()),
        "other keys": fresh.public.encrypt_noise(
            block_id="a", epoch=1, std=1.0, rng=random.Random()
        ),
    }
    for what, noise in replays.items():
        with pytest.raises(UntrustedInputError) as info:
            public.run_program(model, block, noise=noise, model_party="relay", block_party="o")
        assert info.value.party == "relay", what
    with public.pool(workers=0) as pool:
        pool.add_block(block, party="o")
        with pytest.raises(UntrustedInputError, match="does not hold"):
            pool.run_epoch(model, party="relay", noise={"zz": replays["for block 'b'"]})


def test_bad_noise_arguments_are_refused() -> None:
    _, public = task()
    for std in (-1.0, float("nan"), 1e9):
        with pytest.raises(ConfigError, match="std"):
            public.encrypt_noise(block_id="a", epoch=0, std=std, rng=random.Random())
    with pytest.raises(ConfigError, match=r"random\.Random"):
        bad: object = np.random.default_rng()
        public.encrypt_noise(block_id="a", epoch=0, std=1.0, rng=bad)  # type: ignore[arg-type]


# ---- the floor and the clip -----------------------------------------------------------------
def test_blocks_below_the_floor_or_over_the_clip_are_refused() -> None:
    _, public = task()
    X, T = owner_data("logistic", 64)
    public.encrypt_block(X, T, block_id="ok")  # exactly the floor
    with pytest.raises(ConfigError, match=r"64\.\.4096 samples, got 63") as info:
        public.encrypt_block(X[:63], T[:63], block_id="tiny")
    assert "privacy.min_block_points" in (info.value.hint or "")
    loud = X.copy()
    loud[5] = 0.9  # |x| <= 1 per feature, but L2 norm 2.2
    with pytest.raises(ConfigError, match=r"sample 5 .* over the task's clip 1"):
        public.encrypt_block(loud, T, block_id="loud")


def test_processors_and_the_requester_refuse_sub_floor_blocks() -> None:
    """A block or a result that claims fewer samples than the floor (a relay rewriting the
    count, a forging processor) is refused where it arrives."""
    keys, public = task()
    X, T = owner_data("logistic", 64)
    block = public.encrypt_block(X, T, block_id="t")
    env = wire.unpack(block, kind=wire.Kind.BLOCK, party="t", max_bytes=1 << 30)
    digest = keys.keypair.public.digest
    relabelled = wire.pack(wire.Kind.BLOCK, digest, {**env.meta, "n_samples": 10}, env.payloads)
    model = keys.encrypt_model(certified("logistic"), epoch=0, seed=SEED)
    noise = public.encrypt_noise(block_id="t", epoch=0, std=1.0, rng=random.Random(0))
    with pytest.raises(UntrustedInputError, match="floor") as info:
        public.run_program(model, relabelled, noise=noise, model_party="r", block_party="owner-3")
    assert info.value.party == "owner-3"
    with public.pool(workers=0) as pool:
        pool.add_block(relabelled, party="owner-3")
        with pytest.raises(UntrustedInputError, match="floor") as info:
            pool.run_epoch(model, party="r", noise={})
        assert info.value.party == "owner-3"
    forged = public.forge(block_id="t", epoch=0, n_samples=10, totals=np.zeros((1, 7)))
    with pytest.raises(UntrustedInputError, match="floor"):
        keys.decrypt_result(forged, party="p", epoch=0, block_id="t")
