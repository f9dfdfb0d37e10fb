"""The in-memory ledger decides what the contract decides: whole tasks played on both.

``chain/memory.py`` answers the market's calls from the contract's reference model, which the
stateful test checks the contracts against step by step; here the same task (the plaintext
twin, so the only difference is the ledger) runs on the embedded EVM and in memory, and every
epoch outcome, every dispute and every payment must agree to the base unit. (Four processors,
so every panel is the three others whatever the block hashes.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmarket.chain.client import TaskState
from fedmarket.chain.memory import memory_chain
from fedmarket.errors import ContractRevert
from fedmarket.protocol.plaintext import Plaintext
from fedmarket.run import RunResult, run_task
from fedmarket.spec import SpecFile, load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def spec(**changes: object) -> SpecFile:
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = 3
    data["stopping"]["patience"] = 0
    data["he"]["block_points"] = 32
    data["integrity"]["replication"] = 0.3
    data["run"]["processors"] = [
        {"name": f"processor{i + 1}", "capacity": 114, "price": 100_000_000_000_000 + i}
        for i in range(4)
    ]
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if section == "owner2":
            data["run"]["owners"][1][field] = value
        elif section.startswith("processor"):
            data["run"]["processors"][int(section[-1]) - 1][field] = value
        else:
            data[section][field] = value
    return SpecFile.model_validate(data)


def play(s: SpecFile, chain: str | None) -> RunResult:
    return run_task(s, base=EXAMPLES, workers=0, crypto=Plaintext(), chain_url=chain)


def summary(result: RunResult) -> tuple[object, ...]:
    r = result.report
    return (
        r.stop_reason,
        [(e.epoch, e.metric, e.on_time, e.late, e.missing, e.flagged) for e in r.epochs],
        [(t.party, t.start, t.end, t.transfers) for t in r.tokens],
        [(d["processor"], d["block"], d["epoch"], d["outcome"], d["panel"]) for d in r.disputes],
        r.dust,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {},  # every epoch on time, everyone paid
        # a forger convicted in epoch 0, a late processor, an owner that never delivers
        {
            "processor2__attack": "random",
            "processor3__attack": "late",
            "owner2__attack": "no-delivery",
        },
        {"processor3__attack": "crash@1", "integrity__replication": 1.0},
        {"budget__data": 1000},  # an infeasible book: cancelled, everyone refunded
    ],
    ids=["clean", "slash-late-undelivered", "crash", "cancelled"],
)
def test_a_task_on_the_ledger_pays_what_it_pays_on_the_evm(changes: dict[str, object]) -> None:
    s = spec(**changes)
    evm, memory = play(s, None), play(s, "memory")
    assert summary(memory) == summary(evm)
    if "processor2__attack" in changes:  # the case did what it says
        assert evm.report.epochs[0].flagged == ["processor2"]
        assert [d["outcome"] for d in evm.report.disputes] == ["convicted"]
        assert evm.report.epochs[0].late == ["processor3"]
    assert memory.report.chain == "memory" and evm.report.chain == "embedded"


def test_the_ledger_refuses_what_the_contract_refuses() -> None:
    from fedmarket.chain.backends import dev_keys

    chain, market, token = memory_chain(dev_keys(3), grace_seconds=100)
    requester, bidder = chain.accounts[1], chain.accounts[2]
    token.mint(requester.address, 10**6)
    m = market.as_(requester)
    with pytest.raises(ContractRevert):  # nothing approved: the transfer fails
        m.create_task(b"\x01" * 32, b"\x02" * 32, 100, 60, 2, 500, 500, 30, 0)
    token.as_(requester).approve(market.address, 1000)
    task = m.create_task(b"\x01" * 32, b"\x02" * 32, 100, 60, 2, 500, 500, 40, 0).value
    assert market.clock_of(task).state == TaskState.BIDDING
    with pytest.raises(ContractRevert, match="requester cannot process its own task"):
        m.bid_processing(task, 10, 1)
    b = market.as_(bidder)
    with pytest.raises(ContractRevert, match="bad amount"):  # below the privacy floor
        b.bid_data(task, 63, 1)
    assert b.bid_data(task, 100, 1).value == 0
    with pytest.raises(ContractRevert, match="bidding still open"):
        m.resolve_greedy(task)
    chain.time_travel(31)
    with pytest.raises(ContractRevert, match="withdrawals closed"):
        b.withdraw_bid(task, 0, 0)
    assert market.solvency().holds
