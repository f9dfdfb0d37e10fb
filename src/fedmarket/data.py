"""Data sets for tasks: load by name, split off the requester's validation set, deal to owners.

Names: ``sklearn:breast_cancer``, ``sklearn:digits``, ``sklearn:iris``, ``sklearn:wine``,
``sklearn:diabetes`` (regression), ``synthetic:SAMPLES:FEATURES`` (scikit-learn's
``make_classification``, for benchmarks), or ``csv:PATH`` (relative paths resolve against the
spec file's folder; rows with a missing value are dropped, and the report says how many).

A task takes the columns its spec's ``features.names`` list: when those are columns of the data
set but not all of them (or not in its order), ``load_dataset(..., features=names)`` selects them
by name, in the spec's order; e.g. ``examples/digits_mlp.toml`` takes the 61 pixels of
``sklearn:digits`` that are not 0 in every image.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedmarket.errors import ConfigError
from fedmarket.models.scaling import FeatureScaler

SKLEARN = ("breast_cancer", "digits", "iris", "wine", "diabetes")
MISSING = ("", "NA", "NaN", "nan", "N/A", "null")


@dataclass(frozen=True)
class Dataset:
    """Features as float64 rows, labels, and the names of the features."""

    X: NDArray[np.float64]
    y: NDArray[np.float64]
    feature_names: list[str]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: NDArray[np.intp]) -> Dataset:
        return Dataset(self.X[index], self.y[index], self.feature_names, self.notes)


def load_dataset(
    name: str,
    *,
    label_column: str = "target",
    base: Path | None = None,
    features: Sequence[str] | None = None,
) -> Dataset:
    """Load a data set by name (see the module docstring); with ``features`` (a spec's
    ``features.names``), only those columns, in that order (``select_features``)."""
    data = _load(name, label_column=label_column, base=base)
    return data if features is None else select_features(data, features, where=name)


def select_features(data: Dataset, names: Sequence[str], *, where: str) -> Dataset:
    """The columns ``names`` of ``data``, in that order, when every name is one of its columns.

    Names that are the data's own, or as many names as it has columns (a spec may name the
    columns of a CSV whose header says otherwise), leave it as it is; any other list must
    consist of the data's columns, and a name that is not one is a ConfigError naming it.
    """
    names = list(names)
    if names == data.feature_names:
        return data
    columns = {n: i for i, n in reversed(list(enumerate(data.feature_names)))}
    missing = [n for n in names if n not in columns]
    if not missing:
        index = np.asarray([columns[n] for n in names], dtype=np.intp)
        width = len(data.feature_names)
        note = f"{where}: using {len(names)} of its {width} feature columns (features.names)"
        notes = data.notes + ([note] if len(names) != width else [])
        return Dataset(data.X[:, index], data.y, names, notes)
    if len(names) == len(data.feature_names):
        return data
    shown = ", ".join(repr(n) for n in missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise ConfigError(
        f"{where} has no feature column {shown} (features.names lists {len(names)} "
        f"features, the data set has {len(data.feature_names)})",
        hint="features.names must be the data's feature columns: all of them, or those the "
        f"task takes, by name (it has: {_columns(data.feature_names)})",
    )


def _columns(names: list[str]) -> str:
    return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")


def _load(name: str, *, label_column: str, base: Path | None) -> Dataset:
    kind, _, arg = name.partition(":")
    if kind == "sklearn":
        if arg not in SKLEARN:
            raise ConfigError(
                f"unknown scikit-learn data set {arg!r}", hint=f"use one of: {', '.join(SKLEARN)}"
            )
        import sklearn.datasets as skd

        loaded = getattr(skd, f"load_{arg}")()
        names = [str(n) for n in getattr(loaded, "feature_names", [])] or [
            f"x{i}" for i in range(loaded.data.shape[1])
        ]
        return Dataset(
            np.asarray(loaded.data, dtype=np.float64),
            np.asarray(loaded.target, dtype=np.float64),
            names,
        )
    if kind == "synthetic":
        # make_classification, generated here: for benchmarks at sizes no bundled set has
        try:
            n, d = (int(v) for v in arg.split(":"))
        except ValueError:
            raise ConfigError(
                f"bad synthetic data set {name!r}", hint="use synthetic:SAMPLES:FEATURES"
            ) from None
        from sklearn.datasets import make_classification

        X, y = make_classification(
            n_samples=n, n_features=d, n_informative=max(2, d // 2), random_state=0
        )
        return Dataset(X.astype(np.float64), y.astype(np.float64), [f"x{i}" for i in range(d)])
    if kind == "csv":
        path = Path(arg)
        if not path.is_absolute() and base is not None:
            path = base / path
        return _load_csv(path, label_column)
    raise ConfigError(
        f"unknown data set {name!r}", hint="use sklearn:NAME or csv:PATH (see fedmarket.data)"
    )


def _load_csv(path: Path, label_column: str) -> Dataset:
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = list(reader)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such data file", hint="check run.dataset in the spec"
        ) from None
    except (OSError, UnicodeDecodeError, StopIteration, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read CSV: {exc}") from None
    if label_column not in header:
        raise ConfigError(
            f"{path}: no label column {label_column!r}",
            hint=f"set labels.column to one of: {', '.join(header)}",
        )
    label = header.index(label_column)
    features = [i for i in range(len(header)) if i != label]
    kept: list[list[float]] = []
    dropped = 0
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ConfigError(f"{path}:{number}: {len(row)} fields, header has {len(header)}")
        values = []
        for column, v in zip(header, row, strict=True):
            text = v.strip()
            if text in MISSING:
                values.append(math.nan)
                continue
            try:
                value = float(text)
            except ValueError:
                what = "label" if column == label_column else "feature"
                raise ConfigError(
                    f"{path}:{number}: {what} {column!r} is not a number: {text[:40]!r}",
                    hint="labels and features must be numbers: encode categories as 0, 1, ... "
                    "(e.g. no=0, yes=1) before selling or training on the file",
                ) from None
            if math.isinf(value):
                raise ConfigError(
                    f"{path}:{number}: {column!r} is {text!r}, not a finite number",
                    hint="drop or cap infinite values before using the file",
                )
            values.append(value)
        if any(math.isnan(v) for v in values):
            dropped += 1
            continue
        kept.append(values)
    if not kept:
        raise ConfigError(f"{path}: no complete rows")
    data = np.asarray(kept, dtype=np.float64)
    notes = (
        [f"{path.name}: dropped {dropped} of {len(rows)} rows with a missing value"]
        if dropped
        else []
    )
    return Dataset(data[:, features], data[:, label], [header[i] for i in features], notes)


def split_validation(data: Dataset, fraction: float, *, seed: int) -> tuple[Dataset, Dataset]:
    """(train, validation), stratified by label for classification."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(data))
    n_val = math.ceil(fraction * len(data))
    if len(data) < 4 or n_val >= len(data):
        raise ConfigError(
            f"the data set has {len(data)} rows: too few to split off a validation set",
            hint="use more rows (a task needs a training and a validation split)",
        )
    classes, counts = np.unique(data.y, return_counts=True)
    # stratified when every class can be in both splits; a regression target or a rare class
    # falls back to a plain shuffle
    stratifiable = len(classes) <= 50 and counts.min() >= 2 and n_val >= len(classes)
    stratify = data.y if stratifiable else None
    train, val = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    return data.take(np.sort(train)), data.take(np.sort(val))


