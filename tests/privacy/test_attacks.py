"""Attacks on the owners' records by a requester who deviates (issue 14, docs/privacy.md).

The adversary holds the secret key and picks every model. Each test plays it against the
product's own crypto (``fedmarket.attacks.requester.release``): blocks of breast-cancer rows at
the floor (64) encrypted with ``encrypt_block``, models with ``encrypt_model``, each epoch's
result from ``run_program`` with the owner's ``encrypt_noise`` at the std ``noise_std`` gives for
the spec's ``[privacy]``, totals from ``decrypt_result`` with the honest bound plus the noise
allowance. Statistics run in the plaintext twin (the noisy totals CKKS decrypts, shown equal
under real CKKS below); every assertion can fail, and each has a positive control: the same
attack without the owners' noise succeeds.

- Moments: least squares on the moment equations over T = max_epochs certified models
  recovers the block's moments exactly without noise; with it the error is what the noise
  implies, never below the best design's Cramer-Rao bound.
- Informed reconstruction: knowing all records of the block but one, it fits the last one
  (least squares; Bayes over the population); its success within eta stays under the mu-GDP
  reconstruction bound ``Phi(Phi^-1(kappa) + mu)``.
- Informed membership: the missing record is one of k candidates; models chosen adaptively to
  separate the two likeliest; the likelihood-ratio guess stays under the same bound.
- Revealed models and noise at the crypto layer: classes the existing tests
  (tests/he/test_privacy_crypto.py, tests/privacy/test_twin.py) do not cover.
- Routing: the requester renames the processor an owner's routing names (the proof is kept).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account
from sklearn.datasets import load_breast_cancer

from fedmarket.attacks import requester as attack
from fedmarket.chain.signing import sign_channel_key
from fedmarket.data import scaler
from fedmarket.errors import ConfigError, FedmarketError, UntrustedInputError
from fedmarket.he.crypto import CKKS
from fedmarket.privacy.owner import check_revealed_model, clip_rows
from fedmarket.privacy.policy import crypto_privacy, noise_std
from fedmarket.protocol.crypto import Crypto, TaskKeys
from fedmarket.protocol.party import PartyNode
from fedmarket.protocol.plaintext import NOISE, Plaintext, _pack
from fedmarket.protocol.transport import Envelope
from fedmarket.roles.channel import ChannelKeys, open_sealed
from fedmarket.roles.messages import ChannelKey, RoutingShare, SealedBlock, decode, encode
from fedmarket.run import run_task
from fedmarket.runtime.local import LocalTransport
from fedmarket.spec import SpecFile, load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SMALL = (0, 1, 4, 6)  # mean radius, texture, smoothness, concavity: 4 features, 5 lanes
ALL = tuple(range(30))
EPOCHS = 30  # task.max_epochs: the T of the DP accounting
FLOOR = 64
SEED = bytes(range(32))


# ---- the task and the data ------------------------------------------------------------------
@functools.cache
def spec_for(features: tuple[int, ...], epsilon: float | None, epochs: int = EPOCHS) -> SpecFile:
    """examples/breast_cancer.toml on a subset of its features, privacy on at ``epsilon``
    (None: off), ``epochs`` releases."""
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    section = data["features"]
    for key in ("names", "mean", "std"):
        section[key] = [section[key][i] for i in features]
    data["task"]["max_epochs"] = epochs
    data["privacy"] = {"enabled": epsilon is not None}
    if epsilon is not None:
        data["privacy"]["epsilon"] = epsilon
    return SpecFile.model_validate(data)


@functools.cache
def population(features: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every breast-cancer row as an owner encrypts it: the spec's scaling, the spec's clip."""
    spec = spec_for(features, 8.0)
    raw = load_breast_cancer()
    f = spec.features
    X = scaler(list(f.mean), list(f.std), f.spread).transform(raw.data[:, list(features)])
    return clip_rows(X, spec.privacy.clip_norm), raw.target.astype(np.float64)


