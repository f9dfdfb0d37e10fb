# pragma version ~=0.4.3
"""
@title fedmarket market state
@license Apache-2.0
@notice The storage, types, events and internal rules shared by the market's three
        contracts: `Market` (at the market's address: money, bids and epochs),
        `MarketSetup` and `MarketCourt` (assignment, reports, timeouts, views; disputes),
        which `Market` reaches by delegatecall so that all three act on this one storage.
        The split only keeps each under EIP-170's 24,576-byte code limit.
"""

from ethereum.ercs import IERC20

# ---------------------------------------------------------------- constants

MAX_BIDS: constant(uint256) = 128  # per side and task; bounds every loop over bids
MAX_DEPTH: constant(uint256) = 16  # Merkle proof length: up to 65,536 entries per processor
MAX_LOOKBACK: constant(uint256) = 512  # closed epochs a dispute may reach back over
MAX_BLOCKS: constant(uint256) = 256  # blocks per owner (the manifest goes in the event)
MAX_REPORT: constant(uint256) = 32  # blocks per undelivered report
PANEL: constant(uint256) = 3  # auditors drawn per dispute
PANEL_MIN: constant(uint256) = 2  # fewer eligible processors: an opening-only dispute
MIN_FILL: constant(uint256) = 64  # the privacy floor: samples per data fill, at least
MAX_LOAD: constant(uint256) = 2  # a processor is assigned at most this many times its fill
MIN_BOND_BPS: constant(uint256) = 1_000
MAX_EPOCHS: constant(uint256) = 100_000
MAX_MONEY: constant(uint256) = 2**100  # every amount; the packed fields cannot overflow
MAX_FLOOR: constant(uint256) = 2**85
MAX_POINTS: constant(uint256) = 2**48 - 1  # points fit the packed 48-bit fields
BPS: constant(uint256) = 10_000

DATA: constant(uint256) = 0
PROCESSING: constant(uint256) = 1

# task states
NO_TASK: constant(uint256) = 0
BIDDING: constant(uint256) = 1
ASSIGNING: constant(uint256) = 2
TRAINING: constant(uint256) = 3
FINISHED: constant(uint256) = 4
CANCELLED: constant(uint256) = 5

# clock flags
FIRST_CLOSED: constant(uint256) = 1
FULL: constant(uint256) = 2  # every active processor's root relayed on time this epoch
REQUESTER_PAID: constant(uint256) = 4

# offer flags
WINNER: constant(uint256) = 1
COMMITTED: constant(uint256) = 2  # data: the owner committed its manifest
PAID: constant(uint256) = 4  # data: the owner's pay was collected
SLASHED: constant(uint256) = 8  # processing
REFUNDED: constant(uint256) = 16  # the stake above the fill (all of it for a loser) returned
STAKE_DONE: constant(uint256) = 32  # processing: the stake on the fill returned

# processor state flags
LATE: constant(uint256) = 1  # its last directly submitted root was late

# dispute states and outcomes
D_OPEN: constant(uint256) = 1
D_DRAWN: constant(uint256) = 2
D_RESOLVED: constant(uint256) = 3
UNOPENED: constant(uint256) = 1
DISMISSED: constant(uint256) = 2
CONVICTED: constant(uint256) = 3
CLEARED: constant(uint256) = 4
NO_VERDICT: constant(uint256) = 5
# slash faults
FAULT_UNOPENED: constant(uint256) = 1
FAULT_PANEL: constant(uint256) = 2
# reserve credits
R_LATE: constant(uint256) = 1
R_NOT_RECEIVED: constant(uint256) = 2
R_UNDELIVERED: constant(uint256) = 3
R_SLASH: constant(uint256) = 4

MASK8: constant(uint256) = 2**8 - 1
MASK16: constant(uint256) = 2**16 - 1
MASK17: constant(uint256) = 2**17 - 1
MASK24: constant(uint256) = 2**24 - 1
MASK32: constant(uint256) = 2**32 - 1
MASK40: constant(uint256) = 2**40 - 1
MASK48: constant(uint256) = 2**48 - 1
MASK52: constant(uint256) = 2**52 - 1
MASK64: constant(uint256) = 2**64 - 1
MASK85: constant(uint256) = 2**85 - 1
MASK100: constant(uint256) = 2**100 - 1
MASK104: constant(uint256) = 2**104 - 1
MASK112: constant(uint256) = 2**112 - 1
MASK128: constant(uint256) = 2**128 - 1
MASK160: constant(uint256) = 2**160 - 1

# domain tags of every hash (one byte each, and distinct preimage lengths, so a node can
# never pass for a leaf nor one kind of leaf for another)
RESULT_LEAF: constant(bytes1) = 0x00
NODE: constant(bytes1) = 0x01
ENTRY_LEAF: constant(bytes1) = 0x02
RECORD_LEAF: constant(bytes1) = 0x03
EPOCH_START: constant(bytes1) = 0x04
EPOCH_ROOT: constant(bytes1) = 0x05
HISTORY: constant(bytes1) = 0x06
VOTE: constant(bytes1) = 0x07
DRAW: constant(bytes1) = 0x08
DISPUTE_KEY: constant(bytes1) = 0x09
REPORT_KEY: constant(bytes1) = 0x0a
TERMS: constant(bytes1) = 0x0b
UNDELIVERED: constant(bytes32) = keccak256("fedmarket/undelivered/v1")

DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
ROOT_TYPEHASH: constant(bytes32) = keccak256("EpochRoot(uint256 task,uint256 epoch,bytes32 root)")

# ---------------------------------------------------------------- types


struct Floors:
    min_processing_price: uint256
    stake_per_point_epoch: uint256
    min_data_price: uint256


struct Fill:
    bid: uint256
    amount: uint256


struct Record:
    processor: uint256  # processing bid index
    count: uint256  # entries
    points: uint256  # the entries' sizes, summed
    subroot: bytes32


struct SignedRoot:
    root: bytes32
    v: uint8
    r: bytes32
    s: bytes32


struct EntryProof:
    record: Record
    record_index: uint256
    record_proof: DynArray[bytes32, MAX_DEPTH]
    entry_index: uint256
    size: uint256
    entry_proof: DynArray[bytes32, MAX_DEPTH]


struct BlockEntry:
    owner_bid: uint256
    block_index: uint256
    entry: EntryProof


struct RootRec:
    processor: uint256
    root: bytes32


struct EpochProof:
    model_digest: bytes32
    roots: DynArray[RootRec, MAX_BIDS]  # in recorded order
    history_before: bytes32
    later: DynArray[bytes32, MAX_LOOKBACK]  # accumulators of the later closed epochs


struct Terms:
    requester: address
    num_points: uint256
    epoch_seconds: uint256
    max_epochs: uint256
    data_budget: uint256
    processing_budget: uint256
    bidding_deadline: uint256
    bidding_seconds: uint256
    late_penalty_bps: uint256
    dispute_bond_bps: uint256
    audit_fee: uint256
    min_fill: uint256
    terms_hash: bytes32
    assignment_root: bytes32


# The per-task fields every epoch touches, decoded from one storage word.
struct Clock:
    state: uint256  # 8 bits
    epoch: uint256  # 32 bits: the current (open) epoch, or the last one once finished
    deadline: uint256  # 40 bits: of the epoch or the assignment window; the finish time once over
    submitted: uint256  # 16 bits: roots recorded in the current epoch
    active: uint256  # 16 bits: winning processors not slashed
    flags: uint256  # 8 bits
    full_epochs: uint256  # 32 bits: closed epochs whose roots were all relayed on time
    spent: uint256  # 104 bits: processing pay accrued (late penalties and marked pay included)


struct BidView:
    bidder: address
    amount: uint256
    price: uint256
    stake_price: uint256
    winner: bool
    fill: uint256
    committed: bool
    slashed: bool
    undelivered: uint256
    epoch_pay: uint256
    last_submitted_epoch: uint256  # 0 = never directly, else epoch + 1
    open_disputes: uint256


struct DisputeView:
    task: uint256
    accuser: address
    accused: uint256
    owner_bid: uint256
    block_index: uint256
    epoch: uint256
    entry_index: uint256
    state: uint256
    open_block: uint256
    panel: DynArray[uint256, PANEL]
    vote_deadline: uint256
    show_deadline: uint256
    bond: uint256
    fee: uint256
    accused_root: bytes32
    shown: bytes32


# ---------------------------------------------------------------- events


event TaskCreated:
    task: indexed(uint256)
    requester: indexed(address)
    spec_hash: bytes32
    public_context_hash: bytes32
    num_points: uint256
    epoch_seconds: uint256
    max_epochs: uint256
    data_budget: uint256
    processing_budget: uint256
    bidding_deadline: uint256
    late_penalty_bps: uint256
    dispute_bond_bps: uint256
    audit_fee: uint256
    min_fill: uint256
    floors: Floors


event BidPlaced:
    task: indexed(uint256)
    side: indexed(uint256)
    bidder: indexed(address)
    bid: uint256
    amount: uint256
    price: uint256
    stake: uint256


event BidEvicted:
    task: indexed(uint256)
    side: indexed(uint256)
    bidder: indexed(address)
    bid: uint256
    refunded: uint256


event BidWithdrawn:
    task: indexed(uint256)
    side: indexed(uint256)
    bidder: indexed(address)
    bid: uint256
    refunded: uint256


event TaskReopened:
    task: indexed(uint256)
    bidding_deadline: uint256
    floors: Floors
    refunded_bids: uint256


event TaskResolved:
    task: indexed(uint256)
    data_cost: uint256
    processing_cost_per_epoch: uint256
    data_points: uint256
    data_winners: uint256
    processing_winners: uint256
    assignment_deadline: uint256


event TaskCancelled:
    task: indexed(uint256)
    by: indexed(address)


event DataCommitted:
    task: indexed(uint256)
    owner: indexed(address)
    bid: uint256
    block_sizes: DynArray[uint256, MAX_BLOCKS]
    digests: DynArray[bytes32, MAX_BLOCKS]


event AssignmentCommitted:
    task: indexed(uint256)
    root: bytes32
    processors: DynArray[uint256, MAX_BIDS]
    counts: DynArray[uint256, MAX_BIDS]
    points: DynArray[uint256, MAX_BIDS]
    subroots: DynArray[bytes32, MAX_BIDS]


event ModelReleased:
    task: indexed(uint256)
    epoch: indexed(uint256)
    model_digest: bytes32
    deadline: uint256


