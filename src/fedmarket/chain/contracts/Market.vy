# pragma version ~=0.4.3
# pragma nonreentrancy off
"""
@title fedmarket Market
@license Apache-2.0
@notice One deployment holds many federated-learning tasks paid in one ERC-20.
        A requester escrows a data budget and a processing budget; data owners
        bid points at a price per point; processors bid capacity per epoch at a
        price per point and stake their maximum earnings. The cheapest
        sufficient allocation is computed off chain and verified here in
        O(bids). Each epoch, processors commit a digest of their results; the
        requester closes the epoch, may flag cheaters (slashed, their pay and
        stake split among the other participants, never returned to the
        requester) and may stop. A vanished requester cannot lock funds:
        after the epoch deadline plus a grace period any winner ends the task.
@dev    Money is pulled into the contract on create/bid and pushed out only by
        `withdraw` (pull payments). Entitlements are computed lazily from task
        state: `claim` credits `entitlement - credited`, so closing an epoch
        never loops over the parties (its cost is flat, except per flagged
        processor). `liabilities[task]` counts what the task still owes; every
        credit subtracts from it with checked arithmetic, so no bug can pay
        out more than a task holds. Fee-on-transfer tokens are rejected (the
        balance delta of every pull must equal the amount).
"""

from ethereum.ercs import IERC20

# ---------------------------------------------------------------- constants

# Bids per side per task: bounds the loops in `resolve`.
MAX_BIDS: constant(uint256) = 128
# Flagged processors per `close_epoch` call: bounds its only loop.
MAX_FLAGGED: constant(uint256) = 16
MAX_EPOCHS: constant(uint256) = 100_000
# Every amount of money (budget, stake, price x points) stays below this, so
# the packed 104/112/136-bit fields below can never overflow.
MAX_MONEY: constant(uint256) = 2**100
MAX_POINTS: constant(uint256) = 2**48
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

# bid state flags
WINNER: constant(uint256) = 1
SLASHED: constant(uint256) = 2
LAST_LATE: constant(uint256) = 4

MASK8: constant(uint256) = 2**8 - 1
MASK16: constant(uint256) = 2**16 - 1
MASK32: constant(uint256) = 2**32 - 1
MASK40: constant(uint256) = 2**40 - 1
MASK64: constant(uint256) = 2**64 - 1
MASK104: constant(uint256) = 2**104 - 1
DATA_WINNER: constant(uint256) = 2**255
MASK112: constant(uint256) = 2**112 - 1

# ---------------------------------------------------------------- types


struct Task:
    requester: address
    spec_hash: bytes32
    public_context_hash: bytes32
    num_points: uint256
    epoch_seconds: uint256
    max_epochs: uint256
    data_budget: uint256
    processing_budget: uint256
    bidding_deadline: uint256
    late_penalty_bps: uint256
    assignment_hash: bytes32
    # cost of the data whose owners committed it (what owners are paid at the first close)
    data_committed_cost: uint256
    # winning bids that share slashed stakes: owners (not the requester) + unslashed processors
    shares: uint256


# The per-task fields every epoch touches, decoded from one storage word.
struct Clock:
    state: uint256  # 8 bits
    epoch: uint256  # 32 bits: the current (open) epoch
    deadline: uint256  # 40 bits: of the current epoch, or of the assignment window
    submitted: uint256  # 16 bits: results submitted in the current epoch
    active: uint256  # 16 bits: winning processors not slashed
    flags: uint256  # 8 bits
    spent: uint256  # 136 bits: processing pay accrued so far (including forfeited pay)


# An offer packs amount(64) | price(104) << 64; amount 0 means withdrawn. A winning data
# bid also keeps its fill and the winner flag there, in the word `resolve` has already
# read: | fill(64) << 168 | 1 << 255 (rewriting a warm slot costs a tenth of writing a
# fresh one). A processing bid's state word is
#   flags(8) | last_epoch+1(32) << 8 | epoch_pay(104) << 40 | earned(112) << 144
struct Bid:
    bidder: address
    offer: uint256
    state: uint256


struct Fill:
    bid: uint256
    amount: uint256


struct BidView:
    bidder: address
    amount: uint256
    price: uint256
    winner: bool
    fill: uint256
    slashed: bool
    earned: uint256
    last_submitted_epoch: uint256  # 0 = never, else epoch + 1
    last_late: bool
    data_root: bytes32


# ---------------------------------------------------------------- events


