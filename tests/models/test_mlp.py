"""The mlp kind in plaintext: its gradient, guard, optimiser start, saved models, digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedmarket.models import TrainConfig, fit_plaintext, get_kind, load_model
from fedmarket.models.mlp import MLPClassifier, forward, split_weights


def test_gradient_is_the_loss_derivative() -> None:
    kind = get_kind("mlp")
    rng = np.random.default_rng(0)
    weights = kind.init_weights(5, 3, 4, seed=1)
    weights[:, 6:] = rng.normal(0, 0.5, (4, 3))
    X = rng.uniform(-1, 1, (7, 5))
    targets = np.eye(3)[rng.integers(0, 3, 7)]
    grad = kind.gradient_sums(weights, X, targets)
    numeric = np.zeros_like(weights)
    for index in np.ndindex(*weights.shape):
        step = np.zeros_like(weights)
        step[index] = 1e-6
        up, down = kind.loss(weights + step, X, targets), kind.loss(weights - step, X, targets)
        numeric[index] = (up - down) / 2e-6 * len(X)
    assert np.max(np.abs(numeric - grad)) < 1e-6
    assert kind.max_abs_total(weights, 7, n_features=5) >= np.max(np.abs(grad))


def test_guard_keeps_the_function() -> None:
    kind = get_kind("mlp")
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (50, 4))
    weights = rng.normal(0, 3, (6, 4 + 1 + 2))
    guard = kind.guard(X, 2.0)
    guarded = guard(weights)
    assert np.max(guard.max_abs_z(guarded)) <= 2.0 + 1e-9
    before = forward(*split_weights(weights, 4), X)[1]
    after = forward(*split_weights(guarded, 4), X)[1]
    assert np.allclose(before, after)


def test_save_and_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kind = get_kind("mlp")
    weights = kind.init_weights(3, 2, 5, seed=2)
    weights[:, 4:] = 1.0
    model = kind.estimator(weights, np.array([4, 7]))
    assert isinstance(model, MLPClassifier) and model.hidden == 5
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    X = np.random.default_rng(3).uniform(-1, 1, (10, 3))
    assert isinstance(loaded, MLPClassifier)
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert set(loaded.classes_) == {4, 7}


@pytest.mark.slow
def test_digits_passes_97_percent_in_plaintext() -> None:
    from sklearn.model_selection import train_test_split

    from fedmarket.models import FeatureScaler

    X, y = load_digits(return_X_y=True)
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=0.2, random_state=0, stratify=y_rest
    )
    scaler = FeatureScaler.fit(X_train)
    result = fit_plaintext(
        scaler.transform(X_train),
        y_train,
        kind="mlp",
        X_val=scaler.transform(X_val),
        y_val=y_val,
        config=TrainConfig(epochs=70),
    )
    assert np.mean(result.model.predict(scaler.transform(X_test)) == y_test) >= 0.97
