"""Speed, bytes and accuracy of encrypted training, against baselines measured in the same run.

(a) The processor's throughput (sample-features per second, one epoch, all cores) over a sweep
    of samples x features, on random data in [-1, 1] with a binary logistic model.
(b) TenSEAL Tutorial 1's layout (one ciphertext per sample) on the same kind of data with a
    few samples, and the ratio of its time per sample to ours at the same number of features.
(c) Bytes on the wire per sample: per epoch requester -> processor (the model) and processor
    -> requester (the results), and once owner -> processor (the encrypted data).
(d) Test accuracy of encrypted training vs the same algorithm in plaintext and scikit-learn's
    LogisticRegression on breast cancer, digits (10 classes, one-vs-rest) and Framingham.
(e) A lower bound on any schedule's epoch at 1,000 samples, from SEAL's single operations timed
    here (``fedmarket.he.bound``), against the time the throughput target allows; and the noise
    that rules out the next smaller ring (N=4096).

Prints a targets table and writes ``benchmarks/results/he.json``.
Run: ``make bench-he`` (or ``.venv/bin/python benchmarks/he.py [--quick]``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.multiclass import OneVsRestClassifier

from fedmarket.he import (
    HESpec,
    KeyPair,
    ProcessorPool,
    PublicContext,
    encrypt_block,
    encrypt_model,
    split_into_blocks,
    time_tutorial_layout,
    train_encrypted,
)
from fedmarket.he.bound import critical_path, max_precision_bits, measure_op_costs, ring_noise
from fedmarket.models import FeatureScaler, TrainConfig, fit_plaintext, score

RESULTS = Path(__file__).resolve().parent / "results" / "he.json"
FRAMINGHAM = Path(
    os.environ.get(
        "FEDMARKET_FRAMINGHAM",
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "framingham.csv",
    )
)

# Targets (issue 3).
THROUGHPUT_TARGET = 1_000_000  # sample-features per second per processor
TUTORIAL_RATIO_TARGET = 300  # our speed per sample / the tutorial layout's
VS_PLAINTEXT_POINTS = 1.0  # accuracy: encrypted within this of the same algorithm in plaintext
VS_SKLEARN_POINTS = 2.0  # and within this of scikit-learn's LogisticRegression

SWEEP_SAMPLES = (1_000, 10_000, 100_000)
SWEEP_FEATURES = (10, 30, 100)
TUTORIAL_SAMPLES = 8  # the tutorial layout costs ~0.1 s per sample; a few suffice
WORKERS = 2
TIMED_EPOCHS = 5  # after one warm-up epoch; the fastest is judged, the median recorded too
ACCURACY_EPOCHS = 30
BOUND_POINT = (1_000, 10)  # samples, features: where the throughput target is tightest

console = Console()
RETRIES: list[int] = []  # owner-encryption retries (see _encrypt_blocks), reported in the JSON


@dataclass(frozen=True)
class Row:
    """One line of the targets table."""

    name: str
    target: float
    measured: float
    higher_is_better: bool
    unit: str

    @property
    def passed(self) -> bool:
        if self.higher_is_better:
            return self.measured >= self.target
        return self.measured <= self.target


def _encrypt(args: tuple[bytes, np.ndarray, np.ndarray, str]) -> bytes:
    context_bytes, X, y, block_id = args
    return encrypt_block(PublicContext.from_bytes(context_bytes), X, y, block_id=block_id)


def _encrypt_blocks(jobs: list[tuple[bytes, np.ndarray, np.ndarray, str]]) -> list[bytes]:
    """The owners' side, on both cores. A worker killed from outside (this benchmark shares
    its machine) breaks the executor; the data is fixed, so the step is retried once, loudly."""
    for attempt in range(2):
        try:
            with ProcessPoolExecutor(WORKERS, mp_context=get_context("spawn")) as executor:
                return list(executor.map(_encrypt, jobs))
        except BrokenProcessPool:
            console.print(f"[yellow]an encryption worker died (attempt {attempt + 1})[/]")
            RETRIES.append(len(jobs))
    raise RuntimeError("owner encryption failed twice")


def _epoch_seconds(
    keypair: KeyPair, blocks: list[bytes], weights: np.ndarray, workers: int
) -> tuple[list[float], float, dict[str, bytes], bytes]:
    """(timed epochs' seconds, block loading time, results, model) for a pool of ``workers``."""
    with ProcessorPool(keypair.public.data, workers=workers) as pool:
        for block in blocks:
            pool.add_block(block)
        start = time.perf_counter()
        pool.block_ids()
        load_seconds = time.perf_counter() - start
        pool.run_epoch(encrypt_model(keypair, weights, epoch=0))  # warm-up
        epochs = []
        for epoch in range(1, TIMED_EPOCHS + 1):
            model = encrypt_model(keypair, weights, epoch=epoch)
            start = time.perf_counter()
            results = pool.run_epoch(model)
            epochs.append(time.perf_counter() - start)
    return epochs, load_seconds, results, model


def sweep_point(n: int, d: int, *, single_worker: bool) -> dict[str, Any]:
    """Owner encryption, then the processor's epoch time on n samples x d features."""
    rng = np.random.default_rng(n * 1000 + d)
    spec = HESpec.for_task(kind="logistic", n_features=d, expected_samples=n)
    keypair = KeyPair.generate(spec)
    X = rng.uniform(-1.0, 1.0, (n, d))
    y = rng.integers(0, 2, n)
    start = time.perf_counter()
    jobs = [
        (keypair.public.data, Xb, yb, f"owner/{i}")
        for i, (Xb, yb) in enumerate(split_into_blocks(X, y, spec))
    ]
    blocks = _encrypt_blocks(jobs)
    encrypt_seconds = time.perf_counter() - start
    weights = rng.normal(0.0, 0.05, (1, d + 1))
    epochs, load_seconds, results, model = _epoch_seconds(keypair, blocks, weights, WORKERS)
    seconds = min(epochs)
    # One worker on the same blocks: what one core does, to read the two-worker figure against
    # (the cores are shared with whatever else the machine runs; see load_average).
    single = min(_epoch_seconds(keypair, blocks, weights, 1)[0]) if single_worker else None
    return {
        "samples": n,
        "features": d,
        "lanes": spec.lanes,
        "model_copies": spec.model_copies,
        "blocks": len(blocks),
        "epoch_seconds": seconds,
        "epoch_seconds_median": float(np.median(epochs)),
        "epoch_seconds_all": epochs,
        "sample_features_per_second": n * d / seconds,
        "one_worker_sample_features_per_second": None if single is None else n * d / single,
        "seconds_per_sample": seconds / n,
        "owner_encrypt_seconds": encrypt_seconds,
        "processor_load_seconds": load_seconds,
        "bytes_owner_to_processor_per_sample": sum(map(len, blocks)) / n,
        "bytes_requester_to_processor_per_sample_epoch": len(model) / n,
        "bytes_processor_to_requester_per_sample_epoch": sum(map(len, results.values())) / n,
        "model_bytes": len(model),
        "public_context_bytes": len(keypair.public.data),
    }


def _load_framingham() -> tuple[np.ndarray, np.ndarray]:
    with FRAMINGHAM.open(newline="") as handle:
        rows = list(csv.reader(handle))
    # 582 of 4238 rows miss at least one value (mostly glucose); they are dropped, as in
    # TenSEAL's tutorial, rather than imputed: imputation would invent values for 14% of rows.
    complete = [row for row in rows[1:] if all(value not in ("", "NA") for value in row)]
    data = np.array(complete, dtype=float)
    return data[:, :-1], data[:, -1].astype(int)


def accuracy(name: str, X: np.ndarray, y: np.ndarray, workers: int) -> dict[str, Any]:
    """Train / validation (the requester's) / test split; every model scored on test."""
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=0.2, random_state=0, stratify=y_rest
    )
    scaler = FeatureScaler.fit(X_train)
    X_train, X_val, X_test = (scaler.transform(part) for part in (X_train, X_val, X_test))
    kind = "logistic" if np.unique(y).size == 2 else "multiclass"
    config = TrainConfig(epochs=ACCURACY_EPOCHS)
    plain = fit_plaintext(X_train, y_train, kind=kind, X_val=X_val, y_val=y_val, config=config)
    start = time.perf_counter()
    encrypted = train_encrypted(
        X_train, y_train, kind=kind, X_val=X_val, y_val=y_val, config=config, workers=workers
    )
    seconds = time.perf_counter() - start
    sk = SkLogisticRegression(max_iter=5000).fit(X_train, y_train).score(X_test, y_test)
    sk_ovr = None
    if kind == "multiclass":
        ovr = OneVsRestClassifier(SkLogisticRegression(max_iter=5000)).fit(X_train, y_train)
        sk_ovr = ovr.score(X_test, y_test)
    return {
        "dataset": name,
        "kind": kind,
        "train_samples": int(X_train.shape[0]),
        "features": int(X.shape[1]),
        "epochs": ACCURACY_EPOCHS,
        "encrypted": score(encrypted.model, X_test, y_test),
        "plaintext_same_algorithm": score(plain.model, X_test, y_test),
        "sklearn_logistic_regression": float(sk),
        "sklearn_one_vs_rest": sk_ovr,
        "max_weight_difference": float(
            np.max(np.abs(encrypted.model.weight_matrix - plain.model.weight_matrix))
        ),
        "seconds": seconds,
        "seconds_per_epoch": float(np.mean([h.seconds for h in encrypted.history])),
        "spec": {
            "lanes": encrypted.spec.lanes,
            "class_lanes": encrypted.spec.class_lanes,
            "model_copies": encrypted.spec.model_copies,
            "groups": encrypted.spec.n_groups,
        },
    }


