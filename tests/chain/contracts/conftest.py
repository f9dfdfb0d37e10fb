"""Titanoboa fixtures for the contract tests.

Contracts compile once per session; accounts, the token and the market are deployed once per
module; every test runs inside `boa.env.anchor()`, so it starts from the module's state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boa
import pytest
from boa.contracts.vyper.vyper_contract import VyperContract

from .helpers import (
    ASSIGNMENT_HASH,
    CONTRACTS_DIR,
    GRACE,
    MAX_UINT,
    MOCKS_DIR,
    TaskParams,
    create_task,
    resolve_greedy,
)

FUNDS = 10**24

# The standard book: owners 0-1 and processors 0-1 win, owner 2 and processor 2 lose.
#   data:       owner0 6 @ 3, owner1 6 @ 5 (fill 4), owner2 10 @ 7
#   processing: proc0 4 @ 2, proc1 8 @ 3 (fill 6), proc2 10 @ 9
STANDARD = TaskParams()
DATA_BIDS = [(6, 3), (6, 5), (10, 7)]
PROCESSING_BIDS = [(4, 2), (8, 3), (10, 9)]


def _short_repr(contract: VyperContract) -> str:
    return f"<{Path(contract.compiler_data.contract_path).name} at {contract.address}>"


@pytest.fixture(scope="session", autouse=True)
def short_contract_repr() -> Iterator[None]:
    """Titanoboa renders a contract's whole storage into every revert it catches, which costs
    ~0.2 s once a market holds a few hundred bids; the tests revert on purpose thousands of
    times, so contracts print as name and address only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VyperContract, "__repr__", _short_repr)
        yield


@pytest.fixture(scope="session")
def market_deployer() -> Any:
    return boa.load_partial(str(CONTRACTS_DIR / "Market.vy"))


@pytest.fixture(scope="session")
def token_deployer() -> Any:
    return boa.load_partial(str(CONTRACTS_DIR / "DevToken.vy"))


@pytest.fixture(scope="session")
def mock_deployer() -> Any:
    """`mock_deployer("FeeOnTransferToken")` is the deployer of tests/chain/mocks/<name>.vy."""
    cache: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in cache:
            cache[name] = boa.load_partial(str(MOCKS_DIR / f"{name}.vy"))
        return cache[name]

    return load


@pytest.fixture(scope="module")
def deployer() -> str:
    return boa.env.generate_address("deployer")


@pytest.fixture(scope="module")
def requester() -> str:
    return boa.env.generate_address("requester")


@pytest.fixture(scope="module")
def owners() -> list[str]:
    return [boa.env.generate_address(f"owner{i}") for i in range(4)]


@pytest.fixture(scope="module")
def processors() -> list[str]:
    return [boa.env.generate_address(f"processor{i}") for i in range(4)]


@pytest.fixture(scope="module")
def outsider() -> str:
    return boa.env.generate_address("outsider")


@pytest.fixture(scope="module")
def everyone(requester: str, owners: list[str], processors: list[str], outsider: str) -> list[str]:
    return [requester, *owners, *processors, outsider]


@pytest.fixture(scope="module")
def token(token_deployer: Any, deployer: str) -> Any:
    with boa.env.prank(deployer):
        return token_deployer.deploy("fedmarket dev token", "FMD", 18)


@pytest.fixture(scope="module")
def market(market_deployer: Any, token: Any, deployer: str, everyone: list[str]) -> Any:
    """The market, with every account holding FUNDS and having approved it without limit."""
    with boa.env.prank(deployer):
        market = market_deployer.deploy(token.address, GRACE)
        for account in everyone:
            token.mint(account, FUNDS)
    for account in everyone:
        token.approve(market, MAX_UINT, sender=account)
    return market


@pytest.fixture(autouse=True)
def isolation() -> Iterator[None]:
    with boa.env.anchor():
        yield


@dataclass(frozen=True)
class Standard:
    """The standard task of conftest's book, and who is who in it."""

    task: int
    requester: str
    owners: list[str]
    processors: list[str]


def place_standard_bids(market: Any, task: int, owners: list[str], processors: list[str]) -> None:
    for owner, (points, price) in zip(owners, DATA_BIDS, strict=False):
        market.bid_data(task, points, price, sender=owner)
    for processor, (capacity, price) in zip(processors, PROCESSING_BIDS, strict=False):
        market.bid_processing(task, capacity, price, sender=processor)


@pytest.fixture
def bidding(market: Any, requester: str, owners: list[str], processors: list[str]) -> Standard:
    """The standard task in its bidding window, with the standard book placed."""
    task = create_task(market, requester, STANDARD)
    place_standard_bids(market, task, owners, processors)
    return Standard(task, requester, owners[:3], processors[:3])


@pytest.fixture
def assigning(market: Any, bidding: Standard) -> Standard:
    """The standard task resolved, waiting for the assignment."""
    resolve_greedy(market, bidding.task, bidding.requester)
    return bidding


@pytest.fixture
def training(market: Any, assigning: Standard) -> Standard:
    """The standard task in epoch 0."""
    market.commit_assignment(assigning.task, ASSIGNMENT_HASH, sender=assigning.requester)
    return assigning
