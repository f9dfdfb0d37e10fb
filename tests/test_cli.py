"""The `fedmarket` command: user mistakes give a message and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fedmarket.spec import load_spec


def fedmarket(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmarket.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_init_writes_a_valid_spec_and_refuses_to_overwrite(tmp_path: Path) -> None:
    done = fedmarket(
        "init", "task.toml", "--dataset", "sklearn:digits", "--owners", "4", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    spec = load_spec(tmp_path / "task.toml")
    assert spec.task.model == "multiclass" and len(spec.features.names) == 64
    assert spec.run is not None and len(spec.run.owners) == 4
    again = fedmarket("init", "task.toml", cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr


def test_user_mistakes_are_clear_errors_without_traceback(tmp_path: Path) -> None:
    for args, expected in [
        (("init", "x.toml", "--dataset", "sklearn:nope"), "unknown scikit-learn data set"),
        (("report", str(tmp_path)), "no report here"),
    ]:
        done = fedmarket(*args, cwd=tmp_path)
        assert done.returncode == 2, done
        assert expected in done.stderr
        assert "Traceback" not in done.stderr
