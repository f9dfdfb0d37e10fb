"""The same task in one process and as separate processes on loopback (Flower + anvil).

Breast cancer, 2 owners, 2 processors (+1 that wins nothing), 3 epochs, blocks of 64 points.
(a) in-process: ``fedmarket run`` on an anvil node (the same chain as (b), so only the
transport differs); (b) multi-process: a SuperLink and 5 SuperNodes on loopback, the
requester's ServerApp submitted with ``flwr run``, insecure. Reported: seconds per epoch and
bytes per epoch per party (requester -> node and back), and the ratios (b)/(a).

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
from fedmarket.runtime.flower.harness import Loopback, parties, small_spec
from fedmarket.spec import load_spec

RESULTS = Path(__file__).resolve().parent / "results" / "deploy.json"
EPOCHS = 3
console = Console()


def in_process(spec: Path) -> dict[str, Any]:
    with chain_up() as chain:
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
        }


def multi_process(workdir: Path, spec: Path) -> dict[str, Any]:
    start = time.perf_counter()
    with Loopback(workdir, spec, parties(spec), tls=None) as lb:
        result = lb.run()
    result["wall_seconds"] = time.perf_counter() - start
    return result


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = small_spec(work, epochs=EPOCHS)
        console.print("(a) in process ...")
        a = in_process(spec)
        console.print("(b) multi-process on loopback ...")
        b = multi_process(work / "fed", spec)
    if b.get("status") != "finished":
        console.print(f"[red]multi-process run failed: {b.get('error')}[/]")
        return 1
    ea, eb = median(a["epoch_seconds"]), median(b["epoch_seconds"])
    table = Table(title=f"breast cancer, {EPOCHS} epochs: in-process vs multi-process")
    for col in ("measure", "in-process", "multi-process", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("seconds per epoch (median)", f"{ea:.2f}", f"{eb:.2f}", f"{eb / ea:.1f}x")
    rows = []
    for name in ("processor1", "processor2"):
        for what, key in (
            ("requester -> ", "epoch_bytes_sent"),
            ("-> requester ", "epoch_bytes_received"),
        ):
            va = a[key].get(name, 0) / EPOCHS
            vb = b[key].get(name, 0) / EPOCHS
            rows.append(
                {"party": name, "direction": what.strip(), "in_process": va, "multi_process": vb}
            )
            ratio = f"{vb / va:.3f}x" if va else "-"
            table.add_row(f"bytes/epoch {what}{name}", f"{va:,.0f}", f"{vb:,.0f}", ratio)
    table.add_row(
        "final validation metric", f"{a['metric']:.4f}", f"{b['epochs'][-1]['metric']:.4f}", ""
    )
    console.print(table)
    console.print(
        "Bytes per epoch are fedmarket's wire frames (the encrypted model out, the results "
        "back); Flower adds its own framing. The time ratio is Flower's polling (3 s per "
        "round trip) and a fresh ClientApp process per message (parsing the 13 MB public "
        "context each time)."
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "environment": {"python": sys.version.split()[0], "machine": platform.machine(),
                        "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "epoch_seconds": {"in_process": a["epoch_seconds"], "multi_process": b["epoch_seconds"]},
        "ratio_epoch_seconds": eb / ea,
        "bytes": rows,
        "in_process": a,
        "multi_process": {k: v for k, v in b.items() if k != "weights"},
    }, indent=1, default=str))  # fmt: skip
    console.print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