event BlockUndelivered:
    task: indexed(uint256)
    processor: uint256
    owner_bid: uint256
    block_index: uint256
    points: uint256


event EpochRoots:
    task: indexed(uint256)
    epoch: indexed(uint256)
    processors: uint256
    roots: DynArray[bytes32, MAX_BIDS]


event RootSubmitted:
    task: indexed(uint256)
    epoch: indexed(uint256)
    processor: uint256
    root: bytes32
    on_time: bool
    pay: uint256


event EpochClosed:
    task: indexed(uint256)
    epoch: indexed(uint256)
    go_on: bool
    not_received: uint256
    next_deadline: uint256


event TaskFinished:
    task: indexed(uint256)
    epochs_closed: uint256
    timed_out: bool


event TimeoutClaimed:
    task: indexed(uint256)
    state: uint256
    by: indexed(address)


event DisputeOpened:
    dispute: indexed(uint256)
    task: indexed(uint256)
    accuser: indexed(address)
    accused: uint256
    epoch: uint256
    owner_bid: uint256
    block_index: uint256
    entry_index: uint256
    bond: uint256


event PanelDrawn:
    dispute: indexed(uint256)
    task: indexed(uint256)
    panel: DynArray[uint256, PANEL]
    vote_deadline: uint256


event DrawRetargeted:
    dispute: indexed(uint256)
    open_block: uint256


event VoteCommitted:
    dispute: indexed(uint256)
    voter: indexed(address)
    commitment: bytes32


event LeafShown:
    dispute: indexed(uint256)
    digest: bytes32


event DisputeResolved:
    dispute: indexed(uint256)
    task: indexed(uint256)
    outcome: uint256
    value: bytes32
    to_accuser: uint256
    to_accused: uint256
    fees: uint256


event ProcessorSlashed:
    task: indexed(uint256)
    processor: uint256
    fault: uint256
    forfeited: uint256
    to_reserve: uint256
    to_participants: uint256


event ShareCredited:
    task: indexed(uint256)
    side: uint256
    bid: uint256
    amount: uint256


event ReserveCredited:
    task: indexed(uint256)
    amount: uint256
    reason: uint256


event ReserveWithdrawn:
    to: indexed(address)
    amount: uint256


event Collected:
    task: indexed(uint256)
    account: indexed(address)
    amount: uint256


event Claimed:
    task: indexed(uint256)
    account: indexed(address)
    amount: uint256


event Withdrawn:
    account: indexed(address)
    amount: uint256


# ---------------------------------------------------------------- storage

# the deployment's configuration (set once by Market's constructor; the extensions read it
# here because delegate-called code has no immutables of the market's):
# token 160 | grace_seconds 32 | draw_delay_blocks 8
cfg: uint256
reserve_address: address
domain_separator: bytes32

num_tasks: public(uint256)
num_disputes: public(uint256)
reserve_balance: public(uint256)
total_claimable: public(uint256)
claimable: public(HashMap[address, uint256])
liabilities: public(HashMap[uint256, uint256])

# requester 160 | max_epochs 17 | late_penalty_bps 14 | dispute_bond_bps 14 | epoch_seconds 32
terms0: HashMap[uint256, uint256]
# num_points 48 | bidding_deadline 40 | bidding_seconds 32 | data_budget 104
terms1: HashMap[uint256, uint256]
# processing_budget 104 | audit_fee 104 | min_fill 48
terms2: HashMap[uint256, uint256]
# min_processing_price 85 | stake_per_point_epoch 85 | min_data_price 85 (only when non-zero)
floors: HashMap[uint256, uint256]
terms_hash: HashMap[uint256, bytes32]  # keccak(0x0b | spec_hash | public_context_hash)
clock: HashMap[uint256, uint256]
# active processors (bitmap by bid index) 128 | epoch_cost 104
procs: HashMap[uint256, uint256]
# open bids while bidding, winners from resolution: data 128 | processing 128
book: HashMap[uint256, uint256]
assignment_root: HashMap[uint256, bytes32]
epoch_acc: HashMap[uint256, bytes32]
history: HashMap[uint256, bytes32]
# committed_cost 104 | undelivered_cost 104
data_money: HashMap[uint256, uint256]

# bids, keyed task << 8 | side << 7 | index
# bidder 160 | stake_floor 96 (processing: the stake floor when it bid)
bidder_word: HashMap[uint256, uint256]
# amount 48 | price 100 | fill 48 | flags 8 | extra 52
#   data extra: undelivered points 48
#   processing extra: full_paid 17 | open_disputes 8
offer: HashMap[uint256, uint256]
# processing only, keyed task << 7 | index: flags 8 | last_epoch+1 32 | undelivered 48 | unpaid 112
pstate: HashMap[uint256, uint256]

# disputes
# task 64 | accused 8 | owner_bid 8 | block_index 32 | epoch 32 | entry_index 32 | count 32 | state 8
d0: HashMap[uint256, uint256]
# accuser 160 | open_block 64 | panel 24 (three bid index + 1, 8 bits each)
d1: HashMap[uint256, uint256]
# bond 104 | fee 104 | vote_deadline 40
d2: HashMap[uint256, uint256]
d_root: HashMap[uint256, bytes32]
d_shown: HashMap[uint256, bytes32]
votes: HashMap[uint256, HashMap[uint256, bytes32]]  # dispute -> slot (0-2 auditors, 3 owner)
disputed: HashMap[bytes32, bool]  # keccak(task, block, accused, epoch)
reported: HashMap[bytes32, bool]  # keccak(task, processor, block)


