"""`fedmarket chain demo`: one scripted task through the market, step by step, ending with a
token-flow table per party and a check that no token was created or lost.

Runs on the embedded chain by default; on a JSON-RPC URL (a development node such as anvil)
it signs with the well-known development accounts and moves time with ``evm_increaseTime``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table

from fedmarket.chain.backends import Chain, dev_keys, embedded, rpc
from fedmarket.chain.client import MarketClient, Receipt, TokenClient, deploy
from fedmarket.chain.events import ProcessorSlashed, ResultSubmitted, Transfer
from fedmarket.errors import ChainError

__all__ = ["DemoResult", "Flow", "run_demo"]

T = TypeVar("T")

GRACE_SECONDS = 3_600
EPOCH_SECONDS = 600
BIDDING_SECONDS = 3_600
MAX_EPOCHS = 4
LATE_PENALTY_BPS = 2_500
NUM_POINTS = 120
# (name, points, price per point)
OWNERS = [("bob", 70, 10), ("carol", 60, 12), ("dave", 50, 20)]
# (name, capacity per epoch, price per point)
PROCESSORS = [("erin", 61, 2), ("frank", 60, 3), ("grace", 40, 5)]
DATA_BUDGET = 1_500
PROCESSING_BUDGET = 2_000
PROCESSOR_FUNDS = 5_000


@dataclass(frozen=True)
class Flow:
    """One party's tokens over the demo. ``net == received - paid_in == end - start``."""

    name: str
    role: str
    address: str
    start: int
    paid_in: int
    received: int
    end: int

    @property
    def net(self) -> int:
        return self.received - self.paid_in


@dataclass(frozen=True)
class DemoResult:
    flows: tuple[Flow, ...]
    dust: int
    market_balance: int
    total_gas: int


def _h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _connect(chain: str) -> Chain:
    if chain == "embedded":
        return embedded(num_accounts=8)
    node = rpc(chain, dev_keys(8))
    for account in node.accounts:
        if node.w3.eth.get_balance(account.address) == 0:
            raise ChainError(
                f"the demo's account {account.address} has no ETH on {chain}",
                hint="the demo signs with anvil's default development accounts; "
                "run it against a fresh `anvil`, or use --chain embedded",
            )
    return node


class _Script:
    """The demo's parties and a running log of every token transfer they make."""

    def __init__(self, console: Console, market: MarketClient, token: TokenClient) -> None:
        self.console = console
        self.market = market
        self.token = token
        self.paid_in: dict[str, int] = {}
        self.received: dict[str, int] = {}

    def track(self, receipt: Receipt[T]) -> Receipt[T]:
        for transfer in receipt.all(Transfer):
            if transfer.receiver == self.market.address:
                self.paid_in[transfer.sender] = (
                    self.paid_in.get(transfer.sender, 0) + transfer.value
                )
            elif transfer.sender == self.market.address:
                self.received[transfer.receiver] = (
                    self.received.get(transfer.receiver, 0) + transfer.value
                )
        return receipt

    def step(self, title: str) -> None:
        self.console.print(f"\n[bold cyan]▸ {title}[/]")

    def say(self, text: str, receipt: Receipt[Any] | None = None) -> None:
        gas = f" [dim]({receipt.gas_used:,} gas)[/]" if receipt is not None else ""
        self.console.print(f"  {text}{gas}")


