"""Wrong allocations for `resolve`, each with the reason the contract must reject it for.

Every mutant starts from the greedy allocation of one side of a bid book and breaks exactly
one rule, so the first check that fails, and hence the revert reason, is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedmarket.chain.allocation import InfeasibleAllocation, Offer, greedy_fills

FillTuple = tuple[int, int]


@dataclass(frozen=True)
class Mutant:
    name: str
    fills: list[FillTuple]
    reason: str


def sorted_open(offers: Sequence[Offer]) -> list[Offer]:
    return sorted((o for o in offers if o.amount > 0), key=lambda o: (o.price, o.index))


def best_effort(offers: Sequence[Offer], wanted: int) -> list[FillTuple]:
    """Greedy fills, or every open bid in order when they hold too few points."""
    try:
        return [f.as_tuple() for f in greedy_fills(offers, wanted)]
    except InfeasibleAllocation:
        return [(o.index, o.amount) for o in sorted_open(offers)]


def mutants(offers: Sequence[Offer], wanted: int) -> list[Mutant]:
    """Every applicable single-rule violation of the greedy allocation of `offers`.

    `offers` lists every bid of the side by index (withdrawn ones with amount 0); the
    greedy allocation must exist.
    """
    amount_of = {o.index: o.amount for o in offers}
    greedy = [f.as_tuple() for f in greedy_fills(offers, wanted)]
    chosen = {bid for bid, _ in greedy}
    left_out = [o for o in sorted_open(offers) if o.index not in chosen]
    first_bid = greedy[0][0]
    last_bid, last_amount = greedy[-1]
    out: list[Mutant] = []

    def add(name: str, fills: list[FillTuple], reason: str) -> None:
        out.append(Mutant(name, fills, f"market: {reason}"))

    # Replace a winner by pricier bids: the greedy allocation of the book without it.
    for skipped in dict.fromkeys([first_bid, last_bid]):
        rest = [o for o in offers if o.index != skipped]
        try:
            alternative = [f.as_tuple() for f in greedy_fills(rest, wanted)]
        except InfeasibleAllocation:
            continue
        add(f"bid {skipped} left out", alternative, "a cheaper bid was left out")

    add("overfill", [(first_bid, amount_of[first_bid] + 1), *greedy[1:]], "fill exceeds bid")

    if last_amount > 1:
        add(
            "underfill", [*greedy[:-1], (last_bid, last_amount - 1)], "fills must sum to num_points"
        )
    else:
        add("last fill dropped", greedy[:-1], "fills must sum to num_points")

    if last_amount < amount_of[last_bid]:
        add("oversum", [*greedy[:-1], (last_bid, last_amount + 1)], "fills must sum to num_points")
    elif left_out:
        add("extra fill", [*greedy, (left_out[0].index, 1)], "fills must sum to num_points")

    add("duplicate fill", [greedy[0], *greedy], "fills not in (price, bid) order")

    if len(greedy) >= 2:
        swapped = [greedy[1], greedy[0], *greedy[2:]]
        add("swapped", swapped, "fills not in (price, bid) order")
        add("reversed", greedy[::-1], "fills not in (price, bid) order")

    for i, (bid, amount) in enumerate(greedy[:-1]):
        if amount >= 2:
            partial = [*greedy[:i], (bid, amount - 1), *greedy[i + 1 :]]
            add(f"partial fill {i} before the last", partial, "only the last fill may be partial")
            # keep the sum right: the point moves to the last fill when it has room
            if last_amount < amount_of[last_bid]:
                moved = [*partial[:-1], (last_bid, last_amount + 1)]
                add(f"point moved from fill {i}", moved, "only the last fill may be partial")
            break

    withdrawn = [o.index for o in offers if o.amount == 0]
    if withdrawn:
        add("withdrawn bid", [(withdrawn[0], 1), *greedy], "fill of a withdrawn bid")

    add("no such bid", [(len(offers), 1), *greedy], "no such bid")
    add("empty fill", [(first_bid, 0), *greedy], "empty fill")
    return out
