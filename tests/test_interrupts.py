"""Ctrl-C in a terminal, for real: a SIGINT to the whole process group of `fedmarket run`
(HE workers included) backs off and settles; a second one stops the step; both keep the
model and the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedmarket.spec import SpecFile, dump_spec, load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def long_task(folder: Path) -> Path:
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = 50
    data["stopping"]["patience"] = 0
    data["he"]["block_points"] = 16  # many blocks: encrypting them takes a few seconds
    data["budget"]["processing"] *= 5
    path = folder / "long.toml"
    path.write_text(dump_spec(SpecFile.model_validate(data)))
    return path


def start(folder: Path) -> subprocess.Popen[str]:
    """`fedmarket run` as a terminal runs it: its own process group, two workers each."""
    spec = long_task(folder)
    return subprocess.Popen(
        [sys.executable, "-m", "fedmarket.cli", "run", str(spec), "--out", str(folder / "out"),
         "--workers", "2"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def wait_for(proc: subprocess.Popen[str], text: str, seen: list[str], timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return
    pytest.fail(f"never saw {text!r}: {''.join(seen)}")


def interrupt(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group


def finish(proc: subprocess.Popen[str], seen: list[str]) -> str:
    out, _ = proc.communicate(timeout=300)
    return "".join(seen) + out


def test_one_ctrl_c_backs_off_at_the_epoch_boundary_and_keeps_the_results(
    tmp_path: Path,
) -> None:
    proc = start(tmp_path)
    seen: list[str] = []
    wait_for(proc, "epoch 1:", seen, timeout=300)
    interrupt(proc)
    output = finish(proc, seen)
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert "worker" not in output.lower(), output  # no worker died of the signal
    assert proc.returncode == 0, output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stop_reason"].startswith("backed off at epoch")
    assert "interrupted" in report["stop_reason"]
    assert 2 <= len(report["epochs"]) < 50  # it stopped early, after what it had trained
    assert (tmp_path / "out" / "model.npz").stat().st_size > 0
    settled(tmp_path)


def test_a_second_ctrl_c_stops_the_step_and_still_settles(tmp_path: Path) -> None:
    proc = start(tmp_path)
    seen: list[str] = []
    wait_for(proc, "encrypt+distribute", seen, timeout=300)
    interrupt(proc)  # back off at the boundary after the (long) encryption ...
    wait_for(proc, "stopping:", seen, timeout=60)
    interrupt(proc)  # ... no: stop now
    output = finish(proc, seen)
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert proc.returncode == 130, output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stop_reason"].endswith("(stopped at once: interrupted twice)"), report
    assert report["epochs"] == []  # interrupted before any epoch: no model is passed off
    assert not (tmp_path / "out" / "model.npz").exists()
    assert "no epoch was closed" in (tmp_path / "out" / "report.md").read_text()
    settled(tmp_path)


def settled(tmp_path: Path) -> None:
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # settled: nothing was created or lost, every stake came back
    assert sum(t["net"] for t in report["tokens"]) == -report["dust"]
    for t in report["tokens"]:
        if t["party"].startswith("processor"):
            assert t["received"] >= t["paid_in"] > 0, t
