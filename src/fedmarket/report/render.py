"""Write and re-render a run report: report.json, report.md and PNG plots in one folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from fedmarket.errors import ConfigError
from fedmarket.report.model import RunReport

PLOTS = ("metric.png", "tokens.png", "phases.png")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: RunReport, problems: Sequence[str] = ()) -> str:
    """The report a user would show a colleague; ``problems`` are notes about the rendering."""
    out = [f"# Run report: {report.task}", ""]
    out.append(
        f"Task {report.task_id} on {report.chain} (market `{report.market}`), "
        f"spec hash `{report.spec_hash}`."
    )
    out.append("")
    if report.epochs:
        last = report.epochs[-1]
        base = (
            f" (plaintext, same algorithm: {last.baseline:.4f})"
            if last.baseline is not None
            else ""
        )
        out.append(
            f"**Final validation {report.metric_name}: {last.metric:.4f}**{base} after "
            f"{len(report.epochs)} epoch(s). Stopped: {report.stop_reason}."
        )
        if report.sklearn_metric is not None:
            out.append(
                f"scikit-learn on the same points: {report.sklearn_metric:.4f} "
                f"(the simulator's reference; no party computes it)."
            )
        if report.test_metric is not None:
            twin = (
                f" (plaintext, same algorithm: {report.baseline_test_metric:.4f})"
                if report.baseline_test_metric is not None
                else ""
            )
            out.append(
                f"Test {report.metric_name} on rows no party saw: {report.test_metric:.4f}{twin}."
            )
    else:
        out.append(f"No epoch was closed. Stopped: {report.stop_reason}.")
    out += ["", "## Epochs", ""]
    rows = [
        [
            str(e.epoch),
            f"{e.metric:.4f}",
            "" if e.baseline is None else f"{e.baseline:.4f}",
            ", ".join(e.on_time) or "-",
            ", ".join(e.late) or "-",
            ", ".join(e.missing) or "-",
            ", ".join(e.flagged) or "-",
            f"{e.seconds:.2f}",
        ]
        for e in report.epochs
    ]
    header = [
        "epoch",
        report.metric_name,
        "plaintext",
        "on time",
        "late",
        "missing",
        "convicted",
        "s",
    ]
    out.append(_table(header, rows))
    if report.flags or report.alarms or report.disputes:
        out += ["", "## Integrity", ""]
        for d in report.disputes:
            panel = ", ".join(d["panel"]) or "none"
            out.append(
                f"- **dispute {d['dispute']}**: {d['processor']} on block {d['block']}, epoch "
                f"{d['epoch']}, panel {panel}: {d['outcome'] or d['note']}"
            )
        for flag in report.flags:
            how = "proven: a dispute" if flag["proven"] else "statistical, repeated: not paid"
            out.append(f"- **{flag['party']} flagged in epoch {flag['epoch']}** ({how}):")
            out += [f"  - epoch {e['epoch']}, {e['kind']}: {e['detail']}" for e in flag["evidence"]]
        for alarm in report.alarms:
            out.append(
                f"- alarm, epoch {alarm['epoch']}, {alarm['role']} {alarm['party']}, "
                f"{alarm['kind']}: {alarm['detail']}"
            )
    if report.privacy is not None:
        p = report.privacy
        out += [
            "",
            "## Privacy",
            "",
            f"Record-level ({p['epsilon']:g}, {p['delta']:g})-differential privacy over "
            f"{p['max_epochs']} epochs: samples clipped to L2 norm {p['clip_norm']:g}, at "
            f"least {p['floor']} samples per total, owners' noise multiplier "
            f"{p['noise_multiplier']:.3f} (std {p['noise_std'] or 0:.3g} per total). "
            "Epsilon each owner spent (its noise releases, by the PLD accountant):",
            "",
            _table(
                ["owner", "epsilon spent"],
                [[name, f"{eps:.3f}"] for name, eps in p["spent"].items()],
            ),
        ]
    out += ["", "## Tokens (base units)", ""]
    roles = {p.name: p.role for p in report.parties}
    rows = [
        [
            t.party,
            roles.get(t.party, ""),
            str(t.start),
            str(t.paid_in),
            str(t.received),
            f"{t.net:+d}",
        ]
        for t in report.tokens
    ]
    out.append(_table(["party", "role", "start", "paid in", "received", "net"], rows))
    total = sum(t.net for t in report.tokens)
    out.append("")
    out.append(f"Sum of net changes: {total:+d} (put in the market's reserve: {report.dust}).")
    out += ["", "## Gas", ""]
    rows = [
        [fn, str(calls), str(total_gas), str(total_gas // calls)]
        for fn, (calls, total_gas) in sorted(report.gas_by_function().items())
    ]
    out.append(_table(["function", "calls", "total gas", "gas per call"], rows))
    out += ["", "## Time per phase", ""]
    out.append(_table(["phase", "seconds"], [[k, f"{v:.2f}"] for k, v in report.phases.items()]))
    out += ["", "## Bytes on the wire", ""]
    rows = [[p.name, p.role, str(p.bytes_sent), str(p.bytes_received)] for p in report.parties]
    out.append(_table(["party", "role", "sent", "received"], rows))
    notes = [*report.notes, *problems]
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    drawn = [p for p in PLOTS if not any(p in x for x in problems)]
    if drawn:
        out += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in drawn)]
    out.append("")
    return "\n".join(out)


def _tokens(amount: int, decimals: int) -> float:
    """Base units as tokens, for a plot axis only (the report keeps the exact integers)."""
    return float(Fraction(amount, 10**decimals))


def _plot(name: str, report: RunReport, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if name == "metric.png":
        _metric_plot(plt, report, out)
    elif name == "tokens.png":
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = [t.party for t in report.tokens]
        nets = [_tokens(t.net, report.token_decimals) for t in report.tokens]
        ax.bar(names, nets, color=["tab:green" if n >= 0 else "tab:red" for n in nets])
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel("net tokens")
        ax.set_title("token flows per party")
        fig.tight_layout()
        fig.savefig(out / "tokens.png", dpi=110)
        plt.close(fig)
    else:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.barh(list(report.phases), list(report.phases.values()))
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title("time per phase")
        fig.tight_layout()
        fig.savefig(out / "phases.png", dpi=110)
        plt.close(fig)


def _metric_plot(plt: Any, report: RunReport, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [e.epoch for e in report.epochs]
    ax.plot(epochs, [e.metric for e in report.epochs], "o-", label="encrypted (fedmarket)")
    if any(e.baseline is not None for e in report.epochs):
        ax.plot(
            epochs,
            [e.baseline if e.baseline is not None else float("nan") for e in report.epochs],
            "s--",
            label="plaintext, same algorithm",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {report.metric_name}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "metric.png", dpi=110)
    plt.close(fig)


def write_report(report: RunReport, out_dir: str | Path) -> Path:
    """Write report.json first (what was paid for), then report.md and the plots into
    ``out_dir``; a plot that cannot be drawn is a note in report.md, never a lost report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    problems = []
    for name in PLOTS:
        if name == "metric.png" and not report.epochs:
            problems.append("metric.png: no epoch was closed, nothing to plot")
            (out / name).unlink(missing_ok=True)
            continue
        try:
            _plot(name, report, out)
        except Exception as exc:  # a plot is a convenience: never lose the report to one
            problems.append(f"{name} was not drawn: {type(exc).__name__}: {exc}")
    (out / "report.md").write_text(render_markdown(report, problems))
    return out


def load_report(out_dir: str | Path) -> RunReport:
    """Read ``report.json`` back (for ``fedmarket report DIR``)."""
    path = Path(out_dir) / "report.json"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError(f"it holds a JSON {type(data).__name__}, not an object")
        return RunReport.from_json(data)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no report here", hint="pass the --out folder of a `fedmarket run`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(
            f"{path}: not a fedmarket report: {exc}",
            hint="re-run the task, or restore report.json from the run's --out folder",
        ) from None
