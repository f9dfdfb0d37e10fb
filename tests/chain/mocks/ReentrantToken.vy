# pragma version ~=0.4.3
"""
@title ReentrantToken
@license Apache-2.0
@notice Test-only ERC-20 that, once armed, calls back into a target contract
        from inside `transfer` or `transferFrom` (before moving any balance)
        and records whether that re-entrant call succeeded. It can also act
        as a market participant itself through `execute`.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256


event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256


event Reentered:
    target: indexed(address)
    success: bool


MAX_PAYLOAD: constant(uint256) = 4 + 32 * 8

balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
totalSupply: public(uint256)

target: public(address)
payload: public(Bytes[MAX_PAYLOAD])
armed: public(bool)
attempts: public(uint256)
successes: public(uint256)


@external
def arm(target_: address, payload_: Bytes[MAX_PAYLOAD]):
    """
    @notice Re-enter `target_` with `payload_` on the next transfer (once).
    """
    self.target = target_
    self.payload = payload_
    self.armed = True


@internal
def _reenter():
    if not self.armed:
        return
    # One shot: a successful re-entry must not recurse without end.
    self.armed = False
    self.attempts += 1
    ok: bool = raw_call(self.target, self.payload, revert_on_failure=False)
    if ok:
        self.successes += 1
    log Reentered(target=self.target, success=ok)


@external
def execute(target_: address, payload_: Bytes[MAX_PAYLOAD]):
    """
    @notice Call `target_` as this contract (lets the token bid and withdraw
            in the market like any account). Reverts if the call does.
    """
    raw_call(target_, payload_)


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    self._reenter()
    assert self.balanceOf[sender] >= amount, "reentrant token: insufficient balance"
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    assert self.allowance[sender][msg.sender] >= amount, "reentrant token: insufficient allowance"
    self.allowance[sender][msg.sender] -= amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def approve_from_self(spender: address, amount: uint256):
    """
    @notice Let `spender` move this contract's own tokens (for `execute` bids).
    """
    self.allowance[self][spender] = amount
    log Approval(owner=self, spender=spender, value=amount)


@external
def mint(receiver: address, amount: uint256):
    self.balanceOf[receiver] += amount
    self.totalSupply += amount
    log Transfer(sender=empty(address), receiver=receiver, value=amount)
