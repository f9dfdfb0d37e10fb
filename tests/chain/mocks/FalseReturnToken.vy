# pragma version ~=0.4.3
"""
@title FalseReturnToken
@license Apache-2.0
@notice Test-only ERC-20 that signals failure by returning false instead of
        reverting: on a short balance or allowance, and for every transfer
        while `failing` is set. Nothing moves when it returns false.
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
failing: public(bool)


@internal
def _transfer(sender: address, receiver: address, amount: uint256) -> bool:
    if self.failing or self.balanceOf[sender] < amount:
        return False
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)
    return True


@external
def transfer(receiver: address, amount: uint256) -> bool:
    return self._transfer(msg.sender, receiver, amount)


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    if self.allowance[sender][msg.sender] < amount:
        return False
    if not self._transfer(sender, receiver, amount):
        return False
    self.allowance[sender][msg.sender] -= amount
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def set_failing(failing_: bool):
    """
    @notice Make every transfer return false (anyone; tests only).
    """
    self.failing = failing_


@external
def mint(receiver: address, amount: uint256):
    self.balanceOf[receiver] += amount
    self.totalSupply += amount
    log Transfer(sender=empty(address), receiver=receiver, value=amount)
