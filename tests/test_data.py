"""Data sets: real sets load, splits are disjoint, partitions are IID or skewed as asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmarket.data import load_dataset, partition, scale, scaling_constants, split_validation
from fedmarket.errors import ConfigError
from fedmarket.parties import DataSource
from fedmarket.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

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


def test_a_spec_takes_its_columns_by_name_from_sklearn_and_csv(tmp_path: Path) -> None:
    full = load_dataset("sklearn:digits")
    names = ["pixel_3_4", "pixel_0_2", "pixel_7_7"]  # a subset, out of the data's order
    some = load_dataset("sklearn:digits", features=names)
    assert some.feature_names == names and np.array_equal(some.y, full.y)
    assert np.array_equal(some.X, full.X[:, [28, 2, 63]])
    assert some.notes == ["sklearn:digits: using 3 of its 64 feature columns (features.names)"]
    # the same columns in another order are reordered (the data is read by name), no note
    reordered = load_dataset("sklearn:digits", features=full.feature_names[::-1])
    assert np.array_equal(reordered.X, full.X[:, ::-1]) and reordered.notes == []
    table = tmp_path / "t.csv"
    table.write_text("a,b,target,c\n1,2,0,3\n4,5,1,6\n")
    got = load_dataset(f"csv:{table}", features=["c", "a"])
    assert got.X.tolist() == [[3.0, 1.0], [6.0, 4.0]] and got.y.tolist() == [0.0, 1.0]
    # as many names as columns, not the header's: a spec naming them its own way, as before
    renamed = load_dataset(f"csv:{table}", features=["x", "y", "z"])
    assert renamed.X.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_a_name_the_data_lacks_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sklearn:digits has no feature column 'pixel_8_0'") as e:
        load_dataset("sklearn:digits", features=["pixel_0_1", "pixel_8_0"])
    assert "pixel_0_0" in (e.value.hint or "")
    table = tmp_path / "t.csv"
    table.write_text("a,b,target\n1,2,0\n")
    with pytest.raises(ConfigError, match=r"has no feature column 'target'"):
        load_dataset(f"csv:{table}", features=["target"])


def test_the_digits_mlp_example_takes_the_61_pixels_of_sklearn_digits() -> None:
    """examples/digits_mlp.toml: sklearn:digits narrowed to the spec's 61 pixels, every row
    where it was (the split is seeded on row order and labels), the 3 dropped pixels 0 always."""
    spec = load_spec(EXAMPLES / "digits_mlp.toml")
    assert spec.run is not None and spec.run.dataset == "sklearn:digits"
    names = spec.spec.features.names
    full = load_dataset("sklearn:digits")
    dropped = [i for i, n in enumerate(full.feature_names) if n not in names]
    assert len(names) == 61 and len(dropped) == 3 and not full.X[:, dropped].any()
    source = DataSource("sklearn:digits", test_fraction=0.25, features=tuple(names))
    whole = DataSource("sklearn:digits", test_fraction=0.25)
    for narrow, wide in zip(source.split(), whole.split(), strict=True):
        assert narrow is not None and wide is not None
        assert np.array_equal(narrow.X, np.delete(wide.X, dropped, axis=1))
        assert np.array_equal(narrow.y, wide.y)
