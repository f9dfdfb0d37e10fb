"""The cheapest sufficient allocation of a bid book, as `Market.resolve` verifies it.

Greedy by (price, bid index), the marginal bid partly filled: for prices linear in
points this is the minimum-cost way to buy exactly ``wanted`` points, and it is the
only allocation the contract accepts, so anyone can compute and submit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedmarket.errors import FedmarketError


@dataclass(frozen=True)
class Offer:
    """One open bid: ``amount`` points (or capacity per epoch) at ``price`` per point."""

    index: int
    amount: int
    price: int


@dataclass(frozen=True)
class Fill:
    """How many of a bid's points are bought. Encodes as the contract's ``Fill`` tuple."""

    bid: int
    amount: int

    def as_tuple(self) -> tuple[int, int]:
        return (self.bid, self.amount)


class InfeasibleAllocation(FedmarketError):
    """The open bids cannot supply the points wanted within the budget."""


def greedy_fills(offers: Sequence[Offer], wanted: int, min_fill: int = 0) -> list[Fill]:
    """Fill ``wanted`` points from the cheapest offers; withdrawn offers (amount 0) are skipped.

    With a ``min_fill`` (the data side's privacy floor) no fill is smaller than it: once
    fewer than ``min_fill`` points are still wanted, the marginal bid is dropped rather than
    cut below the floor, so the fills sum to ``(wanted - min_fill, wanted]``. Raises
    :class:`InfeasibleAllocation` when the offers cannot supply that.
    """
    if wanted <= 0:
        raise ValueError(f"wanted must be positive, got {wanted}")
    if not 0 <= min_fill <= wanted:
        raise ValueError(f"min_fill must be within [0, {wanted}], got {min_fill}")
    fills: list[Fill] = []
    left = wanted
    for offer in sorted((o for o in offers if o.amount > 0), key=lambda o: (o.price, o.index)):
        if left < max(min_fill, 1):
            break
        take = min(offer.amount, left)
        fills.append(Fill(offer.index, take))
        left -= take
    if left == 0 or (min_fill and left < min_fill):
        return fills
    offered = wanted - left
    raise InfeasibleAllocation(
        f"the open bids offer {offered} points but the task needs {wanted}",
        hint="wait for more bids, or cancel the task to get the budget back",
    )


def cost(offers: Sequence[Offer], fills: Sequence[Fill]) -> int:
    """Total price of ``fills`` in token base units."""
    price = {o.index: o.price for o in offers}
    return sum(f.amount * price[f.bid] for f in fills)


@dataclass(frozen=True)
class Allocation:
    """Both sides of a resolved task, with their costs."""

    data: list[Fill]
    processing: list[Fill]
    data_cost: int
    processing_cost_per_epoch: int


def allocate(
    data_offers: Sequence[Offer],
    processing_offers: Sequence[Offer],
    *,
    num_points: int,
    max_epochs: int,
    data_budget: int,
    processing_budget: int,
    min_fill: int = 0,
) -> Allocation:
    """The allocation `Market.resolve` accepts, or :class:`InfeasibleAllocation` with the reason.

    Data fills are each at least ``min_fill`` (see :func:`greedy_fills`); processing buys
    exactly ``num_points`` per epoch."""
    data = greedy_fills(data_offers, num_points, min_fill)
    processing = greedy_fills(processing_offers, num_points)
    data_cost = cost(data_offers, data)
    epoch_cost = cost(processing_offers, processing)
    if data_cost > data_budget:
        raise InfeasibleAllocation(
            f"the cheapest data costs {data_cost} but the data budget is {data_budget}",
            hint="cancel the task and re-announce it with a larger data budget",
        )
    if epoch_cost * max_epochs > processing_budget:
        raise InfeasibleAllocation(
            f"the cheapest processing costs {epoch_cost * max_epochs} over {max_epochs} epochs "
            f"but the processing budget is {processing_budget}",
            hint="cancel the task and re-announce it with a larger budget or fewer epochs",
        )
    return Allocation(data, processing, data_cost, epoch_cost)
