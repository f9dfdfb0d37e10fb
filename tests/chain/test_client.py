"""MarketClient and TokenClient against a real EVM: the embedded chain and a real anvil node.

The lifecycle test walks one task from creation to the last withdrawal and checks every
balance to the token, the market's solvency after every step, and that all parties' net
changes sum to minus the dust the contract keeps.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from fedmarket.chain import (
    Chain,
    ChainError,
    ContractRevert,
    Fill,
    MarketClient,
    Side,
    TaskState,
    TokenClient,
)
from fedmarket.chain.compile import compile_contract
from fedmarket.chain.events import (
    BidPlaced,
    BidWithdrawn,
    Claimed,
    EpochClosed,
    ProcessorSlashed,
    ResultSubmitted,
    TaskCreated,
    TaskFinished,
    TaskResolved,
    Transfer,
    Withdrawn,
)
from fedmarket.errors import ConfigError

from .conftest import Parties

SPEC = b"\x5e" * 32
CONTEXT = b"\xc0" * 32
ASSIGNMENT = b"\xa5" * 32
EPOCH_SECONDS = 600
BIDDING_SECONDS = 3_600


def digest(n: int) -> bytes:
    return (n + 1).to_bytes(32, "big")


def test_lifecycle(
    chain: Chain, parties: Parties, market: MarketClient, token: TokenClient
) -> None:
    req = parties.requester
    o1, o2, o3 = parties.owners
    p1, p2, p3, p4, p5 = parties.processors
    everyone = [req, *parties.owners, *parties.processors]
    as_req = market.as_(req)

    def solvent() -> None:
        s = market.solvency()
        assert s.holds, s

    def balances() -> dict[str, int]:
        return {a.address: token.balance_of(a.address) for a in everyone}

    token.mint(req.address, 10_000)
    for p in parties.processors:
        token.mint(p.address, 5_000)
    start = balances()

    # -- announce: both budgets escrowed in one transfer
    token.as_(req).approve(market.address, 4_200)
    created = as_req.create_task(
        SPEC, CONTEXT, 100, EPOCH_SECONDS, 4, 3_000, 1_200, BIDDING_SECONDS, 2_500
    )
    task = created.value
    assert task == 0
    event = created.one(TaskCreated)
    assert (event.requester, event.num_points, event.data_budget, event.processing_budget) == (
        req.address,
        100,
        3_000,
        1_200,
    )
    assert created.one(Transfer).value == 4_200
    assert token.balance_of(req.address) == 5_800
    assert market.liabilities(task) == 4_200
    assert market.clock_of(task).state is TaskState.BIDDING
    solvent()

    # -- bids: data owners offer points, processors stake capacity x price x max_epochs
    assert market.as_(o1).bid_data(task, 60, 20).value == 0
    assert market.as_(o2).bid_data(task, 50, 30).value == 1
    assert market.as_(o3).bid_data(task, 40, 50).value == 2
    market.as_(o3).withdraw_data_bid(task)  # ... and bids again: one open bid per side
    assert market.as_(o3).bid_data(task, 40, 50).value == 3
    stakes = {}
    for p, (capacity, price) in zip(
        parties.processors, [(50, 2), (30, 3), (40, 4), (100, 10), (10, 5)], strict=True
    ):
        stake = capacity * price * 4
        token.as_(p).approve(market.address, stake)
        placed = market.as_(p).bid_processing(task, capacity, price).one(BidPlaced)
        assert (placed.side, placed.stake) == (Side.PROCESSING, stake)
        stakes[p.address] = stake
    assert stakes == {
        p1.address: 400,
        p2.address: 360,
        p3.address: 640,
        p4.address: 4_000,
        p5.address: 200,
    }
    assert market.liabilities(task) == 9_800
    assert market.num_bids(task, Side.DATA) == 4
    assert market.bid_index(task, Side.DATA, o3.address) == 4
    solvent()

    # p5 changes its mind: the stake is withdrawable at once
    withdrawn = market.as_(p5).withdraw_processing_bid(task)
    assert withdrawn.value == 200
    assert withdrawn.one(BidWithdrawn).bid == 4
    assert market.claimable(p5.address) == 200
    assert market.liabilities(task) == 9_600
    solvent()
    assert market.as_(p5).withdraw().value == 200
    solvent()

    # -- resolve: not before the deadline, then the greedy allocation
    with pytest.raises(ContractRevert) as early:
        as_req.resolve_greedy(task)
    assert early.value.reason == "market: bidding still open"
    chain.time_travel(BIDDING_SECONDS + 1)
    resolved = market.as_(o3).resolve_greedy(task)  # anyone may submit it
    assert resolved.value.data == [Fill(0, 60), Fill(1, 40)]
    assert resolved.value.processing == [Fill(0, 50), Fill(1, 30), Fill(2, 20)]
    summary = resolved.one(TaskResolved)
    assert (summary.data_cost, summary.processing_cost_per_epoch) == (2_400, 270)
    assert (summary.data_winners, summary.processing_winners) == (2, 3)
    clock = market.clock_of(task)
    assert (clock.state, clock.active) == (TaskState.ASSIGNING, 3)
    partial = market.get_bid(task, Side.PROCESSING, 2)
    assert (partial.bidder, partial.winner, partial.fill, partial.amount) == (
        p3.address,
        True,
        20,
        40,
    )
    assert not market.get_bid(task, Side.PROCESSING, 3).winner
    assert market.tasks(task).shares == 5  # two owners and three processors share slashed stakes

    # losers take their stake back; p3 its stake above the retained 3 x 80 x 4
    assert market.owed(task, p4.address) == 4_000
    assert market.as_(p4).claim(task).value == 4_000
    assert market.as_(p3).claim(task).value == 320
    solvent()

    # -- distribute
    as_req.commit_assignment(task, ASSIGNMENT)
    assert market.tasks(task).assignment_hash == ASSIGNMENT
    market.as_(o1).commit_data(task, digest(1))
    market.as_(o2).commit_data(task, digest(2))
    with pytest.raises(ContractRevert, match="not a winning data owner"):
        market.as_(o3).commit_data(task, digest(3))
    assert market.get_bid(task, Side.DATA, 0).data_root == digest(1)

    def submit(p: LocalAccount, epoch: int) -> ResultSubmitted:
        receipt = market.as_(p).submit_result(task, epoch, digest(100 * epoch + 7))
        return receipt.one(ResultSubmitted)

    # -- epoch 0: everyone on time; closing it pays the data owners
    assert [submit(p, 0).pay for p in (p1, p2, p3)] == [100, 90, 80]
    assert market.has_submitted(task, 0, p2.address)
    assert market.owed(task, o1.address) == 0  # not before the first close
    closed = as_req.close_epoch(task, 0)
    assert closed.one(EpochClosed).go_on
    clock = market.clock_of(task)
    assert (clock.state, clock.epoch, clock.first_closed, clock.spent) == (
        TaskState.TRAINING,
        1,
        True,
        270,
    )
    assert market.owed(task, o1.address) == 1_200
    assert market.owed(task, o2.address) == 1_200  # 40 of its 50 points at 30
    assert market.as_(o1).claim(task).value == 1_200
    assert market.as_(o1).withdraw().value == 1_200
    solvent()

    # -- epoch 1: p3 is late (pays 25% less); p2 is flagged and slashed
    submit(p1, 1)
    submit(p2, 1)
    chain.time_travel(EPOCH_SECONDS + 1)
    late = submit(p3, 1)
    assert (late.on_time, late.pay) == (False, 60)
    flagged = as_req.close_epoch(task, 1, flagged=[p2.address])
    slash = flagged.one(ProcessorSlashed)
    # pool 90 + 360 split over the 4 remaining sharers: 112 each, 2 left as dust
    assert (slash.processor, slash.forfeited_pay, slash.forfeited_stake) == (p2.address, 90, 360)
    assert slash.share_per_participant == 112
    assert market.dust(task) == 2
    assert market.slash_acc(task) == 112
    assert market.clock_of(task).active == 2
    with pytest.raises(ContractRevert) as slashed:
        market.as_(p2).submit_result(task, 2, digest(9))
    assert slashed.value.reason == "market: processor was slashed"
    solvent()

    # -- epoch 2: the requester stops early
    submit(p1, 2)
    submit(p3, 2)
    finished = as_req.close_epoch(task, 2, go_on=False)
    assert finished.one(TaskFinished).epochs_closed == 3
    assert market.clock_of(task).state is TaskState.FINISHED
    assert market.clock_of(task).spent == 700  # includes the 90 forfeited by p2

    # -- settle: anyone may claim for anyone; each withdraws its own
    claimed = as_req.claim(task, o2.address)
    assert claimed.one(Claimed).account == o2.address
    assert claimed.value == 1_312
    expected_claims = [(req, 1_100), (o1, 112), (o3, 0), (p1, 812), (p2, 90), (p3, 652), (p4, 0)]
    for who, amount in expected_claims:
        assert market.as_(who).claim(task).value == amount, who.address
    assert market.as_(o3).claim(task).events == ()  # nothing owed, nothing logged
    solvent()
    for who in (req, o1, o2, p1, p2, p3, p4):
        out = market.as_(who).withdraw()
        assert out.one(Withdrawn).amount == out.value > 0
    with pytest.raises(ContractRevert, match="nothing to withdraw"):
        market.as_(p5).withdraw()

    end = balances()
    net = {a: end[a] - start[a] for a in start}
    assert net == {
        req.address: -3_100,  # 2,400 data + 700 processing
        o1.address: 1_312,
        o2.address: 1_312,
        o3.address: 0,
        p1.address: 412,  # 300 earned + 112 share
        p2.address: -270,  # slashed: its stake lost, 90 earned in epoch 0 kept
        p3.address: 332,  # 220 earned (60 of it late) + 112 share
        p4.address: 0,
        p5.address: 0,
    }
    assert sum(net.values()) == -market.dust(task)
    assert token.balance_of(market.address) == market.dust(task) == market.liabilities(task)
    assert market.total_claimable() == 0
    solvent()

    # -- gas: every transaction is in the shared log, under its function's name
    log = market.gas_log
    assert len(log.calls("submit_result")) == 8
    assert len(log.calls("close_epoch")) == 3
    assert log.calls("deploy") and all(g > 21_000 for g in log.calls("create_task"))
    assert created.gas_used == log.calls("create_task")[0]


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (
            lambda m, r: m.as_(r).create_task(SPEC, CONTEXT, 0, 60, 1, 0, 0, 60, 0),
            "market: bad num_points",
        ),
        (lambda m, r: m.as_(r).claim_timeout(0), "market: no such task"),
        (lambda m, r: m.get_bid(0, 2, 0), "market: side is 0 (data) or 1 (processing)"),
        (lambda m, r: m.as_(r).withdraw(), "market: nothing to withdraw"),
    ],
    ids=["transaction", "no-task", "view", "withdraw"],
)
def test_revert_reason_surfaces(
    market: MarketClient,
    parties: Parties,
    call: Callable[[MarketClient, object], object],
    reason: str,
) -> None:
    before = len(market.gas_log)
    with pytest.raises(ContractRevert) as info:
        call(market, parties.requester)
    assert info.value.reason == reason
    assert reason in str(info.value)
    assert len(market.gas_log) == before  # estimated, never sent


def test_token_revert_and_events(token: TokenClient, parties: Parties) -> None:
    holder, other = parties.owners[:2]
    with pytest.raises(ContractRevert) as info:
        token.as_(holder).mint(holder.address, 1)
    assert info.value.reason == "devtoken: only the minter"
    assert info.value.function == "DevToken.mint"
    token.mint(holder.address, 50)
    moved = token.as_(holder).transfer(other.address, 20)
    assert moved.one(Transfer) == Transfer(sender=holder.address, receiver=other.address, value=20)
    token.as_(holder).approve(other.address, 7)
    assert token.allowance(holder.address, other.address) == 7
    assert (token.balance_of(holder.address), token.balance_of(other.address)) == (30, 20)
    assert token.total_supply() == 50


def test_money_must_be_int(market: MarketClient, parties: Parties) -> None:
    with pytest.raises(ConfigError, match="data_budget must be an int"):
        market.as_(parties.requester).create_task(
            SPEC,
            CONTEXT,
            10,
            60,
            1,
            10.0,
            0,
            60,
            0,  # type: ignore[arg-type]
        )
    with pytest.raises(ConfigError, match="32 bytes"):
        market.as_(parties.requester).commit_assignment(0, b"short")
    assert len(market.gas_log) == 2  # only the two deployments


def test_acting_parties_share_one_gas_log(
    market: MarketClient, token: TokenClient, parties: Parties
) -> None:
    owner = parties.owners[0]
    as_owner = market.as_(owner)
    assert as_owner.account is owner and market.account is parties.deployer
    assert as_owner.gas_log is market.gas_log is token.gas_log
    token.mint(parties.requester.address, 10)
    token.as_(parties.requester).approve(market.address, 10)
    market.as_(parties.requester).create_task(SPEC, CONTEXT, 10, 60, 1, 10, 0, 60, 0)
    as_owner.bid_data(0, 10, 1)
    assert [e.function for e in market.gas_log][-4:] == [
        "mint",
        "approve",
        "create_task",
        "bid_data",
    ]
    assert market.gas_log.total() == sum(e.gas_used for e in market.gas_log)


def test_attach_to_a_deployed_market(chain: Chain, market: MarketClient, parties: Parties) -> None:
    again = MarketClient.at(chain.w3, market.address, parties.owners[0])
    assert again.grace_seconds() == 3_600
    assert again.token() == market.token()
    assert again.num_tasks() == 0


def test_client_has_one_method_per_contract_function() -> None:
    market_abi = compile_contract("Market").abi
    functions = {e["name"] for e in market_abi if e["type"] == "function"}
    missing = sorted(f for f in functions if not callable(getattr(MarketClient, f, None)))
    assert not missing, f"MarketClient lacks {missing}"


def test_an_account_without_gas_money_is_named(market: MarketClient, token: TokenClient) -> None:
    poor = Account.create()
    with pytest.raises(ChainError) as info:
        token.as_(poor).approve(market.address, 1)
    assert poor.address in str(info.value) and "cannot pay gas" in str(info.value)


def test_logs_filter_by_event_and_task(market: MarketClient) -> None:
    """Events are read back from the node's log, filtered by kind and task."""
    from fedmarket.chain.events import TaskCreated

    before = market.logs(TaskCreated)
    first = market.create_task(b"\x01" * 32, b"\x02" * 32, 10, 60, 1, 0, 0, 60, 0).value
    second = market.create_task(b"\x03" * 32, b"\x02" * 32, 10, 60, 1, 0, 0, 60, 0).value
    assert [e.task for e in market.logs(TaskCreated)][len(before) :] == [first, second]
    only = market.logs(TaskCreated, task=second)
    assert len(only) == 1 and only[0].spec_hash == b"\x03" * 32