@functools.cache
def task(
    features: tuple[int, ...], epsilon: float | None, crypto: str = "plaintext"
) -> tuple[TaskKeys, float]:
    """The requester's keys for the spec (the published side carries its privacy) and the
    owners' noise std per total."""
    spec = spec_for(features, epsilon)
    maker: Crypto = CKKS() if crypto == "ckks" else Plaintext()
    keys = maker.keygen(
        kind=spec.kind,
        n_features=len(features),
        n_outputs=1,
        preset=spec.he.preset,
        expected_samples=FLOOR,
        privacy=crypto_privacy(spec),
    )
    return keys, noise_std(spec, keys.public.layout)


def victim_block(
    keys: TaskKeys, X: np.ndarray, y: np.ndarray, rows: np.ndarray, block_id: str = "victim"
) -> bytes:
    return keys.public.encrypt_block(X[rows], y[rows], block_id=block_id)


def observe(
    keys: TaskKeys,
    block: bytes,
    models: list[np.ndarray],
    std: float,
    rng: random.Random,
    block_id: str = "victim",
) -> list[np.ndarray]:
    """The requester's T releases of one block (epochs 0..T-1), each model certified."""
    layout = keys.public.layout
    totals = []
    for epoch, W in enumerate(models):
        assert layout.kind.certify_problem(W, layout.n_features, layout.clip) is None
        totals.append(
            attack.release(
                keys, block, W, epoch=epoch, block_id=block_id, n_samples=FLOOR, std=std, rng=rng
            )
        )
    return totals


def sigma_mu(epsilon: float) -> float:
    spec = spec_for(SMALL, epsilon)
    return attack.gdp_mu(spec.privacy.noise_multiplier(EPOCHS), EPOCHS)


def test_the_tasks_are_what_the_spec_says() -> None:
    keys, std = task(SMALL, 8.0)
    layout = keys.public.layout
    assert (layout.private, layout.min_block_points, layout.clip) == (True, FLOOR, 1.0)
    # sigma 3.29 (eps 8, delta 1e-5, T 30) times the logistic sensitivity at C = 1
    assert std == pytest.approx(3.29 * layout.sensitivity, rel=2e-3)
    plain, zero = task(SMALL, None)
    assert not plain.public.layout.private and zero == 0.0
    X, y = population(SMALL)
    assert float(np.max(np.linalg.norm(X, axis=1))) <= 1.0 + 1e-9
    with pytest.raises(ConfigError, match="floor"):
        keys.public.encrypt_block(X[: FLOOR - 1], y[: FLOOR - 1], block_id="tiny")


