"""Market: disputes. An accusation (bonded) on one block of a processor's committed
assignment in a closed epoch; a panel drawn from a later block's hash; votes committed; the
accused's leaf shown; the verdict, with exact integer flows of bonds, fees and stakes."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from eth_account.signers.local import LocalAccount

from fedmarket.chain import merkle
from fedmarket.chain.merkle import UNDELIVERED

from .conftest import four
from .helpers import (
    CLEARED,
    CONVICTED,
    D_DRAWN,
    D_OPEN,
    D_RESOLVED,
    DATA,
    DELAY,
    DISMISSED,
    FAULT_PANEL,
    FAULT_UNOPENED,
    GRACE,
    NO_VERDICT,
    PROCESSING,
    UNOPENED,
    Rig,
    Task,
    TaskParams,
    everyone_collects,
    h,
    lie,
    mine,
    now,
    set_beacon,
    travel_to,
    truth,
)

FEE = 10
STAKES = [64 * (2 + i) * 3 for i in range(4)]  # 384, 576, 768, 960
PAYS = [64 * (2 + i) for i in range(4)]  # 128, 192, 256, 320 per epoch


@pytest.fixture
def t(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> Task:
    return four(rig, token, requester, owners, processors).start()


def block_of(t: Task, p: int) -> int:
    return t.tree.entries[p][0].block


def run_two_epochs(t: Task, liar: int | None = None) -> None:
    """Epochs 0 and 1 relayed and closed; `liar` commits a wrong digest for its block in 0."""
    roots = {liar: t.root(liar, 0, lies=[block_of(t, liar)])} if liar is not None else None
    t.run_epoch(0, roots=roots)
    t.run_epoch(1)


def vote_all(t: Task, d: int, digest: bytes, members: list[int] | None = None) -> None:
    for p in members if members is not None else t.rig.dispute_of(d).panel:
        t.vote(d, t.account_of(p).address, digest)


def test_open_dispute_posts_the_bond_and_records_the_accusation(
    rig: Rig, token: Any, t: Task, requester: str
) -> None:
    run_two_epochs(t)
    before = token.balanceOf(requester)
    liabilities = rig.liabilities(t.task)
    d = t.open_dispute(requester, 0, 3, block_of(t, 3))
    (opened,) = rig.logs("DisputeOpened")
    bond = max(STAKES[3] * 2_500 // 10_000, 3 * FEE)
    assert (opened.dispute, opened.accuser, opened.accused, opened.epoch, opened.bond) == (
        d,
        requester,
        3,
        0,
        bond,
    )
    assert token.balanceOf(requester) == before - bond
    assert rig.liabilities(t.task) == liabilities + bond
    view = rig.dispute_of(d)
    assert (view.state, view.task, view.accused, view.entry_index, view.bond, view.fee) == (
        D_OPEN,
        t.task,
        3,
        0,
        bond,
        FEE,
    )
    assert bytes(view.accused_root) == t.root(3, 0)
    assert rig.get_bid(t.task, PROCESSING, 3).open_disputes == 1
    assert rig.is_disputed(t.task, block_of(t, 3), 3, 0)


def test_open_dispute_checks_the_accusation(
    rig: Rig, t: Task, requester: str, outsider: str
) -> None:
    t.run_epoch(0)
    b3 = block_of(t, 3)
    o3, i3 = merkle.split_block_id(b3)
    proof = t.book.proof(0)
    with boa.reverts(
        "market: bad entry proof"
    ):  # p3 does not hold block 0's... its proof is for b3
        rig.open_dispute(
            t.task, 0, 3, 0, 0, t.entry(3, b3).as_tuple(), proof.as_tuple(), sender=requester
        )
    with boa.reverts("market: the record is another processor's"):
        rig.open_dispute(
            t.task, 0, 2, o3, i3, t.entry(3, b3).as_tuple(), proof.as_tuple(), sender=requester
        )
    bad_history = merkle.EpochProof(proof.model_digest, proof.roots, h(5), proof.later)
    with boa.reverts("market: epoch proof does not match the closed epochs"):
        rig.open_dispute(
            t.task,
            0,
            3,
            o3,
            i3,
            t.entry(3, b3).as_tuple(),
            bad_history.as_tuple(),
            sender=requester,
        )
    forged = merkle.EpochProof(
        proof.model_digest, ((3, h(9)), *proof.roots[1:]), proof.history_before, proof.later
    )
    with boa.reverts("market: epoch proof does not match the closed epochs"):
        rig.open_dispute(
            t.task, 0, 3, o3, i3, t.entry(3, b3).as_tuple(), forged.as_tuple(), sender=requester
        )
    # the open epoch is not in the history yet
    t.relay(1)
    t.book.closed = 2
    with boa.reverts("market: epoch proof does not match the closed epochs"):
        t.open_dispute(requester, 1, 3, b3)
    t.book.closed = 1
    t.open_dispute(outsider, 0, 3, b3)  # anyone may accuse
    with boa.reverts("market: already disputed"):
        t.open_dispute(requester, 0, 3, b3)
    with boa.reverts("market: not an active processor"):
        rig.open_dispute(
            t.task, 0, 7, o3, i3, t.entry(3, b3).as_tuple(), proof.as_tuple(), sender=requester
        )


def test_a_processor_with_no_root_that_epoch_cannot_be_accused(
    rig: Rig, t: Task, requester: str
) -> None:
    for p in (0, 1, 2):
        t.submit(p, 0)
    travel_to(rig.clock_of(t.task).deadline + 1)
    t.close(0)
    with boa.reverts("market: the accused recorded no root that epoch"):
        t.open_dispute(requester, 0, 3, block_of(t, 3))


def test_disputes_close_a_grace_period_after_the_task(rig: Rig, t: Task, requester: str) -> None:
    t.run_epoch(0, go_on=False)
    finish = rig.clock_of(t.task).deadline
    travel_to(finish + GRACE + 1)
    with boa.reverts("market: disputes are closed"):
        t.open_dispute(requester, 0, 3, block_of(t, 3))


def test_the_panel_is_fixed_by_a_later_blocks_hash(
    rig: Rig, t: Task, requester: str, outsider: str
) -> None:
    """Whoever draws and whenever (within 256 blocks), the panel is the one the hash of block
    open + delay says; the accused and the accuser are never on it; it matches the Python
    mirror (merkle.draw_panel) weighted by epoch pay."""
    run_two_epochs(t)
    accuser = t.account_of(1).address  # a processor may accuse too: it is then not drawn
    d = t.open_dispute(accuser, 0, 3, block_of(t, 3))
    target = rig.dispute_of(d).open_block + DELAY
    with boa.reverts("market: too early to draw"):
        rig.draw(d, sender=outsider)
    beacon = h(42)
    panels = []
    for _ in range(2):
        with boa.env.anchor():
            mine(5)
            set_beacon(target, beacon)
            rig.draw(d, sender=outsider)
            panels.append(list(rig.dispute_of(d).panel))
    assert panels[0] == panels[1]
    expected = merkle.draw_panel(merkle.draw_seed(beacon, d), [(0, PAYS[0]), (2, PAYS[2])])
    assert panels[0] == expected and sorted(expected) == [0, 2]
    with boa.env.anchor():
        t.draw(d, beacon=h(43))
        (drawn,) = rig.logs("PanelDrawn")
        assert list(drawn.panel) == merkle.draw_panel(
            merkle.draw_seed(h(43), d), [(0, PAYS[0]), (2, PAYS[2])]
        )
        assert rig.dispute_of(d).state == D_DRAWN
        with boa.reverts("market: not awaiting a draw"):
            rig.draw(d, sender=outsider)


def test_draws_follow_the_python_mirror_for_many_beacons(rig: Rig, t: Task, requester: str) -> None:
    run_two_epochs(t)
    d = t.open_dispute(requester, 0, 0, block_of(t, 0))
    target = rig.dispute_of(d).open_block + DELAY
    weights = [(1, PAYS[1]), (2, PAYS[2]), (3, PAYS[3])]
    mine(target + 1 - boa.env.evm.patch.block_number)
    for n in range(12):
        with boa.env.anchor():
            set_beacon(target, h(1000 + n))
            rig.draw(d, sender=requester)
            assert list(rig.dispute_of(d).panel) == merkle.draw_panel(
                merkle.draw_seed(h(1000 + n), d), weights
            )


def test_a_draw_missed_for_256_blocks_retargets(rig: Rig, t: Task, requester: str) -> None:
    run_two_epochs(t)
    d = t.open_dispute(requester, 0, 3, block_of(t, 3))
    mine(DELAY + 257)
    rig.draw(d, sender=requester)
    (retargeted,) = rig.logs("DrawRetargeted")
    assert retargeted.open_block == boa.env.evm.patch.block_number
    assert rig.dispute_of(d).state == D_OPEN
    t.draw(d)
    assert rig.dispute_of(d).state == D_DRAWN


def test_votes_come_from_the_panel_and_the_owner_once_before_the_show(
    rig: Rig, t: Task, requester: str, outsider: str
) -> None:
    run_two_epochs(t)
    b = block_of(t, 3)
    d = t.open_dispute(requester, 0, 3, b)
    with boa.reverts("market: not drawn"):
        t.vote(d, t.account_of(0).address, truth(b, 0))
    panel = t.draw(d)
    assert sorted(panel) == [0, 1, 2]
    with boa.reverts("market: not a voter of this dispute"):
        t.vote(d, outsider, truth(b, 0))
    with boa.reverts("market: not a voter of this dispute"):
        t.vote(d, t.account_of(3).address, truth(b, 0))  # the accused
    t.vote(d, t.owner_of(b), truth(b, 0))
    assert bytes(rig.vote_of(d, 3)) == merkle.vote_commitment(d, t.owner_of(b), truth(b, 0))
    member = t.account_of(panel[0]).address
    t.vote(d, member, truth(b, 0))
    (voted,) = rig.logs("VoteCommitted")
    assert voted.voter == member
    with boa.reverts("market: already voted"):
        t.vote(d, member, truth(b, 0))
    with boa.reverts("market: empty commitment"):
        rig.commit_vote(d, bytes(32), sender=t.account_of(panel[1]).address)
    travel_to(rig.dispute_of(d).vote_deadline + 1)
    with boa.reverts("market: voting is over"):
        t.vote(d, t.account_of(panel[1]).address, truth(b, 0))


def test_the_leaf_is_shown_after_the_votes_and_must_be_the_committed_one(
    rig: Rig, t: Task, requester: str
) -> None:
    run_two_epochs(t)
    b = block_of(t, 3)
    d = t.open_dispute(requester, 0, 3, b)
    panel = t.draw(d)
    vote_all(t, d, truth(b, 0), panel[:2])
    with boa.reverts("market: voting is open"):
        t.show(d, truth(b, 0))
    vote_all(t, d, truth(b, 0), panel[2:])
    with boa.reverts("market: not the committed leaf"):
        t.show(d, lie(b, 0))
    with boa.reverts("market: bad proof length"):
        rig.show_leaf(d, truth(b, 0), [h(1)], sender=requester)
    t.show(d, truth(b, 0))
    assert bytes(rig.dispute_of(d).shown) == truth(b, 0)
    with boa.reverts("market: the leaf is already shown"):
        t.show(d, truth(b, 0))
    with boa.reverts("market: the leaf is already shown"):
        t.vote(d, t.owner_of(b), truth(b, 0))


def test_conviction_slashes_to_the_reserve_and_pays_the_auditors_from_the_bond(
    rig: Rig, token: Any, t: Task, requester: str
) -> None:
    run_two_epochs(t, liar=3)
    b = block_of(t, 3)
    d = t.open_dispute(requester, 0, 3, b)
    panel = t.draw(d)
    vote_all(t, d, truth(b, 0))
    t.show(d, lie(b, 0), leaves=t.leaves(3, 0, lies=[b]))
    reserve = rig.reserve_balance()
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    (resolved,) = rig.logs("DisputeResolved")
    (slashed,) = rig.logs("ProcessorSlashed")
    bond = STAKES[3] // 4
    assert (resolved.outcome, resolved.to_accuser, resolved.to_accused, resolved.fees) == (
        CONVICTED,
        bond - 3 * FEE,
        0,
        3 * FEE,
    )
    # its stake and both closed epochs' unpaid pay, all to the reserve
    pool = STAKES[3] + 2 * PAYS[3]
    assert (
        slashed.processor,
        slashed.fault,
        slashed.forfeited,
        slashed.to_reserve,
        slashed.to_participants,
    ) == (3, FAULT_PANEL, pool, pool, 0)
    assert rig.reserve_balance() == reserve + pool
    assert rig.claimable(requester) == bond - 3 * FEE
    for p in panel:
        assert rig.claimable(t.account_of(p).address) == FEE
    view = rig.get_bid(t.task, PROCESSING, 3)
    assert view.slashed and view.open_disputes == 0
    assert rig.dispute_of(d).state == D_RESOLVED
    clock = rig.clock_of(t.task)
    assert clock.active == 3 and rig.active_of(t.task) == (0b0111, sum(PAYS[:3]))
    assert rig.owed(t.task, PROCESSING, 3) == 0
    # training goes on with the other three
    t.run_epoch(2, go_on=False)
    travel_to(now() + GRACE + 1)
    got = everyone_collects(rig, t)
    assert got[t.account_of(0).address] == 3 * PAYS[0] + STAKES[0] + FEE
    with boa.reverts("market: not drawn"):
        rig.resolve_dispute(d, truth(b, 0), sender=requester)


def test_a_cleared_processor_receives_the_bond_less_the_fees(
    rig: Rig, t: Task, requester: str
) -> None:
    run_two_epochs(t)
    b = block_of(t, 0)
    d = t.open_dispute(requester, 0, 0, b)
    vote_all(t, d, truth(b, 0)) if t.draw(d) else None
    t.show(d, truth(b, 0), sender=t.account_of(0).address)
    rig.resolve_dispute(
        d, lie(b, 0), sender=t.account_of(0).address
    )  # a wrong value changes nothing
    (resolved,) = rig.logs("DisputeResolved")
    bond = max(STAKES[0] // 4, 3 * FEE)
    assert (resolved.outcome, resolved.to_accuser, resolved.to_accused, resolved.fees) == (
        CLEARED,
        0,
        bond - 3 * FEE,
        3 * FEE,
    )
    assert rig.claimable(t.account_of(0).address) == bond - 3 * FEE
    assert not rig.get_bid(t.task, PROCESSING, 0).slashed


def test_a_split_panel_gives_no_verdict_and_the_bond_back(
    rig: Rig, t: Task, requester: str
) -> None:
    run_two_epochs(t, liar=3)
    b = block_of(t, 3)
    d = t.open_dispute(requester, 0, 3, b)
    panel = t.draw(d)
    t.vote(d, t.account_of(panel[0]).address, truth(b, 0))
    t.vote(d, t.account_of(panel[1]).address, lie(b, 0))  # bribed: copies the cheater
    travel_to(rig.dispute_of(d).vote_deadline + 1)  # the third never votes
    t.show(d, lie(b, 0), leaves=t.leaves(3, 0, lies=[b]))
    with boa.reverts("market: no verdict yet"):
        rig.resolve_dispute(d, truth(b, 0), sender=requester)
    travel_to(rig.dispute_of(d).show_deadline + 1)
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    (resolved,) = rig.logs("DisputeResolved")
    bond = STAKES[3] // 4
    assert (resolved.outcome, resolved.to_accuser, resolved.to_accused, resolved.fees) == (
        NO_VERDICT,
        bond,
        0,
        0,
    )
    assert not rig.get_bid(t.task, PROCESSING, 3).slashed


def test_the_blocks_owner_can_veto_a_conviction(rig: Rig, t: Task, requester: str) -> None:
    """A captured panel cannot convict if the block's owner (who holds the block, so costs no
    privacy) commits the accused's digest."""
    run_two_epochs(t)
    b = block_of(t, 0)
    d = t.open_dispute(requester, 0, 0, b)
    t.draw(d)
    vote_all(t, d, lie(b, 0))  # all three auditors lie
    t.vote(d, t.owner_of(b), truth(b, 0))
    t.show(d, truth(b, 0))
    with boa.reverts("market: no verdict yet"):
        rig.resolve_dispute(d, lie(b, 0), sender=requester)
    travel_to(rig.dispute_of(d).show_deadline + 1)
    rig.resolve_dispute(d, lie(b, 0), sender=requester)
    assert rig.logs("DisputeResolved")[0].outcome == NO_VERDICT


