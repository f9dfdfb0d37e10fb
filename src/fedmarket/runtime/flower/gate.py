"""The SuperLink's ``flwr-serverapp``, gated: it runs fedmarket's app and nothing else.

Flower's Control API shares the SuperLink's one port with the Fleet API the nodes need, so
anyone who can reach a node's SuperLink can submit a run, and the SuperLink would install and
execute that run's ServerApp on its machine - the requester's machine, beside its key.
``fedmarket superlink`` starts ``flower-superlink`` with this module first on its PATH under
the name the SuperLink's SuperExec starts ServerApps by; it is flwr's own ``flwr-serverapp``
except that a FAB whose SHA-256 is not pinned (``pin.APP_FAB_SHA256``, plus
``$FEDMARKET_ALLOW_APPS``) is refused before anything in it is installed or imported: the run
fails, and its status says why.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import sys
from pathlib import Path

from fedmarket.errors import FedmarketError
from fedmarket.runtime.flower import compat
from fedmarket.runtime.flower.pin import APP_FAB_SHA256

ALLOW_ENV = "FEDMARKET_ALLOW_APPS"


def allowed() -> frozenset[str]:
    extra = [h.strip().lower() for h in os.environ.get(ALLOW_ENV, "").split(",") if h.strip()]
    return frozenset({APP_FAB_SHA256, *extra})


def gate_folder(folder: Path) -> Path:
    """A folder holding the gated ServerApp command, to put first on the SuperLink's PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / compat.serverapp_command()
    script.write_text(
        f"#!{sys.executable}\nfrom fedmarket.runtime.flower.gate import main\nmain()\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def main() -> None:
    compat.run_gated_serverapp(allowed())


if __name__ == "__main__":
    main()


# A ServerApp also takes its run config from whoever submitted the run: fedmarket's own app,
# submitted by a stranger with `key = "/home/you/key.json"`, would spend your budget. So the
# requester's ServerApp runs only with a one-time ticket that `fedmarket request` leaves in
# --out (readable by this machine's user only) and passes in the run config.
TICKET = ".fedmarket-ticket"


def issue_ticket(out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    ticket = secrets.token_hex(16)
    path = out / TICKET
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(ticket)
    return ticket


def take_ticket(out: Path, given: str) -> None:
    """Use up the ticket in ``out``; a FedmarketError if ``given`` is not it."""
    path = out / TICKET
    try:
        expected = path.read_text().strip()
    except OSError:
        expected = ""
    if not expected or not hmac.compare_digest(expected, given):
        raise FedmarketError(
            "refused: this run was not submitted by `fedmarket request` on this machine"
        )
    path.unlink(missing_ok=True)