# ---- (a) moments, least squares over many well-formed models ---------------------------------
def test_the_moment_attack_is_exact_without_noise_and_held_to_the_noise_with_it() -> None:
    X, y = population(SMALL)
    rows = np.random.default_rng(1).choice(len(X), FLOOR, replace=False)
    truth = attack.Moments.of(X[rows], y[rows])
    solver = attack.MomentAttack(len(SMALL) + 1)
    assert solver.unknowns <= EPOCHS * (len(SMALL) + 1)  # enough equations for every moment

    plain, _ = task(SMALL, None)
    models = attack.certified_models(plain.public, EPOCHS, np.random.default_rng(2))
    block = victim_block(plain, X, y, rows)
    exact = solver.solve(models, observe(plain, block, models, 0.0, random.Random(0)))
    np.testing.assert_allclose(exact.vector(), truth.vector(), atol=1e-8)
    # so the block's mean and its positives' count come out exactly
    np.testing.assert_allclose(exact.feature_sums() / FLOOR, X[rows].mean(axis=0), atol=1e-10)
    assert round(FLOOR / 2 - exact.m1[-1]) == int(y[rows].sum())

    keys, std = task(SMALL, 8.0)
    block = victim_block(keys, X, y, rows)
    clean = [keys.public.layout.kind.gradient_sums(W, X[rows], y[rows][:, None]) for W in models]
    owner = random.Random(3)
    repeats = 20
    lanes = len(SMALL) + 1
    errors, mean_errors, deviations = [], [], []
    for _ in range(repeats):
        noisy = observe(keys, block, models, std, owner)
        deviations += [g - c for g, c in zip(noisy, clean, strict=True)]
        got = solver.solve(models, noisy)
        errors.append(got.m1 - truth.m1)
        mean_errors.append((got.feature_sums() - truth.feature_sums()) / FLOOR)
    # the noise the requester sees is the owners' calibrated noise
    assert float(np.std(deviations)) == pytest.approx(std, rel=0.1)
    covariance = np.diag(solver.covariance(models, std))
    mse = float(np.mean(np.square(errors)))
    assert 0.6 * np.mean(covariance[:lanes]) < mse < 1.6 * np.mean(covariance[:lanes])
    # no design beats T releases of the constant term: std^2 / T per lane (Cramer-Rao)
    assert mse > 0.5 * std**2 / EPOCHS
    # the block's feature means: as far off as the noise implies, nowhere near exact
    at = [lanes + solver.pairs.index((a, lanes - 1)) for a in range(len(SMALL))]
    mean_mse = float(np.mean(np.square(mean_errors)))
    assert mean_mse > 0.6 * np.mean(covariance[at]) / FLOOR**2
    assert np.sqrt(mean_mse) > 0.1  # features lie in [-1, 1]


# ---- (a, b) the informed adversary ------------------------------------------------------------
# (a) continuous: the target is any breast-cancer record (4 features); success is a guess within
# ETA of it, and kappa is the prior's own best rate at ETA over the population.
ETA = 0.25
# (b) membership: the target is one of K records (10 features) the requester knows.
TEN = tuple(range(10))
K = 16


def assert_under_the_bound(rate: float, kappa: float, epsilon: float, trials: int) -> float:
    bound = attack.rero_bound(kappa, sigma_mu(epsilon))
    assert rate <= bound + attack.binomial_slack(bound, trials), (rate, bound, trials)
    return bound


def test_informed_reconstruction_of_a_record_is_held_to_the_dp_bound() -> None:
    """All records of the block but one known, T random certified models: least squares finds
    the last record exactly without noise; with the default noise neither the least-squares
    fit nor the Bayes guess over the population lands within ETA more often than mu-GDP
    allows."""
    X, y = population(SMALL)
    prior = attack.kappa(attack.ball_mass(X, ETA))
    assert 0.03 < prior < 0.15  # a target one cannot simply guess, and a bound with room

    plain, _ = task(SMALL, None)
    control = attack.reconstruction_game(
        plain, 0.0, X, y, epochs=EPOCHS, trials=20, block_size=FLOOR, eta=ETA, seed=5
    )
    assert max(control.ls_errors) < 1e-6  # the record, exactly
    assert control.bayes == control.snapped == 1.0

    keys, std = task(SMALL, 8.0)
    trials = 120
    noisy = attack.reconstruction_game(
        keys, std, X, y, epochs=EPOCHS, trials=trials, block_size=FLOOR, eta=ETA, seed=6
    )
    bound = assert_under_the_bound(noisy.bayes, prior, 8.0, trials)
    assert_under_the_bound(noisy.snapped, prior, 8.0, trials)
    assert bound < 0.9  # the control's 1.0 breaks it: this test can fail
    assert noisy.ls_error_median > 4 * ETA  # the fit is nowhere near the typical record