def lower_bound() -> dict[str, Any]:
    """(e): the least time any schedule of one epoch can take at BOUND_POINT, and N=4096."""
    n, d = BOUND_POINT
    spec = HESpec.for_task(kind="logistic", n_features=d, expected_samples=n)
    costs = measure_op_costs(spec)
    path = critical_path(costs, n, WORKERS)
    allowed_ms = n * d / THROUGHPUT_TARGET * 1e3
    noise = ring_noise()
    total_bits = float(np.log2(n))  # block totals reach about n (|p(z) - y| |x| <= ~1)
    return {
        "samples": n,
        "features": d,
        "workers": WORKERS,
        "op_costs_ms": costs.to_json(),
        "critical_path": path.to_json(),
        "allowed_ms": allowed_ms,
        "max_sample_features_per_second": n * d / (path.total_ms / 1e3),
        "ring_4096": {
            "coeff_mod_bit_sizes": list(noise.coeff_mod_bit_sizes),
            "fresh_noise_bits": noise.fresh_bits,
            "rotation_noise_bits": noise.rotated_bits,
            "rotations": noise.rotations,
            "max_precision_bits_of_totals": max_precision_bits(noise, total_bits),
        },
    }


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sweep, no 100k samples")
    args = parser.parse_args()
    samples = SWEEP_SAMPLES[:2] if args.quick else SWEEP_SAMPLES
    started = time.perf_counter()
    load_before = os.getloadavg()

    sweep = []
    for d in SWEEP_FEATURES:
        for n in samples:
            point = sweep_point(n, d, single_worker=n == samples[-1])
            sweep.append(point)
            console.print(
                f"[dim]sweep n={n} d={d}: {point['sample_features_per_second']:,.0f}/s[/]"
            )
    _table(
        f"(a) processor throughput, binary logistic, {WORKERS} workers",
        [
            "samples",
            "features",
            "blocks",
            "epoch s (median)",
            "sample-features/s",
            "vs target",
            "1 worker",
        ],
        [
            [
                f"{p['samples']:,}",
                str(p["features"]),
                str(p["blocks"]),
                f"{p['epoch_seconds']:.3f} ({p['epoch_seconds_median']:.3f})",
                f"{p['sample_features_per_second']:,.0f}",
                f"{p['sample_features_per_second'] / THROUGHPUT_TARGET:.2f}x",
                "-"
                if p["one_worker_sample_features_per_second"] is None
                else f"{p['one_worker_sample_features_per_second']:,.0f}",
            ]
            for p in sweep
        ],
    )

    tutorial = []
    rng = np.random.default_rng(7)
    for d in SWEEP_FEATURES:
        X = rng.uniform(-1.0, 1.0, (TUTORIAL_SAMPLES, d))
        timing = time_tutorial_layout(X, rng.integers(0, 2, TUTORIAL_SAMPLES))
        ours = min(p["seconds_per_sample"] for p in sweep if p["features"] == d)
        tutorial.append({**asdict(timing), "ours_seconds_per_sample": ours})
    for entry in tutorial:
        entry["speedup"] = entry["seconds_per_sample"] / entry["ours_seconds_per_sample"]
    _table(
        "(b) TenSEAL Tutorial 1 layout (one ciphertext per sample) vs ours",
        ["features", "tutorial s/sample", "ours s/sample", "speedup"],
        [
            [
                str(t["n_features"]),
                f"{t['seconds_per_sample']:.4f}",
                f"{t['ours_seconds_per_sample']:.2e}",
                f"{t['speedup']:,.0f}x",
            ]
            for t in tutorial
        ],
    )

    tutorial_bytes = {t["n_features"]: t["bytes_per_sample"] for t in tutorial}
    _table(
        "(c) bytes on the wire per sample",
        ["samples", "features", "model/epoch", "results/epoch", "data (once)", "tutorial data"],
        [
            [
                f"{p['samples']:,}",
                str(p["features"]),
                f"{p['bytes_requester_to_processor_per_sample_epoch']:,.1f}",
                f"{p['bytes_processor_to_requester_per_sample_epoch']:,.2f}",
                f"{p['bytes_owner_to_processor_per_sample']:,.0f}",
                f"{tutorial_bytes[p['features']]:,}",
            ]
            for p in sweep
        ],
    )

    datasets = [
        ("breast_cancer", *load_breast_cancer(return_X_y=True)),
        ("digits", *load_digits(return_X_y=True)),
    ]
    if FRAMINGHAM.exists():
        datasets.append(("framingham", *_load_framingham()))
    else:
        console.print(f"[yellow]framingham skipped: {FRAMINGHAM} not found[/]")
    accuracies = [accuracy(name, X, y, WORKERS) for name, X, y in datasets]
    _table(
        f"(d) test accuracy after {ACCURACY_EPOCHS} epochs",
        ["dataset", "encrypted", "plaintext", "sklearn LR", "sklearn OvR", "s/epoch"],
        [
            [
                a["dataset"],
                f"{a['encrypted']:.4f}",
                f"{a['plaintext_same_algorithm']:.4f}",
                f"{a['sklearn_logistic_regression']:.4f}",
                "-" if a["sklearn_one_vs_rest"] is None else f"{a['sklearn_one_vs_rest']:.4f}",
                f"{a['seconds_per_epoch']:.2f}",
            ]
            for a in accuracies
        ],
    )

    bound = lower_bound()
    path, ring = bound["critical_path"], bound["ring_4096"]
    n, d = BOUND_POINT
    _table(
        f"(e) lower bound on any schedule of one epoch, {n:,} samples, {WORKERS} cores",
        ["part of the chain", "ms"],
        [
            ["z, cubic: products, rescales, relinearisations", f"{path['residual_ms']:.2f}"],
            [
                f"{path['rotation_rounds']:.2f} rounds of rotations (log_{WORKERS + 1} {n:,})",
                f"{path['rotations_ms']:.2f}",
            ],
            ["bound (parsing, lanes, serialising left out)", f"{path['total_ms']:.2f}"],
            [f"allowed by the target at {d} features", f"{bound['allowed_ms']:.2f}"],
            [
                "best possible sample-features/s",
                f"{bound['max_sample_features_per_second']:,.0f}",
            ],
        ],
    )
    console.print(
        f"N=4096, best 128-bit chain {ring['coeff_mod_bit_sizes']}: fresh noise "
        f"2^{ring['fresh_noise_bits']:.1f}, after {ring['rotations']} rotations "
        f"2^{ring['rotation_noise_bits']:.1f}; bits of precision any such chain leaves "
        f"block totals: {ring['max_precision_bits_of_totals']}"
    )

    rows = [
        Row(
            f"throughput, {p['samples']:,} x {p['features']}",
            THROUGHPUT_TARGET,
            p["sample_features_per_second"],
            True,
            "sample-features/s",
        )
        for p in sweep
    ]
    rows += [
        Row(
            f"speedup vs tutorial, {t['n_features']} features",
            TUTORIAL_RATIO_TARGET,
            t["speedup"],
            True,
            "x",
        )
        for t in tutorial
    ]
    for a in accuracies:
        rows.append(
            Row(
                f"{a['dataset']}: plaintext - encrypted",
                VS_PLAINTEXT_POINTS,
                100 * abs(a["plaintext_same_algorithm"] - a["encrypted"]),
                False,
                "points",
            )
        )
        rows.append(
            Row(
                f"{a['dataset']}: sklearn LR - encrypted",
                VS_SKLEARN_POINTS,
                100 * (a["sklearn_logistic_regression"] - a["encrypted"]),
                False,
                "points",
            )
        )
    _table(
        "targets",
        ["target", "wanted", "measured", "pass"],
        [
            [
                r.name,
                f"{'>=' if r.higher_is_better else '<='} {r.target:,.0f} {r.unit}"
                if r.target >= 10
                else f"{'>=' if r.higher_is_better else '<='} {r.target} {r.unit}",
                f"{r.measured:,.2f}",
                "[green]yes[/]" if r.passed else "[red]NO[/]",
            ]
            for r in rows
        ],
    )

    load_after = os.getloadavg()
    report = {
        "environment": {
            "python": platform.python_version(),
            "tenseal": metadata.version("tenseal"),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "workers": WORKERS,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "seconds": time.perf_counter() - started,
            "quick": args.quick,
            "owner_encryption_retries": RETRIES,
            "note": "throughput = samples x features / wall time of one processor epoch "
            "(model parsing, the program, result serialisation, inter-process transfer), the "
            f"fastest of {TIMED_EPOCHS} after a warm-up (all are in epoch_seconds_all); the "
            "owner's encryption and the one-time block loading are reported apart",
        },
        "targets": [
            {**asdict(r), "passed": r.passed, "ratio": r.measured / r.target} for r in rows
        ],
        "throughput": sweep,
        "tutorial_layout": tutorial,
        "accuracy": accuracies,
        "lower_bound": bound,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    met = sum(r.passed for r in rows)
    console.print(
        f"{met}/{len(rows)} targets met; wrote {RESULTS} in {time.perf_counter() - started:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