event TaskCreated:
    task: indexed(uint256)
    requester: indexed(address)
    spec_hash: bytes32
    public_context_hash: bytes32
    num_points: uint256
    data_budget: uint256
    processing_budget: uint256
    bidding_deadline: uint256


event BidPlaced:
    task: indexed(uint256)
    side: indexed(uint256)
    bidder: indexed(address)
    bid: uint256
    amount: uint256
    price: uint256
    stake: uint256


event BidWithdrawn:
    task: indexed(uint256)
    side: indexed(uint256)
    bidder: indexed(address)
    bid: uint256
    refunded: uint256


event TaskResolved:
    task: indexed(uint256)
    data_cost: uint256
    processing_cost_per_epoch: uint256
    data_winners: uint256
    processing_winners: uint256
    assignment_deadline: uint256


event TaskCancelled:
    task: indexed(uint256)
    by: indexed(address)


event AssignmentCommitted:
    task: indexed(uint256)
    assignment_hash: bytes32
    epoch_deadline: uint256


event DataCommitted:
    task: indexed(uint256)
    owner: indexed(address)
    root: bytes32


event ResultSubmitted:
    task: indexed(uint256)
    epoch: indexed(uint256)
    processor: indexed(address)
    digest: bytes32
    on_time: bool
    pay: uint256


event ProcessorSlashed:
    task: indexed(uint256)
    epoch: indexed(uint256)
    processor: indexed(address)
    forfeited_pay: uint256
    forfeited_stake: uint256
    share_per_participant: uint256


event EpochClosed:
    task: indexed(uint256)
    epoch: indexed(uint256)
    go_on: bool
    flagged: uint256
    next_deadline: uint256


event TaskFinished:
    task: indexed(uint256)
    epochs_closed: uint256
    timed_out: bool


event TimeoutClaimed:
    task: indexed(uint256)
    state: uint256
    by: indexed(address)


event Claimed:
    task: indexed(uint256)
    account: indexed(address)
    amount: uint256


event Withdrawn:
    account: indexed(address)
    amount: uint256


# ---------------------------------------------------------------- storage

token: public(immutable(address))
grace_seconds: public(immutable(uint256))

num_tasks: public(uint256)
tasks: public(HashMap[uint256, Task])
clock: HashMap[uint256, uint256]
bids: HashMap[uint256, HashMap[uint256, HashMap[uint256, Bid]]]  # task -> side -> index
num_bids: public(HashMap[uint256, HashMap[uint256, uint256]])  # task -> side
bid_of: HashMap[uint256, HashMap[uint256, HashMap[address, uint256]]]  # index + 1; 0 = none
data_root: HashMap[uint256, HashMap[uint256, bytes32]]  # task -> data bid -> root
slash_acc: public(HashMap[uint256, uint256])  # per-share slashed amount, accumulated
exit_acc: HashMap[uint256, HashMap[uint256, uint256]]  # task -> processing bid -> acc when slashed
dust: public(HashMap[uint256, uint256])  # remainder of slashed pools that cannot be split evenly

liabilities: public(HashMap[uint256, uint256])  # what each task still owes anyone
credited: public(HashMap[uint256, HashMap[address, uint256]])
claimable: public(HashMap[address, uint256])
total_claimable: public(uint256)


@deploy
def __init__(token_: address, grace_seconds_: uint256):
    """
    @param token_ The ERC-20 every task of this market is paid in.
    @param grace_seconds_ How long after an epoch deadline the requester may
           still close it before any winner can end the task by timeout.
    """
    assert token_.is_contract, "market: token is not a contract"
    assert grace_seconds_ > 0, "market: grace period must be positive"
    token = token_
    grace_seconds = grace_seconds_


# ---------------------------------------------------------------- packing


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
        spent=w >> 120,
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
        | (c.spent << 120)
    )


@internal
@pure
def _price(offer: uint256) -> uint256:
    return (offer >> 64) & MASK104


@internal
@pure
def _data_fill(offer: uint256) -> uint256:
    # 0 unless the bid won
    return (offer >> 168) & MASK64


@internal
@pure
def _pack_proc(flags: uint256, last: uint256, epoch_pay: uint256, earned: uint256) -> uint256:
    return flags | (last << 8) | (epoch_pay << 40) | (earned << 144)


# ---------------------------------------------------------------- tokens


