"""Shared helpers of the contract tests: the market's three faces, the clock, a task driven
step by step (bids, assignment, roots, disputes), and the money checks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boa
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

import fedmarket.chain
from fedmarket.chain import merkle
from fedmarket.chain.allocation import Allocation, Fill, Offer, allocate
from fedmarket.chain.merkle import UNDELIVERED, AssignmentTree, Entry, EpochBook, block_id
from fedmarket.chain.signing import SignedRoot, sign_root

CONTRACTS_DIR = Path(fedmarket.chain.__file__).parent / "contracts"
MOCKS_DIR = Path(__file__).parents[1] / "mocks"

GRACE = 3_600
DELAY = 1  # draw_delay_blocks
BPS = 10_000
MAX_BIDS = 128
MAX_EPOCHS = 100_000
MAX_MONEY = 2**100
MAX_POINTS = 2**48 - 1
MAX_UINT = 2**256 - 1
MIN_FILL = 64

DATA = 0
PROCESSING = 1

NO_TASK, BIDDING, ASSIGNING, TRAINING, FINISHED, CANCELLED = range(6)
D_OPEN, D_DRAWN, D_RESOLVED = 1, 2, 3
UNOPENED, DISMISSED, CONVICTED, CLEARED, NO_VERDICT = 1, 2, 3, 4, 5
FAULT_UNOPENED, FAULT_PANEL = 1, 2
R_LATE, R_NOT_RECEIVED, R_UNDELIVERED, R_SLASH = 1, 2, 3, 4

SPEC_HASH = b"\x5e" * 32
CONTEXT_HASH = b"\xc0" * 32
MODEL = b"\x3d" * 32
ZERO = bytes(32)
NO_FLOORS = (0, 0, 0)


def h(n: int) -> bytes:
    """A distinct non-zero 32-byte value."""
    return (n + 1).to_bytes(32, "big")


def truth(block: int, epoch: int) -> bytes:
    """The digest every honest party computes for `block` in `epoch` (the ground truth)."""
    return bytes(keccak(b"truth" + block.to_bytes(32, "big") + epoch.to_bytes(32, "big")))


def lie(block: int, epoch: int) -> bytes:
    return bytes(keccak(b"lie" + block.to_bytes(32, "big") + epoch.to_bytes(32, "big")))


def now() -> int:
    """The `block.timestamp` the next call will see."""
    return boa.env.evm.patch.timestamp


def travel_to(timestamp: int) -> None:
    """Move the clock forward so the next call sees exactly `timestamp`."""
    delta = timestamp - now()
    assert delta >= 0, f"cannot travel back in time ({delta} s)"
    if delta:
        boa.env.time_travel(seconds=delta)


def mine(blocks: int) -> None:
    """Move the block number on (12 s per block); never back."""
    if blocks > 0:
        boa.env.time_travel(blocks=blocks)


def set_beacon(block_number: int, value: bytes) -> None:
    """Make `blockhash(block_number)` return `value` (it must be among the last 256 blocks)."""
    current = boa.env.evm.patch.block_number
    depth = current - block_number - 1
    assert 0 <= depth < 256
    hashes = list(boa.env.evm.patch.prev_hashes)[:256]
    hashes += [b"\x00" * 32] * (256 - len(hashes))
    hashes[depth] = value
    boa.env.evm.patch.prev_hashes = hashes


def account(name: str) -> LocalAccount:
    """A deterministic account with a key (processors sign their roots)."""
    return Account.from_key(keccak(name.encode()))


# ---------------------------------------------------------------- the market's three faces


class Rig:
    """Market.vy, MarketSetup.vy and MarketCourt.vy at the market's one address: calls go to
    whichever contract declares the function; `logs(name)` decodes the last transaction's."""

    def __init__(self, market: Any, setup: Any, court: Any) -> None:
        self._faces = (market, setup, court)
        self._computation: Any = None
        self.market = market
        self.address = market.address
        # Titanoboa decodes a log with the contract last registered at its address: one with
        # all three contracts' events, so every log of the market decodes.
        abi: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for face in self._faces:
            for entry in face.abi:
                key = (str(entry.get("type")), str(entry.get("name", "")))
                if key not in seen and entry.get("type") == "event":
                    seen.add(key)
                    abi.append(entry)
        self._events = boa.loads_abi(json.dumps(abi), name="MarketEvents").at(market.address)

    def __getattr__(self, name: str) -> Any:
        for face in self._faces:
            if hasattr(face, name):
                fn = getattr(face, name)
                mutable = getattr(getattr(fn, "func_t", None), "is_mutable", False)

                def call(
                    *args: Any,
                    _fn: Any = fn,
                    _face: Any = face,
                    _mutable: bool = mutable,
                    **kwargs: Any,
                ) -> Any:
                    out = _fn(*args, **kwargs)
                    if _mutable:
                        self._computation = _face._computation
                    return out

                return call
        raise AttributeError(name)

    def logs(self, name: str) -> list[Any]:
        """The decoded `name` events of the last transaction (call right after it)."""
        logs = self._events.get_logs(self._computation)
        return [e for e in logs if type(e).__name__ == name]


