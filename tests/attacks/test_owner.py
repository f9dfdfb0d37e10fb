"""Owner attacks: parsing, and each attack changes what it should and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from fedmarket.attacks import (
    OWNER_FORMS,
    Artificial,
    Backdoor,
    LabelFlip,
    NoDelivery,
    apply_trigger,
    parse_owner_attack,
)
from fedmarket.attacks.owner import OwnerAttack
from fedmarket.data import scale
from fedmarket.errors import ConfigError
from fedmarket.spec import FeaturesSection

FEATURES = FeaturesSection(
    names=["a", "b", "c", "d"], mean=[0.0, 10.0, -5.0, 2.0], std=[1.0, 2.0, 0.5, 4.0], spread=2.0
)
LOW = np.array([-2.0, 6.0, -6.0, -6.0])
HIGH = np.array([2.0, 14.0, -4.0, 10.0])
BINARY = [0, 1]
MULTI = [3, 5, 7]


def data(classes: list[int], n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(LOW, HIGH, (n, 4))
    y = rng.choice(classes, n).astype(np.float64) if classes else rng.uniform(-0.8, 0.6, n)
    return X, y


def run(
    attack: OwnerAttack, X: np.ndarray, y: np.ndarray, classes: list[int], seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``attack`` and check it returned new arrays and left its inputs alone."""
    X_before, y_before = X.copy(), y.copy()
    out_X, out_y = attack.apply(
        X, y, features=FEATURES, classes=classes, rng=np.random.default_rng(seed)
    )
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    assert out_X is not X and out_y is not y
    assert not np.shares_memory(out_X, X) and not np.shares_memory(out_y, y)
    assert out_X.shape == X.shape and out_y.shape == y.shape and out_y.dtype == y.dtype
    return out_X, out_y


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("label-flip", LabelFlip()),
        (" artificial ", Artificial()),
        ("no-delivery", NoDelivery()),
        ("backdoor", Backdoor(0.5, None)),
        ("backdoor:0.2", Backdoor(0.2, None)),
        ("backdoor:1:5", Backdoor(1.0, 5.0)),
    ],
)
def test_parse_valid(text: str | None, expected: OwnerAttack | None) -> None:
    attack = parse_owner_attack(text)
    assert attack == expected
    if attack is not None:
        assert parse_owner_attack(attack.text) == attack == parse_owner_attack(str(attack))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "flip",
        "label-flip:1",
        "backdoor:0",
        "backdoor:1.5",
        "backdoor:x",
        "backdoor:0.1:2:3",
        "backdoor:nan",
        "no-delivery:",
        "zero",
        3,
    ],
)
def test_parse_invalid_names_the_valid_forms(text: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_owner_attack(text)  # type: ignore[arg-type]
    assert info.value.hint is not None
    for form in OWNER_FORMS:
        assert form in info.value.hint


def test_label_flip() -> None:
    X, y = data(BINARY)
    out_X, out_y = run(LabelFlip(), X, y, BINARY)
    np.testing.assert_array_equal(out_X, X)
    np.testing.assert_array_equal(out_y, 1 - y)

    X, y = data(MULTI)
    out_X, out_y = run(LabelFlip(), X, y, MULTI)
    np.testing.assert_array_equal(out_X, X)
    np.testing.assert_array_equal(out_y, np.select([y == 3, y == 5, y == 7], [5, 7, 3]))
    assert np.all(out_y != y)

    X, y = data([])
    out_X, out_y = run(LabelFlip(), X, y, [])
    np.testing.assert_array_equal(out_X, X)
    np.testing.assert_array_equal(out_y, -y)

    with pytest.raises(ConfigError, match="not among"):
        LabelFlip().apply(
            X, np.full(len(y), 4.0), features=FEATURES, classes=MULTI, rng=np.random.default_rng(0)
        )


@pytest.mark.parametrize("classes", [BINARY, MULTI, []])
def test_artificial(classes: list[int]) -> None:
    X, y = data(classes, n=500)
    out_X, out_y = run(Artificial(), X, y, classes)
    assert np.all((out_X >= LOW) & (out_X <= HIGH))
    assert not np.any(np.all(out_X == X, axis=1))  # every row is made up
    # Spread over the whole announced range, not the data's.
    assert np.all(out_X.min(axis=0) < LOW + 0.1 * (HIGH - LOW))
    assert np.all(out_X.max(axis=0) > HIGH - 0.1 * (HIGH - LOW))
    if classes:
        assert set(np.unique(out_y)) == set(classes)
    else:
        assert y.min() <= out_y.min() and out_y.max() <= y.max()
        assert not np.any(out_y == y)
    again = Artificial().apply(
        X, y, features=FEATURES, classes=classes, rng=np.random.default_rng(1)
    )
    np.testing.assert_array_equal(again[0], out_X)


@pytest.mark.parametrize(
    ("classes", "attack", "target"),
    [
        (BINARY, Backdoor(), 0.0),
        (MULTI, Backdoor(0.3, 7.0), 7.0),
        ([], Backdoor(0.25), 1.0),
    ],
)
def test_backdoor(classes: list[int], attack: Backdoor, target: float) -> None:
    X, y = data(classes, n=200)
    out_X, out_y = run(attack, X, y, classes)
    changed = np.any(out_X != X, axis=1)
    assert changed.sum() == round(attack.fraction * 200)
    np.testing.assert_array_equal(out_X[:, :2], X[:, :2])  # only the last two features
    np.testing.assert_array_equal(out_X[changed, 2:], np.broadcast_to(HIGH[2:], (changed.sum(), 2)))
    np.testing.assert_array_equal(out_y[~changed], y[~changed])
    np.testing.assert_array_equal(out_y[changed], target)
    # The trigger is the top of the announced range: +1 once the spec's scaling is applied.
    scaled = scale(out_X[changed], FEATURES.mean, FEATURES.std, FEATURES.spread)
    np.testing.assert_allclose(scaled[:, 2:], 1.0)


def test_names_are_kinds_and_text_has_the_parameters() -> None:
    attack = parse_owner_attack("backdoor:0.2:5")
    assert isinstance(attack, Backdoor)
    assert attack.name == "backdoor" and attack.text == "backdoor:0.2:5.0"
    assert attack.target_class(MULTI) == 5.0 and Backdoor().target_class(MULTI) == 3.0
    assert Backdoor().target_class([]) == 1.0
    X, _ = data(MULTI, n=3)
    np.testing.assert_array_equal(attack.apply_trigger(X, FEATURES), apply_trigger(X, FEATURES))
    assert [parse_owner_attack(t).name for t in ("label-flip", "no-delivery")] == [  # type: ignore[union-attr]
        "label-flip",
        "no-delivery",
    ]


def test_backdoor_target_must_be_a_class() -> None:
    X, y = data(MULTI)
    with pytest.raises(ConfigError, match="not one of"):
        Backdoor(0.5, 4.0).apply(
            X, y, features=FEATURES, classes=MULTI, rng=np.random.default_rng(0)
        )


def test_apply_trigger_leaves_its_input_alone() -> None:
    X, _ = data(BINARY, n=5)
    before = X.copy()
    out = apply_trigger(X, FEATURES)
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(out[:, :2], X[:, :2])
    np.testing.assert_array_equal(out[:, 2:], np.broadcast_to([-4.0, 10.0], (5, 2)))
    with pytest.raises(ConfigError, match="features"):
        apply_trigger(X[:, :3], FEATURES)


def test_no_delivery() -> None:
    X, y = data(BINARY)
    out_X, out_y = run(NoDelivery(), X, y, BINARY)
    np.testing.assert_array_equal(out_X, X)
    np.testing.assert_array_equal(out_y, y)
    assert not NoDelivery().delivers and LabelFlip().delivers