@internal
def _token_call(data: Bytes[100]):
    # Tolerates tokens that return nothing (USDT-style) and rejects those that return false.
    ok: bool = False
    response: Bytes[32] = b""
    ok, response = raw_call(token, data, max_outsize=32, revert_on_failure=False)
    assert ok, "market: token transfer failed"
    if len(response) > 0:
        assert convert(response, bool), "market: token transfer failed"


@internal
def _pull(sender: address, amount: uint256):
    if amount == 0:
        return
    before: uint256 = staticcall IERC20(token).balanceOf(self)
    self._token_call(
        abi_encode(
            sender, self, amount, method_id=method_id("transferFrom(address,address,uint256)")
        )
    )
    after: uint256 = staticcall IERC20(token).balanceOf(self)
    assert after == before + amount, "market: token took a fee on transfer"


# ---------------------------------------------------------------- entitlements


@internal
@view
def _entitlement(task: uint256, who: address) -> uint256:
    # Everything `who` has earned from `task` so far. Never decreases: pay for the
    # open epoch (which a flag could still forfeit) is left out until it closes.
    c: Clock = self._load(task)
    total: uint256 = 0
    over: bool = c.state == FINISHED or c.state == CANCELLED
    resolved: bool = c.state >= ASSIGNING and c.state <= FINISHED

    requester: address = self.tasks[task].requester
    if who == requester:
        if c.state == CANCELLED:
            total += self.tasks[task].data_budget + self.tasks[task].processing_budget
        elif c.state == FINISHED:
            data_spent: uint256 = 0
            if c.flags & FIRST_CLOSED != 0:
                data_spent = self.tasks[task].data_committed_cost
            total += self.tasks[task].data_budget - data_spent + self.tasks[task].processing_budget - c.spent

    d: uint256 = self.bid_of[task][DATA][who]
    if d != 0 and resolved:
        offer: uint256 = self.bids[task][DATA][d - 1].offer
        if offer & DATA_WINNER != 0:
            if c.flags & FIRST_CLOSED != 0 and self.data_root[task][d - 1] != empty(bytes32):
                total += self._data_fill(offer) * self._price(offer)
            if who != requester:
                total += self.slash_acc[task]

    p: uint256 = self.bid_of[task][PROCESSING][who]
    if p != 0 and c.state >= ASSIGNING:
        b: Bid = self.bids[task][PROCESSING][p - 1]
        price: uint256 = self._price(b.offer)
        stake: uint256 = (b.offer & MASK64) * price * self.tasks[task].max_epochs
        if c.state == CANCELLED or b.state & WINNER == 0:
            total += stake
        else:
            epoch_pay: uint256 = (b.state >> 40) & MASK104
            retained: uint256 = epoch_pay * self.tasks[task].max_epochs
            earned: uint256 = b.state >> 144
            last: uint256 = (b.state >> 8) & MASK32
            if c.state == TRAINING and last == c.epoch + 1:
                # the open epoch's pay is not final yet
                if b.state & LAST_LATE != 0:
                    earned -= epoch_pay * (BPS - self.tasks[task].late_penalty_bps) // BPS
                else:
                    earned -= epoch_pay
            total += stake - retained + earned
            if b.state & SLASHED != 0:
                total += self.exit_acc[task][p - 1]
            else:
                total += self.slash_acc[task]
                if over:
                    total += retained
    return total


# ---------------------------------------------------------------- task lifecycle


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
) -> uint256:
    """
    @notice Announce a task and escrow both budgets in one transfer.
    @dev The caller must have approved `data_budget + processing_budget`.
    @param spec_hash keccak256 of the canonical task spec.
    @param public_context_hash sha256 of the requester's public CKKS context.
    @param num_points Data points wanted (and processed per epoch).
    @param epoch_seconds Time limit of each epoch.
    @param max_epochs Most epochs the task may run.
    @param data_budget Most the requester pays data owners, in token base units.
    @param processing_budget Most the requester pays processors over all epochs.
    @param bidding_seconds Length of the bidding window from now.
    @param late_penalty_bps Pay cut for a late result, in basis points.
    @return The new task's id.
    """
    assert spec_hash != empty(bytes32), "market: empty spec hash"
    assert public_context_hash != empty(bytes32), "market: empty context hash"
    assert num_points > 0 and num_points <= MAX_POINTS, "market: bad num_points"
    assert epoch_seconds > 0 and epoch_seconds <= MASK32, "market: bad epoch_seconds"
    assert max_epochs > 0 and max_epochs <= MAX_EPOCHS, "market: bad max_epochs"
    assert bidding_seconds > 0 and bidding_seconds <= MASK32, "market: bad bidding_seconds"
    assert late_penalty_bps <= BPS, "market: penalty above 100%"
    assert data_budget <= MAX_MONEY and processing_budget <= MAX_MONEY, "market: budget too large"

    task: uint256 = self.num_tasks
    self.num_tasks = task + 1
    deadline: uint256 = block.timestamp + bidding_seconds
    self.tasks[task] = Task(
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
        assignment_hash=empty(bytes32),
        data_committed_cost=0,
        shares=0,
    )
    self.clock[task] = BIDDING
    self.liabilities[task] = data_budget + processing_budget
    self._pull(msg.sender, data_budget + processing_budget)
    log TaskCreated(
        task=task,
        requester=msg.sender,
        spec_hash=spec_hash,
        public_context_hash=public_context_hash,
        num_points=num_points,
        data_budget=data_budget,
        processing_budget=processing_budget,
        bidding_deadline=deadline,
    )
    return task


