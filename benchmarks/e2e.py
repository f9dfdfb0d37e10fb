"""End-to-end benchmark: a whole task in one process, against centralised plaintext training.

(a) 20,000 samples x 30 features (scikit-learn's make_classification: no bundled set is this
    large), 4 owners, 4 processors, 10 epochs: wall time per phase, the shares of chain,
    serialisation and HE/ML, and the ratio to centralised plaintext training of the same
    algorithm on the same points (measured in the same run).
    Run twice: owners dealt IID, and label-skewed (Dirichlet(0.5)), as real owners are.
(b) 10, 50 and 100 parties on breast cancer (3 epochs): how time and gas grow.

Writes benchmarks/results/e2e.json. Run: make bench-e2e (or benchmarks/e2e.py --parties 10)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedmarket.data import load_dataset, scale, split_validation
from fedmarket.models.training import TrainConfig, fit_plaintext
from fedmarket.run import RunResult, run_task
from fedmarket.spec import SpecFile
from fedmarket.starter import starter_spec

RESULTS = Path(__file__).parent / "results" / "e2e.json"
SWEEP_DATA = "synthetic:8000:30"
console = Console()


def spec_for(
    dataset: str, owners: int, processors: int, epochs: int, split: str = "iid"
) -> SpecFile:
    data = starter_spec(dataset, owners=owners, processors=processors, max_epochs=epochs)
    raw = data.model_dump()
    raw["stopping"]["patience"] = 0  # run every epoch: the benchmark measures, it does not stop
    raw["integrity"]["replication"] = 0.1
    raw["run"]["split"] = split
    return SpecFile.model_validate(raw)


def timed_run(spec: SpecFile, workers: int = 2) -> tuple[RunResult, float]:
    start = time.perf_counter()
    result = run_task(spec, workers=workers)
    return result, time.perf_counter() - start


def centralised_seconds(spec: SpecFile) -> float:
    """Plaintext training of the same algorithm on the same points, in one place."""
    assert spec.run is not None
    data = load_dataset(spec.run.dataset)
    train, val = split_validation(data, spec.run.validation_fraction, seed=spec.run.seed)
    f = spec.features
    X = scale(train.X[: spec.task.num_points], f.mean, f.std, f.spread)
    y = train.y[: spec.task.num_points]
    X_val = scale(val.X, f.mean, f.std, f.spread)
    times = []
    for _ in range(5):  # best of 5: the first call pays imports and warm-up
        start = time.perf_counter()
        fit_plaintext(
            X,
            y,
            kind="logistic",
            X_val=X_val,
            y_val=val.y,
            config=TrainConfig(epochs=spec.task.max_epochs),
        )
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parties", type=int, nargs="*", default=[10, 50, 100], help="sizes of the sweep"
    )
    args = parser.parse_args()
    out: dict[str, object] = {}
    console.print("[bold](a) 20,000 x 30, 4 owners, 4 processors, 10 epochs[/]")
    skewed = spec_for(
        "synthetic:25000:30", owners=4, processors=4, epochs=10, split="dirichlet:0.5"
    )
    result_skewed, wall_skewed = timed_run(skewed)
    last = result_skewed.report.epochs[-1]
    out["reference_dirichlet"] = {
        "split": "dirichlet:0.5",
        "wall_seconds": wall_skewed,
        "accuracy": last.metric,
        "plaintext_accuracy": last.baseline,
        "flags": len(result_skewed.report.flags),
        "audits": sum(len(o.audited) for o in result_skewed.outcomes),
    }
    console.print(
        f"  Dirichlet(0.5) owners: {wall_skewed:.1f} s, accuracy {last.metric:.4f} vs "
        f"plaintext {last.baseline:.4f}, flags {len(result_skewed.report.flags)}"
    )
    spec = spec_for("synthetic:25000:30", owners=4, processors=4, epochs=10)
    result, wall = timed_run(spec)
    base = centralised_seconds(spec)
    phases = result.report.phases
    work = phases.get("encrypt+distribute", 0.0) + phases.get("epochs", 0.0)
    he_ml = max(0.0, wall - result.chain_seconds - result.codec_seconds - phases.get("setup", 0.0))
    table = Table(title=f"whole task, {spec.task.num_points} points x 30 features")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, seconds in phases.items():
        table.add_row(name, f"{seconds:.2f}")
    table.add_row("[bold]total[/]", f"{wall:.2f}")
    console.print(table)
    shares = {
        "chain (protocol transactions)": result.chain_seconds,
        "serialisation (encode + decode)": result.codec_seconds,
        "HE and ML (encrypt, program, decrypt, update)": he_ml,
    }
    share_table = Table(title="where the time goes (outside setup)")
    share_table.add_column("part")
    share_table.add_column("seconds", justify="right")
    share_table.add_column("share", justify="right")
    total = sum(shares.values())
    for name, seconds in shares.items():
        share_table.add_row(name, f"{seconds:.2f}", f"{seconds / total:.0%}")
    console.print(share_table)
    final = result.report.epochs[-1]
    console.print(
        f"centralised plaintext training (same algorithm, same points): {base:.3f} s; "
        f"fedmarket end to end {wall:.1f} s = [bold]{wall / base:,.0f}x[/] "
        f"(encrypted work only: {work / base:,.0f}x); accuracy {final.metric:.4f} vs "
        f"plaintext {final.baseline:.4f}"
    )
    out["reference"] = {
        "split": "iid",
        "points": spec.task.num_points,
        "features": 30,
        "owners": 4,
        "processors": 4,
        "epochs": len(result.report.epochs),
        "wall_seconds": wall,
        "phases": phases,
        "shares_seconds": shares,
        "centralised_plaintext_seconds": base,
        "ratio_to_centralised": wall / base,
        "accuracy": final.metric,
        "plaintext_accuracy": final.baseline,
        "gas": sum(g.gas for g in result.report.gas),
        "flags": len(result.report.flags),
        "bytes": {p.name: [p.bytes_sent, p.bytes_received] for p in result.report.parties},
    }

    save(out)
    # The same 8,000 rows at every size: 50 owners of at least the privacy floor's 64 points
    # each need more rows than breast cancer's 455 (scikit-learn's make_classification, 30
    # features).
    console.print(f"[bold](b) parties sweep, {SWEEP_DATA}, 3 epochs[/]")
    sweep = []
    table = Table(title="growth with the number of parties")
    for column in ("parties", "owners", "processors", "wall s", "chain s", "gas", "gas/party"):
        table.add_column(column, justify="right")
    for parties in args.parties:
        owners = parties // 2
        processors = parties - owners - 1
        spec = spec_for(SWEEP_DATA, owners=owners, processors=processors, epochs=3)
        # processors run inline: the sweep measures the protocol's growth, not HE parallelism
        result, wall = timed_run(spec, workers=0)
        gas = sum(g.gas for g in result.report.gas if g.function not in ("deploy", "mint"))
        sweep.append(
            {
                "parties": parties,
                "owners": owners,
                "processors": processors,
                "wall_seconds": wall,
                "chain_seconds": result.chain_seconds,
                "gas": gas,
            }
        )
        table.add_row(
            str(parties),
            str(owners),
            str(processors),
            f"{wall:.1f}",
            f"{result.chain_seconds:.1f}",
            f"{gas:,}",
            f"{gas // parties:,}",
        )
        console.print(f"  {parties} parties: {wall:.1f} s, {result.chain_seconds:.1f} s on chain")
        out["sweep"] = sweep
        save(out)
    console.print(table)
    console.print(f"wrote {RESULTS}")


def save(out: dict[str, object]) -> None:
    """Written after every measurement, so an interrupted run keeps what it measured."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
