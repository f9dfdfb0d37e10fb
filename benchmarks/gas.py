"""Gas of the market's contract calls, from real transaction receipts on the embedded chain.

Every number is a whole transaction's ``gasUsed`` (the 21,000 base and calldata included), as
a user pays it. Measures each function, ``resolve`` against the number of bids, ``close_epoch``
against the number of processors (it must be flat), and one whole reference task. Prints a
table of target / measured / ratio / pass and writes ``benchmarks/results/gas.json``.

Run: ``make bench-gas`` (or ``.venv/bin/python benchmarks/gas.py``).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table

from fedmarket.chain import Chain, GasLog, MarketClient, TokenClient, deploy, embedded
from fedmarket.chain.backends import EVM_HARDFORK

RESULTS = Path(__file__).resolve().parent / "results" / "gas.json"

# Targets (issue 2). Gas is deterministic, so each is compared with this run's measurement.
SUBMIT_TARGET = 50_000
CLOSE_TARGET = 120_000
CLOSE_FLATNESS_TARGET = 1.05  # close_epoch gas with 64 processors / with 1
RESOLVE_PER_BID_TARGET = 25_000
WHOLE_TASK_TARGET = 4_000_000

RESOLVE_SIZES = (8, 32, 128)  # bids per side; the contract allows at most 128
CLOSE_SIZES = (1, 16, 64)  # winning processors
POINTS_PER_BID = 10
FUNDS = 10**24
MAX_UINT = 2**256 - 1
GRACE = 3_600
EPOCH = 600
BIDDING = 86_400  # every bid is its own block, and each block moves chain time on


def h(n: int) -> bytes:
    return (n + 1).to_bytes(32, "big")


@dataclass(frozen=True)
class Row:
    """One line of the targets table."""

    name: str
    target: float
    measured: float
    unit: str  # "gas" or "ratio"
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.measured / self.target

    @property
    def passed(self) -> bool:
        return self.measured <= self.target

    def miss(self) -> str:
        if self.passed:
            return ""
        over = self.measured - self.target
        if self.unit == "ratio":
            return f"{over:+.3f} over"
        return f"{over:+,.0f} gas ({over / self.target:+.1%}) over"


class Bench:
    """One embedded chain with a market, a funded requester and funded bidders."""

    def __init__(self, accounts: int) -> None:
        self.chain: Chain = embedded(num_accounts=accounts)
        deployer, self.requester, *self.bidders = self.chain.accounts
        self.log = GasLog()
        self.market, self.token = deploy(self.chain.w3, deployer, GRACE, gas_log=self.log)
        self._funded: set[str] = set()

    def fund(self, account: LocalAccount) -> None:
        """Tokens and an unlimited allowance, once per account (setup, not measured)."""
        if account.address in self._funded:
            return
        self.token.mint(account.address, FUNDS)
        self.token.as_(account).approve(self.market.address, MAX_UINT)
        self._funded.add(account.address)

    def as_(self, account: LocalAccount) -> MarketClient:
        return self.market.as_(account)

    def new_task(
        self,
        num_points: int,
        max_epochs: int,
        data: list[tuple[LocalAccount, int, int]],
        processing: list[tuple[LocalAccount, int, int]],
    ) -> int:
        """Create a task, place the bids, and move past the bidding deadline."""
        self.fund(self.requester)
        for account, _, _ in processing:
            self.fund(account)
        budget = 10**20
        task = (
            self.as_(self.requester)
            .create_task(h(1), h(2), num_points, EPOCH, max_epochs, budget, budget, BIDDING, 2_500)
            .value
        )
        for account, points, price in data:
            self.as_(account).bid_data(task, points, price)
        for account, capacity, price in processing:
            self.as_(account).bid_processing(task, capacity, price)
        self.chain.time_travel(BIDDING + 1)
        return task


def measure_resolve(console: Console) -> dict[str, Any]:
    """resolve with n bids per side, when every bid wins (each fill writes a storage slot,
    the worst case) and when half do (the other half are only checked)."""
    bench = Bench(accounts=2 + max(RESOLVE_SIZES) + 2)
    out: dict[str, Any] = {}
    for n in RESOLVE_SIZES:
        accounts = bench.bidders[:n]
        for winners, label in ((n, "all_win"), (n // 2, "half_win")):
            console.print(f"  resolve: {n} bids per side, {winners} winning per side")
            # Distinct prices, so the greedy order is the bid order.
            data = [(a, POINTS_PER_BID, 100 + i) for i, a in enumerate(accounts)]
            processing = [(a, POINTS_PER_BID, 1 + i) for i, a in enumerate(accounts)]
            task = bench.new_task(winners * POINTS_PER_BID, 1, data, processing)
            receipt = bench.as_(bench.requester).resolve_greedy(task)
            assert len(receipt.value.data) == len(receipt.value.processing) == winners
            out[f"{n}/{label}"] = {
                "bids_per_side": n,
                "winners_per_side": winners,
                "gas": receipt.gas_used,
                "gas_per_bid": receipt.gas_used / (2 * n),
            }
    return out


def measure_close(console: Console) -> dict[str, Any]:
    """close_epoch with P winning processors, all submitted: 0 flagged (first close, and a
    later one) and 1 flagged."""
    bench = Bench(accounts=2 + max(CLOSE_SIZES) + 2)
    owner = bench.bidders[-1]
    out: dict[str, Any] = {}
    for p in CLOSE_SIZES:
        console.print(f"  close_epoch: {p} processors")
        processors = bench.bidders[:p]
        task = bench.new_task(
            p * POINTS_PER_BID,
            10,
            [(owner, p * POINTS_PER_BID, 1)],
            [(a, POINTS_PER_BID, 1 + i) for i, a in enumerate(processors)],
        )
        requester = bench.as_(bench.requester)
        requester.resolve_greedy(task)
        requester.commit_assignment(task, h(3))
        bench.as_(owner).commit_data(task, h(4))
        gas: dict[str, int] = {}
        for epoch, label, flagged in (
            (0, "first_close", []),
            (1, "no_flag", []),
            (2, "one_flagged", [processors[0].address]),
        ):
            for a in processors:
                bench.as_(a).submit_result(task, epoch, h(100 + epoch))
            gas[label] = requester.close_epoch(task, epoch, flagged=flagged).gas_used
        out[str(p)] = {"processors": p, **gas}
    return out


def measure_reference_task(console: Console) -> tuple[dict[str, Any], GasLog]:
    """The whole reference task: 4 owners, 4 processors, 10 epochs, approvals, claims and
    withdrawals. Minting is faucet set-up, not part of a task, and is left out."""
    console.print("  reference task: 4 owners, 4 processors, 10 epochs")
    bench = Bench(accounts=12)
    req = bench.requester
    owners, processors = bench.bidders[:4], bench.bidders[4:8]
    epochs, points = 10, 400
    for account in [req, *processors]:
        bench.token.mint(account.address, FUNDS)
    task_log = GasLog()
    market = MarketClient.at(bench.chain.w3, bench.market.address, req, gas_log=task_log)
    token = TokenClient.at(bench.chain.w3, bench.token.address, req, gas_log=task_log)

    data_budget, processing_budget = 20 * points, 10 * points * epochs
    token.approve(market.address, data_budget + processing_budget)
    task = market.create_task(
        h(1), h(2), points, EPOCH, epochs, data_budget, processing_budget, BIDDING, 2_500
    ).value
    for i, owner in enumerate(owners):
        market.as_(owner).bid_data(task, 100, 10 + i)
    for i, proc in enumerate(processors):
        capacity, price = 100, 2 + i
        token.as_(proc).approve(market.address, capacity * price * epochs)
        market.as_(proc).bid_processing(task, capacity, price)
    bench.chain.time_travel(BIDDING + 1)
    market.resolve_greedy(task)
    market.commit_assignment(task, h(3))
    for owner in owners:
        market.as_(owner).commit_data(task, h(4))
    for epoch in range(epochs):
        for proc in processors:
            market.as_(proc).submit_result(task, epoch, h(100 + epoch))
        market.close_epoch(task, epoch, go_on=epoch + 1 < epochs)
    for party in [req, *owners, *processors]:
        market.as_(party).collect(task)  # claim + withdraw in one transaction
    by_function = {name: sum(gas) for name, gas in task_log.by_function().items()}
    return {
        "total": task_log.total(),
        "transactions": len(task_log),
        "by_function": by_function,
    }, task_log


def measure_functions(console: Console, reference_log: GasLog) -> dict[str, Any]:
    """Each function's gas: the reference task's calls plus a side run for the calls it does
    not make (bid withdrawals, cancel, timeout, a late result, token transfer)."""
    console.print("  the remaining functions")
    bench = Bench(accounts=10)
    side_log = bench.log
    side_log.clear()
    req, (o1, o2, p1, p2, *_) = bench.requester, bench.bidders
    for account in (p1, p2):
        bench.fund(account)
    bench.fund(req)
    # withdraw both kinds of bid, then cancel
    task = bench.as_(req).create_task(h(1), h(2), 10, EPOCH, 2, 10**6, 10**6, BIDDING, 2_500).value
    bench.as_(o1).bid_data(task, 10, 1)
    bench.as_(o1).withdraw_data_bid(task)
    bench.as_(p1).bid_processing(task, 10, 1)
    bench.as_(p1).withdraw_processing_bid(task)
    bench.as_(req).cancel(task)
    # a late result, then the requester vanishes and a processor ends the task
    task = bench.new_task(10, 3, [(o2, 10, 1)], [(p2, 10, 1)])
    bench.as_(req).resolve_greedy(task)
    bench.as_(req).commit_assignment(task, h(3))
    bench.chain.time_travel(EPOCH + 1)
    bench.as_(p2).submit_result(task, 0, h(9))
    bench.chain.time_travel(GRACE + 1)
    bench.as_(p2).claim_timeout(task)
    bench.token.as_(p1).transfer(p2.address, 1)

    late = [e.gas_used for e in side_log if e.function == "submit_result"]
    out: dict[str, Any] = {}
    names = sorted({e.function for e in reference_log} | {e.function for e in side_log})
    for name in names:
        gas = reference_log.calls(name) or side_log.calls(name)
        if not gas:
            continue
        out[name] = {
            "calls": len(gas),
            "min": min(gas),
            "median": int(statistics.median(gas)),
            "max": max(gas),
        }
    out["submit_result (late)"] = {
        "calls": len(late),
        "min": min(late),
        "median": int(statistics.median(late)),
        "max": max(late),
    }
    return out


def deploy_gas() -> dict[str, int]:
    chain = embedded(num_accounts=1)
    log = GasLog()
    deploy(chain.w3, chain.accounts[0], GRACE, gas_log=log)
    return {e.contract: e.gas_used for e in log}


def targets(
    functions: dict[str, Any],
    resolve: dict[str, Any],
    close: dict[str, Any],
    whole: dict[str, Any],
) -> list[Row]:
    rows = [
        Row(
            "submit_result, on time (max)", SUBMIT_TARGET, functions["submit_result"]["max"], "gas"
        ),
        Row(
            "submit_result, late (max)",
            SUBMIT_TARGET,
            functions["submit_result (late)"]["max"],
            "gas",
        ),
    ]
    for p in CLOSE_SIZES:
        c = close[str(p)]
        rows.append(
            Row(
                f"close_epoch, {p} processors, 0 flagged",
                CLOSE_TARGET,
                max(c["first_close"], c["no_flag"]),
                "gas",
                "max of first and later close",
            )
        )
        note = "the task ends: no processor left" if p == 1 else ""
        rows.append(
            Row(
                f"close_epoch, {p} processors, 1 flagged",
                CLOSE_TARGET,
                c["one_flagged"],
                "gas",
                note,
            )
        )
    # Flatness: the most processors against the fewest. With one flagged, the fewest is 16:
    # flagging the only processor ends the task, a different (cheaper) path.
    for label, key, lo in (
        ("0 flagged", "no_flag", CLOSE_SIZES[0]),
        ("1 flagged", "one_flagged", CLOSE_SIZES[1]),
    ):
        hi = CLOSE_SIZES[-1]
        rows.append(
            Row(
                f"close_epoch flatness, {hi} vs {lo} processors, {label}",
                CLOSE_FLATNESS_TARGET,
                close[str(hi)][key] / close[str(lo)][key],
                "ratio",
                f"{close[str(hi)][key]:,} / {close[str(lo)][key]:,} gas",
            )
        )
    for n in RESOLVE_SIZES:
        for label, text in (("all_win", "all win"), ("half_win", "half win")):
            r = resolve[f"{n}/{label}"]
            rows.append(
                Row(
                    f"resolve per bid, {n} bids/side, {text}",
                    RESOLVE_PER_BID_TARGET,
                    r["gas_per_bid"],
                    "gas",
                    f"{r['gas']:,} gas / {2 * n} bids",
                )
            )
    rows.append(
        Row(
            "whole reference task (4 owners, 4 processors, 10 epochs)",
            WHOLE_TASK_TARGET,
            whole["total"],
            "gas",
            f"{whole['transactions']} transactions",
        )
    )
    return rows


def fmt(value: float, unit: str) -> str:
    return f"{value:.3f}" if unit == "ratio" else f"{value:,.0f}"


def main() -> int:
    # Wide enough for the tables when piped to a file (rich assumes 80 columns then).
    console = Console(width=None if sys.stdout.isatty() else 130)
    started = time.monotonic()
    console.print("[bold]fedmarket gas benchmark[/] (embedded chain, py-evm, whole transactions)")
    whole, reference_log = measure_reference_task(console)
    functions = measure_functions(console, reference_log)
    resolve = measure_resolve(console)
    close = measure_close(console)
    deployments = deploy_gas()
    rows = targets(functions, resolve, close, whole)

    per_function = Table(title="gas per function (whole transactions)")
    for column in ("function", "calls", "min", "median", "max"):
        per_function.add_column(column, justify="left" if column == "function" else "right")
    for name, g in functions.items():
        per_function.add_row(
            name, str(g["calls"]), f"{g['min']:,}", f"{g['median']:,}", f"{g['max']:,}"
        )
    for contract, gas in deployments.items():
        per_function.add_row(f"deploy {contract}", "1", f"{gas:,}", f"{gas:,}", f"{gas:,}")
    console.print(per_function)

    table = Table(title="targets")
    for column in ("measure", "target", "measured", "ratio", "pass", "miss / note"):
        table.add_column(
            column, justify="left" if column in ("measure", "miss / note") else "right"
        )
    for row in rows:
        mark = "[green]pass[/]" if row.passed else "[bold red]FAIL[/]"
        table.add_row(
            row.name,
            "≤ " + fmt(row.target, row.unit),
            fmt(row.measured, row.unit),
            f"{row.ratio:.2f}",
            mark,
            row.miss() or row.note,
        )
    console.print(table)
    failed = [r for r in rows if not r.passed]
    for r in failed:
        console.print(f"[red]missed:[/] {r.name}: {fmt(r.measured, r.unit)} is {r.miss()}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "environment": {
            "chain": "embedded (eth-tester + py-evm)",
            "hardfork": EVM_HARDFORK,
            "vyper": metadata.version("vyper"),
            "py-evm": metadata.version("py-evm"),
            "python": sys.version.split()[0],
            "note": "whole-transaction gasUsed from receipts (21,000 base and calldata included)",
        },
        "targets": [
            {**asdict(r), "ratio": r.ratio, "passed": r.passed, "miss": r.miss()} for r in rows
        ],
        "functions": functions,
        "deploy": deployments,
        "resolve": resolve,
        "close_epoch": close,
        "reference_task": whole,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(
        f"{len(rows) - len(failed)}/{len(rows)} targets met; wrote {RESULTS} "
        f"in {time.monotonic() - started:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
