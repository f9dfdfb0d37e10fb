# pragma version ~=0.4.3
# pragma nonreentrancy off
"""
@title fedmarket MarketSetup
@license Apache-2.0
@notice Part of the market (see `Market`): resolution, reopening, data and assignment
        commitments, undelivered reports, timeouts and the decoded views. It runs only
        by delegatecall from `Market`, on its storage; called directly it has no tasks.
        It passes what it does not have on to `MarketCourt` the same way.
"""

import market_state as st

initializes: st

MAX_RETURN: constant(uint256) = 2048

# the contract that runs the disputes
court: public(immutable(address))


@deploy
def __init__(court_: address):
    """
    @param court_ The deployed `MarketCourt`.
    """
    assert court_.is_contract, "market: court is not a contract"
    court = court_


@external
@raw_return
def __default__() -> Bytes[MAX_RETURN]:
    return raw_call(court, msg.data, max_outsize=MAX_RETURN, is_delegate_call=True)


@external
@nonreentrant
def resolve(task: uint256, data_fills: DynArray[st.Fill, st.MAX_BIDS], processing_fills: DynArray[st.Fill, st.MAX_BIDS]):
    """
    @notice Settle the bidding with the cheapest sufficient allocation, which anyone may
            compute off chain (fedmarket.chain.allocation) and submit after the bidding
            deadline; it is verified here in O(bids).
    @param data_fills (bid index, points) per winning data bid, cheapest first.
    @param processing_fills (bid index, points per epoch) per winning processor, cheapest first.
    """
    c: st.Clock = st._load(task)
    assert c.state == st.BIDDING, "market: task is not in bidding"
    t1: uint256 = st.terms1[task]
    assert block.timestamp > (t1 >> 48) & st.MASK40, "market: bidding still open"
    num_points: uint256 = t1 & st.MASK48
    t2: uint256 = st.terms2[task]
    data_cost: uint256 = 0
    data_points: uint256 = 0
    data_winners: uint256 = 0
    data_cost, data_points, data_winners = st._verify_side(task, st.DATA, data_fills, num_points, t2 >> 208)
    assert data_cost <= t1 >> 120, "market: over data budget"
    epoch_cost: uint256 = 0
    points: uint256 = 0
    winners: uint256 = 0
    epoch_cost, points, winners = st._verify_side(task, st.PROCESSING, processing_fills, num_points, 0)
    assert epoch_cost * st._max_epochs(task) <= t2 & st.MASK104, "market: over processing budget"

    st.book[task] = data_winners | (winners << 128)
    st.procs[task] = winners | (epoch_cost << 128)
    c.state = st.ASSIGNING
    c.active = len(processing_fills)
    c.deadline = block.timestamp + st._epoch_seconds(task)
    st._store(task, c)
    log st.TaskResolved(
        task=task,
        data_cost=data_cost,
        processing_cost_per_epoch=epoch_cost,
        data_points=data_points,
        data_winners=len(data_fills),
        processing_winners=len(processing_fills),
        assignment_deadline=c.deadline,
    )


