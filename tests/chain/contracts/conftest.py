"""Titanoboa fixtures for the contract tests.

Contracts compile once per session; accounts, the token and the market are deployed once per
module; every test runs inside `boa.env.anchor()`, so it starts from the module's state, and
every test ends by checking token conservation on every market it touched:
`balanceOf(market) == Σ liabilities + total_claimable + reserve_balance`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boa
import pytest
from boa.contracts.vyper.vyper_contract import VyperContract
from eth_account.signers.local import LocalAccount

from .helpers import (
    CONTRACTS_DIR,
    MAX_UINT,
    MOCKS_DIR,
    Rig,
    Task,
    TaskParams,
    account,
    assert_conserved,
    deploy_rig,
)

FUNDS = 10**24
# every (rig, token) a test module deployed, checked for conservation after each of its tests
MARKETS: dict[str, list[tuple[Rig, Any]]] = {}


def register(module: str, rig: Rig, token: Any) -> None:
    MARKETS.setdefault(module, []).append((rig, token))


def pytest_configure(config: pytest.Config) -> None:
    # `.at()` on the market's address for its two delegate-called faces warns that the code
    # there is Market's: that is the point.
    config.addinivalue_line("filterwarnings", "ignore:casted bytecode does not match")


def _short_repr(contract: VyperContract) -> str:
    return f"<{Path(contract.compiler_data.contract_path).name} at {contract.address}>"


@pytest.fixture(scope="session", autouse=True)
def short_contract_repr() -> Iterator[None]:
    """Titanoboa renders a contract's whole storage into every revert it catches; the tests
    revert on purpose thousands of times, so contracts print as name and address only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VyperContract, "__repr__", _short_repr)
        yield


@pytest.fixture(scope="session")
def deployers() -> dict[str, Any]:
    return {
        name: boa.load_partial(str(CONTRACTS_DIR / f"{name}.vy"))
        for name in ("Market", "MarketSetup", "MarketCourt", "DevToken")
    }


@pytest.fixture(scope="session")
def token_deployer(deployers: dict[str, Any]) -> Any:
    return deployers["DevToken"]


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
def reserve() -> str:
    return boa.env.generate_address("reserve")


@pytest.fixture(scope="module")
def requester() -> str:
    return account("requester").address


@pytest.fixture(scope="module")
def owners() -> list[str]:
    return [account(f"owner{i}").address for i in range(6)]


@pytest.fixture(scope="module")
def processors() -> list[LocalAccount]:
    """Processors hold keys: they sign their roots."""
    return [account(f"processor{i}") for i in range(6)]


@pytest.fixture(scope="module")
def outsider() -> str:
    return account("outsider").address


@pytest.fixture(scope="module")
def everyone(
    requester: str, owners: list[str], processors: list[LocalAccount], outsider: str
) -> list[str]:
    return [requester, *owners, *(p.address for p in processors), outsider]


@pytest.fixture(scope="module")
def token(deployers: dict[str, Any], deployer: str) -> Any:
    with boa.env.prank(deployer):
        return deployers["DevToken"].deploy("fedmarket dev token", "FMD", 18)


def fund(token: Any, rig: Rig, accounts: list[str], minter: str) -> None:
    for a in accounts:
        with boa.env.prank(minter):
            token.mint(a, FUNDS)
        token.approve(rig.address, MAX_UINT, sender=a)


@pytest.fixture(scope="module")
def rig(
    request: pytest.FixtureRequest,
    deployers: dict[str, Any],
    token: Any,
    deployer: str,
    reserve: str,
    everyone: list[str],
) -> Rig:
    """The market, with every account holding FUNDS and having approved it without limit."""
    with boa.env.prank(deployer):
        market = deploy_rig(deployers, token, reserve)
    fund(token, market, everyone, deployer)
    register(request.module.__name__, market, token)
    return market


@pytest.fixture(autouse=True)
def isolation() -> Iterator[None]:
    with boa.env.anchor():
        yield


@pytest.fixture(autouse=True)
def conserved(request: pytest.FixtureRequest, isolation: None) -> Iterator[None]:
    """After every test (inside its anchor): no token created or lost on any market."""
    yield
    for rig, token in MARKETS.get(request.module.__name__, []):
        assert_conserved(token, rig)


# The standard book: owners 0-1 and processors 0-1 win, owner 2 and processor 2 lose.
#   data:       owner0 128 @ 3, owner1 192 @ 5 (fill 128), owner2 200 @ 7
#   processing: proc0 128 @ 2, proc1 192 @ 3 (fill 128), proc2 300 @ 9
DATA_BIDS = [(128, 3), (192, 5), (200, 7)]
PROCESSING_BIDS = [(128, 2), (192, 3), (300, 9)]


def booked(data: list[tuple[int, int]], processing: list[tuple[int, int]]) -> Callable[..., Task]:
    """A task builder ``(rig, token, requester, owners, processors, params=None) -> Task``
    whose i-th owner and processor bid the i-th (amount, price) of ``data`` / ``processing``
    (zip: fewer bidders bid fewer)."""

    def build(
        rig: Rig,
        token: Any,
        requester: str,
        owners: list[str],
        processors: list[LocalAccount],
        params: TaskParams | None = None,
    ) -> Task:
        return Task(
            rig,
            token,
            requester,
            [(o, a, p) for o, (a, p) in zip(owners, data, strict=False)],
            [(q, a, p) for q, (a, p) in zip(processors, processing, strict=False)],
            params or TaskParams(),
        )

    return build


standard = booked(DATA_BIDS, PROCESSING_BIDS)


# Four owners and four processors that all win, one 64-point block each (room for replicas:
# a processor may hold twice its fill).
#   data:       owner i 64 @ 3 + i        processing: processor i 64 @ 2 + i
FOUR_DATA = [(64, 3 + i) for i in range(4)]
FOUR_PROCESSING = [(64, 2 + i) for i in range(4)]

four = booked(FOUR_DATA, FOUR_PROCESSING)