@internal
@view
def _token() -> address:
    return convert(self.cfg & MASK160, address)


@internal
@view
def _grace() -> uint256:
    return (self.cfg >> 160) & MASK32


@internal
@view
def _delay() -> uint256:
    return (self.cfg >> 192) & MASK8


@internal
@view
def _load(task: uint256) -> Clock:
    w: uint256 = self.clock[task]
    return Clock(
        state=w & MASK8,
        epoch=(w >> 8) & MASK32,
        deadline=(w >> 40) & MASK40,
        submitted=(w >> 80) & MASK16,
        active=(w >> 96) & MASK16,
        flags=(w >> 112) & MASK8,
        full_epochs=(w >> 120) & MASK32,
        spent=w >> 152,
    )


@internal
def _store(task: uint256, c: Clock):
    self.clock[task] = (
        c.state
        | (c.epoch << 8)
        | (c.deadline << 40)
        | (c.submitted << 80)
        | (c.active << 96)
        | (c.flags << 112)
        | (c.full_epochs << 120)
        | (c.spent << 152)
    )


@internal
@pure
def _key(task: uint256, side: uint256, index: uint256) -> uint256:
    return (task << 8) | (side << 7) | index


@internal
@pure
def _price(o: uint256) -> uint256:
    return (o >> 48) & MASK100


@internal
@pure
def _fill(o: uint256) -> uint256:
    return (o >> 148) & MASK48


@internal
@pure
def _oflags(o: uint256) -> uint256:
    return (o >> 196) & MASK8


@internal
@pure
def _with_flags(o: uint256, flags: uint256) -> uint256:
    return (o & ~(MASK8 << 196)) | (flags << 196)


@internal
@pure
def _extra(o: uint256) -> uint256:
    return o >> 204


@internal
@pure
def _with_extra(o: uint256, extra: uint256) -> uint256:
    return (o & (2**204 - 1)) | (extra << 204)


@internal
@pure
def _pack_ps(flags: uint256, last: uint256, undelivered: uint256, unpaid: uint256) -> uint256:
    return flags | (last << 8) | (undelivered << 40) | (unpaid << 88)


@internal
@pure
def _epoch_pay(o: uint256, ps: uint256) -> uint256:
    # (fill - points reported undelivered to it) x price
    return (self._fill(o) - ((ps >> 40) & MASK48)) * self._price(o)


@internal
@pure
def _late_pay(pay: uint256, penalty_bps: uint256) -> uint256:
    return pay * (BPS - penalty_bps) // BPS


@internal
@pure
def _low_bit(x: uint256) -> uint256:
    """The index of the lowest set bit of x (x != 0, x < 2**128)."""
    v: uint256 = x & (max_value(uint256) - x + 1)  # isolate the lowest set bit
    r: uint256 = 0
    if v >= 2**64:
        v >>= 64
        r += 64
    if v >= 2**32:
        v >>= 32
        r += 32
    if v >= 2**16:
        v >>= 16
        r += 16
    if v >= 2**8:
        v >>= 8
        r += 8
    if v >= 2**4:
        v >>= 4
        r += 4
    if v >= 2**2:
        v >>= 2
        r += 2
    if v >= 2:
        r += 1
    return r


@internal
@pure
def _depth(count: uint256) -> uint256:
    """ceil(log2(count)): the proof length of an indexed tree over `count` leaves."""
    d: uint256 = 0
    width: uint256 = 1
    for i: uint256 in range(MAX_DEPTH + 1):
        if width >= count:
            break
        width <<= 1
        d += 1
    return d


@internal
@pure
def _climb(leaf: bytes32, index: uint256, proof: DynArray[bytes32, MAX_DEPTH]) -> bytes32:
    # An indexed tree: bit d of `index` says whether the node at depth d is a right child.
    h: bytes32 = leaf
    i: uint256 = index
    for sibling: bytes32 in proof:
        if i & 1 == 0:
            h = keccak256(concat(NODE, h, sibling))
        else:
            h = keccak256(concat(NODE, sibling, h))
        i >>= 1
    assert i == 0, "market: index beyond the proof"
    return h


@internal
@pure
def _result_leaf(task: uint256, epoch: uint256, block_id: uint256, digest: bytes32) -> bytes32:
    return keccak256(
        concat(
            RESULT_LEAF,
            convert(task, bytes32),
            convert(epoch, bytes32),
            convert(block_id, bytes32),
            digest,
        )
    )


@internal
@pure
def _record_leaf(task: uint256, r: Record) -> bytes32:
    return keccak256(
        concat(
            RECORD_LEAF,
            convert(task, bytes32),
            convert(r.processor, bytes32),
            convert((r.count << 128) | r.points, bytes32),
            r.subroot,
        )
    )