def deploy_rig(deployers: dict[str, Any], token: Any, reserve: str) -> Rig:
    court = deployers["MarketCourt"].deploy()
    setup = deployers["MarketSetup"].deploy(court.address)
    market = deployers["Market"].deploy(token.address, GRACE, reserve, DELAY, setup.address)
    return Rig(
        market,
        deployers["MarketSetup"].at(market.address),
        deployers["MarketCourt"].at(market.address),
    )


# ---------------------------------------------------------------- money


def liabilities(rig: Rig) -> int:
    return sum(rig.liabilities(t) for t in range(rig.num_tasks()))


def assert_conserved(token: Any, rig: Rig) -> None:
    """The market holds exactly what its tasks owe, what it has credited and the reserve."""
    held = token.balanceOf(rig.address)
    assert held == liabilities(rig) + rig.total_claimable() + rig.reserve_balance(), (
        f"balance {held} != liabilities {liabilities(rig)} + claimable "
        f"{rig.total_claimable()} + reserve {rig.reserve_balance()}"
    )


def balances(token: Any, accounts: Iterable[str]) -> dict[str, int]:
    return {a: token.balanceOf(a) for a in set(accounts)}


# ---------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TaskParams:
    """Arguments of `create_task` (everything but the hashes)."""

    num_points: int = 256
    epoch_seconds: int = 600
    max_epochs: int = 3
    data_budget: int = 1_000_000
    processing_budget: int = 1_000_000
    bidding_seconds: int = 1_000
    late_penalty_bps: int = 2_500
    dispute_bond_bps: int = 2_500
    audit_fee: int = 10
    min_fill: int = MIN_FILL
    floors: tuple[int, int, int] = NO_FLOORS

    def args(self) -> tuple[Any, ...]:
        return (
            self.num_points,
            self.epoch_seconds,
            self.max_epochs,
            self.data_budget,
            self.processing_budget,
            self.bidding_seconds,
            self.late_penalty_bps,
            self.dispute_bond_bps,
            self.audit_fee,
            self.min_fill,
            self.floors,
        )


def create_task(rig: Rig, requester: str, params: TaskParams | None = None) -> int:
    params = params or TaskParams()
    return rig.create_task(SPEC_HASH, CONTEXT_HASH, *params.args(), sender=requester)


def offers(rig: Rig, task: int, side: int) -> list[Offer]:
    """The open bids of a side as the allocation module sees them."""
    book = rig.book_of(task)[side]
    out = []
    for i in range(MAX_BIDS):
        if book >> i & 1:
            b = rig.get_bid(task, side, i)
            out.append(Offer(i, b.amount, b.price))
    return out


def greedy(rig: Rig, task: int) -> Allocation:
    t = rig.terms(task)
    return allocate(
        offers(rig, task, DATA),
        offers(rig, task, PROCESSING),
        num_points=t.num_points,
        max_epochs=t.max_epochs,
        data_budget=t.data_budget,
        processing_budget=t.processing_budget,
        min_fill=t.min_fill,
    )


def as_tuples(fills: Iterable[Fill]) -> list[tuple[int, int]]:
    return [f.as_tuple() for f in fills]


def resolve_greedy(rig: Rig, task: int, caller: str) -> Allocation:
    deadline = rig.terms(task).bidding_deadline
    if now() <= deadline:
        travel_to(deadline + 1)
    allocation = greedy(rig, task)
    rig.resolve(task, as_tuples(allocation.data), as_tuples(allocation.processing), sender=caller)
    return allocation


