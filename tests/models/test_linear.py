"""Plaintext models: predictions, probabilities, and versioned save/load with validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmarket.models import (
    LinearRegression,
    LogisticRegression,
    ModelFormatError,
    OneVsRest,
    load_model,
)
from fedmarket.models.persist import FORMAT_NAME, MAX_MODEL_FILE_BYTES

RNG = np.random.default_rng(0)
X = RNG.normal(size=(20, 4))


def models() -> list[LogisticRegression | OneVsRest | LinearRegression]:
    return [
        LogisticRegression(RNG.normal(size=4), 0.3, classes=np.array(["benign", "malignant"])),
        OneVsRest(RNG.normal(size=(3, 4)), RNG.normal(size=3), classes=np.array([3, 5, 9])),
        LinearRegression(RNG.normal(size=4), -1.5),
    ]


def test_logistic_probabilities_and_labels() -> None:
    model = LogisticRegression(np.array([1.0, -2.0, 0.0, 0.5]), 0.1)
    proba = model.predict_proba(X)
    assert proba.shape == (20, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    z = X @ model.coef_[0] + 0.1
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-z)))
    np.testing.assert_array_equal(model.predict(X), (z > 0).astype(int))
    # No overflow warnings for huge scores.
    assert np.all(np.isfinite(model.predict_proba(1e6 * X)))


def test_one_vs_rest_picks_the_highest_score() -> None:
    model = models()[1]
    assert isinstance(model, OneVsRest)
    scores = model.decision_function(X)
    np.testing.assert_array_equal(model.predict(X), model.classes_[scores.argmax(axis=1)])
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)


def test_weight_matrix_puts_the_bias_last() -> None:
    model = LinearRegression(np.array([1.0, 2.0, 3.0, 4.0]), 5.0)
    np.testing.assert_array_equal(model.weight_matrix, [[1, 2, 3, 4, 5]])
    np.testing.assert_allclose(model.predict(X), X @ [1, 2, 3, 4] + 5)


@pytest.mark.parametrize("index", range(3))
def test_save_load_round_trip(index: int, tmp_path: Path) -> None:
    model = models()[index]
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.weight_matrix, model.weight_matrix)
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert type(model).load(path).kind == model.kind


def test_loading_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    models()[2].save(tmp_path / "m.npz")
    with pytest.raises(ModelFormatError, match="holds a linear model"):
        LogisticRegression.load(tmp_path / "m.npz")


def _write(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
    return path


def _valid(**changes: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {
        "format": np.array(FORMAT_NAME),
        "version": np.array(1),
        "kind": np.array("linear"),
        "coef": np.ones((1, 3)),
        "intercept": np.zeros(1),
        "classes": np.array([], dtype=str),
    }
    arrays.update(changes)
    return arrays


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": np.array(2)}, "version"),
        ({"format": np.array("other")}, "not a fedmarket model"),
        ({"kind": np.array("svm")}, "unknown model kind"),
        ({"coef": np.array([[np.nan, 1.0, 2.0]])}, "non-finite"),
        ({"intercept": np.zeros(2)}, "disagree"),
        ({"coef": np.array([["a", "b"]])}, "dtype"),
    ],
)
def test_invalid_files_are_refused(changes: dict, message: str, tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.npz", **_valid(**changes))
    with pytest.raises(ModelFormatError, match=message):
        load_model(path)


def test_missing_arrays_pickles_and_junk_are_refused(tmp_path: Path) -> None:
    arrays = _valid()
    del arrays["classes"]
    with pytest.raises(ModelFormatError, match="expected"):
        load_model(_write(tmp_path / "a.npz", **arrays))
    with pytest.raises(ModelFormatError):
        load_model(_write(tmp_path / "b.npz", **_valid(classes=np.array([object()], dtype=object))))
    (tmp_path / "c.npz").write_bytes(b"not a zip file")
    with pytest.raises(ModelFormatError, match="not a readable"):
        load_model(tmp_path / "c.npz")
    with pytest.raises(ModelFormatError, match="cannot read"):
        load_model(tmp_path / "missing.npz")


def test_oversized_files_are_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.npz"
    with path.open("wb") as handle:
        handle.truncate(MAX_MODEL_FILE_BYTES + 1)
    with pytest.raises(ModelFormatError, match="limit"):
        load_model(path)