@external
@nonreentrant
def reopen(task: uint256, floors: st.Floors, bidding_seconds: uint256):
    """
    @notice The requester reopens bidding after resolution (before the assignment) with
            floors no lower than before: bids below the new floors are refunded, every
            fill is cleared, and the book is resolved again later. Stricter floors can only
            exclude cheaper bids, so this removes a degenerate winning set (dust bids) and
            can never fish for lower prices.
    """
    assert msg.sender == st._requester(task), "market: only the requester"
    c: st.Clock = st._load(task)
    assert c.state == st.ASSIGNING, "market: task is not awaiting an assignment"
    assert bidding_seconds > 0 and bidding_seconds <= st.MASK32, "market: bad bidding_seconds"
    old: st.Floors = st._floors(task)
    assert (
        floors.min_processing_price >= old.min_processing_price
        and floors.stake_per_point_epoch >= old.stake_per_point_epoch
        and floors.min_data_price >= old.min_data_price
    ), "market: floors can only rise"
    st._set_floors(task, floors)
    requester: address = msg.sender
    book: uint256 = 0
    refunded: uint256 = 0
    for side: uint256 in range(2):
        for i: uint256 in range(st.MAX_BIDS):
            k: uint256 = st._key(task, side, i)
            o: uint256 = st.offer[k]
            if o & st.MASK48 == 0:
                continue
            price: uint256 = st._price(o)
            b: uint256 = st.bidder_word[k]
            below: bool = False
            if side == st.DATA:
                below = price < floors.min_data_price and convert(b & st.MASK160, address) != requester
            else:
                below = price < floors.min_processing_price or max(price, b >> 160) < floors.stake_per_point_epoch
            if below:
                refund: uint256 = 0
                if side == st.PROCESSING:
                    refund = st._stake_of(task, k, o & st.MASK48)
                    st.liabilities[task] -= refund
                    st._credit(convert(b & st.MASK160, address), refund)
                st.offer[k] = 0
                refunded += 1
                log st.BidWithdrawn(task=task, side=side, bidder=convert(b & st.MASK160, address), bid=i, refunded=refund)
            else:
                st.offer[k] = o & (2**148 - 1)  # amount and price only: no fill, no flags
                book |= 1 << (128 * side + i)
    st.book[task] = book
    st.procs[task] = 0
    st.data_money[task] = 0
    deadline: uint256 = block.timestamp + bidding_seconds
    t1: uint256 = st.terms1[task]
    st.terms1[task] = (t1 & (st.MASK48 | (st.MASK104 << 120))) | (deadline << 48) | (bidding_seconds << 88)
    c.state = st.BIDDING
    c.active = 0
    c.deadline = 0
    st._store(task, c)
    log st.TaskReopened(task=task, bidding_deadline=deadline, floors=floors, refunded_bids=refunded)


@external
@nonreentrant
def commit_data(task: uint256, owner_bid: uint256, block_sizes: DynArray[uint256, st.MAX_BLOCKS], digests: DynArray[bytes32, st.MAX_BLOCKS]):
    """
    @notice A winning data owner publishes its manifest (block sizes and sha256 digests of
            its encrypted blocks) in the event log, before the assignment: processors,
            auditors and the requester read it from the chain. Only owners who commit are
            paid, and only for points no holder reports undelivered.
    """
    assert st.clock[task] & st.MASK8 == st.ASSIGNING, "market: data commitments are closed"
    assert owner_bid < st.MAX_BIDS, "market: no such bid"
    k: uint256 = st._key(task, st.DATA, owner_bid)
    assert st.bidder_word[k] & st.MASK160 == convert(msg.sender, uint256), "market: not this bid's bidder"
    o: uint256 = st.offer[k]
    flags: uint256 = st._oflags(o)
    assert flags & st.WINNER != 0, "market: not a winning data owner"
    assert flags & st.COMMITTED == 0, "market: data already committed"
    assert len(block_sizes) == len(digests) and len(digests) > 0, "market: bad manifest"
    total: uint256 = 0
    for s: uint256 in block_sizes:
        assert s > 0, "market: empty block"
        total += s
    fill: uint256 = st._fill(o)
    assert total == fill, "market: manifest does not sum to the fill"
    st.offer[k] = st._with_flags(o, flags | st.COMMITTED)
    st.data_money[task] += fill * st._price(o)
    log st.DataCommitted(task=task, owner=msg.sender, bid=owner_bid, block_sizes=block_sizes, digests=digests)


