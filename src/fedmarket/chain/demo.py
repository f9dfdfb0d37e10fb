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

from fedmarket.chain import merkle
from fedmarket.chain.backends import Chain, dev_keys, embedded, rpc
from fedmarket.chain.client import MarketClient, Receipt, TokenClient, deploy
from fedmarket.chain.events import ProcessorSlashed, RootSubmitted, Transfer
from fedmarket.chain.signing import SignedRoot, sign_root
from fedmarket.errors import ChainError

__all__ = ["DemoResult", "Flow", "run_demo"]

T = TypeVar("T")

GRACE_SECONDS = 3_600
EPOCH_SECONDS = 600
BIDDING_SECONDS = 3_600
MAX_EPOCHS = 3
LATE_PENALTY_BPS = 2_500
DISPUTE_BOND_BPS = 2_500
AUDIT_FEE = 20
NUM_POINTS = 256
MIN_FILL = 64
# (name, points, price per point)
OWNERS = [("bob", 128, 10), ("carol", 128, 12), ("dave", 100, 20)]
# (name, capacity per epoch, price per point)
PROCESSORS = [
    ("erin", 64, 2),
    ("frank", 64, 3),
    ("grace", 64, 4),
    ("heidi", 64, 5),
    ("ivan", 64, 9),
]
DATA_BUDGET = 4_000
PROCESSING_BUDGET = 4_000
PROCESSOR_FUNDS = 5_000
REQUESTER_FUNDS = DATA_BUDGET + PROCESSING_BUDGET + 1_000  # and its bonds


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
    dust: int  # what the market still holds at the end (0: everything was paid out)
    market_balance: int
    total_gas: int


