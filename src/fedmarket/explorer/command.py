"""``fedmarket explorer``: serve the market explorer on a local port."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import typer

from fedmarket.errors import ConfigError

__all__ = ["explorer"]


def _check_port(host: str, port: int) -> None:
    # uvicorn would log a traceback-free but vague "address already in use"; say what to do
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use",
                    hint="pass another --port (or stop whatever serves it)",
                ) from None
            raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror}",
                              hint="check --host") from None  # fmt: skip


def explorer(
    chain: str = typer.Option(..., help="JSON-RPC URL of the node, e.g. http://127.0.0.1:8545"),
    market: str = typer.Option(..., help="The market contract's address."),
    runs: list[Path] = typer.Option(
        [],
        help="A folder of run folders (`fedmarket run --out`): metric curves, flags' evidence, "
        "party names, spec files. Repeatable.",
    ),
    specs: list[Path] = typer.Option(
        [],
        help="A spec file, or a folder searched for them, to show tasks' specs (checked "
        "against the on-chain hash). Repeatable.",
    ),
    host: str = typer.Option("127.0.0.1", help="Where to listen (the default: this machine only)."),
    port: int = typer.Option(8700, min=1, max=65535, help="The port to serve on."),
) -> None:
    """Serve a web app over one market: tasks, bids, epochs, payments, parties, live tasks."""
    try:
        import uvicorn

        from fedmarket.explorer.app import create_app
    except ImportError as exc:
        raise ConfigError(
            f"the explorer needs a package that is not installed ({exc.name})",
            hint="pip install 'fedmarket[explorer]'",
        ) from None
    from fedmarket.explorer.data import MarketReader
    from fedmarket.explorer.runs import RunIndex

    for what, paths in (("--runs", runs), ("--specs", specs)):
        for path in paths:
            if not path.exists():
                raise ConfigError(f"{what} {path}: no such file or folder", hint="check the path")
    _check_port(host, port)
    reader = MarketReader(chain, market)
    app = create_app(reader, RunIndex(runs, specs))
    shown = f"[{host}]" if ":" in host else host
    typer.echo(
        f"explorer for market {reader.address} on {reader.chain_name}: "
        f"http://{shown}:{port}/  ({reader.num_tasks()} tasks; Ctrl-C to stop)"
    )
    # a few seconds' grace: open live pages hold a stream each, which would delay the exit
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