def run_demo(chain: str = "embedded", *, console: Console | None = None) -> DemoResult:
    """Run the scripted task on ``chain`` ("embedded" or a JSON-RPC URL) and print it."""
    out = console or Console()
    node = _connect(chain)
    deployer, alice, *rest = node.accounts
    owner_accounts = dict(zip([o[0] for o in OWNERS], rest[:3], strict=True))
    proc_accounts = dict(zip([p[0] for p in PROCESSORS], rest[3:6], strict=True))
    names: dict[str, str] = {alice.address: "alice"}
    names.update({a.address: n for n, a in owner_accounts.items()})
    names.update({a.address: n for n, a in proc_accounts.items()})
    roles: dict[str, str] = {alice.address: "requester"}
    roles.update({a.address: "data owner" for a in owner_accounts.values()})
    roles.update({a.address: "processor" for a in proc_accounts.values()})

    out.print(f"[bold]fedmarket chain demo[/] on [green]{node.name}[/] (chain id {node.chain_id})")
    market, token = deploy(node.w3, deployer, GRACE_SECONDS)
    s = _Script(out, market, token)
    s.step("deploy")
    s.say(f"DevToken at {token.address}, Market at {market.address}, grace {GRACE_SECONDS}s")

    token.mint(alice.address, DATA_BUDGET + PROCESSING_BUDGET)
    for account in proc_accounts.values():
        token.mint(account.address, PROCESSOR_FUNDS)
    parties: list[LocalAccount] = [alice, *owner_accounts.values(), *proc_accounts.values()]
    by_address: dict[str, LocalAccount] = {a.address: a for a in parties}
    start = {a.address: token.balance_of(a.address) for a in parties}

    s.step("announce")
    token.as_(alice).approve(market.address, DATA_BUDGET + PROCESSING_BUDGET)
    created = s.track(
        market.as_(alice).create_task(
            _h("spec: framingham logistic regression"),
            _h("alice's public CKKS context"),
            NUM_POINTS,
            EPOCH_SECONDS,
            MAX_EPOCHS,
            DATA_BUDGET,
            PROCESSING_BUDGET,
            BIDDING_SECONDS,
            LATE_PENALTY_BPS,
        )
    )
    task = created.value
    s.say(
        f"alice wants {NUM_POINTS} points, escrows {DATA_BUDGET} for data + "
        f"{PROCESSING_BUDGET} for processing (task {task})",
        created,
    )

    s.step("bid")
    r: Receipt[Any]
    for name, points, price in OWNERS:
        r = market.as_(owner_accounts[name]).bid_data(task, points, price)
        s.say(f"{name} offers {points} points at {price}/point", r)
    for name, capacity, price in PROCESSORS:
        who = proc_accounts[name]
        stake = capacity * price * MAX_EPOCHS
        token.as_(who).approve(market.address, stake)
        r = s.track(market.as_(who).bid_processing(task, capacity, price))
        s.say(f"{name} offers {capacity} points/epoch at {price}/point, stakes {stake}", r)

    s.step("resolve")
    node.time_travel(BIDDING_SECONDS + 1)
    resolved = market.as_(alice).resolve_greedy(task)
    allocation = resolved.value
    for fill in allocation.data:
        bid = market.get_bid(task, 0, fill.bid)
        s.say(f"data: {names[bid.bidder]} sells {fill.amount} of {bid.amount} points")
    for fill in allocation.processing:
        bid = market.get_bid(task, 1, fill.bid)
        s.say(f"processing: {names[bid.bidder]} takes {fill.amount} points/epoch")
    s.say(
        f"data costs {allocation.data_cost}, processing {allocation.processing_cost_per_epoch}"
        "/epoch; losers' stakes are claimable now",
        resolved,
    )
    winners = [market.get_bid(task, 1, f.bid).bidder for f in allocation.processing]
    data_winners = [market.get_bid(task, 0, f.bid).bidder for f in allocation.data]

    s.step("distribute")
    r = market.as_(alice).commit_assignment(task, _h("block -> processor assignment"))
    s.say("alice commits the block assignment; epoch 0 starts", r)
    for owner in data_winners:
        r = market.as_(by_address[owner]).commit_data(task, _h(f"{owner} blocks"))
        s.say(f"{names[owner]} commits the root of its encrypted blocks", r)

    def submit(address: str, epoch: int) -> None:
        r = market.as_(by_address[address]).submit_result(
            task, epoch, _h(f"{address} epoch {epoch}")
        )
        ev = r.one(ResultSubmitted)
        when = "on time" if ev.on_time else "[yellow]late[/]"
        s.say(f"{names[address]} submits epoch {epoch} {when}, earns {ev.pay}", r)

    erin, frank = winners[0], winners[1]
    s.step("epoch 0")
    for p in winners:
        submit(p, 0)
    r = market.as_(alice).close_epoch(task, 0)
    s.say("alice closes epoch 0: data owners are paid", r)

    s.step("epoch 1")
    submit(erin, 1)
    node.time_travel(EPOCH_SECONDS + 1)
    submit(frank, 1)
    r = market.as_(alice).close_epoch(task, 1)
    s.say("alice closes epoch 1", r)

    s.step("epoch 2")
    for p in winners:
        submit(p, 2)
    r = market.as_(alice).close_epoch(task, 2, flagged=[erin])
    slash = r.one(ProcessorSlashed)
    s.say(
        f"a cross-check fails: alice flags erin, who forfeits {slash.forfeited_pay} pay and "
        f"{slash.forfeited_stake} stake; each other participant gets "
        f"{slash.share_per_participant}",
        r,
    )

    s.step("epoch 3")
    submit(frank, 3)
    r = market.as_(alice).close_epoch(task, 3, go_on=False)
    s.say("the model is good enough: alice stops; unspent budget and stakes return", r)

    s.step("settle")
    for account in parties:
        claimed = s.track(market.as_(account).claim(task))
        if market.claimable(account.address) > 0:
            w = s.track(market.as_(account).withdraw())
            s.say(f"{names[account.address]} claims {claimed.value} and withdraws {w.value}", w)

    end = {a.address: token.balance_of(a.address) for a in parties}
    flows = tuple(
        Flow(
            name=names[a.address],
            role=roles[a.address],
            address=a.address,
            start=start[a.address],
            paid_in=s.paid_in.get(a.address, 0),
            received=s.received.get(a.address, 0),
            end=end[a.address],
        )
        for a in parties
    )
    dust = market.dust(task)
    solvency = market.solvency()
    result = DemoResult(
        flows=flows,
        dust=dust,
        market_balance=solvency.balance,
        total_gas=market.gas_log.total(),
    )
    _print_flows(out, result)
    _check(result, solvency.holds)
    out.print(
        f"[green]✓[/] conservation: Σ net = {sum(f.net for f in flows)} = −dust "
        f"({dust} stays in the market); market balance {solvency.balance} = liabilities "
        f"{solvency.liabilities} + claimable {solvency.total_claimable}"
    )
    out.print(f"[dim]{len(market.gas_log)} transactions, {result.total_gas:,} gas in all[/]")
    return result