@pytest.mark.parametrize("epsilon", [8.0, 1.0])
def test_informed_membership_is_held_to_the_dp_bound(epsilon: float) -> None:
    """The missing record is one of K known candidates; each epoch's model separates the two
    likeliest so far; the likelihood-ratio guess after T releases. Without noise it is always
    right; with the owners' noise its success stays under Phi(Phi^-1(1/K) + sqrt(T)/sigma)."""
    X, y = population(TEN)
    plain, _ = task(TEN, None)
    control = attack.reconstruction_game(
        plain, 0.0, X, y, epochs=EPOCHS, trials=20, block_size=FLOOR, candidates=K, seed=7
    )
    assert control.membership == 1.0

    keys, std = task(TEN, epsilon)
    trials = 120
    noisy = attack.reconstruction_game(
        keys, std, X, y, epochs=EPOCHS, trials=trials, block_size=FLOOR, candidates=K, seed=8
    )
    bound = assert_under_the_bound(noisy.membership, 1.0 / K, epsilon, trials)
    assert bound + attack.binomial_slack(bound, trials) < 1.0  # the control breaks it


def test_under_ckks_the_requester_decrypts_the_twins_numbers() -> None:
    """The statistics above run in the twin: under real CKKS the requester decrypts the same
    noisy totals (same owner draws) up to CKKS error, so the informed fit recovers the record
    to CKKS precision when the owner's noise is zero, and not with the task's noise."""
    ckks, std = task(SMALL, 8.0, "ckks")
    twin, twin_std = task(SMALL, 8.0)
    assert std == pytest.approx(twin_std)
    X, y = population(SMALL)
    rows = np.random.default_rng(9).choice(len(X), FLOOR, replace=False)
    known, target = rows[:-1], rows[-1]
    models = attack.certified_models(ckks.public, 6, np.random.default_rng(10))
    fits = {}
    for noise in (0.0, std):
        got = {}
        for name, keys in (("ckks", ckks), ("twin", twin)):
            block = victim_block(keys, X, y, rows)
            got[name] = observe(keys, block, models, noise, random.Random(11))
        np.testing.assert_allclose(got["ckks"], got["twin"], atol=0.1)
        residuals = attack.informed_residuals(
            ckks.public, models, got["ckks"], X[known], y[known][:, None]
        )
        x_hat, label = attack.least_squares_record(models, residuals, 1.0)
        fits[noise] = float(np.linalg.norm(x_hat - X[target]))
        if noise == 0.0:
            assert label == y[target]
    assert fits[0.0] < 0.05
    assert fits[std] > 10 * fits[0.0] and fits[std] > ETA


# ---- (c) revealed models owners refuse --------------------------------------------------------
def _multiclass_keys() -> TaskKeys:
    spec = spec_for(SMALL, 8.0)
    from fedmarket.models.kinds import get_kind

    return Plaintext().keygen(
        kind=get_kind("multiclass"),
        n_features=len(SMALL),
        n_outputs=3,
        preset="n8192",
        expected_samples=FLOOR,
        privacy=crypto_privacy(spec),
    )


def _lies() -> dict[str, tuple[str, object, object, object]]:
    """What a requester could reveal instead of an honest certified model: (keys, weights,
    seed, expected message). The digest is always the one of what it really sent."""
    public = task(SMALL, 8.0)[0].public
    W = attack.certified_models(public, 1, np.random.default_rng(12))[0]
    edge = public.layout.kind.certify(100 * W, len(SMALL), 1.0)  # on the region's boundary
    nan, inf, over, bias = W.copy(), W.copy(), edge * (1 + 1e-6), np.zeros_like(W)
    nan[0, 0], inf[0, 1] = np.nan, np.inf
    bias[0, -1] = 8.0 * (1 + 1e-6)  # all the reach in the bias
    rows = np.zeros((3, len(SMALL) + 1))
    rows[1, :-1] = 9.0 / np.sqrt(len(SMALL))  # one class of three over the bound
    return {
        "nan": ("binary", nan, SEED, "finite"),
        "inf": ("binary", inf, SEED, "finite"),
        "transposed": ("binary", W.T, SEED, "shape"),
        "an extra output": ("binary", np.vstack([W, W]), SEED, "shape"),
        "just over the region": ("binary", over, SEED, "certified"),
        "the reach in the bias": ("binary", bias, SEED, "certified"),
        "one class over": ("multiclass", rows, SEED, "output 1 .* certified"),
        "a short seed": ("binary", W, SEED[:15], "seed"),
        "a text seed": ("binary", W, "x" * 32, "seed"),
    }


