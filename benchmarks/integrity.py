"""Attacks x defences: who gets caught, what the model loses, and what the checks cost.

(a) The matrix, on the plaintext twin of the protocol (``fedmarket.integrity.simulate``: the
    product's own driver, roles, assignment, disputes, audits, monitors and flags, run by
    ``fedmarket.run`` with the plaintext crypto and the in-memory ledger): every attack
    at 10% and 30% adversaries, every aggregator, IID and Dirichlet(0.5) splits of digits and
    breast cancer, several seeds, each against a clean run with the same seed and defence.
    Measured: final test accuracy and its drop, backdoor success, alarm TPR/FPR per
    processor-epoch, epochs to the flag, false slashes per 1,000 honest processor-epochs.
(b) The cost of the checks on the real encrypted protocol (``fedmarket run`` in-process on
    the embedded chain): epoch time with replication, monitors and a robust aggregator,
    against the same task with replication off, the mean and no monitors; and a run with a
    random-update processor, to show the flag and the slash on chain.

Prints the tables and the targets, writes ``benchmarks/results/integrity.json``.
Run: ``make bench-integrity`` (or ``.venv/bin/python benchmarks/integrity.py [--quick]``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from fedmarket.integrity.checker import IntegrityConfig
from fedmarket.integrity.simulate import SimConfig, SimResult, simulate

RESULTS = Path(__file__).resolve().parent / "results" / "integrity.json"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast_cancer.toml"

PROCESSOR_ATTACKS = ["random", "zero", "stale", "partial:0.5", "sign-flip", "scale:10"]
PROCESSOR_ATTACKS += ["collude:pair:random"]
OWNER_ATTACKS = ["label-flip", "artificial", "backdoor"]
DEFENCES = ["mean", "median", "trimmed-mean", "krum", "fltrust"]
FRACTIONS = [0.1, 0.3]
DATASETS = ["digits", "breast_cancer"]
SPLITS = ["iid", "dirichlet"]
EPOCHS = 20
BLOCK_POINTS = {"digits": 32, "breast_cancer": 16}
# owners per data set: every owner sells at least the privacy floor (64 points; breast cancer's
# 383 training rows hold 5 such owners)
OWNERS = {"digits": 10, "breast_cancer": 5}
# processors per data set: no more than hold blocks (breast cancer's 5 owners cut one block
# each, so 10 processors would leave half of them, adversaries included, nothing to forge)
PROCESSORS = {"digits": 10, "breast_cancer": 5}

# Targets (issue 5)
RANDOM_TPR, RANDOM_FPR = 0.99, 0.01
PARTIAL_EPOCHS, PARTIAL_PROB = 3, 0.95
LABEL_FLIP_IID, LABEL_FLIP_NONIID = 1.0, 3.0  # accuracy points lost at 30% flipping owners
BACKDOOR_SUCCESS, BACKDOOR_DROP = 0.05, 1.0
FALSE_SLASH_PER_1000 = 1.0
CHECK_OVERHEAD = 0.15

console = Console()


@dataclass(frozen=True)
class Cell:
    dataset: str
    split: str
    defence: str
    attack: str | None
    side: str  # "processor", "owner" or "clean"
    fraction: float
    seed: int


def _config(cell: Cell, default_defence: str) -> SimConfig:
    return SimConfig(
        dataset=cell.dataset,
        split=cell.split,
        owners=OWNERS[cell.dataset],
        processors=PROCESSORS[cell.dataset],
        block_points=BLOCK_POINTS[cell.dataset],
        epochs=EPOCHS,
        seed=cell.seed,
        processor_attack=cell.attack if cell.side == "processor" else None,
        owner_attack=cell.attack if cell.side == "owner" else None,
        fraction=cell.fraction,
        integrity=IntegrityConfig(aggregator=cell.defence),
    )


def _run(args: tuple[Cell, str]) -> tuple[Cell, dict[str, Any]]:
    cell, default = args
    result: SimResult = simulate(_config(cell, default))
    rates = result.rates()
    adversaries = set(result.adversaries)
    bad_procs = [p for p in result.processor_epochs if p in adversaries]
    first_flag = [result.flagged[p] + 1 for p in bad_procs if p in result.flagged]
    return cell, {
        "accuracy": result.accuracy,
        "backdoor_success": result.backdoor_success,
        "trigger_rate": result.trigger_rate,
        "audits_per_epoch": result.audits / EPOCHS,
        "tpr": rates["tpr"],
        "fpr": rates["fpr"],
        "false_slashes": rates["false_slashes"],
        "honest_processor_epochs": rates["honest_processor_epochs"],
        "adversarial_processors": len(bad_procs),
        "caught": len(first_flag),
        "epochs_to_flag": first_flag,
        "tokens_slashed_stakes": result.stakes_slashed,
        "epoch_seconds": result.epoch_seconds,
        "check_seconds": result.check_seconds,
    }


def cells(quick: bool, seeds: int) -> list[Cell]:
    out = []
    datasets = DATASETS[:1] if quick else DATASETS
    defences = ["mean", "fltrust"] if quick else DEFENCES
    p_attacks = ["random", "partial:0.5"] if quick else PROCESSOR_ATTACKS
    o_attacks = ["label-flip", "backdoor"] if quick else OWNER_ATTACKS
    for dataset, split, defence, seed in product(datasets, SPLITS, defences, range(seeds)):
        out.append(Cell(dataset, split, defence, None, "clean", 0.0, seed))
        for fraction in FRACTIONS:
            out += [
                Cell(dataset, split, defence, a, "processor", fraction, seed) for a in p_attacks
            ]
            out += [Cell(dataset, split, defence, a, "owner", fraction, seed) for a in o_attacks]
    return out


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return mean(kept) if kept else float("nan")


def summarise(results: list[tuple[Cell, dict[str, Any]]]) -> list[dict[str, Any]]:
    clean = {
        (c.dataset, c.split, c.defence, c.seed): r["accuracy"]
        for c, r in results
        if c.side == "clean"
    }
    trigger = {
        (c.dataset, c.split, c.defence, c.seed): r["trigger_rate"]
        for c, r in results
        if c.side == "clean"
    }
    undefended = {
        (c.dataset, c.split, c.seed): r["accuracy"]
        for c, r in results
        if c.side == "clean" and c.defence == "mean"
    }
    groups: dict[tuple[Any, ...], list[tuple[Cell, dict[str, Any]]]] = {}
    for c, r in results:
        key = (c.dataset, c.split, c.defence, c.side, c.attack, c.fraction)
        groups.setdefault(key, []).append((c, r))
    rows = []
    for (dataset, split, defence, side, attack, fraction), members in sorted(
        groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])
    ):
        drops = [
            100 * (clean[(c.dataset, c.split, c.defence, c.seed)] - r["accuracy"])
            for c, r in members
        ]
        flags = [e for _, r in members for e in r["epochs_to_flag"]]
        adv = sum(r["adversarial_processors"] for _, r in members)
        backdoor = [r["backdoor_success"] for _, r in members if r["backdoor_success"] is not None]
        excess = [
            r["backdoor_success"] - trigger[(c.dataset, c.split, c.defence, c.seed)]
            for c, r in members
            if r["backdoor_success"] is not None
        ]
        vs_mean = [
            100 * (undefended[(c.dataset, c.split, c.seed)] - r["accuracy"])
            for c, r in members
            if (c.dataset, c.split, c.seed) in undefended
        ]
        rows.append(
            {
                "dataset": dataset,
                "split": split,
                "defence": defence,
                "side": side,
                "attack": attack or "-",
                "fraction": fraction,
                "seeds": len(members),
                "accuracy": mean(r["accuracy"] for _, r in members),
                "drop_points": mean(drops),
                "drop_vs_undefended_clean": mean(vs_mean) if vs_mean else None,
                "backdoor_success": mean(backdoor) if backdoor else None,
                "backdoor_excess": mean(excess) if excess else None,
                "audits_per_epoch": mean(r["audits_per_epoch"] for _, r in members),
                "tpr": _nanmean([r["tpr"] for _, r in members]),
                "fpr": _nanmean([r["fpr"] for _, r in members]),
                "caught": f"{len(flags)}/{adv}" if adv else "-",
                "epochs_to_flag": mean(flags) if flags else None,
                "within_3_epochs": (
                    sum(1 for e in flags if e <= PARTIAL_EPOCHS) / adv if adv else None
                ),
                "false_slashes": sum(r["false_slashes"] for _, r in members),
                "honest_processor_epochs": sum(r["honest_processor_epochs"] for _, r in members),
                "stakes_slashed": sum(r["tokens_slashed_stakes"] for _, r in members),
            }
        )
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return str(value)


def print_matrix(rows: list[dict[str, Any]], default: str) -> None:
    """Accuracy drop per defence (all attacks), then detection per attack (default defence)."""
    for dataset, split in product(DATASETS, SPLITS):
        mine = [r for r in rows if r["dataset"] == dataset and r["split"] == split]
        if not mine:
            continue
        defences = [d for d in DEFENCES if any(r["defence"] == d for r in mine)]
        table = Table(
            title=f"{dataset}, {split}: accuracy drop vs a clean run, points "
            "(backdoor: + success above the clean model's)"
        )
        for col in ("attack", "adv", *defences):
            table.add_column(col, justify="right")
        for side, attack, fraction in sorted(
            {(r["side"], r["attack"], r["fraction"]) for r in mine}
        ):
            row = []
            for d in defences:
                [r] = [
                    r
                    for r in mine
                    if (r["side"], r["attack"], r["fraction"], r["defence"])
                    == (side, attack, fraction, d)
                ]
                text = (
                    f"{100 * r['accuracy']:.1f}%" if side == "clean" else f"{r['drop_points']:+.1f}"
                )
                if r["backdoor_excess"] is not None:
                    text += f" {100 * r['backdoor_excess']:+.1f}%"
                row.append(text)
            table.add_row(attack, f"{fraction:.0%}", *row)
        console.print(table)
    table = Table(
        title=f"processor attacks, {default}: alarm TPR / FPR per processor-epoch, "
        "caught, mean epoch of the flag (0 = first)"
    )
    table.add_column("attack")
    table.add_column("adv", justify="right")
    combos = [
        (d, s)
        for d, s in product(DATASETS, SPLITS)
        if any(r["dataset"] == d and r["split"] == s for r in rows)
    ]
    for d, sp in combos:
        table.add_column(f"{d} {sp}", justify="right")
    keys = sorted({(r["attack"], r["fraction"]) for r in rows if r["side"] == "processor"})
    for attack, fraction in keys:
        row = []
        for d, sp in combos:
            match = [
                r
                for r in rows
                if (r["dataset"], r["split"], r["defence"], r["attack"], r["fraction"])
                == (d, sp, default, attack, fraction)
            ]
            if not match:
                row.append("")
                continue
            r = match[0]
            when = "-" if r["epochs_to_flag"] is None else f"{r['epochs_to_flag'] - 1:.1f}"
            row.append(f"{_fmt(r['tpr'], 2)} / {_fmt(r['fpr'], 3)} / {r['caught']} / {when}")
        table.add_row(attack, f"{fraction:.0%}", *row)
    console.print(table)


def measure_overhead(epochs: int) -> dict[str, Any]:
    """(b): the real encrypted protocol with and without the checks, and a random cheater."""
    from fedmarket.run import run_task
    from fedmarket.spec import load_spec

    base = load_spec(EXAMPLE)
    data = base.model_dump()
    data["task"]["max_epochs"] = epochs
    data["stopping"]["patience"] = 0
    data["he"]["block_points"] = 32
    runs: dict[str, Any] = {}

    def run(label: str, integrity: dict[str, Any], attack: str | None = None) -> None:
        d = json.loads(json.dumps(data))
        d["integrity"].update(integrity)
        if attack:
            d["run"]["processors"][0]["attack"] = attack
        spec = type(base).model_validate(d)
        start = time.perf_counter()
        result = run_task(spec, base=EXAMPLE.parent)
        seconds = [o.seconds for o in result.outcomes]
        runs[label] = {
            "seconds": time.perf_counter() - start,
            "epoch_seconds": seconds,
            "median_epoch_seconds": float(np.median(seconds)),
            "check_seconds": [o.check_seconds for o in result.outcomes],
            "accuracy": result.outcomes[-1].metric,
            "flags": result.report.flags,
            "tokens": {t.party: t.net for t in result.report.tokens},
        }

    off = {"replication": 0.0, "aggregator": "mean", "monitors": []}
    on = {
        "replication": 0.1,
        "aggregator": "trimmed-mean",
        "monitors": list(IntegrityConfig().monitors),
    }
    for i in range(2):  # alternate, so both see the same machine
        run(f"off#{i}", off)
        run(f"on#{i}", on)
    run("random cheater", on, "random")
    off_t = min(runs[f"off#{i}"]["median_epoch_seconds"] for i in range(2))
    on_t = min(runs[f"on#{i}"]["median_epoch_seconds"] for i in range(2))
    return {
        "runs": runs,
        "off_epoch_seconds": off_t,
        "on_epoch_seconds": on_t,
        "overhead": on_t / off_t - 1.0,
    }


def targets(
    rows: list[dict[str, Any]], overhead: dict[str, Any] | None, default: str
) -> list[dict[str, Any]]:
    out = []

    def add(name: str, wanted: str, measured: float, ok: bool) -> None:
        out.append({"target": name, "wanted": wanted, "measured": measured, "passed": ok})

    rnd = [r for r in rows if r["attack"] == "random" and r["defence"] == default]
    if rnd:
        tpr = min(r["tpr"] for r in rnd)
        fpr = max(r["fpr"] for r in rnd)
        add("random processors: alarm TPR (worst cell)", f">= {RANDOM_TPR}", tpr, tpr >= RANDOM_TPR)
        add("random processors: alarm FPR (worst cell)", f"<= {RANDOM_FPR}", fpr, fpr <= RANDOM_FPR)
    part = [r for r in rows if r["attack"].startswith("partial") and r["defence"] == default]
    if part:
        p = min(r["within_3_epochs"] for r in part if r["within_3_epochs"] is not None)
        add(
            "partial (s=0.5): flagged within 3 epochs (worst cell)",
            f">= {PARTIAL_PROB}",
            p,
            p >= PARTIAL_PROB,
        )
    for split, limit in (("iid", LABEL_FLIP_IID), ("dirichlet", LABEL_FLIP_NONIID)):
        lf = [
            r
            for r in rows
            if r["attack"] == "label-flip"
            and r["fraction"] == 0.3
            and r["split"] == split
            and r["defence"] == default
        ]
        if lf:
            d = max(r["drop_points"] for r in lf)
            add(
                f"30% label-flipping owners, {split}: accuracy drop",
                f"<= {limit} points",
                d,
                d <= limit,
            )
    bd = [
        r
        for r in rows
        if r["attack"] == "backdoor" and r["fraction"] == 0.3 and r["defence"] == default
    ]
    if bd:
        s = max(r["backdoor_excess"] for r in bd)
        d = max(r["drop_points"] for r in bd)
        add(
            "30% backdoor owners: success above the clean model's",
            f"<= {BACKDOOR_SUCCESS}",
            s,
            s <= BACKDOOR_SUCCESS,
        )
        add(
            "30% backdoor owners: accuracy drop",
            f"<= {BACKDOOR_DROP} points",
            d,
            d <= BACKDOOR_DROP,
        )
    honest = sum(r["honest_processor_epochs"] for r in rows)
    false = sum(r["false_slashes"] for r in rows)
    per_1000 = 1000 * false / honest if honest else 0.0
    add(
        "false slashes per 1,000 honest processor-epochs (all cells)",
        f"<= {FALSE_SLASH_PER_1000}",
        per_1000,
        per_1000 <= FALSE_SLASH_PER_1000,
    )
    if overhead is not None:
        o = overhead["overhead"]
        add(
            "checks' share of epoch time (real HE)",
            f"<= {CHECK_OVERHEAD:.0%}",
            o,
            o <= CHECK_OVERHEAD,
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one data set, few cells")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--defence", default="fltrust", help="the defence the targets judge")
    parser.add_argument("--no-he", action="store_true", help="skip (b), the encrypted runs")
    args = parser.parse_args()
    start = time.perf_counter()
    todo = [(c, args.defence) for c in cells(args.quick, args.seeds)]
    console.print(f"{len(todo)} simulated runs on {os.cpu_count()} cores ...")
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        results = list(pool.map(_run, todo, chunksize=4))
    rows = summarise(results)
    console.print(f"matrix done in {time.perf_counter() - start:.0f}s")
    print_matrix(rows, args.defence)
    overhead = None if args.no_he else measure_overhead(epochs=4 if args.quick else 6)
    if overhead is not None:
        console.print(
            f"(b) real HE, breast cancer: epoch {overhead['off_epoch_seconds']:.2f}s without "
            f"checks, {overhead['on_epoch_seconds']:.2f}s with them ({overhead['overhead']:+.1%})"
        )
        cheat = overhead["runs"]["random cheater"]
        console.print(
            f"    random cheater: flags {[(f['party'], f['epoch']) for f in cheat['flags']]}, "
            f"token change {cheat['tokens']}"
        )
    checks = targets(rows, overhead, args.defence)
    table = Table(title=f"targets (default defence: {args.defence})")
    for col in ("target", "wanted", "measured", "pass"):
        table.add_column(col, justify="right")
    for t in checks:
        table.add_row(
            t["target"], t["wanted"], _fmt(float(t["measured"]), 4), "yes" if t["passed"] else "NO"
        )
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "environment": {
                    "python": sys.version.split()[0],
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                    "load_average": os.getloadavg(),
                    "quick": args.quick,
                    "seeds": args.seeds,
                    "epochs": EPOCHS,
                    "seconds": time.perf_counter() - start,
                },
                "targets": checks,
                "matrix": rows,
                "he": overhead,
            },
            indent=1,
            default=str,
        )
    )
    passed = sum(t["passed"] for t in checks)
    console.print(
        f"{passed}/{len(checks)} targets met; wrote {RESULTS} in {time.perf_counter() - start:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