def _print_flows(out: Console, result: DemoResult) -> None:
    table = Table(title="token flow per party", show_footer=True)
    table.add_column("party", footer="total")
    table.add_column("role")
    for header, key in (("start", "start"), ("paid in", "paid_in"), ("received", "received")):
        total = sum(getattr(f, key) for f in result.flows)
        table.add_column(header, justify="right", footer=f"{total:,}")
    table.add_column("net", justify="right", footer=f"{sum(f.net for f in result.flows):+,}")
    for f in result.flows:
        colour = "green" if f.net > 0 else "red" if f.net < 0 else "dim"
        table.add_row(
            f.name,
            f.role,
            f"{f.start:,}",
            f"{f.paid_in:,}",
            f"{f.received:,}",
            f"[{colour}]{f.net:+,}[/]",
        )
    out.print()
    out.print(table)


def _check(result: DemoResult, solvent: bool) -> None:
    for f in result.flows:
        if f.end - f.start != f.net:
            raise ChainError(
                f"{f.name}'s balance moved by {f.end - f.start} but its transfers net {f.net}"
            )
    total = sum(f.net for f in result.flows)
    if total != -result.dust or result.market_balance != result.dust or not solvent:
        raise ChainError(
            f"token conservation failed: Σ net {total}, dust {result.dust}, "
            f"market balance {result.market_balance}",
            hint="this is a bug in the market contract or the client; please report it",
        )
