# pragma version ~=0.4.3
"""
@title fedmarket DevToken
@license Apache-2.0
@notice A plain ERC-20 with minting, for development chains and tests. The
        deployer is the minter; anyone can hold, transfer and approve.
"""

from ethereum.ercs import IERC20

implements: IERC20

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256


event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256


event MinterChanged:
    minter: indexed(address)


name: public(String[32])
symbol: public(String[8])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
minter: public(address)


@deploy
def __init__(name_: String[32], symbol_: String[8], decimals_: uint8):
    """
    @param name_ Token name.
    @param symbol_ Token symbol.
    @param decimals_ Display decimals (amounts are always integers of base units).
    """
    self.name = name_
    self.symbol = symbol_
    self.decimals = decimals_
    self.minter = msg.sender
    log MinterChanged(minter=msg.sender)


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "devtoken: transfer to the zero address"
    assert self.balanceOf[sender] >= amount, "devtoken: insufficient balance"
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    """
    @notice Move `amount` from the caller to `receiver`.
    """
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    """
    @notice Move `amount` from `sender` to `receiver` using the caller's allowance.
    """
    allowed: uint256 = self.allowance[sender][msg.sender]
    assert allowed >= amount, "devtoken: insufficient allowance"
    if allowed != max_value(uint256):
        self.allowance[sender][msg.sender] = allowed - amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    """
    @notice Let `spender` move up to `amount` of the caller's tokens.
    """
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def mint(receiver: address, amount: uint256):
    """
    @notice Create `amount` new tokens for `receiver` (minter only).
    """
    assert msg.sender == self.minter, "devtoken: only the minter"
    assert receiver != empty(address), "devtoken: mint to the zero address"
    self.totalSupply += amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=empty(address), receiver=receiver, value=amount)


@external
def set_minter(minter_: address):
    """
    @notice Hand the minter role to `minter_` (minter only).
    """
    assert msg.sender == self.minter, "devtoken: only the minter"
    self.minter = minter_
    log MinterChanged(minter=minter_)