def partition(
    data: Dataset, sizes: list[int], *, seed: int, alpha: float | None = None
) -> list[Dataset]:
    """Deal ``sizes[i]`` rows to owner i: IID, or label-skewed by Dirichlet(``alpha``).

    Raises ConfigError when the owners want more rows than there are.
    """
    if sum(sizes) > len(data):
        raise ConfigError(
            f"the owners hold {sum(sizes)} points but the data set has {len(data)} training rows",
            hint="lower run.owners[*].points or task.num_points",
        )
    rng = np.random.default_rng(seed)
    if alpha is None:
        order = rng.permutation(len(data))
        out, start = [], 0
        for n in sizes:
            out.append(data.take(np.sort(order[start : start + n])))
            start += n
        return out
    # Non-IID: each owner draws its label mix from Dirichlet(alpha), then fills its size
    # from those labels while they last (falling back to any label left).
    pools = {c: list(rng.permutation(np.flatnonzero(data.y == c))) for c in np.unique(data.y)}
    labels = sorted(pools)
    parts = []
    for n in sizes:
        mix = rng.dirichlet([alpha] * len(labels))
        want = np.floor(mix * n).astype(int)
        want[np.argmax(mix)] += n - want.sum()
        chosen: list[int] = []
        for c, k in zip(labels, want, strict=True):
            take = min(k, len(pools[c]))
            chosen += [int(i) for i in pools[c][:take]]
            pools[c] = pools[c][take:]
        for c in labels:
            while len(chosen) < n and pools[c]:
                chosen.append(int(pools[c].pop()))
        parts.append(data.take(np.sort(np.asarray(chosen, dtype=np.intp))))
    return parts