@internal
def _place_bid(task: uint256, side: uint256, amount: uint256, price: uint256, stake: uint256) -> uint256:
    assert self.clock[task] & MASK8 == BIDDING, "market: task is not taking bids"
    assert block.timestamp <= self.tasks[task].bidding_deadline, "market: bidding closed"
    assert amount > 0 and amount <= MAX_POINTS, "market: bad amount"
    assert price <= MAX_MONEY and amount * price <= MAX_MONEY, "market: price too large"
    assert self.bid_of[task][side][msg.sender] == 0, "market: already bid"
    index: uint256 = self.num_bids[task][side]
    assert index < MAX_BIDS, "market: too many bids"
    self.num_bids[task][side] = index + 1
    self.bids[task][side][index] = Bid(bidder=msg.sender, offer=amount | (price << 64), state=0)
    self.bid_of[task][side][msg.sender] = index + 1
    log BidPlaced(
        task=task, side=side, bidder=msg.sender, bid=index, amount=amount, price=price, stake=stake
    )
    return index


@external
@nonreentrant
def bid_data(task: uint256, points: uint256, price_per_point: uint256) -> uint256:
    """
    @notice Offer `points` data points at `price_per_point` each.
    @dev One open bid per address and side; withdraw it to bid again.
    @return The bid's index on the data side.
    """
    return self._place_bid(task, DATA, points, price_per_point, 0)


@external
@nonreentrant
def bid_processing(task: uint256, capacity_per_epoch: uint256, price_per_point: uint256) -> uint256:
    """
    @notice Offer to process up to `capacity_per_epoch` points each epoch at
            `price_per_point`, staking the most this bid can earn:
            capacity x price x max_epochs (pulled from the caller now).
    @return The bid's index on the processing side.
    """
    assert msg.sender != self.tasks[task].requester, "market: requester cannot process its own task"
    # A free processor would stake nothing and could not be punished.
    assert price_per_point > 0, "market: processing price must be positive"
    # bound the factors before multiplying them, so huge inputs get a reason, not an overflow
    assert capacity_per_epoch <= MAX_POINTS, "market: bad amount"
    assert price_per_point <= MAX_MONEY, "market: price too large"
    stake: uint256 = capacity_per_epoch * price_per_point * self.tasks[task].max_epochs
    assert stake <= MAX_MONEY, "market: stake too large"
    index: uint256 = self._place_bid(task, PROCESSING, capacity_per_epoch, price_per_point, stake)
    self.liabilities[task] += stake
    self._pull(msg.sender, stake)
    return index


@internal
def _withdraw_bid(task: uint256, side: uint256) -> uint256:
    assert self.clock[task] & MASK8 == BIDDING, "market: task is not taking bids"
    assert block.timestamp <= self.tasks[task].bidding_deadline, "market: bidding closed"
    index: uint256 = self.bid_of[task][side][msg.sender]
    assert index != 0, "market: no open bid"
    index -= 1
    offer: uint256 = self.bids[task][side][index].offer
    refund: uint256 = 0
    if side == PROCESSING:
        refund = (offer & MASK64) * self._price(offer) * self.tasks[task].max_epochs
        self.liabilities[task] -= refund
        self.claimable[msg.sender] += refund
        self.total_claimable += refund
    self.bids[task][side][index].offer = 0
    self.bid_of[task][side][msg.sender] = 0
    log BidWithdrawn(task=task, side=side, bidder=msg.sender, bid=index, refunded=refund)
    return refund


