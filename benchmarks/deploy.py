"""The same tasks in one process and as separate processes on loopback (Flower + anvil).

Two tasks on breast cancer, blocks of 64 points, EPOCHS epochs each:
- 2+2: 2 owners, 2 processors (+1 processor node that asks too much and wins nothing);
- ten nodes: 4 owners, 5 processors, +1 node that wins nothing.
Each runs (a) in one process (``fedmarket run`` on an anvil node, so only the transport
differs) and (b) as a SuperLink, one ``fedmarket node`` per party and the requester's
ServerApp submitted with ``flwr run``, insecure, on loopback - in this order, in one run of
this script, so every ratio compares numbers measured minutes apart on the same machine.
Reported: seconds per epoch (median over the epochs) and bytes per epoch per processor
(requester -> processor and back), the ratios (b)/(a), and the load average around each run
(the machine's 2 cores are shared).

Targets (issue 16): seconds per epoch <= 1.5x in-process, bytes <= 1.01x.

Run: ``make bench-deploy``; writes ``benchmarks/results/deploy.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from rich.console import Console
from rich.table import Table

from fedmarket.deploy_cli import chain_up
from fedmarket.run import run_task
from fedmarket.runtime.flower.harness import Loopback, parties, small_spec, ten_party_spec
from fedmarket.spec import load_spec

RESULTS = Path(__file__).resolve().parent / "results" / "deploy.json"
EPOCHS = 5
TIME_TARGET, BYTES_TARGET = 1.5, 1.01
console = Console()


def load() -> float:
    return round(os.getloadavg()[0], 2)


def in_process(spec: Path) -> dict[str, Any]:
    with chain_up() as chain:
        before = load()
        start = time.perf_counter()
        result = run_task(load_spec(spec), chain_url=chain.url, workers=1)
        assert result.run is not None
        return {
            "seconds": time.perf_counter() - start,
            "epoch_seconds": [o.seconds for o in result.outcomes],
            # the same count the Flower transport keeps: protocol frames during the epochs
            "epoch_bytes_sent": result.run.epoch_sent,
            "epoch_bytes_received": result.run.epoch_received,
            "metric": result.outcomes[-1].metric,
            "load_average": [before, load()],
        }


def multi_process(workdir: Path, spec: Path) -> dict[str, Any]:
    start = time.perf_counter()
    with Loopback(workdir, spec, parties(spec), tls=None) as lb:
        before = load()
        result = lb.run()
        result["load_average"] = [before, load()]
    result["wall_seconds"] = time.perf_counter() - start
    return result


def compare(name: str, spec: Path, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One task's table and its entry in the JSON."""
    ea, eb = median(a["epoch_seconds"]), median(b["epoch_seconds"])
    table = Table(title=f"{name}: in-process vs multi-process, {EPOCHS} epochs")
    for col in ("measure", "in-process", "multi-process", "ratio", "target"):
        table.add_column(col, justify="right")
    ratio = eb / ea
    table.add_row(
        "seconds per epoch (median)", f"{ea:.3f}", f"{eb:.3f}", f"{ratio:.2f}x",
        f"<= {TIME_TARGET}x " + ("pass" if ratio <= TIME_TARGET else "MISS"),
    )  # fmt: skip
    s = load_spec(spec)
    assert s.run is not None
    rows: list[dict[str, Any]] = []
    worst = 0.0
    for processor in (p.name for p in s.run.processors):
        for what, key in (
            ("requester ->", "epoch_bytes_sent"),
            ("-> requester", "epoch_bytes_received"),
        ):
            va = a[key].get(processor, 0) / EPOCHS
            vb = b[key].get(processor, 0) / EPOCHS
            # a frame lost or not counted on one side would show here as a ratio far from 1
            r = vb / va if va else None
            if r is not None:
                worst = max(worst, r)
            elif vb:
                worst = float("inf")  # bytes on Flower that never crossed in process
            rows.append({"party": processor, "direction": what, "in_process": va,
                         "multi_process": vb, "ratio": r})  # fmt: skip
            table.add_row(f"bytes/epoch {what} {processor}", f"{va:,.0f}", f"{vb:,.0f}",
                          "-" if r is None else f"{r:.4f}x", "")  # fmt: skip
    table.add_row(
        "bytes ratio (worst)", "", "", f"{worst:.4f}x",
        f"<= {BYTES_TARGET}x " + ("pass" if 0 < worst <= BYTES_TARGET else "MISS"),
    )  # fmt: skip
    table.add_row("final validation metric", f"{a['metric']:.4f}",
                  f"{b['epochs'][-1]['metric']:.4f}", "", "")  # fmt: skip
    table.add_row("load average (before, after)", str(a["load_average"]),
                  str(b["load_average"]), "", "")  # fmt: skip
    console.print(table)
    return {
        "epoch_seconds": {"in_process": a["epoch_seconds"], "multi_process": b["epoch_seconds"]},
        "median_epoch_seconds": {"in_process": ea, "multi_process": eb},
        "ratio_epoch_seconds": ratio,
        "ratio_bytes_worst": worst,
        "targets_met": {"time": ratio <= TIME_TARGET, "bytes": 0 < worst <= BYTES_TARGET},
        "bytes": rows,
        "load_average": {"in_process": a["load_average"], "multi_process": b["load_average"]},
        "in_process": a,
        "multi_process": {k: v for k, v in b.items() if k != "weights"},
    }


def main() -> int:
    out: dict[str, Any] = {
        "environment": {"python": sys.version.split()[0], "machine": platform.machine(),
                        "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "epochs": EPOCHS,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, make in (("2+2", small_spec), ("ten nodes", ten_party_spec)):
            folder = work / name.replace(" ", "-").replace("+", "p")
            folder.mkdir()
            spec = make(folder, EPOCHS)
            console.print(f"{name}: (a) in process ...")
            a = in_process(spec)
            console.print(f"{name}: (b) multi-process on loopback ...")
            b = multi_process(folder / "fed", spec)
            if b.get("status") != "finished":
                console.print(f"[red]{name}: multi-process run failed: {b.get('error')}[/]")
                return 1
            out[name] = compare(name, spec, a, b)
    console.print(
        "Bytes per epoch are fedmarket's wire frames (the encrypted model out, the results "
        "back), the same messages on both runtimes; Flower adds its own framing. In process "
        "the processors run one after the other; across processes they run side by side."
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1, default=str))
    console.print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
