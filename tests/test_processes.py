"""stop_group: a child's whole process group is gone when it returns."""

from __future__ import annotations

import subprocess
import time

from fedmarket.processes import group_gone, stop_group


def _spawn(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", script], start_new_session=True)


def test_a_grandchild_that_ignores_sigterm_is_killed_before_stop_returns() -> None:
    # The leader dies on SIGTERM at once; the process it started ignores SIGTERM (like a
    # wrapper whose binary is still closing its port).
    proc = _spawn("(trap '' TERM; exec sleep 30) & sleep 30")
    time.sleep(0.3)
    assert not group_gone(proc.pid, timeout=0)
    started = time.monotonic()
    stop_group(proc, timeout=0.5)
    assert group_gone(proc.pid, timeout=0)
    assert time.monotonic() - started < 5


def test_a_well_behaved_group_stops_on_sigterm() -> None:
    proc = _spawn("sleep 30 & wait")
    time.sleep(0.2)
    stop_group(proc, timeout=5)
    assert proc.returncode is not None and group_gone(proc.pid, timeout=0)


def test_stopping_an_exited_group_is_harmless() -> None:
    proc = _spawn("exit 0")
    proc.wait(timeout=5)
    stop_group(proc, timeout=0.5)
    assert group_gone(proc.pid, timeout=0)
