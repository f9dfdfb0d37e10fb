"""Shared helpers of the contract tests: paths, the clock, task set-up and the money checks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boa

import fedmarket.chain
from fedmarket.chain.allocation import Allocation, Fill, Offer, allocate

CONTRACTS_DIR = Path(fedmarket.chain.__file__).parent / "contracts"
MOCKS_DIR = Path(__file__).parents[1] / "mocks"

GRACE = 3_600
BPS = 10_000
MAX_BIDS = 128
MAX_FLAGGED = 16
MAX_EPOCHS = 100_000
MAX_MONEY = 2**100
MAX_POINTS = 2**48
MAX_UINT = 2**256 - 1

DATA = 0
PROCESSING = 1

NO_TASK = 0
BIDDING = 1
ASSIGNING = 2
TRAINING = 3
FINISHED = 4
CANCELLED = 5

SPEC_HASH = b"\x5e" * 32
CONTEXT_HASH = b"\xc0" * 32
ASSIGNMENT_HASH = b"\xa5" * 32
ZERO_HASH = b"\x00" * 32


def digest(n: int) -> bytes:
    """A distinct non-zero 32-byte value (result digests, data roots)."""
    return (n + 1).to_bytes(32, "big")


def now() -> int:
    """The `block.timestamp` the next call will see."""
    return boa.env.evm.patch.timestamp


def travel_to(timestamp: int) -> None:
    """Move the clock forward so the next call sees exactly `timestamp`."""
    delta = timestamp - now()
    assert delta >= 0, f"cannot travel back in time ({delta} s)"
    if delta:
        boa.env.time_travel(seconds=delta)


@dataclass(frozen=True)
class TaskParams:
    """Arguments of `create_task` (everything but the hashes)."""

    num_points: int = 10
    epoch_seconds: int = 600
    max_epochs: int = 3
    data_budget: int = 1_000
    processing_budget: int = 1_000
    bidding_seconds: int = 1_000
    late_penalty_bps: int = 2_500

    def args(self) -> tuple[int, ...]:
        return (
            self.num_points,
            self.epoch_seconds,
            self.max_epochs,
            self.data_budget,
            self.processing_budget,
            self.bidding_seconds,
            self.late_penalty_bps,
        )


def create_task(market: Any, requester: str, params: TaskParams | None = None) -> int:
    """Announce a task as `requester` (who must have approved the budgets)."""
    params = params or TaskParams()
    return market.create_task(SPEC_HASH, CONTEXT_HASH, *params.args(), sender=requester)


def bidding_deadline(market: Any, task: int) -> int:
    return market.tasks(task).bidding_deadline


def clock_deadline(market: Any, task: int) -> int:
    return market.clock_of(task).deadline


def offers(market: Any, task: int, side: int) -> list[Offer]:
    """The task's bids on `side` as the allocation module sees them (withdrawn: amount 0)."""
    result = []
    for index in range(market.num_bids(task, side)):
        bid = market.get_bid(task, side, index)
        result.append(Offer(index, bid.amount, bid.price))
    return result


def greedy(market: Any, task: int) -> Allocation:
    """The allocation `resolve` must accept for the task's current bids."""
    t = market.tasks(task)
    return allocate(
        offers(market, task, DATA),
        offers(market, task, PROCESSING),
        num_points=t.num_points,
        max_epochs=t.max_epochs,
        data_budget=t.data_budget,
        processing_budget=t.processing_budget,
    )


def as_tuples(fills: Iterable[Fill]) -> list[tuple[int, int]]:
    return [f.as_tuple() for f in fills]


def resolve_greedy(market: Any, task: int, caller: str) -> Allocation:
    """Travel past the bidding deadline if needed and resolve with the greedy allocation."""
    deadline = bidding_deadline(market, task)
    if now() <= deadline:
        travel_to(deadline + 1)
    allocation = greedy(market, task)
    market.resolve(
        task, as_tuples(allocation.data), as_tuples(allocation.processing), sender=caller
    )
    return allocation


def assert_conserved(token: Any, market: Any, accounts: Sequence[str] = ()) -> None:
    """The market holds exactly what its tasks still owe plus what it has credited.

    With `accounts` (every account that was ever credited), the credits add up too.
    """
    liabilities = sum(market.liabilities(t) for t in range(market.num_tasks()))
    total_claimable = market.total_claimable()
    assert token.balanceOf(market) == liabilities + total_claimable
    if accounts:
        assert sum(market.claimable(a) for a in set(accounts)) == total_claimable


def balances(token: Any, accounts: Iterable[str]) -> dict[str, int]:
    return {a: token.balanceOf(a) for a in set(accounts)}


def settle(market: Any, task: int, accounts: Iterable[str]) -> dict[str, int]:
    """Claim what `task` owes each account and withdraw it; returns the amounts claimed."""
    claimed = {}
    for account in dict.fromkeys(accounts):
        claimed[account] = market.claim(task, account)
        if market.claimable(account) > 0:
            market.withdraw(sender=account)
    return claimed


def events(contract: Any, name: str) -> list[Any]:
    """The decoded `name` events of `contract`'s last transaction (call right after it)."""
    return [e for e in contract.get_logs() if type(e).__name__ == name]
