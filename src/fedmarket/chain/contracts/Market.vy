# pragma version ~=0.4.3
# pragma nonreentrancy off
"""
@title fedmarket Market
@license Apache-2.0
@notice One deployment holds many federated-learning tasks paid in one ERC-20.
        A requester escrows a data budget and a processing budget; data owners
        bid points, processors bid capacity per epoch and stake. The cheapest
        sufficient allocation is computed off chain and verified on chain. Each
        epoch every processor commits one Merkle root over its per-block result
        digests, signed (EIP-712) and relayed in one transaction, or sent by
        itself. Nobody is slashed on anyone's word: a processor loses its stake
        only when it cannot open the leaf it committed for a block it holds (an
        objective fault), or when every auditor of a panel drawn on chain AFTER
        the accusation agrees on a digest other than the one it opens (and the
        block's owner does not side with it). Whoever accuses posts a bond that
        pays the accused if the panel clears it. Panel slashes, late penalties
        and pay for undelivered work go to the market's reserve, so no coalition
        without the accused can profit from an accusation.
@dev    This contract holds the money and the calls every task makes many times
        (bids, roots, closes, payments); the rest (resolution, assignment, reports,
        timeouts, disputes, decoded views) runs in `MarketSetup` and `MarketCourt`,
        reached through the fallback by delegatecall on this contract's storage
        (`market_state`), so that each contract stays under EIP-170's size limit.
        Pull payments; `liabilities[task]` counts what a task still owes and every
        payment subtracts from it with checked arithmetic, so that
        `balanceOf(market) == Σ liabilities + total_claimable + reserve_balance`
        after every call. Pay for an epoch whose roots were all relayed on time is
        lazy (one counter per task), so `close_epoch` costs the same with 1 or 128
        processors. Fee-on-transfer tokens are rejected.
"""

import market_state as st

initializes: st

# the contract that runs every function this one does not have (it passes on disputes)
setup: public(immutable(address))

MAX_RETURN: constant(uint256) = 2048


@deploy
def __init__(
    token_: address, grace_seconds_: uint256, reserve_: address, draw_delay_blocks_: uint256, setup_: address
):
    """
    @param token_ The ERC-20 every task of this market is paid in.
    @param grace_seconds_ How long parties have to react: after an epoch deadline before
           anyone can end the task by timeout, after a task ends before stakes return
           (the window to open disputes), and to vote and to show a leaf.
    @param reserve_ Where panel slashes, late penalties and pay for undelivered work go;
           only this address can withdraw them.
    @param draw_delay_blocks_ A dispute opened in block N draws its panel from the hash of
           block N + this (1 on a development chain; 128 or more on Ethereum L1).
    @param setup_ The deployed `MarketSetup` (deployed with the `MarketCourt` it passes on to).
    """
    assert token_.is_contract, "market: token is not a contract"
    assert grace_seconds_ > 0 and grace_seconds_ <= st.MASK32, "market: bad grace period"
    assert reserve_ != empty(address), "market: no reserve"
    assert draw_delay_blocks_ > 0 and draw_delay_blocks_ <= 128, "market: bad draw delay"
    assert setup_.is_contract, "market: setup is not a contract"
    st.cfg = convert(token_, uint256) | (grace_seconds_ << 160) | (draw_delay_blocks_ << 192)
    st.reserve_address = reserve_
    st.domain_separator = keccak256(
        abi_encode(st.DOMAIN_TYPEHASH, keccak256("fedmarket"), keccak256("2"), chain.id, self)
    )
    setup = setup_


@external
@raw_return
def __default__() -> Bytes[MAX_RETURN]:
    """
    @notice Every other function (see `MarketSetup` and `MarketCourt`) runs by delegatecall
            on this contract's storage; reverts come back as they are.
    """
    return raw_call(setup, msg.data, max_outsize=MAX_RETURN, is_delegate_call=True)


@external
@view
def token() -> address:
    """
    @notice The ERC-20 every task is paid in.
    """
    return st._token()


