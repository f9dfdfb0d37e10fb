"""Stopping a child that runs in its own process group (anvil, Flower's SuperLink/SuperNodes).

A wrapper can exit before the processes it started (the npm package's anvil is a Node script
that spawns the real binary; a SuperNode starts ClientApp processes), so waiting for the child
alone can return while its port is still bound. ``stop_group`` returns only when the whole
group is gone, escalating to SIGKILL after ``timeout``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def _alive_in_group(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies, which hold no ports and
    wait for init to reap them, do not count). Linux reads /proc; elsewhere any member counts."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # exited while we looked
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def group_gone(pgid: int, *, timeout: float) -> bool:
    """Wait until no process of group ``pgid`` runs; False if some still does at ``timeout``."""
    deadline = time.monotonic() + timeout
    while _alive_in_group(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stop_group(proc: subprocess.Popen[bytes], *, timeout: float = 5.0, kill: bool = False) -> None:
    """Signal the group ``proc`` leads (SIGTERM, or SIGKILL with ``kill``) and wait for all of it.

    ``proc`` must have been started with ``start_new_session=True``.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    if group_gone(proc.pid, timeout=timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    group_gone(proc.pid, timeout=timeout)
