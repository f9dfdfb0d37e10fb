"""The spec's packing, checked in plain numpy: the layouts give z and the gradient sums."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fedmarket.errors import ConfigError
from fedmarket.he import HESpec
from fedmarket.he.packing import label_vectors
from fedmarket.models import gradient_sums


def rotate(vector: np.ndarray, step: int) -> np.ndarray:
    """CKKS rotate_vector: slot k of the result is slot k + step of the input."""
    return np.roll(vector, -step)


def simulate(spec: HESpec, X: np.ndarray, targets: np.ndarray, W: np.ndarray) -> np.ndarray:
    """The processor's program on plaintext slot vectors, rotation for rotation."""
    F = spec.block_matrix(X)
    r = spec.class_lanes
    out = np.zeros((spec.n_groups * r, spec.lanes))
    weights = spec.poly.kappa * W if spec.is_logistic else W
    for group, label in enumerate(label_vectors(spec, targets)):
        rows = weights[group * r : (group + 1) * r]
        # the compact model as sent, averaged over its copies and expanded as the processor does
        compact = spec.to_physical(spec.model_layout(rows, 0)) / spec.model_copies
        stride = spec.lanes
        while stride < spec.length:
            compact = compact + rotate(compact, r * stride)
            stride *= 2
        model = [compact]
        for b in range(1, spec.model_ciphertexts):
            low = b & -b
            model.append(rotate(model[b - low], r * low))
        z = np.zeros(spec.slots)
        for part in range(spec.parts):  # each part's share of z, moved into place
            share = np.zeros(spec.slots)
            for i, g in enumerate(reversed(spec.part_giants(part))):
                share = rotate(share, -r * spec.model_baby) if i else share
                share += sum(
                    model[j] * spec.to_physical(spec.z_layout(F, g, j))
                    for j in spec.part_model_columns(part)
                )
            z += rotate(share, spec.part_z_shift(part))
        h = (z * (z * z + spec.poly.linear_term) if spec.is_logistic else z) - label
        total = np.zeros(spec.slots)
        for part in range(spec.parts):  # each part's baby steps, with every giant step
            babies = spec.part_babies(part)
            baby = {b: rotate(h, r * b) for b in babies}
            acc = np.zeros(spec.slots)
            for g in reversed(range(spec.sum_giant)):
                acc = rotate(acc, r * spec.sum_baby) if g < spec.sum_giant - 1 else acc
                acc += sum(baby[b] * spec.to_physical(spec.sum_layout(F, g, b)) for b in babies)
            total += acc
        acc = total
        stride = spec.lanes
        while stride < spec.length:
            acc = acc + rotate(acc, r * stride)
            stride *= 2
        replicas = spec.result_lanes(acc)
        assert np.allclose(replicas, replicas[:, :1, :]), "every slot of a lane holds its total"
        out[group * r : (group + 1) * r] = replicas[:, 0, :]
    return out[: spec.n_outputs, : spec.n_features + 1]


@pytest.mark.parametrize(
    ("kind", "features", "outputs", "samples"),
    [
        ("logistic", 5, 1, 300),  # 8 lanes: 512 copies in the compact model
        ("logistic", 5, 1, None),
        ("logistic", 40, 1, 4096),  # 64 lanes: two giant steps for z (Bz = 32)
        ("logistic", 40, 1, 1000),  # two giant steps for z, in two parts
        ("logistic", 100, 1, 1000),  # two parts, each with two of the four giant steps
        ("linear", 40, 1, 700),  # two parts of a linear model
        ("linear", 3, 1, 1000),  # 4 lanes
        ("multiclass", 6, 4, 900),  # 4 class lanes
        ("multiclass", 6, 3, 200),  # 3 classes: one class lane (lanes must divide the outputs)
        ("multiclass", 9, 6, 600),  # 2 class lanes, 3 groups
    ],
)
def test_layouts_compute_the_gradient_sums(
    kind: str, features: int, outputs: int, samples: int | None
) -> None:
    spec = HESpec.for_task(
        kind=kind,  # type: ignore[arg-type]
        n_features=features,
        n_outputs=outputs,
        expected_samples=samples,
    )
    rng = np.random.default_rng(features)
    n = min(samples or spec.block_size, spec.block_size)
    X = rng.uniform(-1, 1, (n, features))
    if kind == "multiclass":
        labels = rng.integers(0, outputs, n)
        targets = np.eye(outputs)[labels]
    elif kind == "logistic":
        labels = rng.integers(0, 2, n)
        targets = labels[:, None].astype(float)
    else:
        labels = rng.uniform(-1, 1, n)
        targets = labels[:, None]
    W = rng.normal(0, 0.3, (outputs, features + 1))
    expected = gradient_sums(kind, W, X, targets, spec.poly)  # type: ignore[arg-type]
    assert np.allclose(simulate(spec, X, targets, W), expected, atol=1e-8)