@internal
@view
def _check_entry(task: uint256, processor: uint256, block_id: uint256, e: EntryProof):
    """`block_id` (of `e.size` points) is entry `e.entry_index` of `processor`'s list in
    the committed assignment."""
    assert e.record.processor == processor, "market: the record is another processor's"
    assert e.entry_index < e.record.count, "market: entry outside the processor's list"
    assert len(e.entry_proof) == self._depth(e.record.count), "market: bad entry proof length"
    leaf: bytes32 = keccak256(
        concat(ENTRY_LEAF, convert(task, bytes32), convert(block_id, bytes32), convert(e.size, bytes32))
    )
    assert self._climb(leaf, e.entry_index, e.entry_proof) == e.record.subroot, "market: bad entry proof"
    assert self._climb(self._record_leaf(task, e.record), e.record_index, e.record_proof) == (
        self.assignment_root[task]
    ), "market: bad record proof"


@internal
def _token_call(data: Bytes[100]):
    # Tolerates tokens that return nothing (USDT-style) and rejects those that return false.
    ok: bool = False
    response: Bytes[32] = b""
    ok, response = raw_call(self._token(), data, max_outsize=32, revert_on_failure=False)
    assert ok, "market: token transfer failed"
    if len(response) > 0:
        assert convert(response, bool), "market: token transfer failed"


@internal
def _pull(sender: address, amount: uint256):
    if amount == 0:
        return
    before: uint256 = staticcall IERC20(self._token()).balanceOf(self)
    self._token_call(
        abi_encode(sender, self, amount, method_id=method_id("transferFrom(address,address,uint256)"))
    )
    after: uint256 = staticcall IERC20(self._token()).balanceOf(self)
    assert after == before + amount, "market: token took a fee on transfer"


@internal
def _push(receiver: address, amount: uint256):
    self._token_call(abi_encode(receiver, amount, method_id=method_id("transfer(address,uint256)")))


@internal
def _credit(account: address, amount: uint256):
    if amount == 0:
        return
    self.claimable[account] += amount
    self.total_claimable += amount


@internal
def _to_reserve(task: uint256, amount: uint256, reason: uint256):
    if amount == 0:
        return
    self.liabilities[task] -= amount
    self.reserve_balance += amount
    log ReserveCredited(task=task, amount=amount, reason=reason)


@internal
@view
def _requester(task: uint256) -> address:
    return convert(self.terms0[task] & MASK160, address)


@internal
@view
def _max_epochs(task: uint256) -> uint256:
    return (self.terms0[task] >> 160) & MASK17


@internal
@view
def _penalty(task: uint256) -> uint256:
    return (self.terms0[task] >> 177) & 2**14 - 1


@internal
@view
def _epoch_seconds(task: uint256) -> uint256:
    return (self.terms0[task] >> 205) & MASK32


@internal
@view
def _floors(task: uint256) -> Floors:
    f: uint256 = self.floors[task]
    return Floors(
        min_processing_price=f & MASK85,
        stake_per_point_epoch=(f >> 85) & MASK85,
        min_data_price=f >> 170,
    )


@internal
def _set_floors(task: uint256, f: Floors):
    assert (
        f.min_processing_price < MAX_FLOOR
        and f.stake_per_point_epoch < MAX_FLOOR
        and f.min_data_price < MAX_FLOOR
    ), "market: floor too large"
    w: uint256 = f.min_processing_price | (f.stake_per_point_epoch << 85) | (f.min_data_price << 170)
    if w != self.floors[task]:
        self.floors[task] = w


@internal
def _place_bid(
    task: uint256, side: uint256, amount: uint256, price: uint256, stake: uint256, stake_floor: uint256, evict: uint256
) -> uint256:
    assert self.clock[task] & MASK8 == BIDDING, "market: task is not taking bids"
    assert block.timestamp <= (self.terms1[task] >> 48) & MASK40, "market: bidding closed"
    book: uint256 = self.book[task]
    open: uint256 = (book >> (128 * side)) & MASK128
    index: uint256 = 0
    if open != MASK128:
        index = self._low_bit(~open & MASK128)
    else:
        # A full book takes a better bid by evicting a strictly pricier one (refunded in
        # full), so filling the book only keeps out bids the requester would not buy.
        assert evict != 0 and evict <= MAX_BIDS, "market: book full, name a bid to evict"
        index = evict - 1
        k: uint256 = self._key(task, side, index)
        assert self._price(self.offer[k]) > price, "market: only a pricier bid can be evicted"
        loser: address = convert(self.bidder_word[k] & MASK160, address)
        refund: uint256 = 0
        if side == PROCESSING:
            refund = self._stake_of(task, k, self.offer[k] & MASK48)
            self.liabilities[task] -= refund
            self._credit(loser, refund)
        log BidEvicted(task=task, side=side, bidder=loser, bid=index, refunded=refund)
    self.book[task] = book | (1 << (128 * side + index))
    k: uint256 = self._key(task, side, index)
    self.bidder_word[k] = convert(msg.sender, uint256) | (stake_floor << 160)
    self.offer[k] = amount | (price << 48)
    log BidPlaced(task=task, side=side, bidder=msg.sender, bid=index, amount=amount, price=price, stake=stake)
    return index


@internal
@view
def _stake_of(task: uint256, k: uint256, points: uint256) -> uint256:
    # points x max(price, the stake floor when it bid) x max_epochs
    o: uint256 = self.offer[k]
    return points * max(self._price(o), self.bidder_word[k] >> 160) * self._max_epochs(task)