@pytest.mark.parametrize("lie", sorted(_lies()))
def test_owners_refuse_revealed_models_outside_the_certified_region(lie: str) -> None:
    kind, weights, seed, message = _lies()[lie]
    keys = task(SMALL, 8.0)[0] if kind == "binary" else _multiclass_keys()
    public = keys.public
    W = np.asarray(weights)
    try:  # the digest of what the requester really sent (it may not even encrypt)
        sent = keys.encrypt_model(W, epoch=3, seed=SEED)
    except ConfigError:
        sent = b"crafted"
    digest = hashlib.sha256(sent).digest()
    with pytest.raises(UntrustedInputError, match=message) as info:
        check_revealed_model(public, digest, W, epoch=3, seed=seed)  # type: ignore[arg-type]
    assert info.value.party == "requester"


def test_the_region_itself_is_accepted() -> None:
    """The other side of the refusals: a model on the region's boundary, and the digest check
    (another epoch's digest is refused)."""
    keys, _ = task(SMALL, 8.0)
    W = keys.public.layout.kind.certify(
        np.random.default_rng(13).normal(0, 5, (1, len(SMALL) + 1)), len(SMALL), 1.0
    )
    digest = hashlib.sha256(keys.encrypt_model(W, epoch=3, seed=SEED)).digest()
    check_revealed_model(keys.public, digest, W, epoch=3, seed=SEED)
    with pytest.raises(UntrustedInputError, match="does not re-encrypt"):
        check_revealed_model(keys.public, digest, W, epoch=4, seed=SEED)
    with pytest.raises(ConfigError, match="sha256"):
        check_revealed_model(keys.public, digest[:16], W, epoch=3, seed=SEED)


# ---- (d) noise substitution at the crypto layer (the twin; CKKS: tests/he) --------------------
def test_the_twin_refuses_noise_not_made_for_this_block_epoch_and_keys() -> None:
    keys, std = task(SMALL, 8.0)
    public = keys.public
    X, y = population(SMALL)
    block = victim_block(keys, X, y, np.arange(FLOOR), block_id="a")
    model = keys.encrypt_model(np.zeros((1, len(SMALL) + 1)), epoch=1, seed=SEED)
    other, _ = task(SMALL, 3.0)  # another task's keys
    header = {"block_id": "a", "epoch": 1, "keys": public.digest.hex()}
    lanes = len(SMALL) + 1
    replays = {
        "for block 'b'": public.encrypt_noise(block_id="b", epoch=1, std=std, rng=random.Random()),
        "for epoch 0": public.encrypt_noise(block_id="a", epoch=0, std=std, rng=random.Random()),
        "under other keys": other.public.encrypt_noise(
            block_id="a", epoch=1, std=std, rng=random.Random()
        ),
        "message kind 3": model,  # a model where noise belongs
        "out of range": _pack(NOISE, header, np.full((1, lanes), 2.0**16)),  # cancels totals
        "out of range ": _pack(NOISE, header, np.full((1, lanes), np.nan)),
        "data bytes": _pack(NOISE, header, np.zeros(3)),
    }
    for what, noise in replays.items():
        with pytest.raises(UntrustedInputError, match=what.strip()) as info:
            public.run_program(model, block, noise=noise, model_party="relay", block_party="o")
        assert info.value.party == "relay", what
    with pytest.raises(UntrustedInputError, match="without its owner's noise"):
        public.run_program(model, block, model_party="relay", block_party="o")
    with public.pool(workers=0) as pool:
        pool.add_block(block, party="o")
        with pytest.raises(UntrustedInputError, match="does not hold"):
            pool.run_epoch(model, party="relay", noise={"b": replays["for block 'b'"]})
        assert pool.run_epoch(model, party="relay", noise={}) == {}  # no noise, no result


