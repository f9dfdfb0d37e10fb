"""The issue's scenarios (issue 15): each attack, tried as an adversary would, fails or
profits nobody. Each test would fail on the contract before this issue: there `close_epoch`
slashed on the requester's word, price-0 owners took shares, slots ran out, owners were paid
without delivering, a late model kept the penalty for the requester and a lone processor's
stake was burnt into `dust`."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from fedmarket.chain import merkle
from fedmarket.chain.merkle import Entry

from .conftest import four
from .helpers import (
    CLEARED,
    DATA,
    FINISHED,
    GRACE,
    NO_VERDICT,
    PROCESSING,
    R_NOT_RECEIVED,
    R_UNDELIVERED,
    UNOPENED,
    Rig,
    Task,
    TaskParams,
    balances,
    everyone_collects,
    h,
    lie,
    now,
    travel_to,
    truth,
)

FEE = 10


def finish(rig: Rig, t: Task, from_epoch: int = 0, epochs: int = 3) -> dict[str, int]:
    for e in range(from_epoch, epochs):
        if rig.clock_of(t.task).state != FINISHED:
            t.run_epoch(e, go_on=e + 1 < epochs)
    travel_to(now() + GRACE + 1)
    return everyone_collects(rig, t)


def test_close_epoch_cannot_slash_anyone() -> None:
    """The requester's word slashes nobody: close_epoch takes no `flagged` list, and the only
    call that slashes is resolve_dispute (an unopenable leaf, or a unanimous panel)."""
    from fedmarket.chain.client import compile_market

    abi = compile_market().abi
    close = next(e for e in abi if e.get("name") == "close_epoch")
    assert [i["name"] for i in close["inputs"]] == [
        "task",
        "epoch",
        "next_model_digest",
        "go_on",
        "not_received",
    ]
    assert not any("flag" in str(e.get("name", "")) for e in abi)


def test_an_accuser_with_its_own_owner_and_processor_addresses_cannot_profit(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    """Today a requester that flags an honest processor profits through its own owner address
    (87 % of the slash with price-0 owner bids) or its own processor. Now: its processor sits
    on the panel with two honest ones, the honest majority clears the victim, and the whole
    coalition loses exactly the bond."""
    own_owner, own_proc = owners[5], processors[5]
    coalition = [requester, own_owner, own_proc.address]
    sellers = [(own_owner, 64, 0), (owners[0], 64, 3), (owners[1], 64, 4), (owners[2], 64, 5)]
    procs = [
        (processors[0], 64, 2),
        (own_proc, 64, 3),
        (processors[1], 64, 4),
        (processors[2], 64, 5),
    ]

    def run(accuse: bool) -> dict[str, int]:
        with boa.env.anchor():
            start = balances(token, [*coalition, processors[0].address])
            t = Task(rig, token, requester, sellers, procs).start()
            t.run_epoch(0)
            victim = t.pid(processors[0])
            if accuse:
                b = t.tree.entries[victim][0].block
                d = t.open_dispute(requester, 0, victim, b)
                assert sorted(t.draw(d)) == sorted(p for p in t.active() if p != victim)
                for p in t.rig.dispute_of(d).panel:
                    t.vote(
                        d,
                        t.account_of(p).address,
                        lie(b, 0) if p == t.pid(own_proc) else truth(b, 0),
                    )
                t.show(d, truth(b, 0), sender=processors[0].address)
                rig.resolve_dispute(d, lie(b, 0), sender=requester)
                assert rig.logs("DisputeResolved")[0].outcome == CLEARED
            finish(rig, t, 1)
            end = balances(token, [*coalition, processors[0].address])
            return {a: end[a] - start[a] for a in start}

    honest, accused = run(False), run(True)
    bond = 64 * 2 * 3 // 4
    assert sum(accused[a] for a in coalition) == sum(honest[a] for a in coalition) - bond
    assert accused[processors[0].address] == honest[processors[0].address] + bond - 2 * FEE


def test_price0_and_undelivering_owners_take_no_share_of_a_slash(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    """Only an objective fault (a leaf nobody can open) is shared, and only by what each is
    actually paid: a free owner bid and an owner whose block was never delivered weigh 0."""
    sellers = [(owners[0], 64, 0), (owners[1], 64, 4), (owners[2], 64, 5), (owners[3], 64, 6)]
    t = Task(
        rig, token, requester, sellers, [(p, 64, 2 + i) for i, p in enumerate(processors[:4])]
    ).start()
    undelivered_owner = owners[1]
    held = next(
        p
        for p, es in t.tree.entries.items()
        for e in es
        if t.owner_of(e.block) == undelivered_owner
    )
    b_und = next(e.block for e in t.tree.entries[held] if t.owner_of(e.block) == undelivered_owner)
    o, i = merkle.split_block_id(b_und)
    rig.report_undelivered(
        t.task, held, [(o, i, t.entry(held, b_und).as_tuple())], sender=t.account_of(held).address
    )
    cheat = next(p for p in t.active() if p != held)
    t.run_epoch(0, roots={held: t.root(held, 0, undelivered=[b_und]), cheat: h(66)})
    b = t.tree.entries[cheat][0].block
    d = t.open_dispute(requester, 0, cheat, b)
    t.draw(d)
    travel_to(rig.dispute_of(d).show_deadline + 1)
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    assert rig.logs("DisputeResolved")[0].outcome == UNOPENED
    shared = {(e.side, e.bid) for e in rig.logs("ShareCredited")}
    assert (DATA, t.data_bid[owners[0]]) not in shared  # price 0
    assert (DATA, t.data_bid[undelivered_owner]) not in shared  # delivered nothing
    assert (DATA, t.data_bid[owners[2]]) in shared
    assert rig.claimable(owners[0]) == rig.claimable(undelivered_owner) == 0


def test_stacked_replicas_cannot_convict_an_honest_processor(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    """The requester places an honest processor's block on two processors of its own too, and
    they vote one wrong digest. The panel is drawn from every other processor, so the third,
    honest one is on it: no conviction (unanimity), the victim keeps its stake."""
    t = four(rig, token, requester, owners, processors).create().bid().resolve().commit_data()
    entries = t.default_entries()
    victim, own = 0, (1, 2)
    b = entries[victim][0].block
    for p in own:
        entries[p].append(Entry(b, 64))
    t.assign(entries)
    t.run_epoch(0)
    d = t.open_dispute(requester, 0, victim, b)
    assert sorted(t.draw(d)) == [1, 2, 3]
    for p in own:
        t.vote(d, t.account_of(p).address, lie(b, 0))
    t.vote(d, t.account_of(3).address, truth(b, 0))
    t.show(d, truth(b, 0), sender=t.account_of(victim).address)
    travel_to(rig.dispute_of(d).show_deadline + 1)
    rig.resolve_dispute(d, lie(b, 0), sender=requester)
    assert rig.logs("DisputeResolved")[0].outcome == NO_VERDICT
    assert not rig.get_bid(t.task, PROCESSING, victim).slashed
    got = finish(rig, t, 1)
    # its stake in full, and its pay (epoch 1 came late: the dispute ran past its deadline)
    assert got[t.account_of(victim).address] == 64 * 2 * 3 + 128 + 96 + 128


def test_a_failed_accusation_pays_the_accused_exactly(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    t = four(rig, token, requester, owners, processors).start()
    t.run_epoch(0)
    accused = t.account_of(2).address
    b = t.tree.entries[2][0].block
    start = balances(token, [requester, accused, *(t.account_of(p).address for p in (0, 1, 3))])
    d = t.open_dispute(requester, 0, 2, b)
    t.draw(d)
    for p in rig.dispute_of(d).panel:
        t.vote(d, t.account_of(p).address, truth(b, 0))
    t.show(d, truth(b, 0), sender=accused)
    rig.resolve_dispute(d, truth(b, 0), sender=accused)
    bond = 64 * 4 * 3 // 4
    for who in start:
        if rig.claimable(who):
            rig.withdraw(sender=who)
    end = balances(token, start)
    assert end[requester] - start[requester] == -bond
    assert end[accused] - start[accused] == bond - 3 * FEE
    for p in (0, 1, 3):
        a = t.account_of(p).address
        assert end[a] - start[a] == FEE


def test_an_owner_is_paid_only_for_delivered_blocks(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    """Today an owner that commits a root and sends nothing is paid in full. Now its holder
    reports the block undelivered (with the assignment proof): the owner is not paid for it,
    that pay goes to the reserve (not back to the requester), and the holder is paid for the
    points it received."""
    before = token.balanceOf(requester)
    t = four(rig, token, requester, owners, processors).start()
    lazy = owners[1]
    holder = next(p for p, es in t.tree.entries.items() for e in es if t.owner_of(e.block) == lazy)
    b = next(e.block for e in t.tree.entries[holder] if t.owner_of(e.block) == lazy)
    o, i = merkle.split_block_id(b)
    rig.report_undelivered(
        t.task, holder, [(o, i, t.entry(holder, b).as_tuple())], sender=t.account_of(holder).address
    )
    t.run_epoch(0, roots={holder: t.root(holder, 0, undelivered=[b])})
    assert [e.amount for e in rig.logs("ReserveCredited") if e.reason == R_UNDELIVERED] == [64 * 4]
    got = finish(rig, t, 1)
    assert lazy not in got
    holder_pay = (64 - 64) * (2 + holder)
    assert got[t.account_of(holder).address] == 3 * holder_pay + 64 * (2 + holder) * 3
    # the requester pays for the data it bought either way: the lazy owner's pay went to the reserve
    assert token.balanceOf(requester) - before == -(
        sum(64 * (3 + i) for i in range(4)) + 3 * (128 + 192 + 256 + 320 - 64 * (2 + holder))
    )


def test_a_digest_only_processor_is_unpaid_and_slashed(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    """It commits random roots and sends nothing. Today it is paid like an honest one and never
    flagged. Now the requester marks its results not received (the pay goes to the reserve),
    and a dispute on any of its blocks finds a leaf nobody can open: slashed, objectively."""
    t = four(rig, token, requester, owners, processors).start()
    lazy = 3
    for e in range(2):
        t.relay(e, roots={lazy: h(500 + e)})
        t.close(e, not_received=1 << lazy)
    marked = [e.amount for e in rig.logs("ReserveCredited") if e.reason == R_NOT_RECEIVED]
    assert marked == [320]
    b = t.tree.entries[lazy][0].block
    d = t.open_dispute(requester, 1, lazy, b)
    t.draw(d)
    for p in rig.dispute_of(d).panel:
        t.vote(d, t.account_of(p).address, truth(b, 1))
    travel_to(rig.dispute_of(d).show_deadline + 1)
    rig.resolve_dispute(d, truth(b, 1), sender=requester)
    (slashed,) = rig.logs("ProcessorSlashed")
    assert (slashed.fault, slashed.forfeited) == (1, 64 * 5 * 3)  # its stake; it earned nothing
    assert slashed.to_participants > 0
    got = finish(rig, t, 2)
    assert t.account_of(lazy).address not in got


@pytest.mark.parametrize("late", [False, True])
def test_a_late_model_gains_the_requester_nothing(
    rig: Rig,
    token: Any,
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    late: bool,
) -> None:
    """Today the chain cannot see when the model went out, so a requester that sends it late
    keeps the late penalty. Now deadlines run from the recorded release; roots that come late
    pay the penalty to the reserve, so the requester's cost is the same either way."""
    start = balances(token, [requester])
    t = four(rig, token, requester, owners, processors).start()
    for e in range(3):
        if late:
            travel_to(rig.clock_of(t.task).deadline + 1)  # it sat on the model
            for p in t.active():
                t.submit(p, e)
        else:
            t.relay(e)
        t.close(e, go_on=e < 2)
    travel_to(now() + GRACE + 1)
    everyone_collects(rig, t)
    cost = start[requester] - token.balanceOf(requester)
    assert cost == sum(64 * (3 + i) for i in range(4)) + 3 * (128 + 192 + 256 + 320)
    # the penalties (25 % of every late root) are in the reserve
    assert rig.reserve_balance() == (3 * (128 + 192 + 256 + 320) // 4 if late else 0)


def test_a_lone_processors_slash_is_not_burnt(
    rig: Rig, token: Any, requester: str, processors: list[LocalAccount], reserve: str
) -> None:
    """Own data, one processor. Today a flag sends its stake to `dust`, which nobody can
    withdraw. Now no panel can be drawn (opening-only); an unopenable root is still slashed,
    and with nobody weighted (the requester's own data weighs 0) it all goes to the reserve,
    which the reserve's address withdraws; nothing is left in the market."""
    p = processors[0]
    t = Task(rig, token, requester, [(requester, 256, 0)], [(p, 256, 3)], TaskParams()).start()
    t.run_epoch(0, roots={t.pid(p): h(9)})
    b = t.tree.entries[t.pid(p)][0].block
    d = t.open_dispute(requester, 0, t.pid(p), b)
    assert t.draw(d) == []
    travel_to(rig.dispute_of(d).show_deadline + 1)
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    (slashed,) = rig.logs("ProcessorSlashed")
    pool = 256 * 3 * 3 + 256 * 3
    assert (slashed.to_reserve, slashed.to_participants) == (pool, 0)
    assert rig.clock_of(t.task).active == 0  # the requester can close at once
    rig.close_epoch(t.task, 1, h(1), False, 0, sender=requester)
    travel_to(now() + GRACE + 1)
    everyone_collects(rig, t)
    before = token.balanceOf(reserve)
    assert rig.withdraw_reserve(sender=reserve) == pool
    assert token.balanceOf(reserve) == before + pool
    assert rig.liabilities(t.task) == 0 and token.balanceOf(rig.address) == 0
    with boa.reverts("market: only the reserve"):
        rig.withdraw_reserve(sender=requester)