def test_layouts_in_two_parts_sharing_the_model_ciphertexts() -> None:
    spec = dataclasses.replace(
        HESpec.for_task(kind="logistic", n_features=30, expected_samples=1000), parts=2
    )
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (1000, 30))
    labels = rng.integers(0, 2, 1000)
    W = rng.normal(0, 0.3, (1, 31))
    expected = gradient_sums("logistic", W, X, labels[:, None].astype(float), spec.poly)
    assert np.allclose(simulate(spec, X, labels[:, None].astype(float), W), expected)


def test_multiclass_shares_slots_when_few_samples() -> None:
    spec = HESpec.for_task(kind="multiclass", n_features=64, n_outputs=10, expected_samples=1347)
    # 2 class lanes: one block of 2048 samples, 5 groups (vs 10 with one lane per class).
    assert (spec.lanes, spec.class_lanes, spec.block_size, spec.n_groups) == (128, 2, 2048, 5)


@pytest.mark.parametrize(
    ("features", "samples", "copies", "new_keys"),
    [(10, 1000, 256, {8}), (30, 455, 128, {16}), (100, 1000, 32, set()), (1, 10, 2048, set())],
)
def test_the_compact_model_is_projected_with_few_new_keys(
    features: int, samples: int, copies: int, new_keys: set[int]
) -> None:
    """One model ciphertext per class group holds L/D copies of each weight; averaging them
    reuses the all-reduce's rotations and expanding the Bz diagonals needs left rotations by
    r * 2^i, of which only those beyond the sums' baby steps are new keys."""
    spec = HESpec.for_task(kind="logistic", n_features=features, expected_samples=samples)
    assert spec.model_copies == copies == spec.length // spec.lanes
    assert spec.model_ciphertexts == spec.model_baby
    steps = set(spec.rotation_steps())
    assert {spec.lanes << i for i in range(copies.bit_length() - 1)} <= steps
    assert {1 << i for i in range(spec.model_baby.bit_length() - 1)} <= steps
    baby = {1 << i for i in range(spec.sum_baby.bit_length() - 1)} | {spec.sum_baby}
    expansion = {1 << i for i in range(spec.model_baby.bit_length() - 1)}
    assert expansion - baby - {spec.lanes << i for i in range(12)} == new_keys


def test_class_lanes_divide_the_outputs() -> None:
    """A padding class lane would hold no labels: its totals would answer a label-free query."""
    for outputs in (3, 5, 6, 10):
        spec = HESpec.for_task(
            kind="multiclass", n_features=8, n_outputs=outputs, expected_samples=300
        )
        assert outputs % spec.class_lanes == 0
    spec = HESpec.for_task(kind="multiclass", n_features=8, n_outputs=3, expected_samples=300)
    with pytest.raises(ConfigError, match="dividing 3 outputs"):
        dataclasses.replace(spec, class_lanes=4)


