"""The ``fedmarket`` command: run tasks, drive the chain, inspect results."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from fedmarket.errors import ConfigError, FedmarketError

app = typer.Typer(
    name="fedmarket",
    help="A market for privacy-preserving federated learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    suggest_commands=False,  # click already suggests ("Did you mean ...?"): once is enough
)
chain_app = typer.Typer(
    help="The on-chain market: deploy, inspect, demo.", no_args_is_help=True, suggest_commands=False
)
app.add_typer(chain_app, name="chain")

# soft_wrap: never break a path or a hint across lines (users copy them)
err_console = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fedmarket {version('fedmarket')}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """A market for privacy-preserving federated learning."""


@app.command("run")
def run(
    task: Path = typer.Argument(
        ..., help="The task spec (TOML), e.g. examples/breast_cancer.toml."
    ),
    chain: str = typer.Option(
        "embedded",
        help="'embedded' (in-process EVM), 'memory' (a simulated ledger, no EVM) or a "
        "JSON-RPC URL, e.g. http://127.0.0.1:8545",
    ),
    market: str = typer.Option(
        "",
        help="With --chain URL: an existing market to run on (and its token); "
        "default: deploy a new market and a dev token.",
    ),
    out: Path = typer.Option(Path("runs/latest"), help="Where to write the report and the model."),
    workers: int = typer.Option(2, min=0, max=64, help="Processes per processor (0: in process)."),
) -> None:
    """Run a whole task: announce, bid, resolve, train on encrypted data, settle, report.

    Ctrl-C once: the requester backs off cleanly on chain at the next epoch boundary and
    everyone settles. Twice: the current step stops at once, then the same. Either way the
    model and the report are written.
    """
    import signal

    from rich.live import Live
    from rich.table import Table

    from fedmarket.explorer.runs import ProgressWriter
    from fedmarket.protocol.interrupts import Interrupts
    from fedmarket.run import run_file
    from fedmarket.spec import load_spec

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", hint="name a folder (it is created if missing)")
    if market and chain in ("embedded", "memory"):
        raise ConfigError("--market needs --chain URL", hint="the embedded chains start empty")
    announced = load_spec(task).spec
    # progress.json and spec.toml in --out: what `fedmarket explorer --runs` shows while it trains
    live_file = ProgressWriter(
        out, "0x" + announced.spec_hash().hex(), announced.kind.metric, spec_source=task
    )
    console = Console()
    state: dict[str, object] = {"phase": "starting", "epoch": "-", "metric": "-"}
    interrupts = Interrupts()

    def on_sigint(signum: int, frame: object) -> None:
        presses = interrupts.presses
        if presses == 0:
            console.print(
                "[yellow]stopping: the requester backs off at the next epoch boundary "
                "(Ctrl-C again to stop the current step now)[/]"
            )
        elif presses == 1:
            console.print("[yellow]stopping now; settling what can be settled ...[/]")
        else:
            console.print("[yellow]still settling and writing the results: please wait[/]")
        interrupts.press()

    def view() -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_row(
            "phase",
            str(state["phase"]),
            "epoch",
            str(state["epoch"]),
            f"validation {state['metric']}",
        )
        return table

    with Live(view(), console=console, refresh_per_second=4, transient=True) as live:

        def progress(event: str, data: dict[str, object]) -> None:
            live_file(event, data)
            if event == "phase":
                state["phase"] = data["phase"]
                console.print(f"[bold]▸ {data['phase']}[/]")
            elif event == "epoch":
                state["epoch"], state["metric"] = data["epoch"], f"{float(data['metric']):.4f}"  # type: ignore[arg-type]
                console.print(f"  epoch {data['epoch']}: validation {state['metric']}")
            elif event == "task":
                console.print(f"  task {data['task']} on market {data['market']}")
            live.update(view())

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            result = run_file(
                task,
                chain_url=None if chain == "embedded" else chain,
                market=market or None,
                out=out,
                workers=workers,
                progress=progress,
                interrupts=interrupts,
            )
        finally:
            signal.signal(signal.SIGINT, previous)
    report = result.report
    console.print(f"[green]done[/]: {escape(report.stop_reason)}")
    if report.epochs:
        last = report.epochs[-1]
        console.print(
            f"final validation {report.metric_name} {last.metric:.4f} "
            f"after {len(report.epochs)} epoch(s)"
        )
    if report.privacy is not None:
        p = report.privacy
        spent = ", ".join(f"{name} {eps:.3f}" for name, eps in p["spent"].items()) or "nothing"
        console.print(
            f"differential privacy: epsilon {p['epsilon']:g} at delta {p['delta']:g} promised; "
            f"spent: {escape(spent)}"
        )
    from fedmarket.units import format_units

    decimals = report.token_decimals
    tokens = Table(title="tokens, exact (report.json: integer base units)")
    for column in ("party", "paid in", "received", "net"):
        tokens.add_column(column, justify="right" if column != "party" else "left")
    for flow in report.tokens:
        tokens.add_row(
            flow.party,
            format_units(flow.paid_in, decimals),
            format_units(flow.received, decimals),
            format_units(flow.net, decimals, sign=True),
        )
    console.print(tokens)
    model = f"   model: {out / 'model.npz'}" if (out / "model.npz").exists() else "   (no model)"
    console.print(f"report: {out / 'report.md'}{model}")
    if interrupts.urgent:
        raise typer.Exit(130)  # stopped mid-step at the user's request (everything settled)


@app.command("init")
def init(
    out: Path = typer.Argument(Path("task.toml"), help="Where to write the spec."),
    dataset: str = typer.Option(
        "sklearn:breast_cancer",
        help="sklearn:NAME (breast_cancer, digits, iris, wine, diabetes), "
        "csv:PATH (numbers only, one label column; relative to the current folder), "
        "or synthetic:SAMPLES:FEATURES.",
    ),
    label_column: str = typer.Option("target", help="The label column of a CSV data set."),
    owners: int = typer.Option(2, min=1, max=128, help="Simulated data owners."),
    processors: int = typer.Option(2, min=1, max=128, help="Simulated processors."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a starter task spec for a data set, ready for `fedmarket run`."""
    import os

    from fedmarket.spec import dump_spec
    from fedmarket.starter import starter_spec

    if out.is_dir():
        raise ConfigError(f"{out} is a folder", hint="name the spec file, e.g. my_task.toml")
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists", hint="pass --force to overwrite it")
    if dataset.startswith("csv:"):
        # written relative to the spec's folder, where `fedmarket run` resolves it
        csv = Path(dataset[4:]).expanduser()
        if not csv.is_absolute():
            csv = Path.cwd() / csv
        if not csv.is_file():
            raise ConfigError(f"{csv}: no such data file", hint="check the csv: path")
        folder = out.resolve().parent
        dataset = "csv:" + os.path.relpath(csv.resolve(), folder)
        base = folder
    else:
        base = out.resolve().parent
    spec = starter_spec(
        dataset, label_column=label_column, owners=owners, processors=processors, base=base
    )
    out.parent.mkdir(parents=True, exist_ok=True)
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


def _register() -> None:
    from fedmarket import deploy_cli, node_cli
    from fedmarket.explorer.command import explorer
    from fedmarket.task_cli import task_app

    deploy_cli.register(app, chain_app)
    node_cli.register(app, chain_app)
    app.add_typer(task_app, name="task")
    app.command("explorer")(explorer)


_register()


def main() -> None:
    """Console entry point: user mistakes print a clear message, never a traceback."""
    try:
        app()
    except FedmarketError as exc:
        # escaped: a message may name a section such as [run], which is not markup
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