@internal
def _verify_side(
    task: uint256, side: uint256, fills: DynArray[Fill, MAX_BIDS], wanted: uint256, min_fill: uint256
) -> (uint256, uint256, uint256):
    # Accepts exactly the greedy allocation: fills in strictly increasing (price, index)
    # order, all full but the last, every open bid left out priced above the last fill.
    # Processing buys exactly `wanted`. Data fills are each >= min_fill: the marginal bid
    # is dropped rather than cut below it, so data sums to (wanted - min_fill, wanted].
    open: uint256 = (self.book[task] >> (128 * side)) & MASK128
    selected: uint256 = 0
    total: uint256 = 0
    cost: uint256 = 0
    last_key: uint256 = 0
    partial: bool = False
    for f: Fill in fills:
        assert f.bid < MAX_BIDS and open & (1 << f.bid) != 0, "market: no such open bid"
        k: uint256 = self._key(task, side, f.bid)
        o: uint256 = self.offer[k]
        amount: uint256 = o & MASK48
        price: uint256 = self._price(o)
        assert f.amount != 0, "market: empty fill"
        assert f.amount <= amount, "market: fill exceeds bid"
        assert side == PROCESSING or f.amount >= min_fill, "market: fill below min_fill"
        key: uint256 = (price << 8) | f.bid
        assert total == 0 or key > last_key, "market: fills not in (price, bid) order"
        assert not partial, "market: only the last fill may be partial"
        partial = f.amount < amount
        last_key = key
        total += f.amount
        cost += f.amount * price
        selected |= 1 << f.bid
        self.offer[k] = (o & ~(MASK48 << 148)) | (f.amount << 148) | (WINNER << 196)
    if side == PROCESSING or partial:
        assert total == wanted, "market: fills must sum to num_points"
    else:
        assert total <= wanted and total + min_fill > wanted, "market: fills must sum to num_points"
    left: uint256 = open & ~selected
    for i: uint256 in range(MAX_BIDS):
        if left == 0:
            break
        j: uint256 = self._low_bit(left)
        left ^= 1 << j
        price: uint256 = self._price(self.offer[self._key(task, side, j)])
        assert (price << 8) | j > last_key, "market: a cheaper bid was left out"
    return cost, total, selected


@internal
@view
def _root_digest(task: uint256, epoch: uint256, root: bytes32) -> bytes32:
    return keccak256(
        concat(b"\x19\x01", self.domain_separator, keccak256(abi_encode(ROOT_TYPEHASH, task, epoch, root)))
    )


@internal
def _close(task: uint256, c: Clock) -> Clock:
    # the open epoch's books: lazy pay of a full epoch, the history, owners at the first
    if c.flags & FULL != 0:
        c.spent += self.procs[task] >> 128
        c.full_epochs += 1
    if c.flags & FIRST_CLOSED == 0:
        c.flags |= FIRST_CLOSED
        self._to_reserve(task, self.data_money[task] >> 104, R_UNDELIVERED)
    self.history[task] = keccak256(concat(HISTORY, self.history[task], self.epoch_acc[task]))
    return c


@internal
def _mark_not_received(task: uint256, epoch: uint256, c: Clock, marks: uint256):
    assert marks <= MASK128, "market: not a winning processor"
    winners: uint256 = self.book[task] >> 128
    assert marks & ~winners == 0, "market: not a winning processor"
    penalty: uint256 = self._penalty(task)
    moved: uint256 = 0
    left: uint256 = marks
    for n: uint256 in range(MAX_BIDS):
        if left == 0:
            break
        i: uint256 = self._low_bit(left)
        left ^= 1 << i
        k: uint256 = self._key(task, PROCESSING, i)
        o: uint256 = self.offer[k]
        if self._oflags(o) & SLASHED != 0:
            continue  # its pay is already forfeited
        pk: uint256 = (task << 7) | i
        ps: uint256 = self.pstate[pk]
        pay: uint256 = self._epoch_pay(o, ps)
        if c.flags & FULL != 0:
            # one full epoch less to pay it: full_paid + 1
            extra: uint256 = self._extra(o)
            self.offer[k] = self._with_extra(o, extra + 1)
            moved += pay
        elif (ps >> 8) & MASK32 == epoch + 1:
            paid: uint256 = pay
            if ps & LATE != 0:
                paid = self._late_pay(pay, penalty)
            self.pstate[pk] = ps - (paid << 88)
            moved += paid
    self._to_reserve(task, moved, R_NOT_RECEIVED)


@internal
@view
def _is_winner(task: uint256, side: uint256, index: uint256, who: address) -> bool:
    if index >= MAX_BIDS or side > PROCESSING:
        return False
    k: uint256 = self._key(task, side, index)
    return self.bidder_word[k] & MASK160 == convert(who, uint256) and self._oflags(self.offer[k]) & WINNER != 0


@internal
@view
def _accused_root(task: uint256, epoch: uint256, accused: uint256, where: EpochProof) -> bytes32:
    # The accused's root for `epoch`, from the epoch's accumulator, checked against the
    # task's history of closed epochs.
    acc: bytes32 = keccak256(concat(EPOCH_START, convert(task, bytes32), convert(epoch, bytes32), where.model_digest))
    found: bytes32 = empty(bytes32)
    for r: RootRec in where.roots:
        acc = keccak256(concat(EPOCH_ROOT, acc, convert(r.processor, bytes32), r.root))
        if r.processor == accused and found == empty(bytes32):
            found = r.root
    h: bytes32 = keccak256(concat(HISTORY, where.history_before, acc))
    for a: bytes32 in where.later:
        h = keccak256(concat(HISTORY, h, a))
    assert h == self.history[task], "market: epoch proof does not match the closed epochs"
    assert found != empty(bytes32), "market: the accused recorded no root that epoch"
    return found