@external
@nonreentrant
def withdraw_data_bid(task: uint256):
    """
    @notice Withdraw the caller's data bid before the bidding deadline.
    """
    self._withdraw_bid(task, DATA)


@external
@nonreentrant
def withdraw_processing_bid(task: uint256) -> uint256:
    """
    @notice Withdraw the caller's processing bid before the bidding deadline;
            its stake becomes withdrawable at once.
    @return The stake credited back.
    """
    return self._withdraw_bid(task, PROCESSING)


@internal
def _verify_side(task: uint256, side: uint256, fills: DynArray[Fill, MAX_BIDS], wanted: uint256) -> (
    uint256, uint256
):
    # Accepts exactly the greedy allocation: fills in strictly increasing
    # (price, index) order, all full but the last, summing to `wanted`, and
    # every open bid left out priced above the last fill. One storage read per bid.
    n: uint256 = self.num_bids[task][side]
    requester: address = self.tasks[task].requester
    selected: bool[MAX_BIDS] = empty(bool[MAX_BIDS])
    total: uint256 = 0
    cost: uint256 = 0
    sharers: uint256 = 0
    last_key: uint256 = 0
    partial: bool = False
    for f: Fill in fills:
        assert f.bid < n, "market: no such bid"
        offer: uint256 = self.bids[task][side][f.bid].offer
        amount: uint256 = offer & MASK64
        price: uint256 = self._price(offer)
        assert amount != 0, "market: fill of a withdrawn bid"
        assert f.amount != 0, "market: empty fill"
        assert f.amount <= amount, "market: fill exceeds bid"
        key: uint256 = (price << 8) | f.bid
        assert total == 0 or key > last_key, "market: fills not in (price, bid) order"
        assert not partial, "market: only the last fill may be partial"
        partial = f.amount < amount
        last_key = key
        total += f.amount
        cost += f.amount * price
        selected[f.bid] = True
        if side == DATA:
            self.bids[task][DATA][f.bid].offer = offer | (f.amount << 168) | DATA_WINNER
            if self.bids[task][DATA][f.bid].bidder != requester:
                sharers += 1
        else:
            self.bids[task][PROCESSING][f.bid].state = self._pack_proc(WINNER, 0, f.amount * price, 0)
            sharers += 1
    assert total == wanted, "market: fills must sum to num_points"
    for i: uint256 in range(n, bound=MAX_BIDS):
        if selected[i]:
            continue
        offer: uint256 = self.bids[task][side][i].offer
        if offer & MASK64 == 0:
            continue
        assert (self._price(offer) << 8) | i > last_key, "market: a cheaper bid was left out"
    return cost, sharers


@external
@nonreentrant
def resolve(task: uint256, data_fills: DynArray[Fill, MAX_BIDS], processing_fills: DynArray[Fill, MAX_BIDS]):
    """
    @notice Settle the bidding with the cheapest sufficient allocation, which
            anyone may compute off chain (fedmarket.chain.allocation) and submit
            after the bidding deadline; it is verified here in O(bids).
    @param data_fills (bid index, points) per winning data bid, cheapest first.
    @param processing_fills (bid index, points per epoch) per winning processor, cheapest first.
    """
    c: Clock = self._load(task)
    assert c.state == BIDDING, "market: task is not in bidding"
    assert block.timestamp > self.tasks[task].bidding_deadline, "market: bidding still open"
    data_cost: uint256 = 0
    data_sharers: uint256 = 0
    data_cost, data_sharers = self._verify_side(task, DATA, data_fills, self.tasks[task].num_points)
    assert data_cost <= self.tasks[task].data_budget, "market: over data budget"
    epoch_cost: uint256 = 0
    processors: uint256 = 0
    epoch_cost, processors = self._verify_side(task, PROCESSING, processing_fills, self.tasks[task].num_points)
    assert epoch_cost * self.tasks[task].max_epochs <= self.tasks[task].processing_budget, "market: over processing budget"

    self.tasks[task].shares = data_sharers + processors
    c.state = ASSIGNING
    c.active = processors
    c.deadline = block.timestamp + self.tasks[task].epoch_seconds
    self._store(task, c)
    log TaskResolved(
        task=task,
        data_cost=data_cost,
        processing_cost_per_epoch=epoch_cost,
        data_winners=len(data_fills),
        processing_winners=processors,
        assignment_deadline=c.deadline,
    )