def _h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _connect(chain: str) -> Chain:
    if chain == "embedded":
        return embedded(num_accounts=11)
    node = rpc(chain, dev_keys(11))
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
    proc_accounts = dict(zip([p[0] for p in PROCESSORS], rest[3:8], strict=True))
    names: dict[str, str] = {alice.address: "alice", deployer.address: "reserve"}
    names.update({a.address: n for n, a in owner_accounts.items()})
    names.update({a.address: n for n, a in proc_accounts.items()})
    roles: dict[str, str] = {alice.address: "requester", deployer.address: "market reserve"}
    roles.update({a.address: "data owner" for a in owner_accounts.values()})
    roles.update({a.address: "processor" for a in proc_accounts.values()})

    out.print(f"[bold]fedmarket chain demo[/] on [green]{node.name}[/] (chain id {node.chain_id})")
    market, token = deploy(node.w3, deployer, GRACE_SECONDS)
    s = _Script(out, market, token)
    s.step("deploy")
    s.say(
        f"DevToken at {token.address}, Market at {market.address} (with MarketSetup and "
        f"MarketCourt), grace {GRACE_SECONDS}s, the deployer holds the reserve"
    )
    token.mint(alice.address, REQUESTER_FUNDS)
    for account in proc_accounts.values():
        token.mint(account.address, PROCESSOR_FUNDS)
    parties: list[LocalAccount] = [
        alice, *owner_accounts.values(), *proc_accounts.values(), deployer
    ]  # fmt: skip
    start = {a.address: token.balance_of(a.address) for a in parties}
    a_market = market.as_(alice)

    s.step("announce")
    token.as_(alice).approve(market.address, REQUESTER_FUNDS)
    created = s.track(
        a_market.create_task(
            _h("spec: framingham logistic regression"),
            _h("alice's public CKKS context"),
            NUM_POINTS,
            EPOCH_SECONDS,
            MAX_EPOCHS,
            DATA_BUDGET,
            PROCESSING_BUDGET,
            BIDDING_SECONDS,
            LATE_PENALTY_BPS,
            DISPUTE_BOND_BPS,
            AUDIT_FEE,
            MIN_FILL,
        )
    )
    task = created.value
    s.say(
        f"alice wants {NUM_POINTS} points (no data fill under {MIN_FILL}), escrows "
        f"{DATA_BUDGET} for data + {PROCESSING_BUDGET} for processing (task {task})",
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
        token.as_(who).approve(market.address, PROCESSOR_FUNDS)
        r = s.track(market.as_(who).bid_processing(task, capacity, price))
        s.say(f"{name} offers {capacity} points/epoch at {price}/point, stakes {stake}", r)

    s.step("resolve")
    node.time_travel(BIDDING_SECONDS + 1)
    resolved = a_market.resolve_greedy(task)
    allocation = resolved.value
    for fill in allocation.data:
        bid = market.get_bid(task, 0, fill.bid)
        s.say(f"data: {names[bid.bidder]} sells {fill.amount} of {bid.amount} points")
    for fill in allocation.processing:
        bid = market.get_bid(task, 1, fill.bid)
        s.say(f"processing: {names[bid.bidder]} takes {fill.amount} points/epoch")
    s.say(
        f"data costs {allocation.data_cost}, processing {allocation.processing_cost_per_epoch}"
        "/epoch",
        resolved,
    )
    pid = {names[market.get_bid(task, 1, f.bid).bidder]: f.bid for f in allocation.processing}
    oid = {names[market.get_bid(task, 0, f.bid).bidder]: f.bid for f in allocation.data}

    s.step("distribute")
    for owner in ("bob", "carol"):
        r = market.as_(owner_accounts[owner]).commit_data(
            task, oid[owner], [64, 64], [_h(f"{owner} block {i}") for i in range(2)]
        )
        s.say(f"{owner} commits its manifest: 2 blocks of 64, their digests", r)
    blocks = {
        "erin": merkle.block_id(oid["bob"], 0),
        "frank": merkle.block_id(oid["bob"], 1),
        "grace": merkle.block_id(oid["carol"], 0),
        "heidi": merkle.block_id(oid["carol"], 1),
    }
    entries = {pid[n]: [merkle.Entry(b, 64)] for n, b in blocks.items()}
    entries[pid["frank"]].append(merkle.Entry(blocks["erin"], 64))  # a secret replica
    tree = merkle.AssignmentTree(task, entries)
    r = a_market.commit_assignment(task, tree.records, _h("model 0"))
    s.say("alice commits the assignment's root and epoch 0's model; epoch 0 starts", r)
    domain = market.domain_separator()

    def truth(block: int, epoch: int) -> bytes:
        return _h(f"result of block {block} in epoch {epoch}")

    def leaves(name: str, epoch: int, lying: bool = False) -> list[tuple[int, bytes]]:
        out = [(e.block, truth(e.block, epoch)) for e in entries[pid[name]]]
        if lying:
            out[0] = (out[0][0], _h("made up"))
        return out

    def signed(name: str, epoch: int, lying: bool = False) -> SignedRoot:
        root = merkle.result_root(task, epoch, leaves(name, epoch, lying))
        return sign_root(proc_accounts[name], domain, task, epoch, root)

    workers = ["erin", "frank", "grace", "heidi"]
    s.step("epoch 0")
    r = a_market.relay_epoch(task, 0, [signed(n, 0) for n in workers])
    s.say("every processor signs the root of its per-block results; alice relays all four", r)
    r = a_market.close_epoch(task, 0, _h("model 1"))
    s.say("alice closes epoch 0 and releases model 1 (data owners are paid now)", r)

    s.step("epoch 1")
    r = a_market.relay_epoch(task, 1, [signed(n, 1, lying=n == "erin") for n in workers])
    s.say("erin makes up its result; frank's replica of the same block disagrees", r)
    r = a_market.close_epoch(task, 1, _h("model 2"), True, 1 << pid["erin"])
    s.say("bob recomputes the block: erin's is wrong. alice marks it not received", r)

    s.step("dispute")
    book = market.epoch_book(task)
    owner_bid, index = merkle.split_block_id(blocks["erin"])
    r = s.track(
        a_market.open_dispute(
            task, 1, pid["erin"], owner_bid, index, tree.entry_proof(pid["erin"], 0), book.proof(1)
        )
    )
    dispute = r.value
    s.say(f"alice accuses erin of block {index} of bob in epoch 1, posting a bond", r)
    node.mine(market.draw_delay_blocks() + 1)
    r = a_market.draw(dispute)
    panel = [names[market.get_bid(task, 1, i).bidder] for i in market.dispute_of(dispute).panel]
    s.say(f"a later block's hash draws the panel: {', '.join(panel)}", r)
    for name in panel:
        commitment = merkle.vote_commitment(
            dispute, proc_accounts[name].address, truth(blocks["erin"], 1)
        )
        r = market.as_(proc_accounts[name]).commit_vote(dispute, commitment)
        s.say(f"{name} computes the block and commits its digest", r)
    lying = leaves("erin", 1, lying=True)
    proof = merkle.result_proof(task, 1, lying, 0)
    r = a_market.show_leaf(dispute, lying[0][1], proof)
    s.say("alice opens erin's committed leaf from the results it sent", r)
    r = s.track(a_market.resolve_dispute(dispute, truth(blocks["erin"], 1)))
    slash = r.one(ProcessorSlashed)
    s.say(
        f"convicted: erin forfeits {slash.forfeited} (stake and unpaid pay) to the reserve; "
        f"the auditors' fees come from alice's bond",
        r,
    )

    s.step("epoch 2")
    for name in ("grace", "heidi"):
        r = market.as_(proc_accounts[name]).submit_root(task, 2, pid[name], signed(name, 2))
        s.say(f"{name} records its own root on time", r)
    node.time_travel(EPOCH_SECONDS + 1)
    r = market.as_(proc_accounts["frank"]).submit_root(task, 2, pid["frank"], signed("frank", 2))
    ev = r.one(RootSubmitted)
    s.say(f"frank comes late: paid {ev.pay}, the penalty goes to the reserve", r)
    r = a_market.close_epoch(task, 2, bytes(32), False)
    s.say("the last epoch: alice closes; stakes return after the grace period", r)

    s.step("settle")
    node.time_travel(GRACE_SECONDS + 1)
    for account in parties:
        m = market.as_(account)
        got = 0
        for side in (0, 1):
            i = m.bid_index(task, side, account.address)
            if i and m.owed(task, side, i - 1):
                got += s.track(m.collect(task, side, i - 1)).value
        if account == alice:
            got += s.track(m.collect_requester(task)).value
        if m.claimable(account.address):
            got += s.track(m.withdraw()).value
        if account == deployer:
            got += s.track(m.withdraw_reserve()).value
        if got:
            s.say(f"{names[account.address]} collects {got}")

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
    solvency = market.solvency()
    result = DemoResult(
        flows=flows,
        dust=solvency.balance,
        market_balance=solvency.balance,
        total_gas=market.gas_log.total(),
    )
    _print_flows(out, result)
    _check(result, solvency.holds)
    out.print(
        f"[green]✓[/] conservation: Σ net = {sum(f.net for f in flows)}; the market holds "
        f"{solvency.balance} = liabilities {solvency.liabilities} + claimable "
        f"{solvency.total_claimable} + reserve {solvency.reserve}"
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
