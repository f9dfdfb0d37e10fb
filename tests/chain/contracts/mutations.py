"""Wrong allocations for `resolve`, each with the reason the contract must reject it for.

Every mutant starts from the greedy allocation of one side of a bid book and breaks it in one
way; the reason it must fail with is the reference model's (`MarketModel.verify_side`, the
contract's checks in the contract's order), so the tests check the contract against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from fedmarket.chain.allocation import InfeasibleAllocation, Offer, greedy_fills
from fedmarket.chain.reference import DATA, Bid, MarketModel, Revert

FillTuple = tuple[int, int]


@dataclass(frozen=True)
class Mutant:
    name: str
    fills: list[FillTuple]
    reason: str


def open_book(offers: Sequence[Offer]) -> dict[int, Bid]:
    return {o.index: Bid("0x" + "00" * 20, o.amount, o.price) for o in offers if o.amount > 0}


def check(
    offers: Sequence[Offer], side: int, fills: Sequence[FillTuple], wanted: int, min_fill: int
) -> str | None:
    """The contract's reason for rejecting `fills` on this side, or None if it accepts them."""
    try:
        MarketModel.verify_side(
            open_book(offers), side, fills, wanted, min_fill if side == DATA else 0
        )
    except Revert as exc:
        return exc.reason
    return None


def best_effort(offers: Sequence[Offer], wanted: int, min_fill: int = 0) -> list[FillTuple]:
    """Greedy fills, or every open bid in order when they hold too few points."""
    try:
        return [f.as_tuple() for f in greedy_fills(offers, wanted, min_fill)]
    except InfeasibleAllocation:
        return [
            (o.index, o.amount)
            for o in sorted((o for o in offers if o.amount > 0), key=lambda o: (o.price, o.index))
        ]


def mutants(offers: Sequence[Offer], wanted: int, side: int, min_fill: int = 0) -> list[Mutant]:
    """Wrong variants of the greedy allocation of `offers` (which must exist)."""
    floor = min_fill if side == DATA else 0
    amount_of = {o.index: o.amount for o in offers}
    greedy = [f.as_tuple() for f in greedy_fills(offers, wanted, floor)]
    chosen = {bid for bid, _ in greedy}
    ordered = sorted((o for o in offers if o.amount > 0), key=lambda o: (o.price, o.index))
    left_out = [o for o in ordered if o.index not in chosen]
    first_bid = greedy[0][0]
    last_bid, last_amount = greedy[-1]
    step = max(floor, 1)
    candidates: list[tuple[str, list[FillTuple]]] = []
    for skipped in dict.fromkeys([first_bid, last_bid]):
        rest = [o for o in offers if o.index != skipped]
        with contextlib.suppress(InfeasibleAllocation):
            candidates.append(
                (
                    f"bid {skipped} left out",
                    [f.as_tuple() for f in greedy_fills(rest, wanted, floor)],
                )
            )
    candidates += [
        ("overfill", [(first_bid, amount_of[first_bid] + 1), *greedy[1:]]),
        (
            "underfill",
            [*greedy[:-1], (last_bid, last_amount - 1)] if last_amount > 1 else greedy[:-1],
        ),
        ("oversum", [*greedy[:-1], (last_bid, last_amount + 1)]),
        ("duplicate fill", [greedy[0], *greedy]),
        ("no such bid", [(127 if 127 not in amount_of else 126, 1), *greedy]),
        ("empty fill", [(first_bid, 0), *greedy]),
    ]
    if left_out:
        candidates.append(
            ("extra fill", [*greedy, (left_out[0].index, min(step, left_out[0].amount))])
        )
    if len(greedy) >= 2:
        candidates.append(("swapped", [greedy[1], greedy[0], *greedy[2:]]))
        candidates.append(("reversed", greedy[::-1]))
        bid, amount = greedy[0]
        if amount >= 2:
            candidates.append(("partial before the last", [(bid, amount - 1), *greedy[1:]]))
    if floor:
        candidates.append(("fill below min_fill", [*greedy[:-1], (last_bid, floor - 1)]))
        candidates.append(("all but the last", greedy[:-1]))
    out = []
    for name, fills in candidates:
        if not fills:
            continue
        reason = check(offers, side, fills, wanted, floor)
        if reason is not None:
            out.append(Mutant(name, fills, reason))
    return out
