"""A neural network trained on encrypted data, measured as users run it: ``fedmarket run``.

Every number comes from ``fedmarket.run.run_task`` (what ``fedmarket run`` calls): the
protocol's roles, driver and messages, the embedded chain, sealed blocks, the spec's integrity
checks and, for every encrypted number, real CKKS. Specs are the examples users run, or made
the way ``fedmarket init`` and ``examples/generate.py`` make them; the bench only sets how many
epochs run and where the results go.

(a) digits: ``examples/digits_mlp.toml`` (61 -> 32 -> 10, square activation, squared error,
    4 owners, 3 processors, a quarter of the rows held out as a test split). Test accuracy;
    seconds per epoch (the median over the run's epochs, from the report); bytes per epoch
    each way and once, and the public context, from the transport's counters. Baselines in the
    same run: the same algorithm in plaintext on the very points the owners sold (the run's
    reference, same epochs: accuracy and seconds per epoch), scikit-learn's logistic
    regression on them (the report's), and the multiclass logistic head (``digits.toml``'s
    spec with the same test split, encrypted, through run_task).
(b) integrity vs accuracy: the digits MLP with the example's checks (plain mean) and with a
    starter spec's (FLTrust and all five monitors), over seeds of the split and the deal, in
    the plaintext twin (run_task with the plaintext crypto: the same protocol and decisions,
    blocks cut as CKKS cuts them).
(c) the MLP against logistic regression on breast cancer and Framingham, both encrypted.

Targets (issue 17): test accuracy >= 97% and within 1 point of plaintext; <= 30 s per epoch.
Prints tables and writes ``benchmarks/results/deep.json`` (the load average is in it: the
machine is shared). Run: ``make bench-deep`` (or ``benchmarks/deep.py --quick``: 3 epochs;
``--epochs N`` for fewer encrypted digits epochs, ``--tabular-epochs N``, ``--seeds N``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from fedmarket.he.spec import HESpec
from fedmarket.protocol.party import PartyNode
from fedmarket.protocol.plaintext import Plaintext
from fedmarket.protocol.transport import Envelope
from fedmarket.run import RunResult, run_task
from fedmarket.runtime.local import LocalTransport
from fedmarket.spec import SpecFile, load_spec
from fedmarket.starter import network_spec, starter_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results" / "deep.json"
RUNS = ROOT / "runs" / "bench-deep"  # each run's report and model (git-ignored)
FRAMINGHAM = Path(
    os.environ.get("FEDMARKET_FRAMINGHAM", ROOT.parent / "shared" / "data" / "framingham.csv")
)
TEST_FRACTION = 0.25  # the digits MLP example's
TABULAR_EPOCHS = 30
SEEDS = 3  # of the split and the deal, in (b)
WORKERS = 2  # fedmarket run's default
console = Console()


class CountingTransport(LocalTransport):
    """The in-process transport, plus the requester's bytes out and in per protocol action."""

    def __init__(self, nodes: Sequence[PartyNode]) -> None:
        super().__init__(nodes)
        self.out: Counter[str] = Counter()
        self.into: Counter[str] = Counter()
        self.asked: Counter[str] = Counter()

    def ask(
        self, action: str, requests: Mapping[str, Envelope], *, timeout: float | None = None
    ) -> dict[str, Envelope]:
        sent, received = self.traffic.sent[self.name], self.traffic.received[self.name]
        replies = super().ask(action, requests, timeout=timeout)
        self.out[action] += self.traffic.sent[self.name] - sent
        self.into[action] += self.traffic.received[self.name] - received
        self.asked[action] += len(requests)
        return replies


def measure(
    name: str, spec: SpecFile, *, base: Path | None = None, twin: bool = False
) -> dict[str, Any]:
    """Run one task through run_task; what the bench reports of it."""
    transports: list[CountingTransport] = []

    def transport(nodes: list[PartyNode]) -> CountingTransport:
        transports.append(CountingTransport(nodes))
        return transports[-1]

    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = run_task(
        spec,
        base=base,
        out=RUNS / name,
        workers=WORKERS,
        transport=transport,
        crypto=Plaintext() if twin else None,  # None: CKKS, what fedmarket run uses
        chain_url="memory" if twin else None,  # None: the embedded chain, as fedmarket run
    )
    wall = time.perf_counter() - start
    out = summary(result, transports[0], spec)
    out |= {"name": name, "crypto": "plaintext twin" if twin else "CKKS", "wall_seconds": wall}
    out["load_before"] = load
    console.print(
        f"  {name}: test {pct(out['test_accuracy'])} (plaintext "
        f"{pct(out['plaintext_test_accuracy'])}), {secs(out['epoch_seconds_median'])} s/epoch, "
        f"{out['epochs']} epochs, {wall:.0f} s, load {load:.1f}"
    )
    del result
    gc.collect()
    return out


