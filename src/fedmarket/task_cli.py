"""``fedmarket task``: look at one task on a market, and end it by hand when no one else will.

``show`` prints the task's state, deadline, bids and what each account is owed; ``cancel``
(the requester, during bidding) refunds everyone; ``timeout`` (any winner, or anyone during
bidding, once the deadline plus the grace period has passed) ends a task whose requester
vanished; ``collect`` transfers what a task owes the key's account (its bids, the
requester's unspent budgets) and everything credited to it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from fedmarket.chain.client import Clock, MarketClient
from fedmarket.errors import ConfigError

task_app = typer.Typer(
    help="One task on a market: show it, cancel it, claim its timeout, collect.",
    no_args_is_help=True,
    suggest_commands=False,
)

CHAIN = typer.Option(..., help="JSON-RPC URL of the Ethereum node.")
MARKET = typer.Option(..., help="The market contract's address.")
KEY = typer.Option(..., help="The keystore of the account that acts.")
PASSWORD = typer.Option(None, help="First line: the keystore password.")


def _client(chain: str, market: str, key: Path | None, password_file: Path | None) -> MarketClient:
    from eth_account import Account

    from fedmarket.chain.backends import rpc
    from fedmarket.deploy_cli import load_key

    # a read-only look needs no key: a throwaway account signs nothing
    account = load_key(key, password_file) if key is not None else Account.create()
    c = rpc(chain, [account.key.hex()])
    return MarketClient.at(c.w3, market, c.accounts[0])


def _task(client: MarketClient, task: int) -> Clock:
    if not 0 <= task < client.num_tasks():
        raise ConfigError(
            f"no task {task} on market {client.address} (it has {client.num_tasks()})",
            hint="check --market and the task id `fedmarket run` or `request` printed",
        )
    return client.clock_of(task)


@task_app.command("show")
def show(
    task: int = typer.Argument(..., help="The task id."),
    chain: str = CHAIN,
    market: str = MARKET,
) -> None:
    """The task's state, epoch, deadline and every bid."""
    from fedmarket.chain.client import Side

    client = _client(chain, market, None, None)
    clock = _task(client, task)
    terms = client.terms(task)
    typer.echo(
        f"task {task}: {clock.state.name.lower()}, epoch {clock.epoch}, deadline "
        f"{clock.deadline}, requester {terms.requester}, {terms.num_points} points, "
        f"budgets {terms.data_budget} (data) + {terms.processing_budget} (processing)"
    )
    for side in Side:
        for i, bid in client.all_bids(task, side):
            status = (
                "slashed" if bid.slashed else ("won " + str(bid.fill) if bid.winner else "open")
            )
            what = f"{bid.amount} at {bid.price}"
            typer.echo(f"  {side.name.lower()} bid {i}: {bid.bidder} {what} ({status})")


def _my_bids(client: MarketClient, task: int) -> list[tuple[int, int]]:
    """(side, index) of every bid the acting account holds in ``task``."""
    from fedmarket.chain.client import Side

    me = str(client.account.address)
    return [
        (int(side), i) for side in Side for i, b in client.all_bids(task, side) if b.bidder == me
    ]


@task_app.command("cancel")
def cancel(
    task: int = typer.Argument(..., help="The task id."),
    chain: str = CHAIN,
    market: str = MARKET,
    key: Path = KEY,
    password_file: Path | None = PASSWORD,
) -> None:
    """Call off a task you requested, while it is still taking bids: everyone is refunded."""
    from fedmarket.chain.client import TaskState

    client = _client(chain, market, key, password_file)
    clock = _task(client, task)
    if clock.state != TaskState.BIDDING:
        raise ConfigError(
            f"task {task} is {clock.state.name.lower()}: only a task in bidding can be cancelled",
            hint="a resolved task ends by closing its epoch, or by `fedmarket task timeout`",
        )
    client.cancel(task)
    typer.echo(f"cancelled task {task}; collect with `fedmarket task collect {task} ...`")


@task_app.command("timeout")
def timeout(
    task: int = typer.Argument(..., help="The task id."),
    chain: str = CHAIN,
    market: str = MARKET,
    key: Path = KEY,
    password_file: Path | None = PASSWORD,
) -> None:
    """End a task whose requester vanished (after its deadline plus the grace period)."""
    client = _client(chain, market, key, password_file)
    clock = _task(client, task)
    now = client.now()
    due = clock.deadline + client.grace_seconds()
    if now <= due and clock.deadline:
        raise ConfigError(
            f"task {task} times out at {due}, the chain is at {now}",
            hint="wait until then (the requester may still close it)",
        )
    from fedmarket.chain.client import TaskState

    side, index = 0, 0  # during bidding anyone may end it
    if clock.state != TaskState.BIDDING:
        won = [(s, i) for s, i in _my_bids(client, task) if client.get_bid(task, s, i).winner]
        if not won:
            raise ConfigError(
                f"task {task} is {clock.state.name.lower()}: only a winning bidder can end it "
                f"by timeout, and {client.account.address} holds no winning bid",
                hint="use the key of a winning data owner or processor",
            )
        side, index = won[0]
    client.claim_timeout(task, side, index)
    typer.echo(f"ended task {task} by timeout; collect with `fedmarket task collect {task} ...`")


@task_app.command("collect")
def collect(
    task: int = typer.Argument(..., help="The task id."),
    chain: str = CHAIN,
    market: str = MARKET,
    key: Path = KEY,
    password_file: Path | None = PASSWORD,
) -> None:
    """Claim what the task owes your account and withdraw everything credited to it."""
    client = _client(chain, market, key, password_file)
    _task(client, task)
    me = str(client.account.address)
    if client.owed(task, me) == 0 and client.claimable(me) == 0:
        raise ConfigError(f"task {task} owes {me} nothing now", hint="`fedmarket task show`")
    amount = 0
    for side, index in _my_bids(client, task):
        if client.owed(task, side, index):
            amount += client.collect(task, side, index).value
    if client.terms(task).requester == me and client.requester_owed(task):
        amount += client.collect_requester(task).value
    if client.claimable(me):
        amount += client.withdraw().value
    typer.echo(f"collected {amount} base units for {me}")
