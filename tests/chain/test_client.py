"""MarketClient and TokenClient against a real EVM: the embedded chain and a real anvil node.

The lifecycle test walks one task from creation to the last withdrawal and checks every
balance to the token, the market's solvency after every step, and that all parties' net
changes sum to minus the dust the contract keeps.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account import Account

from fedmarket.chain import (
    Chain,
    ChainError,
    ContractRevert,
    MarketClient,
    Side,
    TaskState,
    TokenClient,
    merkle,
)
from fedmarket.chain.client import Outcome, compile_market
from fedmarket.chain.events import (
    BidPlaced,
    BidWithdrawn,
    Collected,
    DisputeResolved,
    EpochClosed,
    EpochRoots,
    ProcessorSlashed,
    ReserveCredited,
    RootSubmitted,
    TaskCreated,
    TaskFinished,
    TaskResolved,
    Transfer,
)
from fedmarket.chain.signing import SignedRoot, sign_root
from fedmarket.errors import ConfigError

from .conftest import Parties

SPEC = b"\x5e" * 32
CONTEXT = b"\xc0" * 32
EPOCH_SECONDS = 600
BIDDING_SECONDS = 3_600
GRACE = 3_600


def digest(n: int) -> bytes:
    return (n + 1).to_bytes(32, "big")


def test_lifecycle(
    chain: Chain, parties: Parties, market: MarketClient, token: TokenClient
) -> None:
    """A task with a lying processor, a late one and a withdrawn bid, start to finish: every
    step's events and money, the market solvent throughout, every token accounted for."""
    req = parties.requester
    o1, o2, o3 = parties.owners
    procs = list(parties.processors)
    everyone = [req, *parties.owners, *procs]
    as_req = market.as_(req)

    def solvent() -> None:
        s = market.solvency()
        assert s.holds, s

    def balances() -> dict[str, int]:
        return {a.address: token.balance_of(a.address) for a in everyone}

    token.mint(req.address, 20_000)
    for p in procs:
        token.mint(p.address, 5_000)
    start = balances()

    # -- announce: both budgets escrowed in one transfer
    token.as_(req).approve(market.address, 20_000)
    created = as_req.create_task(
        SPEC, CONTEXT, 256, EPOCH_SECONDS, 3, 5_000, 4_000, BIDDING_SECONDS, 2_500, 2_500, 10, 64
    )
    task = created.value
    event = created.one(TaskCreated)
    assert (event.requester, event.num_points, event.min_fill) == (req.address, 256, 64)
    assert created.one(Transfer).value == 9_000
    assert market.clock_of(task).state is TaskState.BIDDING
    assert market.terms(task).terms_hash == merkle.terms_hash(SPEC, CONTEXT)
    solvent()

    # -- bids: a withdrawn slot is taken by the next bid
    assert market.as_(o1).bid_data(task, 128, 5).value == 0
    assert market.as_(o2).bid_data(task, 128, 6).value == 1
    assert (
        market.as_(o3)
        .withdraw_bid(task, Side.DATA, market.as_(o3).bid_data(task, 90, 9).value)
        .one(BidWithdrawn)
    )
    assert market.as_(o3).bid_data(task, 90, 9).value == 2
    for i, p in enumerate(procs):
        token.as_(p).approve(market.address, 5_000)
        placed = market.as_(p).bid_processing(task, 64, 2 + i).one(BidPlaced)
        assert (placed.side, placed.bid, placed.stake) == (Side.PROCESSING, i, 64 * (2 + i) * 3)
    assert market.bid_index(task, Side.DATA, o3.address) == 3
    solvent()

    # -- resolve: greedy, verified on chain; p5 loses
    chain.time_travel(BIDDING_SECONDS + 1)
    resolved = as_req.resolve_greedy(task)
    assert [f.as_tuple() for f in resolved.value.data] == [(0, 128), (1, 128)]
    assert len(resolved.value.processing) == 4
    assert resolved.one(TaskResolved).processing_cost_per_epoch == 64 * (2 + 3 + 4 + 5)
    assert market.book_of(task) == (0b11, 0b1111)

    # -- data and assignment: each processor one block
    for o, bid in ((o1, 0), (o2, 1)):
        market.as_(o).commit_data(task, bid, [64, 64], [digest(10 * bid + i) for i in range(2)])
    blocks = [
        merkle.block_id(0, 0),
        merkle.block_id(0, 1),
        merkle.block_id(1, 0),
        merkle.block_id(1, 1),
    ]
    tree = merkle.AssignmentTree(task, {i: [merkle.Entry(b, 64)] for i, b in enumerate(blocks)})
    as_req.commit_assignment(task, tree.records, digest(100))
    assert market.terms(task).assignment_root == tree.root
    domain = market.domain_separator()

    def truth(block: int, epoch: int) -> bytes:
        return digest(1_000 * epoch + block % 1_000 + (block >> 32))

    def root(i: int, epoch: int, lie: bool = False) -> bytes:
        d = digest(7) if lie else truth(blocks[i], epoch)
        return merkle.result_root(task, epoch, [(blocks[i], d)])

    # -- epoch 0: every root relayed in one transaction; p4 lies
    signed = [
        sign_root(p, domain, task, 0, root(i, 0, lie=i == 3)) for i, p in enumerate(procs[:4])
    ]
    relayed = as_req.relay_epoch(task, 0, signed)
    assert relayed.one(EpochRoots).processors == 0b1111
    closed = as_req.close_epoch(task, 0, digest(101), True, 0b1000)  # p4's results refused
    assert closed.one(ReserveCredited).amount == 64 * 5
    assert closed.one(EpochClosed).next_deadline == market.clock_of(task).deadline
    solvent()

    # -- the dispute: a panel of the three others convicts p4
    book = market.epoch_book(task)
    assert book.closed == 1 and book.root_of(0, 3) == root(3, 0, lie=True)
    opened = as_req.open_dispute(task, 0, 3, 1, 1, tree.entry_proof(3, 0), book.proof(0))
    dispute = opened.value
    chain.mine(market.draw_delay_blocks() + 1)
    as_req.draw(dispute)
    view = market.dispute_of(dispute)
    assert sorted(view.panel) == [0, 1, 2]
    for i in view.panel:
        market.as_(procs[i]).commit_vote(
            dispute, merkle.vote_commitment(dispute, procs[i].address, truth(blocks[3], 0))
        )
    as_req.show_leaf(dispute, digest(7), merkle.result_proof(task, 0, [(blocks[3], digest(7))], 0))
    verdict = as_req.resolve_dispute(dispute, truth(blocks[3], 0))
    assert verdict.value is Outcome.CONVICTED
    assert verdict.one(ProcessorSlashed).forfeited == 64 * 5 * 3
    assert verdict.one(DisputeResolved).fees == 30
    assert market.get_bid(task, Side.PROCESSING, 3).slashed
    solvent()

    # -- epoch 1: p3 late (by itself); the others by the requester one by one
    for i in (0, 1):
        as_req.submit_root(task, 1, i, sign_root(procs[i], domain, task, 1, root(i, 1)))
    chain.time_travel(EPOCH_SECONDS + 1)
    late = market.as_(procs[2]).submit_root(task, 1, 2, SignedRoot.unsigned(root(2, 1)))
    assert late.one(RootSubmitted).on_time is False
    finished = as_req.close_epoch(task, 1, digest(102), False)
    assert finished.one(TaskFinished).epochs_closed == 2
    solvent()

    # -- settle after the dispute window
    chain.time_travel(GRACE + 1)
    for who in everyone:
        m = market.as_(who)
        for side in Side:
            i = m.bid_index(task, side, who.address)
            if i and m.owed(task, side, i - 1):
                assert m.collect(task, side, i - 1).one(Collected).amount > 0
        if m.claimable(who.address):
            m.withdraw()
    as_req.collect_requester(task)
    market.as_(parties.deployer).withdraw_reserve()  # the deployer holds the reserve
    solvent()
    assert market.liabilities(task) == 0 and market.solvency().balance == 0
    end = balances()
    nets = {a: end[a] - start[a] for a in start}
    reserve = token.balance_of(parties.deployer.address)
    assert sum(nets.values()) == -reserve
    assert nets[procs[3].address] == -64 * 5 * 3  # convicted: stake lost, nothing paid
    assert nets[procs[4].address] == 0  # lost the bidding: stake back
    assert nets[procs[0].address] == 2 * 64 * 2 + 10  # two epochs and an auditor's fee
    assert nets[o3.address] == 0


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (
            lambda m, r: m.as_(r).create_task(SPEC, CONTEXT, 0, 60, 1, 0, 0, 60, 0),
            "market: bad num_points",
        ),
        (lambda m, r: m.as_(r).claim_timeout(0, 0, 0), "market: no such task"),
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
        market.as_(parties.requester).commit_assignment(0, [], b"short")
    assert len(market.gas_log) == 4  # only the deployments: token, court, setup, market


def test_acting_parties_share_one_gas_log(
    market: MarketClient, token: TokenClient, parties: Parties
) -> None:
    owner = parties.owners[0]
    as_owner = market.as_(owner)
    assert as_owner.account is owner and market.account is parties.deployer
    assert as_owner.gas_log is market.gas_log is token.gas_log
    token.mint(parties.requester.address, 10)
    token.as_(parties.requester).approve(market.address, 10)
    market.as_(parties.requester).create_task(SPEC, CONTEXT, 100, 60, 1, 10, 0, 60, 0)
    as_owner.bid_data(0, 100, 0)
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
    """Every function of the three contracts behind the market's address."""
    functions = {e["name"] for e in compile_market().abi if e["type"] == "function"}
    functions -= {"setup", "court"}  # the delegation targets
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
    first = market.create_task(b"\x01" * 32, b"\x02" * 32, 100, 60, 1, 0, 0, 60, 0).value
    second = market.create_task(b"\x03" * 32, b"\x02" * 32, 100, 60, 1, 0, 0, 60, 0).value
    assert [e.task for e in market.logs(TaskCreated)][len(before) :] == [first, second]
    only = market.logs(TaskCreated, task=second)
    assert len(only) == 1 and only[0].spec_hash == b"\x03" * 32