@pytest.mark.parametrize(
    ("features", "samples", "parts", "extra_key"),
    [
        (10, 1000, 1, None),  # 16 lanes: splitting would not pay
        (30, 1000, 1, None),  # 32 lanes: two workers would gain too little
        (60, 1000, 2, None),  # 64 lanes, two giant steps: part 1's share of z moves by -Bz
        (100, 1000, 2, -64),  # four giant steps: part 1's share of z moves by -2 Bz
        (100, 5000, 1, None),  # two blocks: one per core already
        (30, None, 1, None),  # unknown size
    ],
)
def test_one_block_tasks_run_in_two_parts(
    features: int, samples: int | None, parts: int, extra_key: int | None
) -> None:
    spec = HESpec.for_task(kind="logistic", n_features=features, expected_samples=samples)
    assert spec.parts == parts
    one_part = dataclasses.replace(spec, parts=1)
    extra = set(spec.rotation_steps()) - set(one_part.rotation_steps())
    assert extra == ({extra_key} if extra_key else set())
    if parts == 2:
        # The two parts cover every giant step, model ciphertext and baby step exactly once.
        giants = [g for p in (0, 1) for g in spec.part_giants(p)]
        columns = [c for p in (0, 1) for c in spec.part_model_columns(p)]
        assert sorted(
            (g, c) for p in (0, 1) for g in spec.part_giants(p) for c in spec.part_model_columns(p)
        ) == [(g, c) for g in range(spec.model_giant) for c in range(spec.model_ciphertexts)]
        assert set(giants) == set(range(spec.model_giant))
        assert set(columns) == set(range(spec.model_ciphertexts))
        babies = [b for p in (0, 1) for b in spec.part_babies(p)]
        assert babies == list(range(spec.sum_baby))


def test_two_parts_can_share_the_model_ciphertexts() -> None:
    """With one giant step (not chosen by for_task, but a valid spec) the parts split the
    model ciphertexts instead; the numpy replay and test_determinism check its results."""
    spec = dataclasses.replace(
        HESpec.for_task(kind="logistic", n_features=30, expected_samples=1000), parts=2
    )
    assert spec.model_giant == 1
    assert [list(spec.part_model_columns(p)) for p in (0, 1)] == [
        list(range(16)),
        list(range(16, 32)),
    ]
    assert spec.part_z_shift(1) == 0


def test_two_parts_need_something_to_share() -> None:
    spec = HESpec.for_task(kind="logistic", n_features=30, expected_samples=1000)
    with pytest.raises(ConfigError, match="parts must be 1 or 2"):
        dataclasses.replace(spec, parts=3)
    digits = HESpec.for_task(kind="multiclass", n_features=64, n_outputs=10, expected_samples=500)
    assert digits.n_groups > 1 and digits.parts == 1
    with pytest.raises(ConfigError, match="single class group"):
        dataclasses.replace(digits, parts=2)


def test_rotation_steps_are_only_what_the_program_uses() -> None:
    spec = HESpec.for_task(kind="logistic", n_features=100)
    assert (spec.lanes, spec.model_baby, spec.sum_baby) == (128, 32, 16)
    # z: -32 (giant); sums: 1, 2, 4, 8 (baby), 16 (giant), then 128..2048 (all-reduce).
    assert spec.rotation_steps() == (-32, 1, 2, 4, 8, 16, 128, 256, 512, 1024, 2048)


def test_json_round_trip_is_exact() -> None:
    spec = HESpec.for_task(kind="multiclass", n_features=12, n_outputs=4, expected_samples=100)
    again = HESpec.from_json(json.loads(spec.canonical_bytes()))
    assert again == spec and again.canonical_bytes() == spec.canonical_bytes()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lanes", 12, "power of two"),
        ("lanes", True, "positive integer"),
        ("kind", "svm", "unknown model kind"),
        ("preset", "n4096", "unknown HE parameter preset"),
        ("coeff_mod_bit_sizes", [60, 40, 30, 30, 60], "disagree"),
        ("class_lanes", 8, "class_lanes"),
        ("version", 1, "spec version"),
        ("min_block_points", 0, "min_block_points"),
        ("min_block_points", 5000, "min_block_points"),
        ("clip_norm", 1, "clip_norm"),
        ("clip_norm", -1.0, "clip_norm"),
        ("clip_norm", float("nan"), "clip_norm"),
        ("noise", 1, "noise"),
    ],
)
def test_from_json_rejects_bad_specs(field: str, value: object, message: str) -> None:
    data = HESpec.for_task(kind="logistic", n_features=5).to_json()
    data[field] = value
    with pytest.raises(ValueError, match=message):
        HESpec.from_json(data)


def test_too_many_features_for_the_ring_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="do not fit"):
        HESpec.for_task(kind="logistic", n_features=5000)