def blocks_of(fill: int, size: int = MIN_FILL) -> list[int]:
    """An owner's fill cut into blocks of `size` (the last one takes the remainder)."""
    count = max(1, fill // size)
    sizes = [size] * count
    sizes[-1] += fill - size * count
    return sizes


@dataclass
class Task:
    """One task driven through the market step by step.

    `owners` and `processors` are (account, amount, price); `bids` maps each party to its bid
    index. Honest processors commit `truth(block, epoch)` for every block they hold.
    """

    rig: Rig
    token: Any
    requester: str
    owners: list[tuple[str, int, int]]
    processors: list[tuple[LocalAccount, int, int]]
    params: TaskParams = field(default_factory=TaskParams)
    task: int = -1
    data_bid: dict[str, int] = field(default_factory=dict)
    proc_bid: dict[str, int] = field(default_factory=dict)
    allocation: Allocation | None = None
    sizes: dict[int, list[int]] = field(default_factory=dict)  # owner bid -> block sizes
    tree: AssignmentTree | None = None
    book: EpochBook | None = None
    domain: bytes = b""

    # ---------------------------------------------------------------- set-up

    def create(self) -> Task:
        self.task = create_task(self.rig, self.requester, self.params)
        self.book = EpochBook(self.task)
        self.domain = bytes(self.rig.DOMAIN_SEPARATOR())
        return self

    def bid(self) -> Task:
        for who, points, price in self.owners:
            self.data_bid[who] = self.rig.bid_data(self.task, points, price, 0, sender=who)
        for acct, capacity, price in self.processors:
            self.proc_bid[acct.address] = self.rig.bid_processing(
                self.task, capacity, price, 0, sender=acct.address
            )
        return self

    def resolve(self) -> Task:
        self.allocation = resolve_greedy(self.rig, self.task, self.requester)
        return self

    def commit_data(self, who: Iterable[str] | None = None) -> Task:
        assert self.allocation is not None
        fills = {f.bid: f.amount for f in self.allocation.data}
        for owner in who if who is not None else [o for o, _, _ in self.owners]:
            bid = self.data_bid[owner]
            if bid not in fills:
                continue
            sizes = blocks_of(fills[bid])
            self.sizes[bid] = sizes
            digests = [h(1000 * bid + i) for i in range(len(sizes))]
            self.rig.commit_data(self.task, bid, sizes, digests, sender=owner)
        return self

    def default_entries(self, replicas: Sequence[tuple[int, int]] = ()) -> dict[int, list[Entry]]:
        """Every committed block to one processor within fills, in bid order; `replicas`
        adds (block, processor) entries."""
        assert self.allocation is not None
        room = {f.bid: f.amount for f in self.allocation.processing}
        entries: dict[int, list[Entry]] = {p: [] for p in room}
        order = list(room)
        k = 0
        for bid, sizes in sorted(self.sizes.items()):
            for i, size in enumerate(sizes):
                for _ in range(len(order)):
                    p = order[k % len(order)]
                    k += 1
                    if room[p] >= size:
                        entries[p].append(Entry(block_id(bid, i), size))
                        room[p] -= size
                        break
        size_of = {block_id(b, i): s for b, ss in self.sizes.items() for i, s in enumerate(ss)}
        for block, p in replicas:
            entries[p].append(Entry(block, size_of[block]))
        return entries

    def assign(self, entries: dict[int, list[Entry]] | None = None, model: bytes = MODEL) -> Task:
        self.tree = AssignmentTree(
            self.task, entries if entries is not None else self.default_entries()
        )
        records = [r.as_tuple() for r in self.tree.records]
        self.rig.commit_assignment(self.task, records, model, sender=self.requester)
        assert self.book is not None
        self.book.release(0, model)
        return self

    def start(self, **assign: Any) -> Task:
        """Create, bid, resolve, commit every owner's data and the assignment."""
        return self.create().bid().resolve().commit_data().assign(**assign)

    # ---------------------------------------------------------------- epochs

    def pid(self, who: LocalAccount | str) -> int:
        return self.proc_bid[who if isinstance(who, str) else who.address]

    def account_of(self, index: int) -> LocalAccount:
        return next(a for a, _, _ in self.processors if self.proc_bid[a.address] == index)

    def leaves(
        self, processor: int, epoch: int, lies: Iterable[int] = (), undelivered: Iterable[int] = ()
    ) -> list[tuple[int, bytes]]:
        assert self.tree is not None
        out = []
        for e in self.tree.entries.get(processor, []):
            if e.block in set(undelivered):
                out.append((e.block, UNDELIVERED))
            elif e.block in set(lies):
                out.append((e.block, lie(e.block, epoch)))
            else:
                out.append((e.block, truth(e.block, epoch)))
        return out

    def root(self, processor: int, epoch: int, **kw: Any) -> bytes:
        leaves = self.leaves(processor, epoch, **kw)
        if not leaves:
            return h(99_000 + processor)  # a processor without blocks signs a token root
        return merkle.result_root(self.task, epoch, leaves)

    def active(self) -> list[int]:
        bitmap = self.rig.active_of(self.task)[0]
        return [i for i in range(MAX_BIDS) if bitmap >> i & 1]

    def relay(
        self, epoch: int, roots: dict[int, bytes] | None = None, sender: str | None = None
    ) -> None:
        """Relay every active processor's signed root (honest unless given in `roots`)."""
        signed = []
        recorded = []
        for p in self.active():
            root = (roots or {}).get(p) or self.root(p, epoch)
            signed.append(
                sign_root(self.account_of(p), self.domain, self.task, epoch, root).as_tuple()
            )
            recorded.append((p, root))
        self.rig.relay_epoch(self.task, epoch, signed, sender=sender or self.requester)
        assert self.book is not None
        for p, root in recorded:
            self.book.record(epoch, p, root)

    def submit(self, processor: int, epoch: int, root: bytes | None = None) -> None:
        root = root or self.root(processor, epoch)
        acct = self.account_of(processor)
        self.rig.submit_root(
            self.task, epoch, processor, SignedRoot.unsigned(root).as_tuple(), sender=acct.address
        )
        assert self.book is not None
        self.book.record(epoch, processor, root)

    def close(
        self, epoch: int, go_on: bool = True, not_received: int = 0, model: bytes = MODEL
    ) -> None:
        self.rig.close_epoch(self.task, epoch, model, go_on, not_received, sender=self.requester)
        assert self.book is not None
        self.book.closed = epoch + 1
        if self.rig.clock_of(self.task).state == TRAINING:
            self.book.release(epoch + 1, model)

    def run_epoch(
        self, epoch: int, go_on: bool = True, roots: dict[int, bytes] | None = None
    ) -> None:
        """Every active processor's root (relayed on time; after the deadline, late and one by
        one), then the close."""
        if now() <= self.rig.clock_of(self.task).deadline:
            self.relay(epoch, roots)
        else:
            for p in self.active():
                self.submit(p, epoch, (roots or {}).get(p))
        self.close(epoch, go_on)

    # ---------------------------------------------------------------- disputes

    def entry(self, processor: int, block: int) -> merkle.EntryProof:
        assert self.tree is not None
        i = next(i for i, e in enumerate(self.tree.entries[processor]) if e.block == block)
        return self.tree.entry_proof(processor, i)

    def open_dispute(self, accuser: str, epoch: int, processor: int, block: int) -> int:
        assert self.book is not None
        owner_bid, index = merkle.split_block_id(block)
        return self.rig.open_dispute(
            self.task,
            epoch,
            processor,
            owner_bid,
            index,
            self.entry(processor, block).as_tuple(),
            self.book.proof(epoch).as_tuple(),
            sender=accuser,
        )

    def draw(self, dispute: int, beacon: bytes | None = None) -> list[int]:
        """Mine past the draw block (with `beacon` as its hash, if given) and draw."""
        for _ in range(2):  # a draw more than 256 blocks late re-targets first
            target = self.rig.dispute_of(dispute).open_block + DELAY
            mine(target + 1 - boa.env.evm.patch.block_number)
            if beacon is not None:
                set_beacon(target, beacon)
            self.rig.draw(dispute, sender=self.requester)
            if self.rig.dispute_of(dispute).state == D_DRAWN:
                break
        return list(self.rig.dispute_of(dispute).panel)

    def vote(self, dispute: int, voter: str, digest: bytes) -> None:
        self.rig.commit_vote(dispute, merkle.vote_commitment(dispute, voter, digest), sender=voter)

    def show(
        self,
        dispute: int,
        digest: bytes,
        sender: str | None = None,
        leaves: list[tuple[int, bytes]] | None = None,
    ) -> None:
        d = self.rig.dispute_of(dispute)
        if leaves is None:
            leaves = self.leaves(d.accused, d.epoch)
            leaves[d.entry_index] = (leaves[d.entry_index][0], digest)
        proof = merkle.result_proof(self.task, d.epoch, leaves, d.entry_index)
        self.rig.show_leaf(dispute, digest, proof, sender=sender or self.requester)

    def owner_of(self, block: int) -> str:
        bid = merkle.split_block_id(block)[0]
        return next(o for o, i in self.data_bid.items() if i == bid)

    def blocks(self) -> list[int]:
        return [block_id(b, i) for b, ss in sorted(self.sizes.items()) for i in range(len(ss))]


def everyone_collects(rig: Rig, task: Task) -> dict[str, int]:
    """Every bid and the requester collect what they can; returns the amounts."""
    got: dict[str, int] = {}
    for side, bids in ((DATA, task.data_bid), (PROCESSING, task.proc_bid)):
        for who, index in bids.items():
            if rig.owed(task.task, side, index) > 0:
                got[who] = got.get(who, 0) + rig.collect(task.task, side, index, sender=who)
    if rig.requester_owed(task.task) > 0:
        got[task.requester] = got.get(task.requester, 0) + rig.collect_requester(
            task.task, sender=task.requester
        )
    for who in {*task.data_bid, *task.proc_bid, task.requester}:
        if rig.claimable(who) > 0:
            got[who] = got.get(who, 0) + rig.withdraw(sender=who)
    return got