@internal
@view
def _beacon(block_number: uint256) -> bytes32:
    # The one source of randomness: the hash of a block fixed after the accusation. A
    # block producer (or an L2 sequencer) can grind it; swap in a RANDAO proof or a VRF here.
    return blockhash(block_number)


@internal
@pure
def _popcount(x: uint256) -> uint256:
    n: uint256 = 0
    v: uint256 = x
    for i: uint256 in range(MAX_BIDS):
        if v == 0:
            break
        v &= v - 1
        n += 1
    return n


@internal
@view
def _panel_member(task: uint256, panel: uint256, slot: uint256) -> address:
    p: uint256 = (panel >> (8 * slot)) & MASK8
    if p == 0:
        return empty(address)
    return convert(self.bidder_word[self._key(task, PROCESSING, p - 1)] & MASK160, address)


@internal
@view
def _owner_voter(task: uint256, w0: uint256) -> address:
    # the block's owner may vote (a veto on conviction), unless it is the accused itself
    owner: uint256 = self.bidder_word[self._key(task, DATA, (w0 >> 72) & MASK8)] & MASK160
    accused: uint256 = self.bidder_word[self._key(task, PROCESSING, (w0 >> 64) & MASK8)] & MASK160
    if owner == accused:
        return empty(address)
    return convert(owner, address)


@internal
@view
def _all_voted(dispute: uint256, task: uint256, panel: uint256) -> bool:
    for t: uint256 in range(PANEL):
        if (panel >> (8 * t)) & MASK8 != 0 and self.votes[dispute][t] == empty(bytes32):
            return False
    return True


@internal
@view
def _votes_for(dispute: uint256, task: uint256, panel: uint256, agreed: bytes32) -> (uint256, uint256):
    # (drawn auditors, how many of them committed to `agreed`)
    drawn: uint256 = 0
    agree: uint256 = 0
    for t: uint256 in range(PANEL):
        who: address = self._panel_member(task, panel, t)
        if who == empty(address):
            continue
        drawn += 1
        if self.votes[dispute][t] == keccak256(concat(VOTE, convert(dispute, bytes32), convert(who, bytes32), agreed)):
            agree += 1
    return drawn, agree


@internal
def _pay_fees(dispute: uint256, task: uint256, panel: uint256, agreed: bytes32, fee: uint256):
    for t: uint256 in range(PANEL):
        who: address = self._panel_member(task, panel, t)
        if who == empty(address):
            continue
        if self.votes[dispute][t] == keccak256(concat(VOTE, convert(dispute, bytes32), convert(who, bytes32), agreed)):
            self._credit(who, fee)


@internal
def _slash(task: uint256, index: uint256, fault: uint256):
    # Everything the processor has not been paid yet (pay of closed epochs, the open
    # epoch's, shares of earlier slashes) and its whole stake on the fill are forfeited.
    k: uint256 = self._key(task, PROCESSING, index)
    o: uint256 = self.offer[k]
    if self._oflags(o) & SLASHED != 0:
        return  # convicted by an earlier dispute: nothing is left to forfeit
    pk: uint256 = (task << 7) | index
    ps: uint256 = self.pstate[pk]
    c: Clock = self._load(task)
    pay: uint256 = self._epoch_pay(o, ps)
    extra: uint256 = self._extra(o)
    full_paid: uint256 = extra & MASK17
    pool: uint256 = (c.full_epochs - full_paid) * pay + (ps >> 88)
    flags: uint256 = self._oflags(o)
    if flags & STAKE_DONE == 0:
        pool += self._stake_of(task, k, self._fill(o))
    self.offer[k] = self._with_extra(self._with_flags(o, flags | SLASHED | STAKE_DONE), (extra & ~MASK17) | c.full_epochs)
    self.pstate[pk] = ps & (2**88 - 1)
    pr: uint256 = self.procs[task]
    self.procs[task] = (pr & ~(1 << index)) - (pay << 128)
    if c.state == TRAINING:
        c.active -= 1
        if c.flags & FULL != 0 or (ps >> 8) & MASK32 == c.epoch + 1:
            c.submitted -= 1  # its recorded root no longer counts
        self._store(task, c)
    shared: uint256 = 0
    if fault == FAULT_UNOPENED:
        shared = self._share(task, pool)
    self._to_reserve(task, pool - shared, R_SLASH)
    log ProcessorSlashed(task=task, processor=index, fault=fault, forfeited=pool, to_reserve=pool - shared, to_participants=shared)


