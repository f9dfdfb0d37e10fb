"""The ``fedmarket`` command: run tasks, drive the chain, inspect results."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from fedmarket.errors import FedmarketError

app = typer.Typer(
    name="fedmarket",
    help="A market for privacy-preserving federated learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
chain_app = typer.Typer(help="The on-chain market: deploy, inspect, demo.", no_args_is_help=True)
app.add_typer(chain_app, name="chain")

err_console = Console(stderr=True)


@chain_app.command("demo")
def chain_demo(
    chain: str = typer.Option(
        "embedded",
        help="'embedded' (in-process EVM) or a JSON-RPC URL such as http://127.0.0.1:8545",
    ),
) -> None:
    """Run one scripted task through the market and print a token-flow table per party."""
    from fedmarket.chain.demo import run_demo

    run_demo(chain)


def main() -> None:
    """Console entry point: user mistakes print a clear message, never a traceback."""
    try:
        app()
    except FedmarketError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}")
        if exc.hint:
            err_console.print(f"[yellow]hint:[/] {exc.hint}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