@external
@nonreentrant
def cancel(task: uint256):
    """
    @notice The requester calls off a task before it is resolved (for example
            when no allocation fits the budget). Its budgets and every stake
            become claimable in full.
    """
    assert msg.sender == self.tasks[task].requester, "market: only the requester"
    assert self.clock[task] & MASK8 == BIDDING, "market: task is not in bidding"
    self.clock[task] = CANCELLED
    log TaskCancelled(task=task, by=msg.sender)


@external
@nonreentrant
def commit_assignment(task: uint256, assignment_hash: bytes32):
    """
    @notice The requester commits the hash of its block-to-processor
            assignment; this starts epoch 0 and its deadline.
    """
    assert msg.sender == self.tasks[task].requester, "market: only the requester"
    c: Clock = self._load(task)
    assert c.state == ASSIGNING, "market: task is not awaiting an assignment"
    assert assignment_hash != empty(bytes32), "market: empty assignment hash"
    self.tasks[task].assignment_hash = assignment_hash
    c.state = TRAINING
    c.deadline = block.timestamp + self.tasks[task].epoch_seconds
    self._store(task, c)
    log AssignmentCommitted(task=task, assignment_hash=assignment_hash, epoch_deadline=c.deadline)


@external
@nonreentrant
def commit_data(task: uint256, root: bytes32):
    """
    @notice A winning data owner commits the root of its encrypted blocks'
            digests, which processors check what they receive against. Only
            owners who commit before the first epoch closes are paid.
    """
    c: Clock = self._load(task)
    assert (c.state == ASSIGNING or c.state == TRAINING) and c.flags & FIRST_CLOSED == 0, (
        "market: data commitments are closed"
    )
    assert root != empty(bytes32), "market: empty data root"
    index: uint256 = self.bid_of[task][DATA][msg.sender]
    assert index != 0, "market: not a data owner of this task"
    offer: uint256 = self.bids[task][DATA][index - 1].offer
    assert offer & DATA_WINNER != 0, "market: not a winning data owner"
    assert self.data_root[task][index - 1] == empty(bytes32), "market: data already committed"
    self.data_root[task][index - 1] = root
    self.tasks[task].data_committed_cost += self._data_fill(offer) * self._price(offer)
    log DataCommitted(task=task, owner=msg.sender, root=root)


@external
@nonreentrant
def submit_result(task: uint256, epoch: uint256, digest: bytes32):
    """
    @notice A winning processor commits the digest of its epoch results. On
            or before the deadline it earns fill x price; after it, that less
            the late penalty. The digest is recorded in the event log.
    """
    c: Clock = self._load(task)
    assert c.state == TRAINING, "market: task is not training"
    assert epoch == c.epoch, "market: not the current epoch"
    assert digest != empty(bytes32), "market: empty digest"
    index: uint256 = self.bid_of[task][PROCESSING][msg.sender]
    assert index != 0, "market: not a processor of this task"
    w: uint256 = self.bids[task][PROCESSING][index - 1].state
    assert w & WINNER != 0, "market: not a winning processor"
    assert w & SLASHED == 0, "market: processor was slashed"
    assert (w >> 8) & MASK32 != epoch + 1, "market: result already submitted"
    pay: uint256 = (w >> 40) & MASK104
    flags: uint256 = WINNER
    on_time: bool = block.timestamp <= c.deadline
    if not on_time:
        pay = pay * (BPS - self.tasks[task].late_penalty_bps) // BPS
        flags |= LAST_LATE
    self.bids[task][PROCESSING][index - 1].state = self._pack_proc(
        flags, epoch + 1, (w >> 40) & MASK104, (w >> 144) + pay
    )
    c.submitted += 1
    c.spent += pay
    self._store(task, c)
    log ResultSubmitted(
        task=task, epoch=epoch, processor=msg.sender, digest=digest, on_time=on_time, pay=pay
    )


