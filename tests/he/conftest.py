"""Shared keys and data for the HE tests: key generation costs ~0.5 s, so it happens once."""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tenseal.sealapi as sa
from sklearn.model_selection import train_test_split

from fedmarket.he import HESpec, KeyPair, PublicContext, encrypt_block
from fedmarket.models import FeatureScaler

FRAMINGHAM = Path(
    os.environ.get(
        "FEDMARKET_FRAMINGHAM",
        Path(__file__).resolve().parents[2].parent / "shared" / "data" / "framingham.csv",
    )
)


@dataclass(frozen=True)
class Setup:
    """A key pair and the public context as owners and processors receive it."""

    keypair: KeyPair
    public: PublicContext

    @property
    def spec(self) -> HESpec:
        return self.public.spec


def make_setup(
    kind: str,
    n_features: int,
    n_outputs: int = 1,
    expected: int | None = None,
    parts: int | None = None,
) -> Setup:
    spec = HESpec.for_task(
        kind=kind, n_features=n_features, n_outputs=n_outputs, expected_samples=expected
    )
    if parts is not None:  # a valid spec for_task would not choose (tests a code path)
        spec = dataclasses.replace(spec, parts=parts)
    keypair = KeyPair.generate(spec)
    return Setup(keypair, PublicContext.from_bytes(keypair.public.data))


@functools.cache
def setup_for(name: str) -> Setup:
    """Cached per process. Tests parametrised over setups call this rather than
    ``request.getfixturevalue``: titanoboa's pytest plugin (loaded for the chain tests) anchors
    every fixture it sees and fails at teardown when fixtures are created inside a test."""
    if name == "logistic":  # binary, 5 features (8 lanes)
        return make_setup("logistic", 5)
    if name == "linear":  # 3 features (4 lanes)
        return make_setup("linear", 3)
    if name == "copies":  # binary, 12 features (16 lanes): the compact model holds 256 copies
        setup = make_setup("logistic", 12, expected=1000)
        assert setup.spec.model_copies == 256 and setup.spec.block_size == 4096
        return setup
    if name == "parts":  # binary, 100 features, one block in two parts (z split by giants)
        setup = make_setup("logistic", 100, expected=1000)
        assert setup.spec.parts == 2 and setup.spec.model_giant == 4
        return setup
    if name == "parts_linear":  # linear, 30 features, two parts sharing the model ciphertexts
        setup = make_setup("linear", 30, expected=700, parts=2)
        assert setup.spec.parts == 2 and setup.spec.model_giant == 1
        return setup
    # 4 classes, 6 features; 2 class lanes (blocks of 2048 samples), so 2 class groups
    setup = make_setup("multiclass", 6, 4, expected=1500)
    assert setup.spec.class_lanes == 2 and setup.spec.n_groups == 2
    return setup


SETUPS = ("logistic", "linear", "multiclass", "copies", "parts", "parts_linear")


@pytest.fixture(scope="session")
def logistic() -> Setup:
    return setup_for("logistic")


@pytest.fixture(scope="session")
def linear() -> Setup:
    return setup_for("linear")


@pytest.fixture(scope="session")
def multiclass() -> Setup:
    return setup_for("multiclass")


def random_data(spec: HESpec, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, what encrypt_block takes, targets matrix) with features in [-1, 1]."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, (n, spec.n_features))
    if spec.kind == "multiclass":
        labels = rng.integers(0, spec.n_outputs, n)
        return X, np.eye(spec.n_outputs)[labels], np.eye(spec.n_outputs)[labels]
    if spec.kind == "logistic":
        labels = rng.integers(0, 2, n)
        return X, labels, labels[:, None].astype(float)
    values = np.clip(X @ rng.normal(0, 0.3, spec.n_features) + rng.normal(0, 0.1, n), -1, 1)
    return X, values, values[:, None]


def random_weights(spec: HESpec, seed: int = 1, scale: float = 0.4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, scale, (spec.n_outputs, spec.n_features + 1))


@pytest.fixture(scope="session")
def logistic_block(logistic: Setup) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A partial block (1000 of 4096 samples) and its plaintext (X, targets matrix)."""
    X, labels, targets = random_data(logistic.spec, 1000)
    return encrypt_block(logistic.public, X, labels, block_id="owner/0"), X, targets


def split_dataset(
    X: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train / the requester's validation / test, stratified, features scaled into [-1, 1]."""
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=0.2, random_state=0, stratify=y_rest
    )
    scaler = FeatureScaler.fit(X_train)
    return (
        scaler.transform(X_train),
        y_train,
        scaler.transform(X_val),
        y_val,
        scaler.transform(X_test),
        y_test,
    )


def load_framingham() -> tuple[np.ndarray, np.ndarray]:
    """TenSEAL's tutorial data. Rows with any missing value (582 of 4238) are dropped."""
    if not FRAMINGHAM.exists():
        pytest.skip(f"{FRAMINGHAM} not found (set FEDMARKET_FRAMINGHAM)")
    with FRAMINGHAM.open(newline="") as handle:
        rows = list(csv.reader(handle))
    complete = [row for row in rows[1:] if all(value not in ("", "NA") for value in row)]
    data = np.array(complete, dtype=float)
    return data[:, :-1], data[:, -1].astype(int)


# The compact model's precision: each weight the processor uses is the requester's within this
# (the L/D copies are encoded that many times below the model scale, and the rotations that
# average them add key-switching noise; measured up to 1.2e-3 at 512 copies on most lanes, but
# up to 5.5e-3 on a logistic model's first lane with some key pairs: not explained yet, see
# docs/he.md "Open"). A measured worst case with margin, not a derived bound.
MODEL_ATOL = 1e-2


def processor_weights(setup: Setup, model_bytes: bytes) -> np.ndarray:
    """The weights a processor computes with after projecting ``model_bytes``, decrypted with
    the secret key (the model diagonal 0 of each class group, averaged over its copies)."""
    from fedmarket.he import EncryptedModel

    spec = setup.spec
    model = EncryptedModel.from_bytes(setup.public, model_bytes)
    rows = []
    for group in range(spec.n_groups):
        plain = sa.Plaintext()
        setup.keypair.decryptor.decrypt(model.pick(group, range(1))[0], plain)
        slots = setup.public.runtime.decode(plain)
        rows.append(spec.result_lanes(slots).mean(axis=1))  # (class lanes, D)
    weights = np.concatenate(rows)[: spec.n_outputs, : spec.n_features + 1]
    return weights / spec.poly.kappa if spec.is_logistic else weights