@internal
def _share(task: uint256, pool: uint256) -> uint256:
    # An objective fault nobody can cause: the pool goes to the other participants pro
    # rata to the value they are paid (owners: price x delivered points if they committed;
    # processors: their epoch pay). The requester's own data and price-0 bids weigh 0.
    requester: uint256 = self.terms0[task] & MASK160
    book: uint256 = self.book[task]
    active: uint256 = self.procs[task] & MASK128
    total: uint256 = 0
    for side: uint256 in range(2):
        left: uint256 = (book >> (128 * side)) & MASK128
        if side == PROCESSING:
            left = active
        for n: uint256 in range(MAX_BIDS):
            if left == 0:
                break
            i: uint256 = self._low_bit(left)
            left ^= 1 << i
            total += self._weight(task, side, i, requester)
    if total == 0:
        return 0
    shared: uint256 = 0
    for side: uint256 in range(2):
        left: uint256 = (book >> (128 * side)) & MASK128
        if side == PROCESSING:
            left = active
        for n: uint256 in range(MAX_BIDS):
            if left == 0:
                break
            i: uint256 = self._low_bit(left)
            left ^= 1 << i
            wt: uint256 = self._weight(task, side, i, requester)
            if wt == 0:
                continue
            share: uint256 = pool * wt // total
            if share == 0:
                continue
            shared += share
            if side == DATA:
                self.liabilities[task] -= share
                self._credit(convert(self.bidder_word[self._key(task, DATA, i)] & MASK160, address), share)
            else:
                # into its unpaid pay: collected like pay (and forfeited if it is slashed)
                self.pstate[(task << 7) | i] += share << 88
            log ShareCredited(task=task, side=side, bid=i, amount=share)
    return shared


@internal
@view
def _weight(task: uint256, side: uint256, i: uint256, requester: uint256) -> uint256:
    k: uint256 = self._key(task, side, i)
    if self.bidder_word[k] & MASK160 == requester:
        return 0
    o: uint256 = self.offer[k]
    if side == DATA:
        if self._oflags(o) & COMMITTED == 0:
            return 0
        return (self._fill(o) - self._extra(o)) * self._price(o)
    if self._oflags(o) & SLASHED != 0:
        return 0
    return self._epoch_pay(o, self.pstate[(task << 7) | i])


@internal
@view
def _owed(task: uint256, side: uint256, index: uint256) -> (uint256, uint256, uint256):
    # (what the bid can collect now, its offer word after, its state word after)
    k: uint256 = self._key(task, side, index)
    o: uint256 = self.offer[k]
    ps: uint256 = 0
    if side == PROCESSING:
        ps = self.pstate[(task << 7) | index]
    if o & MASK48 == 0:
        return 0, o, ps
    c: Clock = self._load(task)
    flags: uint256 = self._oflags(o)
    owed: uint256 = 0
    if side == DATA:
        if flags & (WINNER | COMMITTED | PAID) == WINNER | COMMITTED and c.flags & FIRST_CLOSED != 0:
            owed = (self._fill(o) - self._extra(o)) * self._price(o)
            flags |= PAID
        return owed, self._with_flags(o, flags), ps
    running: bool = c.state == TRAINING or c.state == FINISHED
    if flags & REFUNDED == 0 and (running or c.state == CANCELLED):
        owed += self._stake_of(task, k, (o & MASK48) - self._fill(o))
        flags |= REFUNDED
    extra: uint256 = self._extra(o)
    if flags & (WINNER | SLASHED) == WINNER and running:
        pay: uint256 = self._epoch_pay(o, ps)
        unpaid: uint256 = ps >> 88
        pending: uint256 = 0
        if c.state == TRAINING and (ps >> 8) & MASK32 == c.epoch + 1:
            # the open epoch's pay is not final until it closes
            pending = pay
            if ps & LATE != 0:
                pending = self._late_pay(pay, self._penalty(task))
        owed += (c.full_epochs - (extra & MASK17)) * pay + unpaid - pending
        extra = (extra & ~MASK17) | c.full_epochs
        ps = (ps & (2**88 - 1)) | (pending << 88)
        if (
            c.state == FINISHED
            and flags & STAKE_DONE == 0
            and (extra >> 17) & MASK8 == 0
            and block.timestamp > c.deadline + self._grace()
        ):
            owed += self._stake_of(task, k, self._fill(o))
            flags |= STAKE_DONE
    return owed, self._with_extra(self._with_flags(o, flags), extra), ps


@internal
def _settle(task: uint256, side: uint256, index: uint256) -> (uint256, address):
    assert side <= PROCESSING, "market: side is 0 (data) or 1 (processing)"
    assert index < MAX_BIDS, "market: no such bid"
    owed: uint256 = 0
    o: uint256 = 0
    ps: uint256 = 0
    owed, o, ps = self._owed(task, side, index)
    assert owed > 0, "market: nothing owed"
    self.offer[self._key(task, side, index)] = o
    if side == PROCESSING:
        self.pstate[(task << 7) | index] = ps
    self.liabilities[task] -= owed
    return owed, convert(self.bidder_word[self._key(task, side, index)] & MASK160, address)


@internal
@view
def _requester_owed(task: uint256) -> uint256:
    c: Clock = self._load(task)
    if c.flags & REQUESTER_PAID != 0:
        return 0
    t1: uint256 = self.terms1[task]
    t2: uint256 = self.terms2[task]
    budgets: uint256 = (t1 >> 120) + (t2 & MASK104)
    if c.state == CANCELLED:
        return budgets
    if c.state != FINISHED:
        return 0
    data_spent: uint256 = 0
    if c.flags & FIRST_CLOSED != 0:
        data_spent = self.data_money[task] & MASK104
    return budgets - data_spent - c.spent
