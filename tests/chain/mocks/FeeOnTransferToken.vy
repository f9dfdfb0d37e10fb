# pragma version ~=0.4.3
"""
@title FeeOnTransferToken
@license Apache-2.0
@notice Test-only ERC-20 that burns `fee_bps` of every transfer, so the
        receiver gets less than the amount sent. The market must refuse it.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256


event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256


balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
totalSupply: public(uint256)
fee_bps: public(uint256)


@deploy
def __init__(fee_bps_: uint256):
    self.fee_bps = fee_bps_


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert self.balanceOf[sender] >= amount, "fee token: insufficient balance"
    fee: uint256 = amount * self.fee_bps // 10_000
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount - fee
    self.totalSupply -= fee
    log Transfer(sender=sender, receiver=receiver, value=amount - fee)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    assert self.allowance[sender][msg.sender] >= amount, "fee token: insufficient allowance"
    self.allowance[sender][msg.sender] -= amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def set_fee(fee_bps_: uint256):
    """
    @notice Change the fee (anyone; tests switch it on after setting a task up).
    """
    self.fee_bps = fee_bps_


@external
def mint(receiver: address, amount: uint256):
    self.balanceOf[receiver] += amount
    self.totalSupply += amount
    log Transfer(sender=empty(address), receiver=receiver, value=amount)