def test_nobody_showing_the_leaf_is_an_unopened_fault_shared_by_what_each_is_paid(
    rig: Rig, t: Task, requester: str, owners: list[str]
) -> None:
    """A processor that committed a root it cannot open (random, or it vanished and nobody has
    its results) is slashed objectively; the pool goes to the other participants pro rata to
    their pay, the rounding to the reserve."""
    t.run_epoch(0, roots={3: h(77)})  # p3 signs a random root
    t.run_epoch(1)
    b = block_of(t, 3)
    d = t.open_dispute(requester, 0, 3, b)
    t.draw(d)
    vote_all(t, d, truth(b, 0))
    with boa.reverts("market: the leaf can still be shown"):
        rig.resolve_dispute(d, truth(b, 0), sender=requester)
    travel_to(rig.dispute_of(d).show_deadline + 1)
    with boa.reverts("market: too late to show"):
        t.show(d, truth(b, 0))
    reserve = rig.reserve_balance()
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    (resolved,) = rig.logs("DisputeResolved")
    (slashed,) = rig.logs("ProcessorSlashed")
    bond = STAKES[3] // 4
    assert (resolved.outcome, resolved.to_accuser, resolved.fees) == (UNOPENED, bond, 0)
    pool = STAKES[3] + 2 * PAYS[3]
    weights = {(DATA, i): 64 * (3 + i) for i in range(4)} | {
        (PROCESSING, i): PAYS[i] for i in range(3)
    }
    total = sum(weights.values())
    shares = {k: pool * w // total for k, w in weights.items()}
    assert slashed.fault == FAULT_UNOPENED
    assert (slashed.forfeited, slashed.to_participants) == (pool, sum(shares.values()))
    assert rig.reserve_balance() == reserve + pool - sum(shares.values())
    credited = {(e.side, e.bid): e.amount for e in rig.logs("ShareCredited")}
    assert credited == shares
    for i in range(4):
        assert rig.claimable(owners[i]) == shares[(DATA, i)]
    assert rig.owed(t.task, PROCESSING, 0) == 2 * PAYS[0] + shares[(PROCESSING, 0)]


def test_the_requester_can_show_an_offline_processors_leaf(
    rig: Rig, t: Task, requester: str
) -> None:
    """An honest processor that went offline is not slashed: the requester, who received its
    results, can open its leaf (the unopened fault is only for what nobody can open)."""
    run_two_epochs(t)
    b = block_of(t, 2)
    d = t.open_dispute(t.account_of(0).address, 0, 2, b)  # a processor accuses
    t.draw(d)
    vote_all(t, d, truth(b, 0))
    t.show(d, truth(b, 0), sender=requester)
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    assert rig.logs("DisputeResolved")[0].outcome == CLEARED


def test_an_undelivered_leaf_it_reported_dismisses_the_dispute(
    rig: Rig, t: Task, requester: str
) -> None:
    b = block_of(t, 1)
    o, i = merkle.split_block_id(b)
    rig.report_undelivered(
        t.task, 1, [(o, i, t.entry(1, b).as_tuple())], sender=t.account_of(1).address
    )
    t.run_epoch(0, roots={1: t.root(1, 0, undelivered=[b])})
    d = t.open_dispute(requester, 0, 1, b)
    t.draw(d)
    vote_all(t, d, truth(b, 0))
    t.show(d, UNDELIVERED, leaves=t.leaves(1, 0, undelivered=[b]))
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    (resolved,) = rig.logs("DisputeResolved")
    assert (resolved.outcome, resolved.to_accused) == (DISMISSED, max(STAKES[1] // 4, 3 * FEE))


def test_an_undelivered_leaf_it_never_reported_is_unopened(
    rig: Rig, t: Task, requester: str
) -> None:
    b = block_of(t, 1)
    t.run_epoch(0, roots={1: t.root(1, 0, undelivered=[b])})
    d = t.open_dispute(requester, 0, 1, b)
    t.draw(d)
    vote_all(t, d, truth(b, 0))
    t.show(d, UNDELIVERED, leaves=t.leaves(1, 0, undelivered=[b]))
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    assert rig.logs("DisputeResolved")[0].outcome == UNOPENED
    assert rig.get_bid(t.task, PROCESSING, 1).slashed


def test_conviction_forfeits_unpaid_pay_but_never_claws_back_collected_pay(
    rig: Rig, t: Task, requester: str
) -> None:
    run_two_epochs(t, liar=3)
    p3 = t.account_of(3).address
    assert rig.collect(t.task, PROCESSING, 3, sender=p3) == 2 * PAYS[3]
    t.relay(2)  # epoch 2 relayed, not closed
    b = block_of(t, 3)
    d = t.open_dispute(requester, 0, 3, b)
    t.draw(d)
    vote_all(t, d, truth(b, 0))
    t.show(d, lie(b, 0), leaves=t.leaves(3, 0, lies=[b]))
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    (slashed,) = rig.logs("ProcessorSlashed")
    assert slashed.forfeited == STAKES[3]  # the open epoch's pay was never accrued
    spent = rig.clock_of(t.task).spent
    t.close(2, go_on=False)
    assert rig.clock_of(t.task).spent == spent + sum(PAYS[:3])  # nor is it now


def test_a_stake_stays_locked_while_a_dispute_against_it_is_open(
    rig: Rig, t: Task, requester: str
) -> None:
    t.run_epoch(0, go_on=False)
    b = block_of(t, 0)
    d = t.open_dispute(requester, 0, 0, b)
    travel_to(rig.clock_of(t.task).deadline + GRACE + 1)
    assert rig.owed(t.task, PROCESSING, 0) == PAYS[0]  # pay, not the stake
    t.draw(d)
    vote_all(t, d, truth(b, 0))
    t.show(d, truth(b, 0))
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    assert rig.owed(t.task, PROCESSING, 0) == PAYS[0] + STAKES[0]


def test_with_one_eligible_processor_a_dispute_is_opening_only(
    rig: Rig, token: Any, requester: str, owners: list[str], processors: list[LocalAccount]
) -> None:
    t = four(rig, token, requester, owners[:2], processors[:2], TaskParams(num_points=128)).start()
    t.run_epoch(0)
    b = block_of(t, 1)
    d = t.open_dispute(requester, 0, 1, b)
    assert t.draw(d) == []
    t.show(d, truth(b, 0))  # no votes to wait for
    rig.resolve_dispute(d, truth(b, 0), sender=requester)
    (resolved,) = rig.logs("DisputeResolved")
    assert (resolved.outcome, resolved.to_accused) == (DISMISSED, STAKES[1] // 4)


def test_a_second_conviction_of_a_slashed_processor_forfeits_nothing_more(
    rig: Rig, t: Task, requester: str
) -> None:
    t.run_epoch(0, roots={3: t.root(3, 0, lies=[block_of(t, 3)])})
    t.run_epoch(1, roots={3: t.root(3, 1, lies=[block_of(t, 3)])})
    b = block_of(t, 3)
    first, second = (t.open_dispute(requester, e, 3, b) for e in (0, 1))
    for d, e in ((first, 0), (second, 1)):
        t.draw(d)
        vote_all(t, d, truth(b, e))
        t.show(d, lie(b, e), leaves=t.leaves(3, e, lies=[b]))
    cost = rig.active_of(t.task)[1]
    rig.resolve_dispute(first, truth(b, 0), sender=requester)
    assert len(rig.logs("ProcessorSlashed")) == 1
    rig.resolve_dispute(second, truth(b, 1), sender=requester)
    assert rig.logs("DisputeResolved")[0].outcome == CONVICTED
    assert rig.logs("ProcessorSlashed") == []  # nothing left to forfeit
    assert rig.active_of(t.task)[1] == cost - PAYS[3]  # its pay left the epoch cost once
