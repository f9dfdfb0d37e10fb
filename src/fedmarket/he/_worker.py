"""A ProcessorPool worker process: ``python -m fedmarket.he._worker FD``.

FD is this process's end of a socket pair; the pool sends the public context first, then
blocks and models (see ``fedmarket.he.pool``). The worker exits when the pool says stop or
its end of the socket closes (the pool's process ended).
"""

from __future__ import annotations

import signal
import sys

# First thing: a terminal's Ctrl-C is the parent's to handle (it backs off and settles).
signal.signal(signal.SIGINT, signal.SIG_IGN)

from multiprocessing.connection import Connection  # noqa: E402

from fedmarket.he.pool import worker_main  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m fedmarket.he._worker FD (ProcessorPool starts it)", file=sys.stderr)
        return 2
    worker_main(Connection(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
