"""A neural network trained on encrypted data: accuracy, time and bytes against baselines run here.

(a) Digits with a one-hidden-layer MLP (square activation, squared error, 32 hidden units,
    10 outputs), trained encrypted for ``DIGITS_EPOCHS`` epochs; baselines in the same run: the
    same algorithm in plaintext (accuracy, seconds per epoch), the one-vs-rest logistic head
    encrypted (accuracy over ``ACCURACY_EPOCHS``, seconds per epoch). Targets: test accuracy
    >= 97% and within 1 point of plaintext; <= 30 s per epoch on this machine's cores.
(b) Bytes per epoch each way (requester -> processor: the model; processors -> requester: the
    results), once owner -> processors (the blocks), and the public context.
(c) The MLP against logistic regression (both encrypted, same split) on breast cancer and
    Framingham.

Digits' three pixels that are 0 in every image are left out (61 inputs): they carry nothing,
and 61 + 1 lanes round up to 64 instead of 128. Every time is the median over the epochs.
Prints a table and writes ``benchmarks/results/deep.json``.
Run: ``make bench-deep`` (or ``.venv/bin/python benchmarks/deep.py [--quick]``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

from fedmarket.he import train_encrypted
from fedmarket.models import FeatureScaler, TrainConfig, fit_plaintext, score

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "deep.json"
FRAMINGHAM = Path(
    os.environ.get("FEDMARKET_FRAMINGHAM", ROOT.parent / "shared" / "data" / "framingham.csv")
)
DIGITS_EPOCHS = 70
ACCURACY_EPOCHS = 30
HIDDEN = 32
WORKERS = 2
console = Console()


def split(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Train / the requester's validation / test = 60 / 15 / 25 %, stratified, scaled."""
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
    with FRAMINGHAM.open(newline="") as handle:
        rows = list(csv.reader(handle))
    complete = [row for row in rows[1:] if all(value not in ("", "NA") for value in row)]
    data = np.array(complete, dtype=float)
    return data[:, :-1], data[:, -1].astype(int)


def encrypted_run(
    kind: str, parts: tuple[np.ndarray, ...], epochs: int
) -> tuple[dict[str, Any], Any]:
    X_train, y_train, X_val, y_val, X_test, y_test = parts
    config = TrainConfig(epochs=epochs, hidden=HIDDEN)
    start = time.perf_counter()
    result = train_encrypted(
        X_train, y_train, kind=kind, X_val=X_val, y_val=y_val, config=config, workers=WORKERS
    )
    seconds = [h.seconds for h in result.history]
    out = {
        "kind": kind,
        "epochs": epochs,
        "test_accuracy": score(result.model, X_test, y_test),
        "validation_by_epoch": [h.metric for h in result.history],
        "epoch_seconds_median": float(np.median(seconds)),
        "epoch_seconds_all": seconds,
        "processor_seconds_median": float(np.median([h.processor_seconds for h in result.history])),
        "model_bytes_per_epoch": result.history[-1].model_bytes,
        "result_bytes_per_epoch": result.history[-1].result_bytes,
        "block_bytes_once": result.block_bytes,
        "context_bytes": result.context_bytes,
        "blocks": result.n_blocks,
        "setup_seconds": result.setup_seconds,
        "total_seconds": time.perf_counter() - start,
        "spec": {
            "preset": result.spec.preset.name,
            "security_bits": result.spec.preset.security_bits,
            "lanes": result.spec.lanes,
            "class_lanes": result.spec.class_lanes,
            "block_size": result.spec.block_size,
            "hidden": result.spec.hidden,
        },
    }
    return out, result


