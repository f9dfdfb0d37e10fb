"""The ``fedmarket`` command: run tasks, drive the chain, inspect results."""

from __future__ import annotations

import sys
from pathlib import Path

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

# soft_wrap: never break a path or a hint across lines (users copy them)
err_console = Console(stderr=True, soft_wrap=True)


@app.command("init")
def init(
    out: Path = typer.Argument(Path("task.toml"), help="Where to write the spec."),
    dataset: str = typer.Option(
        "sklearn:breast_cancer", help="sklearn:NAME or csv:PATH (see fedmarket.data)."
    ),
    label_column: str = typer.Option("target", help="The label column of a CSV data set."),
    owners: int = typer.Option(2, min=1, max=128, help="Simulated data owners."),
    processors: int = typer.Option(2, min=1, max=128, help="Simulated processors."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a starter task spec for a data set, ready for `fedmarket run`."""
    from fedmarket.spec import dump_spec
    from fedmarket.starter import starter_spec

    if out.exists() and not force:
        raise FedmarketError(f"{out} already exists", hint="pass --force to overwrite it")
    spec = starter_spec(
        dataset, label_column=label_column, owners=owners, processors=processors, base=Path.cwd()
    )
    out.write_text(
        dump_spec(
            spec,
            comments={
                "task": "fedmarket task spec: all but [run] is announced and hashed on chain",
                "budget": "token base units (integers); 18 decimals: 10**18 is one token",
                "features": "scaling constants from the requester's own validation split",
                "run": "local runs only: which simulated parties exist and their bids",
            },
        )
    )
    typer.echo(f"wrote {out}: {spec.task.model} on {dataset}, {spec.task.num_points} points")


@app.command("report")
def report(out: Path = typer.Argument(..., help="The --out folder of a run.")) -> None:
    """Re-render report.md and the plots of a finished run from its report.json."""
    from fedmarket.report import load_report, write_report

    write_report(load_report(out), out)
    typer.echo(f"re-rendered {out / 'report.md'}")


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
