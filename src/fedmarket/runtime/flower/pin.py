"""Which Flower runs a fedmarket node serves: fedmarket's own app, by its FAB's hash.

A Flower run names its app (a FAB: the app folder, zipped deterministically). A stock
SuperNode downloads the FAB and runs its ClientApp code, with the app's folder first on
``sys.path``; pinning the ClientApp's name would not help, since a FAB may ship its own
``fedmarket`` package. A fedmarket node never downloads or runs a FAB: it reads the run's FAB
hash from the SuperLink, answers runs of the pinned app with the installed fedmarket's
handlers, and refuses every other run with a log line. The pin keeps a node out of other
people's runs; safety does not depend on it, since nothing a run ships is ever executed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from fedmarket.runtime.flower.compat import RunInfo

APP_DIR = Path(__file__).resolve().parent / "fab"
# sha256 of the FAB `flwr run` builds from APP_DIR (tests/deploy/test_flower_pins.py rebuilds it)
APP_FAB_SHA256 = "a75994196a0cbf380385e53512c26753e0289ac838d41c35f5ee693ea800d7d0"
REFUSAL = "this node serves only fedmarket's app"

log = logging.getLogger("fedmarket.node")


@dataclass(frozen=True)
class AppPin:
    """The FAB hashes a node answers: fedmarket's own, plus any its operator allows."""

    allowed: frozenset[str] = field(default_factory=lambda: frozenset({APP_FAB_SHA256}))

    @classmethod
    def with_extra(cls, extra: list[str]) -> AppPin:
        return cls(frozenset({APP_FAB_SHA256, *(h.lower() for h in extra)}))

    def allows(self, run: RunInfo) -> bool:
        if run.fab_hash.lower() in self.allowed:
            return True
        log.warning(
            "refused run %s: app %s %s (fab %s) is not pinned by this node",
            run.run_id, run.fab_id or "?", run.fab_version or "?", run.fab_hash[:12] or "?",
        )  # fmt: skip
        return False