def plaintext_run(kind: str, parts: tuple[np.ndarray, ...], epochs: int) -> dict[str, Any]:
    X_train, y_train, X_val, y_val, X_test, y_test = parts
    result = fit_plaintext(
        X_train,
        y_train,
        kind=kind,
        X_val=X_val,
        y_val=y_val,
        config=TrainConfig(epochs=epochs, hidden=HIDDEN),
    )
    return {
        "kind": kind,
        "epochs": epochs,
        "test_accuracy": score(result.model, X_test, y_test),
        "epoch_seconds_median": float(np.median([h.seconds for h in result.history])),
        "first_epoch_at_97": next(
            (
                e + 1
                for e in range(epochs)
                if score(
                    fit_plaintext(
                        X_train,
                        y_train,
                        kind=kind,
                        X_val=X_val,
                        y_val=y_val,
                        config=TrainConfig(epochs=e + 1, hidden=HIDDEN),
                    ).model,
                    X_test,
                    y_test,
                )
                >= 0.97
            ),
            None,
        )
        if kind == "mlp"
        else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs each (a smoke run)")
    args = parser.parse_args()
    digits_epochs = 3 if args.quick else DIGITS_EPOCHS
    epochs = 3 if args.quick else ACCURACY_EPOCHS
    started = time.perf_counter()
    X, y = load_digits(return_X_y=True)
    X = X[:, X.std(axis=0) > 0]  # 3 pixels are 0 in every image
    digits = split(X, y)
    mlp, _ = encrypted_run("mlp", digits, digits_epochs)
    mlp_plain = plaintext_run("mlp", digits, digits_epochs)
    head, _ = encrypted_run("multiclass", digits, epochs)
    head_plain = plaintext_run("multiclass", digits, epochs)
    versus = []
    datasets: list[tuple[str, np.ndarray, np.ndarray]] = [
        ("breast cancer", *load_breast_cancer(return_X_y=True))
    ]
    if FRAMINGHAM.exists():
        datasets.append(("framingham", *load_framingham()))
    else:
        console.print(f"[yellow]framingham skipped: {FRAMINGHAM} not found[/]")
    for name, Xd, yd in datasets:
        parts = split(Xd, yd)
        row: dict[str, Any] = {"dataset": name, "train_samples": int(parts[0].shape[0])}
        row["mlp"], _ = encrypted_run("mlp", parts, epochs)
        row["logistic"], _ = encrypted_run("logistic", parts, epochs)
        row["mlp_plaintext"] = plaintext_run("mlp", parts, epochs)
        row["logistic_plaintext"] = plaintext_run("logistic", parts, epochs)
        versus.append(row)

    gap = abs(mlp["test_accuracy"] - mlp_plain["test_accuracy"])
    targets = {
        "digits_accuracy_at_least_97": mlp["test_accuracy"] >= 0.97,
        "within_1_point_of_plaintext": gap <= 0.01,
        "epoch_at_most_30_s": mlp["epoch_seconds_median"] <= 30.0,
    }
    ratios = {
        "epoch_vs_plaintext_epoch": mlp["epoch_seconds_median"] / mlp_plain["epoch_seconds_median"],
        "epoch_vs_logistic_head_epoch": mlp["epoch_seconds_median"] / head["epoch_seconds_median"],
    }
    table = Table(title=f"make bench-deep: digits, 61 -> {HIDDEN} -> 10 MLP, {WORKERS} workers")
    for column in ("", "encrypted MLP", "plaintext MLP", "encrypted logistic head"):
        table.add_column(column, justify="right")
    table.add_row(
        "test accuracy",
        f"{mlp['test_accuracy']:.2%}",
        f"{mlp_plain['test_accuracy']:.2%}",
        f"{head['test_accuracy']:.2%}",
    )
    table.add_row("epochs", str(mlp["epochs"]), str(mlp_plain["epochs"]), str(head["epochs"]))
    table.add_row(
        "s per epoch (median)",
        f"{mlp['epoch_seconds_median']:.2f}",
        f"{mlp_plain['epoch_seconds_median']:.4f}",
        f"{head['epoch_seconds_median']:.2f}",
    )
    table.add_row(
        "MB per epoch to processors",
        f"{mlp['model_bytes_per_epoch'] / 1e6:.1f}",
        "-",
        f"{head['model_bytes_per_epoch'] / 1e6:.1f}",
    )
    table.add_row(
        "MB per epoch to requester",
        f"{mlp['result_bytes_per_epoch'] / 1e6:.1f}",
        "-",
        f"{head['result_bytes_per_epoch'] / 1e6:.1f}",
    )
    table.add_row(
        "MB once, owners to processors",
        f"{mlp['block_bytes_once'] / 1e6:.0f}",
        "-",
        f"{head['block_bytes_once'] / 1e6:.0f}",
    )
    table.add_row(
        "MB public context",
        f"{mlp['context_bytes'] / 1e6:.0f}",
        "-",
        f"{head['context_bytes'] / 1e6:.0f}",
    )
    console.print(table)
    console.print(
        f"ratios: encrypted epoch / plaintext epoch = {ratios['epoch_vs_plaintext_epoch']:.0f}x, "
        f"/ encrypted logistic-head epoch = {ratios['epoch_vs_logistic_head_epoch']:.1f}x; "
        f"plaintext MLP first reaches 97% at epoch {mlp_plain['first_epoch_at_97']}"
    )
    vs = Table(title=f"MLP ({HIDDEN} hidden) vs logistic regression, encrypted, {epochs} epochs")
    for column in ("data set", "MLP", "logistic", "MLP plaintext", "logistic plaintext",
                   "MLP s/epoch", "logistic s/epoch"):  # fmt: skip
        vs.add_column(column, justify="right")
    for row in versus:
        vs.add_row(
            row["dataset"],
            f"{row['mlp']['test_accuracy']:.2%}",
            f"{row['logistic']['test_accuracy']:.2%}",
            f"{row['mlp_plaintext']['test_accuracy']:.2%}",
            f"{row['logistic_plaintext']['test_accuracy']:.2%}",
            f"{row['mlp']['epoch_seconds_median']:.2f}",
            f"{row['logistic']['epoch_seconds_median']:.2f}",
        )
    console.print(vs)
    for name, ok in targets.items():
        console.print(f"{'PASS' if ok else 'MISS'} {name}")
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "tenseal": metadata.version("tenseal"),
        },
        "quick": args.quick,
        "digits": {
            "mlp": mlp,
            "mlp_plaintext": mlp_plain,
            "logistic_head": head,
            "logistic_head_plaintext": head_plain,
            "gap_to_plaintext": gap,
            "ratios": ratios,
        },
        "versus_logistic": versus,
        "targets": targets,
        "seconds": time.perf_counter() - started,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
