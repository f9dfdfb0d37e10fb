"""DevToken: the mintable ERC-20 of development chains."""

from __future__ import annotations

from typing import Any

import boa
import pytest

from .helpers import MAX_UINT

ZERO = "0x0000000000000000000000000000000000000000"


@pytest.fixture(scope="module")
def alice() -> str:
    return boa.env.generate_address("alice")


@pytest.fixture(scope="module")
def bob() -> str:
    return boa.env.generate_address("bob")


@pytest.fixture(scope="module")
def dev(token_deployer: Any, deployer: str, alice: str) -> Any:
    with boa.env.prank(deployer):
        token = token_deployer.deploy("Dev", "DEV", 6)
        token.mint(alice, 1_000)
    return token


def test_deploy_sets_metadata_and_makes_the_deployer_minter(dev: Any, deployer: str) -> None:
    assert dev.name() == "Dev"
    assert dev.symbol() == "DEV"
    assert dev.decimals() == 6
    assert dev.minter() == deployer
    assert dev.totalSupply() == 1_000


def test_minter_mints_to_anyone(dev: Any, deployer: str, bob: str) -> None:
    dev.mint(bob, 5, sender=deployer)
    (transfer,) = dev.get_logs()
    assert dev.balanceOf(bob) == 5
    assert dev.totalSupply() == 1_005
    assert (transfer.sender, transfer.receiver, transfer.value) == (ZERO, bob, 5)


def test_only_the_minter_mints(dev: Any, alice: str) -> None:
    with boa.reverts("devtoken: only the minter"):
        dev.mint(alice, 1, sender=alice)


def test_mint_to_the_zero_address_reverts(dev: Any, deployer: str) -> None:
    with boa.reverts("devtoken: mint to the zero address"):
        dev.mint(ZERO, 1, sender=deployer)


def test_set_minter_hands_the_role_over(dev: Any, deployer: str, alice: str, bob: str) -> None:
    dev.set_minter(alice, sender=deployer)
    assert dev.minter() == alice
    dev.mint(bob, 7, sender=alice)
    with boa.reverts("devtoken: only the minter"):
        dev.mint(bob, 7, sender=deployer)


def test_only_the_minter_sets_the_minter(dev: Any, alice: str) -> None:
    with boa.reverts("devtoken: only the minter"):
        dev.set_minter(alice, sender=alice)


def test_transfer_moves_balance_and_logs(dev: Any, alice: str, bob: str) -> None:
    assert dev.transfer(bob, 300, sender=alice) is True
    (transfer,) = dev.get_logs()
    assert (dev.balanceOf(alice), dev.balanceOf(bob)) == (700, 300)
    assert (transfer.sender, transfer.receiver, transfer.value) == (alice, bob, 300)
    assert dev.totalSupply() == 1_000


def test_transfer_of_more_than_the_balance_reverts(dev: Any, alice: str, bob: str) -> None:
    with boa.reverts("devtoken: insufficient balance"):
        dev.transfer(bob, 1_001, sender=alice)


def test_transfer_to_the_zero_address_reverts(dev: Any, alice: str) -> None:
    with boa.reverts("devtoken: transfer to the zero address"):
        dev.transfer(ZERO, 1, sender=alice)


def test_approve_sets_allowance_and_logs(dev: Any, alice: str, bob: str) -> None:
    assert dev.approve(bob, 50, sender=alice) is True
    (approval,) = dev.get_logs()
    assert dev.allowance(alice, bob) == 50
    assert (approval.owner, approval.spender, approval.value) == (alice, bob, 50)


def test_transfer_from_spends_allowance(dev: Any, alice: str, bob: str) -> None:
    dev.approve(bob, 50, sender=alice)
    assert dev.transferFrom(alice, bob, 20, sender=bob) is True
    assert dev.allowance(alice, bob) == 30
    assert dev.balanceOf(bob) == 20


def test_transfer_from_beyond_allowance_reverts(dev: Any, alice: str, bob: str) -> None:
    dev.approve(bob, 10, sender=alice)
    with boa.reverts("devtoken: insufficient allowance"):
        dev.transferFrom(alice, bob, 11, sender=bob)


def test_transfer_from_beyond_balance_reverts(dev: Any, alice: str, bob: str) -> None:
    dev.approve(bob, MAX_UINT, sender=alice)
    with boa.reverts("devtoken: insufficient balance"):
        dev.transferFrom(alice, bob, 1_001, sender=bob)


def test_infinite_allowance_is_not_spent(dev: Any, alice: str, bob: str) -> None:
    dev.approve(bob, MAX_UINT, sender=alice)
    dev.transferFrom(alice, bob, 400, sender=bob)
    assert dev.allowance(alice, bob) == MAX_UINT