def summary(result: RunResult, counted: CountingTransport, spec: SpecFile) -> dict[str, Any]:
    report = result.report
    epochs = len(report.epochs)
    seconds = [e.seconds for e in report.epochs]
    reference = result.reference
    plain_seconds = [h.seconds for h in reference.history] if reference else []
    assert result.run is not None
    processors = result.run.winners.get("processors", [])
    announce = counted.asked["announce"] or 1
    per_epoch = max(epochs, 1)
    return {
        "spec": {
            "task": spec.task.name,
            "model": spec.task.model,
            "hidden": spec.task.hidden,
            "features": len(spec.features.names),
            "preset": spec.he.preset,
            "points": spec.task.num_points,
            "aggregator": spec.integrity.aggregator,
            "monitors": list(spec.integrity.monitors),
            "replication": spec.integrity.replication,
            "seed": spec.run.seed if spec.run else None,
        },
        "epochs": epochs,
        "stop_reason": report.stop_reason,
        "test_accuracy": report.test_metric,
        "plaintext_test_accuracy": report.baseline_test_metric,
        "validation_accuracy": report.epochs[-1].metric if epochs else None,
        "plaintext_validation_accuracy": report.epochs[-1].baseline if epochs else None,
        "sklearn_validation_accuracy": report.sklearn_metric,
        "epoch_seconds_median": float(np.median(seconds)) if seconds else None,
        "epoch_seconds_all": seconds,
        "plaintext_epoch_seconds_median": float(np.median(plain_seconds))
        if plain_seconds
        else None,
        "phases": report.phases,
        "processors": len(processors),
        # requester -> processors: the encrypted model; processors -> requester: block totals
        "model_bytes_per_epoch": counted.out["model"] / per_epoch,
        "model_bytes_per_processor_per_epoch": counted.out["model"]
        / max(counted.asked["model"], 1),
        "result_bytes_per_epoch": counted.into["model"] / per_epoch,
        # audits: the model to a block's owner, its recomputed result back
        "audit_bytes_per_epoch": (counted.out["recompute"] + counted.into["recompute"]) / per_epoch,
        "audits": counted.asked["recompute"],
        "block_bytes_once": counted.out["blocks"],  # relayed sealed blocks, to processors
        "context_bytes": counted.out["announce"] / announce,  # the announcement, per party
        "blocks_used_median": float(np.median([o.blocks_used for o in result.outcomes]))
        if result.outcomes
        else 0,
        "alarms": len(report.alarms),
        "flags": len(report.flags),
        "notes": report.notes,
    }


def with_epochs(spec: SpecFile, epochs: int, **run: Any) -> SpecFile:
    data = spec.model_dump(exclude_none=True)
    data["task"]["max_epochs"] = epochs
    data["stopping"]["patience"] = 0  # every epoch runs: the bench measures, it does not stop
    data["run"].update(run)
    return SpecFile.model_validate(data)


def digits_head(epochs: int) -> SpecFile:
    """examples/digits.toml as generate.py makes it, with the MLP example's test split."""
    spec = starter_spec(
        "sklearn:digits",
        owners=4,
        processors=3,
        test_fraction=TEST_FRACTION,
        max_epochs=epochs,  # the budget pays for them
        base=EXAMPLES,
    )
    return with_epochs(spec, epochs)


def twin_spec(spec: SpecFile, *, seed: int, integrity: Mapping[str, Any] | None) -> SpecFile:
    """The spec for the plaintext twin: blocks of CKKS's size, another seed, other checks."""
    hidden = spec.task.hidden
    he = HESpec.for_task(
        kind="mlp",
        n_features=len(spec.features.names),
        n_outputs=len(spec.labels.classes),
        preset=spec.he.preset,
        hidden=hidden,
    )
    data = spec.model_dump(exclude_none=True)
    data["he"]["block_points"] = he.block_size
    data["run"]["seed"] = seed
    if integrity is not None:
        data["integrity"].update(integrity)
    return SpecFile.model_validate(data)


def tabular(name: str, dataset: str, epochs: int, **kw: Any) -> dict[str, Any]:
    """The MLP and logistic regression on one data set: fedmarket init's spec, then the same
    as a network (network_spec, as for the digits example); same split, both encrypted."""
    starter = starter_spec(dataset, test_fraction=TEST_FRACTION, max_epochs=epochs, **kw)
    row: dict[str, Any] = {"dataset": name}
    row["mlp"] = measure(f"{name}-mlp", with_epochs(network_spec(starter), epochs))
    row["logistic"] = measure(f"{name}-logistic", with_epochs(starter, epochs))
    return row


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f}"