@external
@view
def grace_seconds() -> uint256:
    """
    @notice The grace period (timeouts, the dispute window after a task ends, voting).
    """
    return st._grace()


@external
@view
def draw_delay_blocks() -> uint256:
    """
    @notice Blocks between a dispute's opening and the block whose hash draws its panel.
    """
    return st._delay()


@external
@view
def reserve() -> address:
    """
    @notice The address that may withdraw the reserve.
    """
    return st.reserve_address


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @notice The EIP-712 domain ("fedmarket", "2", chain id, this market) of signed roots.
    """
    return st.domain_separator


@external
@view
def num_tasks() -> uint256:
    return st.num_tasks


@external
@view
def num_disputes() -> uint256:
    return st.num_disputes


@external
@view
def reserve_balance() -> uint256:
    """
    @notice What the reserve holds now.
    """
    return st.reserve_balance


@external
@view
def total_claimable() -> uint256:
    return st.total_claimable


@external
@view
def claimable(account: address) -> uint256:
    """
    @notice What `withdraw()` would transfer to `account`.
    """
    return st.claimable[account]


@external
@view
def liabilities(task: uint256) -> uint256:
    """
    @notice What `task` still owes anyone (budgets, stakes, bonds not yet paid out).
    """
    return st.liabilities[task]


@external
@nonreentrant
def create_task(
    spec_hash: bytes32,
    public_context_hash: bytes32,
    num_points: uint256,
    epoch_seconds: uint256,
    max_epochs: uint256,
    data_budget: uint256,
    processing_budget: uint256,
    bidding_seconds: uint256,
    late_penalty_bps: uint256,
    dispute_bond_bps: uint256,
    audit_fee: uint256,
    min_fill: uint256,
    floors: st.Floors,
) -> uint256:
    """
    @notice Announce a task and escrow both budgets in one transfer.
    @dev The caller must have approved `data_budget + processing_budget`.
    @param spec_hash keccak256 of the canonical task spec.
    @param public_context_hash sha256 of the requester's public CKKS context.
    @param num_points Data points wanted (and processed per epoch).
    @param epoch_seconds Time limit of each epoch, from the model's recorded release.
    @param max_epochs Most epochs the task may run.
    @param data_budget Most the requester pays data owners, in token base units.
    @param processing_budget Most the requester pays processors over all epochs.
    @param bidding_seconds Length of the bidding window from now.
    @param late_penalty_bps Pay cut for a late root (the cut goes to the reserve).
    @param dispute_bond_bps An accuser's bond, as a share of the accused's stake (>= 10%).
    @param audit_fee What each auditor on the winning side of a dispute earns, from the bond.
    @param min_fill Fewest points in any data fill (the privacy floor, >= 64).
    @param floors Minimum processing price, stake per point and epoch, and data price (0: none).
    @return The new task's id.
    """
    assert spec_hash != empty(bytes32), "market: empty spec hash"
    assert public_context_hash != empty(bytes32), "market: empty context hash"
    assert num_points > 0 and num_points <= st.MAX_POINTS, "market: bad num_points"
    assert epoch_seconds > 0 and epoch_seconds <= st.MASK32, "market: bad epoch_seconds"
    assert max_epochs > 0 and max_epochs <= st.MAX_EPOCHS, "market: bad max_epochs"
    assert bidding_seconds > 0 and bidding_seconds <= st.MASK32, "market: bad bidding_seconds"
    assert late_penalty_bps <= st.BPS, "market: penalty above 100%"
    assert dispute_bond_bps >= st.MIN_BOND_BPS and dispute_bond_bps <= st.BPS, "market: bad dispute bond"
    assert data_budget <= st.MAX_MONEY and processing_budget <= st.MAX_MONEY, "market: budget too large"
    assert audit_fee <= st.MAX_MONEY, "market: audit fee too large"
    assert min_fill >= st.MIN_FILL and min_fill <= num_points, "market: bad min_fill"

    task: uint256 = st.num_tasks
    st.num_tasks = task + 1
    deadline: uint256 = block.timestamp + bidding_seconds
    st.terms0[task] = (
        convert(msg.sender, uint256)
        | (max_epochs << 160)
        | (late_penalty_bps << 177)
        | (dispute_bond_bps << 191)
        | (epoch_seconds << 205)
    )
    st.terms1[task] = num_points | (deadline << 48) | (bidding_seconds << 88) | (data_budget << 120)
    st.terms2[task] = processing_budget | (audit_fee << 104) | (min_fill << 208)
    st._set_floors(task, floors)
    st.terms_hash[task] = keccak256(concat(st.TERMS, spec_hash, public_context_hash))
    st.clock[task] = st.BIDDING
    st.liabilities[task] = data_budget + processing_budget
    st._pull(msg.sender, data_budget + processing_budget)
    log st.TaskCreated(
        task=task,
        requester=msg.sender,
        spec_hash=spec_hash,
        public_context_hash=public_context_hash,
        num_points=num_points,
        epoch_seconds=epoch_seconds,
        max_epochs=max_epochs,
        data_budget=data_budget,
        processing_budget=processing_budget,
        bidding_deadline=deadline,
        late_penalty_bps=late_penalty_bps,
        dispute_bond_bps=dispute_bond_bps,
        audit_fee=audit_fee,
        min_fill=min_fill,
        floors=floors,
    )
    return task


@external
@nonreentrant
def bid_data(task: uint256, points: uint256, price_per_point: uint256, evict: uint256) -> uint256:
    """
    @notice Offer `points` data points at `price_per_point` each.
    @param evict When the data side holds 128 open bids: index + 1 of a strictly pricier
           open bid this one replaces (0 otherwise).
    @return The bid's index on the data side (slots of withdrawn bids are reused).
    """
    assert points >= (st.terms2[task] >> 208) and points <= st.MAX_POINTS, "market: bad amount"
    assert price_per_point <= st.MAX_MONEY and points * price_per_point <= st.MAX_MONEY, "market: price too large"
    if msg.sender != st._requester(task):
        # the requester's own data (the own-data scenario) may be free
        assert price_per_point >= st._floors(task).min_data_price, "market: price below the floor"
    return st._place_bid(task, st.DATA, points, price_per_point, 0, 0, evict)


@external
@nonreentrant
def bid_processing(task: uint256, capacity_per_epoch: uint256, price_per_point: uint256, evict: uint256) -> uint256:
    """
    @notice Offer to process up to `capacity_per_epoch` points each epoch at
            `price_per_point`, staking capacity x max(price, the task's stake floor)
            x max_epochs (pulled from the caller now).
    @param evict As for `bid_data`.
    @return The bid's index on the processing side.
    """
    assert msg.sender != st._requester(task), "market: requester cannot process its own task"
    # A free processor would stake nothing and could not be punished.
    assert price_per_point > 0, "market: processing price must be positive"
    assert capacity_per_epoch > 0 and capacity_per_epoch <= st.MAX_POINTS, "market: bad amount"
    assert price_per_point <= st.MAX_MONEY, "market: price too large"
    f: st.Floors = st._floors(task)
    assert price_per_point >= f.min_processing_price, "market: price below the floor"
    stake: uint256 = capacity_per_epoch * max(price_per_point, f.stake_per_point_epoch) * st._max_epochs(task)
    assert stake <= st.MAX_MONEY, "market: stake too large"
    index: uint256 = st._place_bid(
        task, st.PROCESSING, capacity_per_epoch, price_per_point, stake, f.stake_per_point_epoch, evict
    )
    st.liabilities[task] += stake
    st._pull(msg.sender, stake)
    return index


@external
@nonreentrant
def withdraw_bid(task: uint256, side: uint256, index: uint256) -> uint256:
    """
    @notice Withdraw one's own open bid, before the last quarter of the bidding window
            (so nobody can empty the book at the deadline). A stake is credited back at once.
    @return The stake credited back.
    """
    assert side <= st.PROCESSING, "market: side is 0 (data) or 1 (processing)"
    assert st.clock[task] & st.MASK8 == st.BIDDING, "market: task is not taking bids"
    t1: uint256 = st.terms1[task]
    deadline: uint256 = (t1 >> 48) & st.MASK40
    seconds: uint256 = (t1 >> 88) & st.MASK32
    assert block.timestamp + seconds // 4 <= deadline, "market: withdrawals closed"
    assert index < st.MAX_BIDS, "market: no such bid"
    book: uint256 = st.book[task]
    bit: uint256 = 1 << (128 * side + index)
    assert book & bit != 0, "market: no open bid"
    k: uint256 = st._key(task, side, index)
    assert st.bidder_word[k] & st.MASK160 == convert(msg.sender, uint256), "market: not this bid's bidder"
    refund: uint256 = 0
    if side == st.PROCESSING:
        refund = st._stake_of(task, k, st.offer[k] & st.MASK48)
        st.liabilities[task] -= refund
        st._credit(msg.sender, refund)
    st.book[task] = book ^ bit
    st.offer[k] = 0
    log st.BidWithdrawn(task=task, side=side, bidder=msg.sender, bid=index, refunded=refund)
    return refund


@external
@nonreentrant
def cancel(task: uint256):
    """
    @notice The requester calls off a task before it is resolved (for example when no
            allocation fits the budget). Its budgets and every stake become collectable.
    """
    assert msg.sender == st._requester(task), "market: only the requester"
    assert st.clock[task] & st.MASK8 == st.BIDDING, "market: task is not in bidding"
    st.clock[task] = st.CANCELLED
    log st.TaskCancelled(task=task, by=msg.sender)


@external
@nonreentrant
def relay_epoch(task: uint256, epoch: uint256, signed: DynArray[st.SignedRoot, st.MAX_BIDS]):
    """
    @notice Record one signed root for EVERY active processor, in bid order, on time
            (anyone may relay; the requester does it for all in one transaction). The epoch
            is then full: each processor's pay for it follows from one task-wide counter.
    @param signed (root, v, r, s): the processor's EIP-712 signature of
           EpochRoot(task, epoch, root) in the domain ("fedmarket", "2", chain, market).
    """
    c: st.Clock = st._load(task)
    assert c.state == st.TRAINING, "market: task is not training"
    assert epoch == c.epoch, "market: not the current epoch"
    assert block.timestamp <= c.deadline, "market: late roots go one by one"
    assert c.submitted == 0, "market: roots already recorded, relay the rest one by one"
    active: uint256 = st.procs[task] & st.MASK128
    remaining: uint256 = active
    acc: bytes32 = st.epoch_acc[task]
    roots: DynArray[bytes32, st.MAX_BIDS] = []
    for s: st.SignedRoot in signed:
        assert remaining != 0, "market: more roots than active processors"
        i: uint256 = st._low_bit(remaining)
        remaining ^= 1 << i
        assert s.root != empty(bytes32), "market: empty root"
        signer: address = ecrecover(st._root_digest(task, epoch, s.root), s.v, s.r, s.s)
        assert signer != empty(address) and convert(signer, uint256) == st.bidder_word[st._key(task, st.PROCESSING, i)] & st.MASK160, (
            "market: bad root signature"
        )
        acc = keccak256(concat(st.EPOCH_ROOT, acc, convert(i, bytes32), s.root))
        roots.append(s.root)
    assert remaining == 0, "market: an active processor is missing"
    st.epoch_acc[task] = acc
    c.flags |= st.FULL
    c.submitted = c.active
    st._store(task, c)
    log st.EpochRoots(task=task, epoch=epoch, processors=active, roots=roots)


@external
@nonreentrant
def submit_root(task: uint256, epoch: uint256, processor: uint256, signed: st.SignedRoot):
    """
    @notice Record one processor's root: sent by the processor itself (the signature is
            then ignored) or by anyone with its signature. On time iff at or before the
            deadline; late, the pay is cut by the task's penalty, which goes to the reserve.
    """
    c: st.Clock = st._load(task)
    assert c.state == st.TRAINING, "market: task is not training"
    assert epoch == c.epoch, "market: not the current epoch"
    assert c.flags & st.FULL == 0, "market: the epoch was relayed"
    assert signed.root != empty(bytes32), "market: empty root"
    assert processor < st.MAX_BIDS, "market: no such bid"
    k: uint256 = st._key(task, st.PROCESSING, processor)
    who: uint256 = st.bidder_word[k] & st.MASK160
    if convert(msg.sender, uint256) != who:
        signer: address = ecrecover(st._root_digest(task, epoch, signed.root), signed.v, signed.r, signed.s)
        assert signer != empty(address) and convert(signer, uint256) == who, "market: bad root signature"
    o: uint256 = st.offer[k]
    assert st._oflags(o) & (st.WINNER | st.SLASHED) == st.WINNER, "market: not an active processor"
    pk: uint256 = (task << 7) | processor
    ps: uint256 = st.pstate[pk]
    assert (ps >> 8) & st.MASK32 != epoch + 1, "market: root already submitted"
    pay: uint256 = st._epoch_pay(o, ps)
    paid: uint256 = pay
    flags: uint256 = 0
    on_time: bool = block.timestamp <= c.deadline
    if not on_time:
        paid = st._late_pay(pay, st._penalty(task))
        flags = st.LATE
    st.pstate[pk] = st._pack_ps(flags, epoch + 1, (ps >> 40) & st.MASK48, (ps >> 88) + paid)
    st.epoch_acc[task] = keccak256(concat(st.EPOCH_ROOT, st.epoch_acc[task], convert(processor, bytes32), signed.root))
    c.submitted += 1
    c.spent += pay
    st._store(task, c)
    log st.RootSubmitted(task=task, epoch=epoch, processor=processor, root=signed.root, on_time=on_time, pay=paid)
    st._to_reserve(task, pay - paid, st.R_LATE)


@external
@nonreentrant
def close_epoch(task: uint256, epoch: uint256, next_model_digest: bytes32, go_on: bool, not_received: uint256):
    """
    @notice The requester closes the current epoch (before its deadline only once every
            active processor's root is recorded) and releases the next epoch's model,
            whose digest is recorded and from which the next deadline runs. Nobody is
            slashed here.
    @param next_model_digest sha256 of the next epoch's encrypted model (ignored when stopping).
    @param go_on Whether to run another epoch.
    @param not_received Processors (bitmap by bid index) whose results the requester did not
           receive: their pay for this epoch goes to the reserve, never back to it.
    """
    assert msg.sender == st._requester(task), "market: only the requester"
    c: st.Clock = st._load(task)
    assert c.state == st.TRAINING, "market: task is not training"
    assert epoch == c.epoch, "market: not the current epoch"
    assert c.submitted == c.active or block.timestamp > c.deadline, "market: epoch still running"
    if not_received != 0:
        st._mark_not_received(task, epoch, c, not_received)
    c = st._close(task, c)
    next_deadline: uint256 = 0
    if not go_on or epoch + 1 >= st._max_epochs(task) or c.active == 0:
        c.state = st.FINISHED
        c.deadline = block.timestamp
        log st.TaskFinished(task=task, epochs_closed=epoch + 1, timed_out=False)
    else:
        assert next_model_digest != empty(bytes32), "market: empty model digest"
        c.epoch = epoch + 1
        c.submitted = 0
        c.flags &= ~st.FULL
        c.deadline = block.timestamp + st._epoch_seconds(task)
        next_deadline = c.deadline
        st.epoch_acc[task] = keccak256(
            concat(st.EPOCH_START, convert(task, bytes32), convert(epoch + 1, bytes32), next_model_digest)
        )
        log st.ModelReleased(task=task, epoch=epoch + 1, model_digest=next_model_digest, deadline=next_deadline)
    st._store(task, c)
    log st.EpochClosed(task=task, epoch=epoch, go_on=c.state == st.TRAINING, not_received=not_received, next_deadline=next_deadline)


@external
@nonreentrant
def collect(task: uint256, side: uint256, index: uint256) -> uint256:
    """
    @notice Transfer to its bidder what one bid can collect now: an owner's pay after the
            first close; a processor's pay for closed epochs, the stake above its fill (all
            of a losing stake) once training starts, and its stake once the task is over,
            the grace period has passed and no dispute against it is open.
    @return The amount transferred.
    """
    owed: uint256 = 0
    who: address = empty(address)
    owed, who = st._settle(task, side, index)
    assert who == msg.sender, "market: not this bid's bidder"
    log st.Collected(task=task, account=who, amount=owed)
    st._push(who, owed)
    return owed


@external
@nonreentrant
def claim(task: uint256, side: uint256, index: uint256) -> uint256:
    """
    @notice Credit one bid's bidder (withdrawable with `withdraw`) with what `collect`
            would transfer. Anyone may call it; it only ever credits the rightful bidder.
    @return The amount credited.
    """
    owed: uint256 = 0
    who: address = empty(address)
    owed, who = st._settle(task, side, index)
    st._credit(who, owed)
    log st.Claimed(task=task, account=who, amount=owed)
    return owed


@external
@nonreentrant
def collect_requester(task: uint256) -> uint256:
    """
    @notice Transfer to the requester what is left of its budgets once the task is over
            (all of them if it was cancelled): the data budget less what committed owners
            cost, the processing budget less the pay processors accrued.
    @return The amount transferred.
    """
    requester: address = st._requester(task)
    assert msg.sender == requester, "market: only the requester"
    owed: uint256 = st._requester_owed(task)
    assert owed > 0, "market: nothing owed"
    c: st.Clock = st._load(task)
    c.flags |= st.REQUESTER_PAID
    st._store(task, c)
    st.liabilities[task] -= owed
    log st.Collected(task=task, account=requester, amount=owed)
    st._push(requester, owed)
    return owed


@external
@nonreentrant
def withdraw() -> uint256:
    """
    @notice Transfer everything credited to the caller (refunded stakes, bonds, fees,
            shares of slashes, claims).
    @return The amount transferred.
    """
    amount: uint256 = st.claimable[msg.sender]
    assert amount > 0, "market: nothing to withdraw"
    st.claimable[msg.sender] = 0
    st.total_claimable -= amount
    log st.Withdrawn(account=msg.sender, amount=amount)
    st._push(msg.sender, amount)
    return amount


@external
@nonreentrant
def withdraw_reserve() -> uint256:
    """
    @notice The reserve's address takes what panel slashes, late penalties, "not received"
            marks and undelivered data have put in the reserve.
    @return The amount transferred.
    """
    assert msg.sender == st.reserve_address, "market: only the reserve"
    amount: uint256 = st.reserve_balance
    assert amount > 0, "market: nothing to withdraw"
    st.reserve_balance = 0
    log st.ReserveWithdrawn(to=msg.sender, amount=amount)
    st._push(msg.sender, amount)
    return amount


@external
@view
def owed(task: uint256, side: uint256, index: uint256) -> uint256:
    """
    @notice What `collect(task, side, index)` would transfer now (0 if nothing).
    """
    if side > st.PROCESSING or index >= st.MAX_BIDS:
        return 0
    owed: uint256 = 0
    o: uint256 = 0
    ps: uint256 = 0
    owed, o, ps = st._owed(task, side, index)
    return owed


@external
@view
def requester_owed(task: uint256) -> uint256:
    """
    @notice What `collect_requester(task)` would transfer now.
    """
    return st._requester_owed(task)


@external
@view
def clock_of(task: uint256) -> st.Clock:
    """
    @notice The task's state, current epoch, deadline (the finish time once over), roots
            recorded this epoch, active processors, flags (1 first epoch closed, 2 epoch
            relayed in full, 4 requester paid), full epochs closed and pay accrued.
    """
    return st._load(task)
