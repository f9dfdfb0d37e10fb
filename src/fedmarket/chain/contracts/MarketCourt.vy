# pragma version ~=0.4.3
# pragma nonreentrancy off
"""
@title fedmarket MarketCourt
@license Apache-2.0
@notice Part of the market (see `Market`): disputes. An accusation names a processor, a
        block of its committed assignment and a closed epoch, and posts a bond; a panel of
        auditors is drawn from a block's hash after it; auditors and the block's owner
        commit their digests; the accused's committed leaf is opened; the contract rules.
        It runs only by delegatecall from `Market` (through `MarketSetup`), on its storage.
"""

import market_state as st

initializes: st


@external
@nonreentrant
def open_dispute(
    task: uint256,
    epoch: uint256,
    accused: uint256,
    owner_bid: uint256,
    block_index: uint256,
    entry: st.EntryProof,
    where: st.EpochProof,
) -> uint256:
    """
    @notice Accuse a processor of a wrong result for one block of its assignment in one
            closed epoch, posting a bond of max(dispute_bond_bps x its stake, 3 x audit_fee)
            (approve it first). Anyone may, until the task's end plus the grace period.
            A panel is drawn from a block's hash after this one; see `draw`.
    @return The dispute's id.
    """
    c: st.Clock = st._load(task)
    assert c.state == st.TRAINING or c.state == st.FINISHED, "market: task is not training"
    if c.state == st.FINISHED:
        assert block.timestamp <= c.deadline + st._grace(), "market: disputes are closed"
    assert accused < st.MAX_BIDS and owner_bid < st.MAX_BIDS, "market: no such bid"
    pk: uint256 = st._key(task, st.PROCESSING, accused)
    po: uint256 = st.offer[pk]
    assert st._oflags(po) & (st.WINNER | st.SLASHED) == st.WINNER, "market: not an active processor"
    assert block_index <= st.MASK32 and epoch <= st.MASK32, "market: bad block index"
    block_id: uint256 = (owner_bid << 32) | block_index
    st._check_entry(task, accused, block_id, entry)
    root: bytes32 = st._accused_root(task, epoch, accused, where)
    key: bytes32 = keccak256(
        concat(st.DISPUTE_KEY, convert(task, bytes32), convert(block_id, bytes32), convert(accused, bytes32), convert(epoch, bytes32))
    )
    assert not st.disputed[key], "market: already disputed"
    st.disputed[key] = True
    open_disputes: uint256 = (st._extra(po) >> 17) & st.MASK8
    assert open_disputes < 255, "market: too many open disputes"
    st.offer[pk] = st._with_extra(po, st._extra(po) + (1 << 17))

    t2: uint256 = st.terms2[task]
    fee: uint256 = (t2 >> 104) & st.MASK104
    bond_bps: uint256 = (st.terms0[task] >> 191) & 2**14 - 1
    bond: uint256 = max(st._stake_of(task, pk, st._fill(po)) * bond_bps // st.BPS, st.PANEL * fee)
    assert bond <= st.MAX_MONEY, "market: bond too large"
    d: uint256 = st.num_disputes
    st.num_disputes = d + 1
    st.d0[d] = (
        task
        | (accused << 64)
        | (owner_bid << 72)
        | (block_index << 80)
        | (epoch << 112)
        | (entry.entry_index << 144)
        | (entry.record.count << 176)
        | (st.D_OPEN << 208)
    )
    st.d1[d] = convert(msg.sender, uint256) | (block.number << 160)
    st.d2[d] = bond | (fee << 104)
    st.d_root[d] = root
    st.liabilities[task] += bond
    log st.DisputeOpened(
        dispute=d,
        task=task,
        accuser=msg.sender,
        accused=accused,
        epoch=epoch,
        owner_bid=owner_bid,
        block_index=block_index,
        entry_index=entry.entry_index,
        bond=bond,
    )
    st._pull(msg.sender, bond)
    return d


@external
@nonreentrant
def draw(dispute: uint256):
    """
    @notice Draw the dispute's panel: up to 3 auditors among the task's active processors
            other than the accused and the accuser, weighted by epoch pay, without
            replacement, from the hash of the block `draw_delay_blocks` after the dispute
            was opened (the same whoever calls and whenever, within 256 blocks; after that
            the draw re-targets to a later block). With fewer than 2 eligible processors the
            dispute is opening-only (only an unopenable leaf can then be slashed).
    """
    w0: uint256 = st.d0[dispute]
    assert (w0 >> 208) & st.MASK8 == st.D_OPEN, "market: not awaiting a draw"
    w1: uint256 = st.d1[dispute]
    target: uint256 = ((w1 >> 160) & st.MASK64) + st._delay()
    assert block.number > target, "market: too early to draw"
    if block.number > target + 256:
        # nobody drew in time: every party could have, so re-target to a future block
        st.d1[dispute] = (w1 & ~(st.MASK64 << 160)) | (block.number << 160)
        log st.DrawRetargeted(dispute=dispute, open_block=block.number)
        return
    task: uint256 = w0 & st.MASK64
    accused: uint256 = (w0 >> 64) & st.MASK8
    accuser: uint256 = w1 & st.MASK160
    seed: bytes32 = keccak256(concat(st.DRAW, st._beacon(target), convert(dispute, bytes32)))
    active: uint256 = st.procs[task] & st.MASK128
    weights: uint256[st.MAX_BIDS] = empty(uint256[st.MAX_BIDS])
    eligible: uint256 = 0
    total: uint256 = 0
    left: uint256 = active & ~(1 << accused)
    for n: uint256 in range(st.MAX_BIDS):
        if left == 0:
            break
        i: uint256 = st._low_bit(left)
        left ^= 1 << i
        k: uint256 = st._key(task, st.PROCESSING, i)
        if st.bidder_word[k] & st.MASK160 == accuser:
            continue
        wt: uint256 = st._epoch_pay(st.offer[k], st.pstate[(task << 7) | i])
        if wt == 0:
            continue
        weights[i] = wt
        eligible |= 1 << i
        total += wt
    panel: uint256 = 0
    picks: DynArray[uint256, st.PANEL] = []
    if st._popcount(eligible) >= st.PANEL_MIN:
        for t: uint256 in range(st.PANEL):
            if total == 0:
                break
            r: uint256 = convert(keccak256(concat(seed, convert(t, bytes32))), uint256) % total
            rest: uint256 = eligible
            for n: uint256 in range(st.MAX_BIDS):
                if rest == 0:
                    break
                i: uint256 = st._low_bit(rest)
                rest ^= 1 << i
                if r < weights[i]:
                    eligible ^= 1 << i
                    total -= weights[i]
                    panel |= (i + 1) << (8 * t)
                    picks.append(i)
                    break
                r -= weights[i]
    deadline: uint256 = block.timestamp + st._epoch_seconds(task) + st._grace()
    st.d0[dispute] = (w0 & ~(st.MASK8 << 208)) | (st.D_DRAWN << 208)
    st.d1[dispute] = w1 | (panel << 224)
    st.d2[dispute] = st.d2[dispute] | (deadline << 208)
    log st.PanelDrawn(dispute=dispute, task=task, panel=picks, vote_deadline=deadline)


@external
@nonreentrant
def commit_vote(dispute: uint256, commitment: bytes32):
    """
    @notice A drawn auditor, or the block's owner, commits
            keccak256(0x07 | dispute | voter | digest) to the digest it computed for the
            block, before the leaf is shown and by the vote deadline. Bound to the voter's
            address, so nobody can copy another's vote.
    """
    w0: uint256 = st.d0[dispute]
    assert (w0 >> 208) & st.MASK8 == st.D_DRAWN, "market: not drawn"
    assert st.d_shown[dispute] == empty(bytes32), "market: the leaf is already shown"
    assert block.timestamp <= st.d2[dispute] >> 208, "market: voting is over"
    assert commitment != empty(bytes32), "market: empty commitment"
    task: uint256 = w0 & st.MASK64
    panel: uint256 = (st.d1[dispute] >> 224) & st.MASK24
    slot: uint256 = 4
    for t: uint256 in range(st.PANEL):
        if st._panel_member(task, panel, t) == msg.sender:
            slot = t
            break
    if slot == 4 and st._owner_voter(task, w0) == msg.sender:
        slot = 3
    assert slot != 4, "market: not a voter of this dispute"
    assert st.votes[dispute][slot] == empty(bytes32), "market: already voted"
    st.votes[dispute][slot] = commitment
    log st.VoteCommitted(dispute=dispute, voter=msg.sender, commitment=commitment)


@external
@nonreentrant
def show_leaf(dispute: uint256, digest: bytes32, proof: DynArray[bytes32, st.MAX_DEPTH]):
    """
    @notice Open the accused's committed leaf for the disputed block (anyone holding it
            may: the accused, or the requester who received its results), once every
            auditor voted or the vote deadline passed, until the show deadline.
    """
    w0: uint256 = st.d0[dispute]
    assert (w0 >> 208) & st.MASK8 == st.D_DRAWN, "market: not drawn"
    assert st.d_shown[dispute] == empty(bytes32), "market: the leaf is already shown"
    assert digest != empty(bytes32), "market: empty digest"
    task: uint256 = w0 & st.MASK64
    vote_deadline: uint256 = st.d2[dispute] >> 208
    panel: uint256 = (st.d1[dispute] >> 224) & st.MASK24
    assert block.timestamp > vote_deadline or st._all_voted(dispute, task, panel), "market: voting is open"
    assert block.timestamp <= vote_deadline + st._grace(), "market: too late to show"
    count: uint256 = (w0 >> 176) & st.MASK32
    assert len(proof) == st._depth(count), "market: bad proof length"
    block_id: uint256 = (((w0 >> 72) & st.MASK8) << 32) | ((w0 >> 80) & st.MASK32)
    leaf: bytes32 = st._result_leaf(task, (w0 >> 112) & st.MASK32, block_id, digest)
    assert st._climb(leaf, (w0 >> 144) & st.MASK32, proof) == st.d_root[dispute], "market: not the committed leaf"
    st.d_shown[dispute] = digest
    log st.LeafShown(dispute=dispute, digest=digest)


@external
@nonreentrant
def resolve_dispute(dispute: uint256, agreed: bytes32):
    """
    @notice Settle a dispute (anyone). `agreed` is the digest the caller says the panel
            agreed on. Convicted when every drawn auditor (at least 2) committed to `agreed`,
            `agreed` differs from the shown leaf and the block's owner did not commit to the
            leaf: slashed to the reserve, fees to the auditors, the rest of the bond back.
            Cleared when most drawn auditors committed to the leaf: the bond, less their
            fees, to the accused. No leaf by the show deadline (or an UNDELIVERED leaf the
            accused never reported): slashed as unopened, the bond back. Otherwise, after
            the show deadline, no verdict: the bond back (to the accused when no panel
            could be drawn).
    """
    w0: uint256 = st.d0[dispute]
    state: uint256 = (w0 >> 208) & st.MASK8
    assert state == st.D_DRAWN, "market: not drawn"
    task: uint256 = w0 & st.MASK64
    accused: uint256 = (w0 >> 64) & st.MASK8
    w1: uint256 = st.d1[dispute]
    w2: uint256 = st.d2[dispute]
    accuser: address = convert(w1 & st.MASK160, address)
    panel: uint256 = (w1 >> 224) & st.MASK24
    bond: uint256 = w2 & st.MASK104
    fee: uint256 = (w2 >> 104) & st.MASK104
    show_deadline: uint256 = (w2 >> 208) + st._grace()
    shown: bytes32 = st.d_shown[dispute]
    accused_k: uint256 = st._key(task, st.PROCESSING, accused)
    accused_addr: address = convert(st.bidder_word[accused_k] & st.MASK160, address)

    outcome: uint256 = 0
    to_accuser: uint256 = 0
    to_accused: uint256 = 0
    fees: uint256 = 0
    if shown == empty(bytes32):
        assert block.timestamp > show_deadline, "market: the leaf can still be shown"
        outcome = st.UNOPENED
    elif shown == st.UNDELIVERED:
        block_id: uint256 = (((w0 >> 72) & st.MASK8) << 32) | ((w0 >> 80) & st.MASK32)
        rk: bytes32 = keccak256(concat(st.REPORT_KEY, convert(task, bytes32), convert(accused, bytes32), convert(block_id, bytes32)))
        if st.reported[rk]:
            outcome = st.DISMISSED  # the accuser could have read the report
        else:
            outcome = st.UNOPENED  # it claims non-delivery it never told the chain about
    elif panel == 0:
        outcome = st.DISMISSED  # opening-only: the leaf was shown, nothing else can be judged
    else:
        drawn: uint256 = 0
        agree: uint256 = 0
        drawn, agree = st._votes_for(dispute, task, panel, shown)
        convict_drawn: uint256 = 0
        convict_agree: uint256 = 0
        if agreed != shown:
            convict_drawn, convict_agree = st._votes_for(dispute, task, panel, agreed)
        owner: address = st._owner_voter(task, w0)
        veto: bool = owner != empty(address) and st.votes[dispute][3] == keccak256(
            concat(st.VOTE, convert(dispute, bytes32), convert(owner, bytes32), shown)
        )
        if agreed != shown and convict_drawn >= st.PANEL_MIN and convict_agree == convict_drawn and not veto:
            outcome = st.CONVICTED
            fees = fee * convict_drawn
        elif 2 * agree > drawn:
            outcome = st.CLEARED
            fees = fee * agree
        else:
            assert block.timestamp > show_deadline, "market: no verdict yet"
            outcome = st.NO_VERDICT

    if outcome == st.UNOPENED:
        to_accuser = bond
        st._slash(task, accused, st.FAULT_UNOPENED)
    elif outcome == st.DISMISSED:
        to_accused = bond
    elif outcome == st.CONVICTED:
        to_accuser = bond - fees
        st._slash(task, accused, st.FAULT_PANEL)
        st._pay_fees(dispute, task, panel, agreed, fee)
    elif outcome == st.CLEARED:
        to_accused = bond - fees
        st._pay_fees(dispute, task, panel, shown, fee)
    else:
        to_accuser = bond

    st.d0[dispute] = (w0 & ~(st.MASK8 << 208)) | (st.D_RESOLVED << 208)
    po: uint256 = st.offer[accused_k]
    st.offer[accused_k] = st._with_extra(po, st._extra(po) - (1 << 17))
    st.liabilities[task] -= to_accuser + to_accused + fees
    st._credit(accuser, to_accuser)
    st._credit(accused_addr, to_accused)
    log st.DisputeResolved(
        dispute=dispute, task=task, outcome=outcome, value=agreed, to_accuser=to_accuser, to_accused=to_accused, fees=fees
    )


@external
@view
def dispute_of(dispute: uint256) -> st.DisputeView:
    """
    @notice One dispute, decoded (`panel` lists the drawn auditors' bid indices).
    """
    w0: uint256 = st.d0[dispute]
    w1: uint256 = st.d1[dispute]
    w2: uint256 = st.d2[dispute]
    panel: uint256 = (w1 >> 224) & st.MASK24
    picks: DynArray[uint256, st.PANEL] = []
    for t: uint256 in range(st.PANEL):
        p: uint256 = (panel >> (8 * t)) & st.MASK8
        if p != 0:
            picks.append(p - 1)
    vote_deadline: uint256 = w2 >> 208
    show_deadline: uint256 = 0
    if vote_deadline != 0:
        show_deadline = vote_deadline + st._grace()
    return st.DisputeView(
        task=w0 & st.MASK64,
        accuser=convert(w1 & st.MASK160, address),
        accused=(w0 >> 64) & st.MASK8,
        owner_bid=(w0 >> 72) & st.MASK8,
        block_index=(w0 >> 80) & st.MASK32,
        epoch=(w0 >> 112) & st.MASK32,
        entry_index=(w0 >> 144) & st.MASK32,
        state=(w0 >> 208) & st.MASK8,
        open_block=(w1 >> 160) & st.MASK64,
        panel=picks,
        vote_deadline=vote_deadline,
        show_deadline=show_deadline,
        bond=w2 & st.MASK104,
        fee=(w2 >> 104) & st.MASK104,
        accused_root=st.d_root[dispute],
        shown=st.d_shown[dispute],
    )


@external
@view
def vote_of(dispute: uint256, slot: uint256) -> bytes32:
    """
    @notice A voter's commitment: slots 0-2 the drawn auditors in panel order, 3 the owner.
    """
    return st.votes[dispute][slot]


@external
@view
def is_disputed(task: uint256, block_id: uint256, accused: uint256, epoch: uint256) -> bool:
    """
    @notice Whether a dispute on this block, accused and epoch was opened.
    """
    return st.disputed[
        keccak256(
            concat(st.DISPUTE_KEY, convert(task, bytes32), convert(block_id, bytes32), convert(accused, bytes32), convert(epoch, bytes32))
        )
    ]