def scaling_constants(data: Dataset) -> tuple[list[float], list[float]]:
    """(mean, std) per feature, std of constant features set to 1: what a spec publishes."""
    mean = data.X.mean(axis=0)
    std = data.X.std(axis=0)
    std[std < 1e-12] = 1.0
    # 8 significant digits: short in a TOML file, exact enough for any feature's scale
    return [float(f"{v:.8g}") for v in mean], [float(f"{v:.8g}") for v in std]


def scaler(mean: list[float], std: list[float], spread: float) -> FeatureScaler:
    """The spec's scaling as the encrypted program takes it: features into [-1, 1]."""
    return FeatureScaler(tuple(mean), tuple(spread * s for s in std))


def scale(
    X: NDArray[np.float64], mean: list[float], std: list[float], spread: float
) -> NDArray[np.float64]:
    """``clip((X - mean) / (spread * std), -1, 1)`` with the spec's constants."""
    if X.shape[1] != len(mean):
        raise ConfigError(f"data has {X.shape[1]} features but the spec lists {len(mean)}")
    out: NDArray[np.float64] = scaler(mean, std, spread).transform(X)
    return out


def check_task_data(
    data: Dataset, *, kind: Any, classes: list[int], n_features: int, where: str
) -> list[str]:
    """Refuse data a task cannot use, before any money moves; notes about what it can.

    ``kind`` is the task's ``ModelKind``; labels must be among ``classes`` and every class must
    have rows (a class nobody can show is a class the model can never learn).
    """
    notes: list[str] = []
    if data.X.shape[1] != n_features:
        raise ConfigError(
            f"{where} has {data.X.shape[1]} features, the spec lists {n_features}",
            hint="features.names must list the data's feature columns (all, or some by name)",
        )
    if not np.all(np.isfinite(data.X)):
        raise ConfigError(f"{where}: features must be finite numbers")
    y = np.asarray(data.y, dtype=np.float64)
    if not np.all(np.isfinite(y)):
        raise ConfigError(f"{where}: labels must be finite numbers")
    if not kind.sigmoid:
        return notes
    present = sorted({float(v) for v in y})
    extra = [v for v in present if v not in {float(c) for c in classes}]
    if extra:
        shown = ", ".join(f"{v:g}" for v in extra[:6])
        raise ConfigError(
            f"{where} has labels {shown} that are not among labels.classes {classes}",
            hint=f"set labels.classes to the data's labels {[f'{v:g}' for v in present]}; "
            "a logistic task takes 2 classes, multiclass 3 or more",
        )
    absent = [c for c in classes if float(c) not in set(present)]
    if absent:
        raise ConfigError(
            f"{where} has no row of class {absent}: the model could never learn it",
            hint="list only the classes the data holds in labels.classes",
        )
    return notes
