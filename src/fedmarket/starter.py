"""``fedmarket init``: a valid starter task for a data set, ready to run locally."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedmarket.data import load_dataset, scaling_constants
from fedmarket.errors import ConfigError
from fedmarket.parties import DataSource
from fedmarket.spec import MIN_BLOCK_POINTS, SpecFile

SPREAD = 2.5  # the spec's default: a feature's +-2.5 standard deviations map onto [-1, 1]
DATA_PRICE = 10**15  # 0.001 token per data point (18 decimals)
PROCESSING_PRICE = 10**14  # 0.0001 token per point per epoch
NETWORK_PRESET = "n16384-mlp"
# The integrity checks a network task announces: the plain mean and every monitor but
# "stability". On the digits MLP (honest owners, plaintext twin, 3 seeds) FLTrust cost about a
# point of test accuracy and the stability monitor quarantined an honest owner in 3 of 6 runs
# (docs/he.md, "Integrity and accuracy"); with poisoned owners, announce "fltrust" instead.
NETWORK_INTEGRITY = {
    "aggregator": "mean",
    "monitors": ["distance", "cosine", "norm", "validation"],
}


def starter_spec(
    dataset: str,
    *,
    name: str | None = None,
    label_column: str = "target",
    owners: int = 2,
    processors: int = 2,
    max_epochs: int = 10,
    validation_fraction: float = 0.2,
    seed: int = 0,
    base: Path | None = None,
    test_fraction: float = 0.0,
    features: list[str] | None = None,
) -> SpecFile:
    """A spec whose scaling comes from the requester's own validation split (never owners' data);
    ``features``: the data set's columns the task takes, by name (default: all)."""
    columns = tuple(features) if features is not None else None
    source = DataSource(
        dataset,
        label_column=label_column,
        validation_fraction=validation_fraction,
        seed=seed,
        base=base,
        test_fraction=test_fraction,
        features=columns,
    )
    train, val, _ = source.split()
    data = load_dataset(dataset, label_column=label_column, base=base, features=columns)
    mean, std = scaling_constants(val)
    if not np.all(np.isfinite(data.y)):
        raise ConfigError(f"{dataset}: labels must be finite numbers")
    classes = sorted({int(c) for c in np.unique(data.y)}) if _is_classification(data.y) else []
    model = "linear" if not classes else ("logistic" if len(classes) == 2 else "multiclass")
    per_owner = len(train) // owners
    if per_owner < 1:
        raise ConfigError(
            f"{dataset}: {owners} owners cannot share {len(train)} training rows",
            hint="use fewer owners, or a larger data set",
        )
    num_points = per_owner * owners
    # the privacy floor (issue 14): no owner sells, and no data fill is, fewer points
    min_block = max(MIN_BLOCK_POINTS, len(data.feature_names) + 2)
    if per_owner < min_block:
        raise ConfigError(
            f"{dataset}: {owners} owners cannot share {len(train)} training rows: each would "
            f"sell {per_owner} points, below the privacy floor of {min_block} (64, and the "
            "number of features + 2)",
            hint=f"use at most {max(1, len(train) // min_block)} owners for this data set",
        )
    capacity = -(-num_points // processors)
    # Asks climb 1% per party; budgets are 1.5x what the asks cost, so the task resolves.
    data_prices = [DATA_PRICE + i * DATA_PRICE // 100 for i in range(owners)]
    processing_prices = [PROCESSING_PRICE + i * PROCESSING_PRICE // 100 for i in range(processors)]
    data_budget = per_owner * sum(data_prices) * 3 // 2
    processing_budget = capacity * sum(processing_prices) * max_epochs * 3 // 2
    slug = name or dataset.split(":")[-1].rsplit("/", 1)[-1].removesuffix(".csv")
    raw = {
        "task": {
            "name": slug.replace(" ", "_")[:64],
            "model": model,
            "num_points": num_points,
            "epoch_seconds": 600,
            "max_epochs": max_epochs,
            "bidding_seconds": 300,
            "late_penalty_bps": 2000,
        },
        "budget": {
            "data": data_budget,
            "processing": processing_budget,
            "token_decimals": 18,
            # an auditor's fee: about one smallest block's processing at the going price
            "audit_fee": PROCESSING_PRICE * min_block,
        },
        "privacy": {"min_block_points": min_block},
        "features": {"names": data.feature_names, "mean": mean, "std": std, "spread": 2.5},
        "labels": {"column": label_column, "classes": classes, **_target_scaling(val.y, classes)},
        "run": {
            "dataset": dataset,
            "validation_fraction": validation_fraction,
            "test_fraction": test_fraction,
            "seed": seed,
            "owners": [
                {
                    "name": f"owner{i + 1}",
                    "points": per_owner,
                    "price": data_prices[i],
                }
                for i in range(owners)
            ],
            "processors": [
                {
                    "name": f"processor{i + 1}",
                    # split the work: with greedy resolution a processor able to take
                    # everything would win everything
                    "capacity": capacity,
                    "price": processing_prices[i],
                }
                for i in range(processors)
            ],
        },
    }
    return SpecFile.model_validate(raw)


def network_spec(spec: SpecFile, *, hidden: int = 32) -> SpecFile:
    """A starter spec turned into a one-hidden-layer network task (``mlp``, ``hidden`` units)
    with the settings the network examples use: the network preset, the integrity checks above,
    and every epoch run (a plateau on a small validation split stops a network early)."""
    data = spec.model_dump(exclude_none=True)
    data["task"].update(model="mlp", hidden=hidden)
    data["he"]["preset"] = NETWORK_PRESET
    data["integrity"].update(NETWORK_INTEGRITY)
    data["stopping"]["patience"] = 0
    return SpecFile.model_validate(data)


def _target_scaling(y: np.ndarray, classes: list[int]) -> dict[str, float]:
    """Regression targets go into [-1, 1] like the features: centre and spread x std of the
    requester's validation labels (8 significant digits, like the feature constants)."""
    if classes:
        return {}
    std = float(np.std(y)) or 1.0
    return {
        "target_center": float(f"{float(np.mean(y)):.8g}"),
        "target_scale": float(f"{SPREAD * std:.8g}"),
    }


def _is_classification(y: np.ndarray) -> bool:
    values = np.unique(y)
    return len(values) <= 50 and bool(np.all(values == np.round(values)))
