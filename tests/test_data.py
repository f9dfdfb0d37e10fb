"""Data sets: real sets load, splits are disjoint, partitions are IID or skewed as asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmarket.data import load_dataset, partition, scale, scaling_constants, split_validation
from fedmarket.errors import ConfigError

FRAMINGHAM = Path(__file__).resolve().parents[2] / "shared" / "data" / "framingham.csv"


def test_sklearn_sets_load_with_names() -> None:
    bc = load_dataset("sklearn:breast_cancer")
    assert bc.X.shape == (569, 30) and set(np.unique(bc.y)) == {0.0, 1.0}
    assert bc.feature_names[0] == "mean radius"
    assert load_dataset("sklearn:digits").X.shape == (1797, 64)


def test_framingham_drops_incomplete_rows_and_says_so() -> None:
    if not FRAMINGHAM.exists():  # ../shared/data is outside the repository (like tests/he)
        pytest.skip(f"{FRAMINGHAM} not found (set FEDMARKET_FRAMINGHAM)")
    data = load_dataset(f"csv:{FRAMINGHAM}", label_column="TenYearCHD")
    assert data.X.shape[1] == 15 and "TenYearCHD" not in data.feature_names
    assert 3000 < len(data) < 4238
    assert not np.isnan(data.X).any()
    assert data.notes and "dropped" in data.notes[0]


def test_bad_names_and_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown scikit-learn data set"):
        load_dataset("sklearn:mnist")
    with pytest.raises(ConfigError, match="no such data file"):
        load_dataset("csv:nope.csv", base=tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,target\n1,0\nx,1\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:3: feature 'a' is not a number"):
        load_dataset(f"csv:{bad}")
    with pytest.raises(ConfigError, match="no label column 'y'"):
        load_dataset(f"csv:{bad}", label_column="y")


def test_split_and_iid_partition_are_disjoint_and_complete() -> None:
    data = load_dataset("sklearn:breast_cancer")
    train, val = split_validation(data, 0.2, seed=0)
    assert len(train) + len(val) == 569 and abs(len(val) - 114) <= 1
    parts = partition(train, [200, 200], seed=1)
    rows = {tuple(r) for p in parts for r in p.X}
    assert len(rows) == 400
    assert not rows & {tuple(r) for r in val.X}
    with pytest.raises(ConfigError, match="hold 1000 points"):
        partition(train, [500, 500], seed=1)


def test_dirichlet_partition_skews_labels() -> None:
    data = load_dataset("sklearn:digits")
    iid = partition(data, [300] * 4, seed=3)
    skew = partition(data, [300] * 4, seed=3, alpha=0.1)
    top = lambda p: np.bincount(p.y.astype(int), minlength=10).max() / len(p)  # noqa: E731
    assert all(len(p) == 300 for p in skew)
    assert np.mean([top(p) for p in skew]) > 2 * np.mean([top(p) for p in iid])


def test_scaling_standardises_and_clips() -> None:
    data = load_dataset("sklearn:breast_cancer")
    mean, std = scaling_constants(data)
    z = scale(data.X, mean, std, spread=2.5)
    assert np.abs(z).max() <= 1.0 and np.mean(np.abs(z) == 1.0) < 0.05
    unclipped = (data.X - np.asarray(mean)) / (2.5 * np.asarray(std))
    inside = np.abs(unclipped) < 1
    assert np.allclose(z[inside], unclipped[inside])
    with pytest.raises(ConfigError, match="spec lists"):
        scale(data.X[:, :3], mean, std, 2.5)
