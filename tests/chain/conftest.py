"""Fixtures for the client, backend and demo tests: a chain (embedded, or a real anvil), a
deployed market and token, and named parties.

The anvil node is started once per test session on a free loopback port (each xdist worker
that runs anvil tests gets its own; ``xdist_group("anvil")`` keeps them on one worker) and
stopped at the end. A missing anvil is a failure, not a skip: ``make test`` installs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount

from fedmarket.chain import Anvil, Chain, ChainError, MarketClient, TokenClient, deploy, embedded

GRACE_SECONDS = 3_600
ANVIL = [pytest.mark.anvil, pytest.mark.xdist_group("anvil")]


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[Anvil]:
    try:
        node = Anvil(accounts=20).start()
    except ChainError as exc:
        pytest.fail(f"the anvil tests need anvil: {exc}", pytrace=False)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=ANVIL)])
def chain(request: pytest.FixtureRequest) -> Chain:
    """A fresh embedded chain, or a connection to the session's anvil node."""
    if request.param == "embedded":
        return embedded(num_accounts=20)
    node: Anvil = request.getfixturevalue("anvil_node")
    return node.chain()


@dataclass(frozen=True)
class Parties:
    deployer: LocalAccount
    requester: LocalAccount
    owners: tuple[LocalAccount, ...]
    processors: tuple[LocalAccount, ...]


@pytest.fixture
def parties(chain: Chain) -> Parties:
    a = chain.accounts
    return Parties(deployer=a[0], requester=a[1], owners=a[2:5], processors=a[5:10])


@pytest.fixture
def deployed(chain: Chain, parties: Parties) -> tuple[MarketClient, TokenClient]:
    """A fresh DevToken and Market (on anvil too: a new token means every balance starts at 0)."""
    return deploy(chain.w3, parties.deployer, GRACE_SECONDS)


@pytest.fixture
def market(deployed: tuple[MarketClient, TokenClient]) -> MarketClient:
    return deployed[0]


@pytest.fixture
def token(deployed: tuple[MarketClient, TokenClient]) -> TokenClient:
    return deployed[1]
