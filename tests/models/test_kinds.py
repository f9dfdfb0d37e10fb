"""The model-kind registry: one name per kind, and each kind's totals are its loss's gradient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmarket.errors import ConfigError
from fedmarket.models import DEFAULT_SIGMOID, load_model
from fedmarket.models.kinds import KINDS, TaskLabels, get_kind
from fedmarket.models.linear import OneVsRest
from fedmarket.models.persist import save_arrays

CLASSES = {"logistic": (0, 1), "multiclass": (3, 5, 7), "linear": (), "mlp": (3, 5, 7)}


def surrogate(kind: str, W: np.ndarray, X: np.ndarray, T: np.ndarray) -> float:
    """The loss whose gradient the program's totals are: with the cubic p = P', sum P(z) - y z
    for the sigmoid kinds; sum (z - y)^2 / 2 for linear; the squared error for the mlp."""
    if kind == "mlp":  # 1/2 ||o - y||^2 with o = W2 (W1 [x, 1])^2, summed
        return get_kind(kind).loss(W, X, T) * len(X)
    z = np.hstack([X, np.ones((len(X), 1))]) @ W.T
    if not get_kind(kind).sigmoid:
        return float(np.sum((z - T) ** 2) / 2)
    p = DEFAULT_SIGMOID
    P = 0.5 * z + p.c1 * z**2 / 2 + p.c3 * z**4 / 4
    return float(np.sum(P - T * z))


@pytest.mark.parametrize("name", sorted(KINDS))
def test_block_totals_are_the_gradient_of_the_kinds_loss(name: str) -> None:
    kind = get_kind(name)
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (40, 5))
    classes = CLASSES[name]
    y = rng.choice(classes, 40) if classes else rng.uniform(-3, 3, 40)
    labels = TaskLabels(classes, target_center=0.5, target_scale=2.0)
    T = kind.targets(y, labels)
    assert T.shape == (40, kind.n_outputs(classes)) and np.all(np.abs(T) <= 1)
    W = rng.normal(0, 0.3, kind.weight_shape(5, kind.n_outputs(classes)))
    totals = kind.gradient_sums(W, X, T)
    numeric = np.zeros_like(W)
    for index in np.ndindex(*W.shape):
        step = np.zeros_like(W)
        step[index] = 1e-6
        numeric[index] = (surrogate(name, W + step, X, T) - surrogate(name, W - step, X, T)) / 2e-6
    np.testing.assert_allclose(totals, numeric, rtol=1e-5, atol=1e-6)
    # the honest bound holds for every sample's contribution
    assert np.max(np.abs(totals)) <= kind.max_abs_total(W, 40, n_features=5)


def test_one_name_per_kind_everywhere() -> None:
    from fedmarket.he.spec import HESpec
    from fedmarket.spec import TaskSection

    for name in KINDS:
        assert get_kind(name).name == name
        TaskSection(name="t", model=name, num_points=1, epoch_seconds=1, max_epochs=1,
                    bidding_seconds=1)  # fmt: skip
    HESpec.for_task(kind="multiclass", n_features=3, n_outputs=3)
    with pytest.raises(ConfigError, match="unknown model kind 'one_vs_rest'"):
        get_kind("one_vs_rest")
    with pytest.raises(ConfigError):
        HESpec.for_task(kind="one_vs_rest", n_features=3, n_outputs=3)


def test_labels_outside_the_classes_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"labels \[9\] are not among the task's classes"):
        get_kind("multiclass").targets(np.array([3, 9, 5]), TaskLabels((3, 5, 7)))
    with pytest.raises(ValueError, match="not among"):
        get_kind("logistic").targets(np.array(["yes", "no"]), TaskLabels((0, 1)))
    # a model file written under the old name of the multiclass kind still loads
    path = tmp_path / "m.npz"
    arrays = {
        "coef": np.ones((3, 2)),
        "intercept": np.zeros(3),
        "classes": np.array(["3", "5", "7"]),
    }
    save_arrays(path, "one_vs_rest", arrays)
    model = load_model(path)
    assert isinstance(model, OneVsRest) and model.kind == "multiclass"
    assert list(model.classes_) == [3, 5, 7]