def secs(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs each (a smoke run)")
    parser.add_argument(
        "--epochs",
        type=int,
        help="encrypted digits epochs, MLP and logistic head (default: the example's, 70)",
    )
    parser.add_argument(
        "--tabular-epochs",
        type=int,
        default=TABULAR_EPOCHS,
        help=f"epochs of (c), breast cancer and Framingham (default {TABULAR_EPOCHS})",
    )
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds of (b) (default {SEEDS})")
    args = parser.parse_args()
    started = time.perf_counter()
    load_start = os.getloadavg()
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "tenseal": metadata.version("tenseal"),
            "load_average_at_start": load_start,
        },
        "medians": "every seconds figure is the median over the run's epochs",
        "command": " ".join(["benchmarks/deep.py", *sys.argv[1:]]),
    }

    # (a) the example users run, and its baselines
    example = load_spec(EXAMPLES / "digits_mlp.toml")
    mlp_epochs = 3 if args.quick else args.epochs or example.task.max_epochs
    spec = example
    if mlp_epochs != example.task.max_epochs:
        data = example.model_dump(exclude_none=True)
        data["task"]["max_epochs"] = mlp_epochs
        spec = SpecFile.model_validate(data)
    console.print(f"[bold](a) digits MLP, {mlp_epochs} epochs, CKKS[/]")
    mlp = measure("digits-mlp", spec, base=EXAMPLES)
    out["digits"] = {"mlp": mlp}
    save(out)
    head_epochs = mlp_epochs  # as many as the MLP
    console.print(f"[bold]    logistic head, {head_epochs} epochs, CKKS[/]")
    head = measure("digits-head", digits_head(head_epochs), base=EXAMPLES)
    gap = None
    if mlp["test_accuracy"] is not None and mlp["plaintext_test_accuracy"] is not None:
        gap = mlp["test_accuracy"] - mlp["plaintext_test_accuracy"]
    ratios = {
        "epoch_vs_plaintext_epoch": ratio(
            mlp["epoch_seconds_median"], mlp["plaintext_epoch_seconds_median"]
        ),
        "epoch_vs_logistic_head_epoch": ratio(
            mlp["epoch_seconds_median"], head["epoch_seconds_median"]
        ),
    }
    out["digits"] = {"mlp": mlp, "logistic_head": head, "gap_to_plaintext": gap, "ratios": ratios}
    save(out)

    # (b) what the integrity checks do to accuracy (plaintext twin, several seeds)
    # the plaintext twin is cheap: it runs the example's epochs, whatever --epochs says
    twin_base = spec if args.quick else example
    seeds = (0,) if args.quick else tuple(range(args.seeds))
    settings: dict[str, Mapping[str, Any] | None] = {
        "example (mean, 4 monitors)": None,
        "starter (fltrust, 5 monitors)": {
            "aggregator": "fltrust",
            "monitors": ["distance", "cosine", "norm", "stability", "validation"],
        },
    }
    console.print(f"[bold](b) integrity vs accuracy, twin, seeds {list(seeds)}[/]")
    integrity = []
    for label, checks in settings.items():
        for seed in seeds:
            twin = measure(
                f"digits-mlp-twin-{seed}-{checks['aggregator'] if checks else 'mean'}",
                twin_spec(twin_base, seed=seed, integrity=checks),
                base=EXAMPLES,
                twin=True,
            )
            twin["setting"] = label
            integrity.append(twin)
    out["integrity_vs_accuracy"] = integrity
    save(out)

    # (c) the MLP against logistic regression on tabular data
    epochs = 3 if args.quick else args.tabular_epochs
    console.print(f"[bold](c) MLP vs logistic regression, {epochs} epochs, CKKS[/]")
    versus = [tabular("breast_cancer", "sklearn:breast_cancer", epochs)]
    if FRAMINGHAM.exists():
        # as generate.py makes examples/framingham.toml
        versus.append(tabular("framingham", f"csv:{FRAMINGHAM}", epochs, label_column="TenYearCHD"))
    else:
        console.print(f"[yellow]framingham skipped: {FRAMINGHAM} not found[/]")
    out["versus_logistic"] = versus

    targets = {
        "digits_test_accuracy_at_least_97": (mlp["test_accuracy"] or 0.0) >= 0.97,
        "within_1_point_of_plaintext": gap is not None and abs(gap) <= 0.01,
        "epoch_at_most_30_s": (mlp["epoch_seconds_median"] or float("inf")) <= 30.0,
    }
    out["targets"] = targets
    out["machine"]["load_average_at_end"] = os.getloadavg()
    out["seconds"] = time.perf_counter() - started
    save(out)
    print_tables(out)
    console.print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def print_tables(out: dict[str, Any]) -> None:
    mlp, head = out["digits"]["mlp"], out["digits"]["logistic_head"]
    ratios = out["digits"]["ratios"]
    load = out["machine"]
    table = Table(
        title=f"make bench-deep: digits, 61 -> 32 -> 10 MLP (examples/digits_mlp.toml) through "
        f"run_task; seconds are medians over epochs; load {load['load_average_at_start'][0]:.1f}"
        f" -> {load['load_average_at_end'][0]:.1f} on {load['cpus']} cores"
    )
    for column in ("", "encrypted MLP", "plaintext MLP", "encrypted logistic head"):
        table.add_column(column, justify="right")
    rows = [
        ("test accuracy", pct(mlp["test_accuracy"]), pct(mlp["plaintext_test_accuracy"]),
         pct(head["test_accuracy"])),
        ("validation accuracy", pct(mlp["validation_accuracy"]),
         pct(mlp["plaintext_validation_accuracy"]), pct(head["validation_accuracy"])),
        ("scikit-learn, same points (validation)", "", pct(mlp["sklearn_validation_accuracy"]),
         pct(head["sklearn_validation_accuracy"])),
        ("epochs", str(mlp["epochs"]), str(mlp["epochs"]), str(head["epochs"])),
        ("s per epoch", secs(mlp["epoch_seconds_median"]),
         secs(mlp["plaintext_epoch_seconds_median"], 5), secs(head["epoch_seconds_median"])),
        ("MB per epoch, model to processors", mb(mlp["model_bytes_per_epoch"]), "",
         mb(head["model_bytes_per_epoch"])),
        ("  of which to one processor", mb(mlp["model_bytes_per_processor_per_epoch"]), "",
         mb(head["model_bytes_per_processor_per_epoch"])),
        ("MB per epoch, results to requester", mb(mlp["result_bytes_per_epoch"]), "",
         mb(head["result_bytes_per_epoch"])),
        ("MB per epoch, audits (both ways)", mb(mlp["audit_bytes_per_epoch"]), "",
         mb(head["audit_bytes_per_epoch"])),
        ("MB once, sealed blocks to processors", mb(mlp["block_bytes_once"]), "",
         mb(head["block_bytes_once"])),
        ("MB public context (per party)", mb(mlp["context_bytes"]), "",
         mb(head["context_bytes"])),
        ("blocks per epoch", secs(mlp["blocks_used_median"], 0), "",
         secs(head["blocks_used_median"], 0)),
        ("setup s (announce .. distribute)", secs(setup(mlp), 1), "", secs(setup(head), 1)),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"ratios: encrypted MLP epoch / plaintext epoch = "
        f"{secs(ratios['epoch_vs_plaintext_epoch'], 0)}x; / encrypted logistic-head epoch = "
        f"{secs(ratios['epoch_vs_logistic_head_epoch'], 1)}x"
    )
    integrity = Table(
        title="integrity vs accuracy: the digits MLP in the plaintext twin (same protocol, "
        "blocks as CKKS cuts them), final epoch"
    )
    for column in ("checks", "seed", "epochs", "test", "plaintext test", "validation",
                   "alarms", "audits", "blocks used (median)"):  # fmt: skip
        integrity.add_column(column, justify="right")
    for t in out["integrity_vs_accuracy"]:
        integrity.add_row(
            t["setting"],
            str(t["spec"]["seed"]),
            str(t["epochs"]),
            pct(t["test_accuracy"]),
            pct(t["plaintext_test_accuracy"]),
            pct(t["validation_accuracy"]),
            str(t["alarms"]),
            str(t["audits"]),
            secs(t["blocks_used_median"], 0),
        )
    console.print(integrity)
    versus = Table(title="MLP (32 hidden) vs logistic regression, both encrypted, same split")
    for column in ("data set", "MLP test", "logistic test", "MLP plaintext", "logistic plaintext",
                   "MLP s/epoch", "logistic s/epoch", "epochs"):  # fmt: skip
        versus.add_column(column, justify="right")
    for row in out["versus_logistic"]:
        m, lg = row["mlp"], row["logistic"]
        versus.add_row(
            row["dataset"],
            pct(m["test_accuracy"]),
            pct(lg["test_accuracy"]),
            pct(m["plaintext_test_accuracy"]),
            pct(lg["plaintext_test_accuracy"]),
            secs(m["epoch_seconds_median"]),
            secs(lg["epoch_seconds_median"]),
            str(m["epochs"]),
        )
    console.print(versus)
    for name, ok in out["targets"].items():
        console.print(f"{'PASS' if ok else 'MISS'} {name}")


def setup(run: dict[str, Any]) -> float:
    phases = run["phases"]
    return sum(phases.get(p, 0.0) for p in ("announce+bid", "resolve", "encrypt+distribute"))


def save(out: dict[str, Any]) -> None:
    """Written after every part, so an interrupted run keeps what it measured."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