@external
@nonreentrant
def commit_assignment(task: uint256, records: DynArray[st.Record, st.MAX_BIDS], model_digest: bytes32):
    """
    @notice The requester commits the assignment (one record per processor: its entry
            count, its points and the root of its entries) and the digest of epoch 0's
            model. A processor's points may not exceed MAX_LOAD (2) x its fill. The model's release
            starts epoch 0: its deadline is one epoch for delivery plus one for the work.
    """
    assert msg.sender == st._requester(task), "market: only the requester"
    c: st.Clock = st._load(task)
    assert c.state == st.ASSIGNING, "market: task is not awaiting an assignment"
    assert model_digest != empty(bytes32), "market: empty model digest"
    active: uint256 = st.procs[task] & st.MASK128
    seen: uint256 = 0
    leaves: bytes32[st.MAX_BIDS] = empty(bytes32[st.MAX_BIDS])
    processors: DynArray[uint256, st.MAX_BIDS] = []
    counts: DynArray[uint256, st.MAX_BIDS] = []
    points: DynArray[uint256, st.MAX_BIDS] = []
    subroots: DynArray[bytes32, st.MAX_BIDS] = []
    n: uint256 = 0
    for r: st.Record in records:
        assert r.processor < st.MAX_BIDS and active & (1 << r.processor) != 0, "market: record of no winning processor"
        assert seen & (1 << r.processor) == 0, "market: two records for one processor"
        seen |= 1 << r.processor
        assert r.count > 0 and r.count <= 2**st.MAX_DEPTH, "market: bad entry count"
        # a processor holds at most MAX_LOAD x its fill: room for replicas and for blocks
        # that do not pack exactly, a bound on what a requester's own processor can read
        assert r.points <= st.MAX_LOAD * st._fill(st.offer[st._key(task, st.PROCESSING, r.processor)]), (
            "market: assignment over the processor's load"
        )
        leaves[n] = st._record_leaf(task, r)
        n += 1
        processors.append(r.processor)
        counts.append(r.count)
        points.append(r.points)
        subroots.append(r.subroot)
    # the indexed tree over the record leaves, padded with empty leaves to a power of two
    width: uint256 = 1
    for i: uint256 in range(8):
        if width >= n:
            break
        width <<= 1
    for level: uint256 in range(7):
        if width <= 1:
            break
        half: uint256 = width // 2
        for j: uint256 in range(st.MAX_BIDS // 2):
            if j >= half:
                break
            leaves[j] = keccak256(concat(st.NODE, leaves[2 * j], leaves[2 * j + 1]))
        width = half
    root: bytes32 = leaves[0]
    if n == 0:
        root = empty(bytes32)
    st.assignment_root[task] = root
    st.epoch_acc[task] = keccak256(concat(st.EPOCH_START, convert(task, bytes32), convert(0, bytes32), model_digest))
    c.state = st.TRAINING
    c.deadline = block.timestamp + 2 * st._epoch_seconds(task)
    st._store(task, c)
    log st.AssignmentCommitted(task=task, root=root, processors=processors, counts=counts, points=points, subroots=subroots)
    log st.ModelReleased(task=task, epoch=0, model_digest=model_digest, deadline=c.deadline)


@external
@nonreentrant
def report_undelivered(task: uint256, processor: uint256, blocks: DynArray[st.BlockEntry, st.MAX_REPORT]):
    """
    @notice A processor reports blocks of its assignment it never received (or that did
            not match their committed digest), before it records its first root. Each
            block's owner is not paid those points (that part goes to the reserve at the
            first close) and the processor is paid for its fill minus them.
    """
    c: st.Clock = st._load(task)
    assert c.state == st.TRAINING and c.epoch == 0, "market: reports are closed"
    assert processor < st.MAX_BIDS, "market: no such bid"
    pk: uint256 = st._key(task, st.PROCESSING, processor)
    assert st.bidder_word[pk] & st.MASK160 == convert(msg.sender, uint256), "market: not this bid's bidder"
    po: uint256 = st.offer[pk]
    assert st._oflags(po) & (st.WINNER | st.SLASHED) == st.WINNER, "market: not an active processor"
    assert c.flags & st.FULL == 0, "market: report before your first root"
    ps: uint256 = st.pstate[(task << 7) | processor]
    assert (ps >> 8) & st.MASK32 == 0, "market: report before your first root"
    winners: uint256 = st.book[task] & st.MASK128
    price: uint256 = st._price(po)
    cut: uint256 = 0
    undelivered_cost: uint256 = 0
    for b: st.BlockEntry in blocks:
        assert b.owner_bid < st.MAX_BIDS and winners & (1 << b.owner_bid) != 0, "market: not a winning data bid"
        assert b.block_index <= st.MASK32, "market: bad block index"
        block_id: uint256 = (b.owner_bid << 32) | b.block_index
        st._check_entry(task, processor, block_id, b.entry)
        rk: bytes32 = keccak256(concat(st.REPORT_KEY, convert(task, bytes32), convert(processor, bytes32), convert(block_id, bytes32)))
        assert not st.reported[rk], "market: block already reported"
        st.reported[rk] = True
        # the owner loses a block's pay once, however many of its holders report it
        ok: bytes32 = keccak256(concat(st.REPORT_KEY, convert(task, bytes32), convert(st.MAX_BIDS, bytes32), convert(block_id, bytes32)))
        if not st.reported[ok]:
            st.reported[ok] = True
            dk: uint256 = st._key(task, st.DATA, b.owner_bid)
            o: uint256 = st.offer[dk]
            und: uint256 = st._extra(o)
            points: uint256 = min(b.entry.size, st._fill(o) - und)
            st.offer[dk] = st._with_extra(o, und + points)
            if st._oflags(o) & st.COMMITTED != 0:
                undelivered_cost += points * st._price(o)
        cut += b.entry.size
        log st.BlockUndelivered(task=task, processor=processor, owner_bid=b.owner_bid, block_index=b.block_index, points=b.entry.size)
    und_p: uint256 = (ps >> 40) & st.MASK48
    cut = min(cut, st._fill(po) - und_p)
    st.pstate[(task << 7) | processor] = ps + (cut << 40)
    pr: uint256 = st.procs[task]
    st.procs[task] = pr - ((cut * price) << 128)
    if undelivered_cost > 0:
        st.data_money[task] += undelivered_cost << 104


@external
@nonreentrant
def claim_timeout(task: uint256, side: uint256, index: uint256):
    """
    @notice End a task whose requester went silent. During bidding: anyone, once the
            bidding deadline plus the grace period has passed, and the task is cancelled.
            After resolution: the bidder of a winning bid (`side`, `index`), once the
            assignment or epoch deadline plus the grace period has passed; an open epoch
            counts as closed (recorded roots are paid).
    """
    c: st.Clock = st._load(task)
    assert c.state != st.NO_TASK, "market: no such task"
    if c.state == st.BIDDING:
        assert block.timestamp > ((st.terms1[task] >> 48) & st.MASK40) + st._grace(), "market: not timed out yet"
        c.state = st.CANCELLED
        log st.TaskCancelled(task=task, by=msg.sender)
    else:
        assert c.state == st.ASSIGNING or c.state == st.TRAINING, "market: task is over"
        assert block.timestamp > c.deadline + st._grace(), "market: not timed out yet"
        assert st._is_winner(task, side, index, msg.sender), "market: only a winner can claim a timeout"
        closed: uint256 = 0
        if c.state == st.TRAINING:
            c = st._close(task, c)
            closed = c.epoch + 1
            log st.EpochClosed(task=task, epoch=c.epoch, go_on=False, not_received=0, next_deadline=0)
        log st.TaskFinished(task=task, epochs_closed=closed, timed_out=True)
        c.state = st.FINISHED
        c.deadline = block.timestamp
    st._store(task, c)
    log st.TimeoutClaimed(task=task, state=c.state, by=msg.sender)


@external
@view
def terms(task: uint256) -> st.Terms:
    """
    @notice A task's fixed terms (as last reopened), decoded.
    """
    t0: uint256 = st.terms0[task]
    t1: uint256 = st.terms1[task]
    t2: uint256 = st.terms2[task]
    return st.Terms(
        requester=convert(t0 & st.MASK160, address),
        num_points=t1 & st.MASK48,
        epoch_seconds=(t0 >> 205) & st.MASK32,
        max_epochs=(t0 >> 160) & st.MASK17,
        data_budget=t1 >> 120,
        processing_budget=t2 & st.MASK104,
        bidding_deadline=(t1 >> 48) & st.MASK40,
        bidding_seconds=(t1 >> 88) & st.MASK32,
        late_penalty_bps=(t0 >> 177) & 2**14 - 1,
        dispute_bond_bps=(t0 >> 191) & 2**14 - 1,
        audit_fee=(t2 >> 104) & st.MASK104,
        min_fill=t2 >> 208,
        terms_hash=st.terms_hash[task],
        assignment_root=st.assignment_root[task],
    )


@external
@view
def floors_of(task: uint256) -> st.Floors:
    """
    @notice The task's floors (0: none).
    """
    return st._floors(task)


@external
@view
def get_bid(task: uint256, side: uint256, index: uint256) -> st.BidView:
    """
    @notice One bid, decoded. `side` is 0 for data, 1 for processing. `amount == 0`
            means an empty slot (never used, withdrawn or evicted).
    """
    assert side <= st.PROCESSING, "market: side is 0 (data) or 1 (processing)"
    assert index < st.MAX_BIDS, "market: no such bid"
    k: uint256 = st._key(task, side, index)
    o: uint256 = st.offer[k]
    b: uint256 = st.bidder_word[k]
    flags: uint256 = st._oflags(o)
    extra: uint256 = st._extra(o)
    v: st.BidView = st.BidView(
        bidder=convert(b & st.MASK160, address),
        amount=o & st.MASK48,
        price=st._price(o),
        stake_price=max(st._price(o), b >> 160),
        winner=flags & st.WINNER != 0,
        fill=st._fill(o),
        committed=flags & st.COMMITTED != 0,
        slashed=flags & st.SLASHED != 0,
        undelivered=0,
        epoch_pay=0,
        last_submitted_epoch=0,
        open_disputes=0,
    )
    if side == st.DATA:
        v.undelivered = extra
        v.stake_price = 0
    else:
        ps: uint256 = st.pstate[(task << 7) | index]
        v.undelivered = (ps >> 40) & st.MASK48
        if v.winner:
            v.epoch_pay = st._epoch_pay(o, ps)
        v.last_submitted_epoch = (ps >> 8) & st.MASK32
        v.open_disputes = (extra >> 17) & st.MASK8
    return v


@external
@view
def book_of(task: uint256) -> (uint256, uint256):
    """
    @notice (data, processing) bitmaps by bid index: the open bids while bidding, the
            winners once resolved.
    """
    b: uint256 = st.book[task]
    return b & st.MASK128, b >> 128


@external
@view
def active_of(task: uint256) -> (uint256, uint256):
    """
    @notice (active processors as a bitmap by bid index, their pay per full epoch).
    """
    p: uint256 = st.procs[task]
    return p & st.MASK128, p >> 128


@external
@view
def data_money_of(task: uint256) -> (uint256, uint256):
    """
    @notice (cost of the committed owners' fills, of the points reported undelivered).
    """
    m: uint256 = st.data_money[task]
    return m & st.MASK104, m >> 104


@external
@view
def epoch_commitments(task: uint256) -> (bytes32, bytes32):
    """
    @notice (the open epoch's accumulator, the history of closed epochs' accumulators).
    """
    return st.epoch_acc[task], st.history[task]


@external
@view
def is_reported(task: uint256, processor: uint256, block_id: uint256) -> bool:
    """
    @notice Whether `processor` reported block `block_id` (owner bid << 32 | index) undelivered.
    """
    return st.reported[
        keccak256(concat(st.REPORT_KEY, convert(task, bytes32), convert(processor, bytes32), convert(block_id, bytes32)))
    ]