@internal
def _slash(task: uint256, epoch: uint256, who: address, c: Clock) -> Clock:
    index: uint256 = self.bid_of[task][PROCESSING][who]
    assert index != 0, "market: flagged address is not a processor"
    index -= 1
    w: uint256 = self.bids[task][PROCESSING][index].state
    assert w & WINNER != 0, "market: flagged address is not a winning processor"
    assert w & SLASHED == 0, "market: processor already slashed"
    epoch_pay: uint256 = (w >> 40) & MASK104
    earned: uint256 = w >> 144
    forfeited: uint256 = 0
    if (w >> 8) & MASK32 == epoch + 1:
        forfeited = epoch_pay
        if w & LAST_LATE != 0:
            forfeited = epoch_pay * (BPS - self.tasks[task].late_penalty_bps) // BPS
        c.submitted -= 1
    stake: uint256 = epoch_pay * self.tasks[task].max_epochs
    self.bids[task][PROCESSING][index].state = self._pack_proc(
        (w & MASK8) | SLASHED, (w >> 8) & MASK32, epoch_pay, earned - forfeited
    )
    # The pool goes to the other participants through the per-share
    # accumulator; the flagged processor keeps only shares of earlier slashes.
    acc: uint256 = self.slash_acc[task]
    self.exit_acc[task][index] = acc
    shares: uint256 = self.tasks[task].shares - 1
    self.tasks[task].shares = shares
    pool: uint256 = forfeited + stake
    share: uint256 = 0
    if shares > 0:
        share = pool // shares
        self.slash_acc[task] = acc + share
    self.dust[task] += pool - share * shares
    c.active -= 1
    log ProcessorSlashed(
        task=task,
        epoch=epoch,
        processor=who,
        forfeited_pay=forfeited,
        forfeited_stake=stake,
        share_per_participant=share,
    )
    return c


@external
@nonreentrant
def close_epoch(task: uint256, epoch: uint256, flagged: DynArray[address, MAX_FLAGGED], go_on: bool):
    """
    @notice The requester closes the current epoch: before its deadline only
            once every active processor has submitted. Flagged processors
            forfeit this epoch's pay and their stake to the other
            participants. The task ends when `go_on` is false, at the last
            epoch, or when no processor is left.
    @param flagged Winning processors to slash (each at most once).
    @param go_on Whether to run another epoch.
    """
    assert msg.sender == self.tasks[task].requester, "market: only the requester"
    c: Clock = self._load(task)
    assert c.state == TRAINING, "market: task is not training"
    assert epoch == c.epoch, "market: not the current epoch"
    assert c.submitted == c.active or block.timestamp > c.deadline, "market: epoch still running"
    for who: address in flagged:
        c = self._slash(task, epoch, who, c)
    c.flags |= FIRST_CLOSED
    next_deadline: uint256 = 0
    if not go_on or epoch + 1 >= self.tasks[task].max_epochs or c.active == 0:
        c.state = FINISHED
        log TaskFinished(task=task, epochs_closed=epoch + 1, timed_out=False)
    else:
        c.epoch = epoch + 1
        c.submitted = 0
        c.deadline = block.timestamp + self.tasks[task].epoch_seconds
        next_deadline = c.deadline
    self._store(task, c)
    log EpochClosed(
        task=task,
        epoch=epoch,
        go_on=c.state == TRAINING,
        flagged=len(flagged),
        next_deadline=next_deadline,
    )


@internal
@view
def _is_winner(task: uint256, who: address) -> bool:
    d: uint256 = self.bid_of[task][DATA][who]
    if d != 0 and self.bids[task][DATA][d - 1].offer & DATA_WINNER != 0:
        return True
    p: uint256 = self.bid_of[task][PROCESSING][who]
    return p != 0 and self.bids[task][PROCESSING][p - 1].state & WINNER != 0


@external
@nonreentrant
def claim_timeout(task: uint256):
    """
    @notice End a task whose requester went silent. During bidding: anyone,
            once the bidding deadline plus the grace period has passed, and
            the task is cancelled. After resolution: any winner, once the
            assignment or epoch deadline plus the grace period has passed;
            the task ends as if the requester stopped without flags (an
            unclosed epoch is closed: submitted work is paid).
    """
    c: Clock = self._load(task)
    assert c.state != NO_TASK, "market: no such task"
    if c.state == BIDDING:
        assert block.timestamp > self.tasks[task].bidding_deadline + grace_seconds, (
            "market: not timed out yet"
        )
        c.state = CANCELLED
        log TaskCancelled(task=task, by=msg.sender)
    else:
        assert c.state == ASSIGNING or c.state == TRAINING, "market: task is over"
        assert block.timestamp > c.deadline + grace_seconds, "market: not timed out yet"
        assert self._is_winner(task, msg.sender), "market: only a winner can claim a timeout"
        if c.state == TRAINING:
            c.flags |= FIRST_CLOSED
            log EpochClosed(task=task, epoch=c.epoch, go_on=False, flagged=0, next_deadline=0)
        log TaskFinished(task=task, epochs_closed=c.epoch + convert(c.state == TRAINING, uint256), timed_out=True)
        c.state = FINISHED
    self._store(task, c)
    log TimeoutClaimed(task=task, state=c.state, by=msg.sender)