# ---- routing: the requester renames the processor a proven holder stands for ------------------
class Renaming(LocalTransport):
    """The requester relays each owner's routing share: this one keeps every holder's Merkle
    proof (which names the processor by its bid index) but replaces the holder's address by an
    account of its own, and adds a channel key that account signed: if the owner seals to the
    named address's key, the requester opens every block."""

    def __init__(self, nodes: list[PartyNode]) -> None:
        super().__init__(nodes)
        self.mine = ChannelKeys.generate()
        self.thief = Account.create()
        self.opened: list[bytes] = []
        self.sealed = 0

    def ask(
        self, action: str, requests: Mapping[str, Envelope], *, timeout: float | None = None
    ) -> dict[str, Envelope]:
        if action == "seal":
            requests = {a: self._rename(e) for a, e in requests.items()}
        replies = super().ask(action, requests, timeout=timeout)
        if action == "seal":
            for reply in replies.values():
                for frame in reply.frames:
                    block = decode(frame, SealedBlock, party="test")
                    self.sealed += 1
                    with contextlib.suppress(UntrustedInputError):  # not sealed to us
                        self.opened.append(
                            open_sealed(block.sealed, self.mine, party="owner", max_bytes=1 << 30)
                        )
        return replies

    def _rename(self, envelope: Envelope) -> Envelope:
        frames = list(envelope.frames)
        share = decode(frames[0], RoutingShare, party="test")
        blocks = [
            b.model_copy(
                update={
                    "holders": [
                        h.model_copy(update={"processor": self.thief.address}) for h in b.holders
                    ]
                }
            )
            for b in share.blocks
        ]
        frames[0] = encode(share.model_copy(update={"blocks": blocks}))
        owner = next(n.owner for n in self.nodes.values() if n.owner is not None)
        domain = owner.market.domain_separator()
        signature = sign_channel_key(self.thief, domain, share.task_id, self.mine.public)
        key = ChannelKey(
            task_id=share.task_id,
            processor=self.thief.address,
            public_key=self.mine.public,
            signature=signature,
        )
        frames.append(encode(key))
        return Envelope(envelope.fields, tuple(frames))


def test_owners_seal_nothing_to_an_account_the_routing_renames() -> None:
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = 1
    spec = SpecFile.model_validate(data)
    made: list[Renaming] = []

    def renaming(nodes: list[PartyNode]) -> Renaming:
        made.append(Renaming(nodes))
        return made[-1]

    # the run may end early when owners refuse; what matters is what the requester opened
    with contextlib.suppress(FedmarketError):
        run_task(
            spec,
            base=EXAMPLES,
            workers=0,
            crypto=Plaintext(),
            chain_url="memory",
            transport=renaming,
        )
    (adversary,) = made
    assert not adversary.opened, f"the requester opened {len(adversary.opened)} sealed blocks"


def test_models_out_of_the_region_would_break_the_bound() -> None:
    """Why owners check the region (the refusals above): the membership attack with every model
    5x out of it, had owners released noise for them, beats the eps = 8 bound by far (one
    sample then moves the totals by more than the noise was calibrated for)."""
    X, y = population(TEN)
    keys, std = task(TEN, 8.0)
    trials = 60
    huge = attack.reconstruction_game(
        keys,
        std,
        X,
        y,
        epochs=EPOCHS,
        trials=trials,
        block_size=FLOOR,
        candidates=K,
        seed=8,
        weight_scale=5.0,
    )
    bound = attack.rero_bound(1.0 / K, sigma_mu(8.0))
    assert huge.membership - attack.binomial_slack(huge.membership, trials) > bound