# ---------------------------------------------------------------- payments


@internal
def _claim(task: uint256, account: address) -> uint256:
    owed: uint256 = self._entitlement(task, account) - self.credited[task][account]
    if owed > 0:
        self.credited[task][account] += owed
        self.liabilities[task] -= owed
        self.claimable[account] += owed
        self.total_claimable += owed
        log Claimed(task=task, account=account, amount=owed)
    return owed


@internal
def _withdraw(account: address) -> uint256:
    amount: uint256 = self.claimable[account]
    assert amount > 0, "market: nothing to withdraw"
    self.claimable[account] = 0
    self.total_claimable -= amount
    self._token_call(abi_encode(account, amount, method_id=method_id("transfer(address,uint256)")))
    log Withdrawn(account=account, amount=amount)
    return amount


@external
@nonreentrant
def claim(task: uint256, account: address) -> uint256:
    """
    @notice Credit `account` with what `task` owes it so far (pay, refunds,
            stakes, shares of slashed stakes). Anyone may call it for anyone;
            it only ever credits the rightful account.
    @return The amount newly credited.
    """
    return self._claim(task, account)


@external
@nonreentrant
def withdraw() -> uint256:
    """
    @notice Transfer everything credited to the caller.
    @return The amount transferred.
    """
    return self._withdraw(msg.sender)


@external
@nonreentrant
def collect(task: uint256) -> uint256:
    """
    @notice `claim(task, caller)` then `withdraw()`, in one transaction.
    @return The amount transferred (everything credited to the caller, from any task).
    """
    self._claim(task, msg.sender)
    return self._withdraw(msg.sender)


# ---------------------------------------------------------------- views


@external
@view
def owed(task: uint256, account: address) -> uint256:
    """
    @notice What `claim(task, account)` would credit now.
    """
    return self._entitlement(task, account) - self.credited[task][account]


@external
@view
def clock_of(task: uint256) -> Clock:
    """
    @notice The task's state, current epoch, deadline, submissions this
            epoch, active processors, flags (1 = first epoch closed) and
            processing pay accrued.
    """
    return self._load(task)


@external
@view
def get_bid(task: uint256, side: uint256, index: uint256) -> BidView:
    """
    @notice One bid, decoded. `side` is 0 for data, 1 for processing.
    """
    assert side <= PROCESSING, "market: side is 0 (data) or 1 (processing)"
    b: Bid = self.bids[task][side][index]
    price: uint256 = self._price(b.offer)
    fill: uint256 = 0
    earned: uint256 = 0
    last: uint256 = 0
    winner: bool = False
    if side == DATA:
        fill = self._data_fill(b.offer)
        winner = b.offer & DATA_WINNER != 0
    elif price != 0:
        # processing prices are positive, so the fill is exact
        fill = ((b.state >> 40) & MASK104) // price
        earned = b.state >> 144
        last = (b.state >> 8) & MASK32
        winner = b.state & WINNER != 0
    return BidView(
        bidder=b.bidder,
        amount=b.offer & MASK64,
        price=price,
        winner=winner,
        fill=fill,
        slashed=b.state & SLASHED != 0,
        earned=earned,
        last_submitted_epoch=last,
        last_late=b.state & LAST_LATE != 0,
        data_root=self.data_root[task][index] if side == DATA else empty(bytes32),
    )


@external
@view
def bid_index(task: uint256, side: uint256, account: address) -> uint256:
    """
    @notice The index + 1 of `account`'s open bid on `side`, or 0 if none.
    """
    return self.bid_of[task][side][account]


@external
@view
def has_submitted(task: uint256, epoch: uint256, account: address) -> bool:
    """
    @notice Whether `account` has submitted a result for `epoch`, the
            current or most recent epoch it submitted in.
    """
    p: uint256 = self.bid_of[task][PROCESSING][account]
    if p == 0:
        return False
    return (self.bids[task][PROCESSING][p - 1].state >> 8) & MASK32 == epoch + 1
