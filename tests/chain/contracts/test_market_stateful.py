"""A Hypothesis state machine over random sequences of the market's calls, disputes included.

The contracts (titanoboa) and the reference model (src/fedmarket/chain/reference.py) take the
same calls; after every step the machine checks that they agree on every revert reason, every
event and every view, that the market holds exactly its liabilities plus its credits plus its
reserve, and the property the design states for processors that follow the program:

    a follower is slashed only by a conviction whose drawn panel holds no follower and whose
    block owner is not a follower that voted, or never when another follower can be drawn.

Cast: requester R (adversarial), owners O1 (R's own second address), O2 (bids at price 0),
O3; processors H and F follow the program (true roots, truthful undelivered reports, true
votes, they show their leaf when accused), A1 and A2 deviate arbitrarily (random, lying or
true roots, any votes, any accusation); anyone accuses anyone. Panels are drawn from block
hashes Hypothesis chooses, so the draw is adversarial within the rules. Followers act on
their obligations before time passes their deadlines (liveness).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import boa
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fedmarket.chain import merkle
from fedmarket.chain.allocation import InfeasibleAllocation, allocate
from fedmarket.chain.merkle import UNDELIVERED, AssignmentTree, Entry, block_id
from fedmarket.chain.reference import (
    ASSIGNING,
    BIDDING,
    FINISHED,
    PROCESSING,
    TRAINING,
    MarketModel,
    Revert,
)
from fedmarket.chain.signing import SignedRoot, sign_root

from .helpers import (
    CONTEXT_HASH,
    DATA,
    DELAY,
    GRACE,
    SPEC_HASH,
    Rig,
    blocks_of,
    h,
    lie,
    now,
    set_beacon,
    travel_to,
    truth,
)

FOLLOWERS = ("H", "F")
NAMES = ("R", "O1", "O2", "O3", "H", "F", "A1", "A2", "X")
PROCS = ("H", "F", "A1", "A2")

picks = st.integers(0, 2**16)
# One task's terms, book and assignment, drawn for the first task and for every later one.
TASKS: dict[str, st.SearchStrategy[Any]] = dict(
    prices=st.lists(st.integers(1, 4), min_size=4, max_size=4),
    owner_points=st.lists(st.sampled_from([64, 96, 128]), min_size=3, max_size=3),
    max_epochs=st.integers(2, 4),
    bond=st.sampled_from([1_000, 2_500, 10_000]),
    fee=st.integers(0, 20),
    replicas=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 3)), max_size=4),
    withheld=st.lists(st.integers(0, 30), max_size=2),
    committed=st.lists(st.booleans(), min_size=3, max_size=3),
)


def norm(value: Any) -> Any:
    """A contract event's field as the model's dataclass holds it."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (list, tuple)) and not isinstance(value, str):
        return [norm(v) for v in value]
    if type(value).__name__ == "Address" or (isinstance(value, str) and value.startswith("0x")):
        return str(value).lower()
    return value


class MarketMachine(RuleBasedStateMachine):
    rig: ClassVar[Rig]
    token: ClassVar[Any]
    people: ClassVar[dict[str, LocalAccount]]

    def __init__(self) -> None:
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.model = MarketModel(
            grace=GRACE,
            reserve=self.reserve,
            draw_delay=DELAY,
            domain=bytes(self.rig.DOMAIN_SEPARATOR()),
            beacon=self._beacon,
        )
        self.addr = {n: a.address for n, a in self.people.items()} | {"RES": self.reserve}
        self.name_of = {a.lower(): n for n, a in self.addr.items()}
        self.task = -1
        self.tree: AssignmentTree | None = None
        self.pid: dict[str, int] = {}  # processor name -> bid index
        self.oid: dict[str, int] = {}  # owner name -> bid index
        self.undelivered: set[tuple[int, int]] = set()  # (processor, block) never delivered
        self.leaves: dict[tuple[int, int], list[tuple[int, bytes]] | None] = {}  # (p, epoch)
        self.slashed_followers: list[str] = []

    reserve: ClassVar[str]

    def teardown(self) -> None:
        self._anchor.__exit__(None, None, None)

    # ------------------------------------------------------------ plumbing

    def _beacon(self, number: int) -> bytes:
        current = boa.env.evm.patch.block_number
        hashes = list(boa.env.evm.patch.prev_hashes)
        depth = current - number - 1
        return bytes(hashes[depth]) if 0 <= depth < len(hashes) else bytes(32)

    def _funds(self, sender: str, amount: int) -> bool:
        return (
            self.token.balanceOf(sender) >= amount
            and self.token.allowance(sender, self.rig.address) >= amount
        )

    def call(self, name: str, who: str, model_action: Any, *args: Any) -> Any:
        """The same call on the contracts and the model; reverts and events must agree."""
        sender = self.addr[who]
        try:
            result = model_action()
        except Revert as exc:
            event(f"{name}: {exc.reason}")
            note(f"{name}{args} by {who} -> {exc.reason}")
            with boa.reverts(exc.reason):
                getattr(self.rig, name)(*args, sender=sender)
            return None
        event(f"{name}: ok")
        note(f"{name}{args} by {who} -> ok")
        out = getattr(self.rig, name)(*args, sender=sender)
        got = [
            e
            for e in self.rig._events.get_logs(self.rig._computation)
            if str(e.address).lower() == self.rig.address.lower()
        ]
        assert [type(e).__name__ for e in got] == [type(e).__name__ for e in result.events], (
            got,
            result.events,
        )
        for c, m in zip(got, result.events, strict=True):
            for f in dataclasses.fields(m):
                assert norm(getattr(c, f.name)) == norm(getattr(m, f.name)), (
                    type(m).__name__,
                    f.name,
                )
        if out is not None:  # functions with a return value return the model's
            assert out == result.value
        return result

    @property
    def t(self) -> Any:
        return self.model.tasks[self.task]

    def state(self) -> int:
        return self.t.state if self.task >= 0 else -1

    def pname(self, index: int) -> str:
        return next(n for n, i in self.pid.items() if i == index)

    # ------------------------------------------------------------ set-up

    @initialize(**TASKS)
    def a_task_in_training(
        self, prices: list[int], owner_points: list[int], max_epochs: int, bond: int, fee: int,
        replicas: list[tuple[int, int]], withheld: list[int], committed: list[bool],
    ) -> None:  # fmt: skip
        """A task with this cast, resolved and assigned (blocks on 1-3 processors each)."""
        self.tree = None
        self.pid, self.oid = {}, {}
        self.undelivered = set()
        self.leaves = {}
        args = (
            SPEC_HASH,
            CONTEXT_HASH,
            256,
            600,
            max_epochs,
            10**6,
            10**6,
            1_000,
            2_500,
            bond,
            fee,
            64,
            (0, 0, 0),
        )
        r = self.call(
            "create_task",
            "R",
            lambda: self.model.create_task(self.addr["R"], now(), self._funds, *args),
            *args,
        )
        self.task = r.value
        for name, points, price in zip(("O1", "O2", "O3"), owner_points, (1, 0, 2), strict=True):
            self.bid(DATA, name, points, price)
        for name, price in zip(PROCS, prices, strict=True):
            self.bid(PROCESSING, name, 64, price)
        travel_to(self.t.bidding_deadline + 1)
        self.resolve_now()
        if self.state() != ASSIGNING:
            return
        for name, ok in zip(("O1", "O2", "O3"), committed, strict=True):
            bid = self.oid[name]
            b = self.t.bids[DATA][bid]
            if ok and b.winner:
                sizes = blocks_of(b.fill)
                digests = [h(100 * bid + i) for i in range(len(sizes))]
                self.call(
                    "commit_data",
                    name,
                    lambda n=name, i=bid, s=sizes, d=digests: self.model.commit_data(
                        self.addr[n], self.task, i, s, d
                    ),
                    self.task,
                    bid,
                    sizes,
                    digests,
                )
        blocks = [
            (block_id(b, i), s)
            for b, bid in sorted(self.t.bids[DATA].items())
            if bid.committed
            for i, s in enumerate(blocks_of(bid.fill))
        ]
        procs = sorted(self.t.active)
        entries: dict[int, list[Entry]] = {p: [] for p in procs}
        room = {p: 2 * self.t.bids[PROCESSING][p].fill for p in procs}
        for n, (blk, size) in enumerate(blocks):
            p = procs[n % len(procs)]
            if room[p] >= size:
                entries[p].append(Entry(blk, size))
                room[p] -= size
        for k, p in replicas:
            if blocks:
                blk, size = blocks[k % len(blocks)]
                q = procs[p % len(procs)]
                if room[q] >= size and all(e.block != blk for e in entries[q]):
                    entries[q].append(Entry(blk, size))
                    room[q] -= size
        self.tree = AssignmentTree(self.task, entries)
        records = self.tree.records
        model = h(7)
        self.call(
            "commit_assignment",
            "R",
            lambda: self.model.commit_assignment(self.addr["R"], now(), self.task, records, model),
            self.task,
            [x.as_tuple() for x in records],
            model,
        )
        pairs = [(p, e.block) for p, es in self.tree.entries.items() for e in es]
        for k in withheld:
            if pairs:
                self.undelivered.add(pairs[k % len(pairs)])
        self.followers_report()

    def quiet(self) -> bool:
        """The task is over, its dispute window closed and no dispute of it pending."""
        if self.task < 0:
            return True
        over = self.state() not in (BIDDING, ASSIGNING, TRAINING)
        closed = self.state() != FINISHED or now() > self.t.deadline + GRACE
        pending = any(d.task == self.task and d.state != 3 for d in self.model.disputes)
        return over and closed and not pending

    @precondition(lambda self: self.quiet())
    @rule(**TASKS)
    def the_next_task(self, **kwargs: Any) -> None:
        """Once a task is over and settled, the same cast starts another."""
        self.a_task_in_training(**kwargs)

    def window_open(self) -> bool:
        return self.state() == TRAINING or (
            self.state() == FINISHED and now() <= self.t.deadline + GRACE
        )

    def bid(self, side: int, name: str, amount: int, price: int) -> None:
        action = self.model.bid_data if side == DATA else self.model.bid_processing
        fn = "bid_data" if side == DATA else "bid_processing"
        r = self.call(
            fn,
            name,
            lambda: action(self.addr[name], now(), self._funds, self.task, amount, price, 0),
            self.task,
            amount,
            price,
            0,
        )
        if r is not None:
            (self.oid if side == DATA else self.pid)[name] = r.value

    def resolve_now(self) -> None:
        t = self.t
        try:
            a = allocate(
                t.offers(DATA),
                t.offers(PROCESSING),
                num_points=t.num_points,
                max_epochs=t.max_epochs,
                data_budget=t.data_budget,
                processing_budget=t.processing_budget,
                min_fill=t.min_fill,
            )
        except InfeasibleAllocation:
            return
        data, processing = [f.as_tuple() for f in a.data], [f.as_tuple() for f in a.processing]
        self.call(
            "resolve",
            "X",
            lambda: self.model.resolve(self.addr["X"], now(), self.task, data, processing),
            self.task,
            data,
            processing,
        )

    # ------------------------------------------------------------ epochs

    def follower_leaves(self, p: int, epoch: int) -> list[tuple[int, bytes]]:
        assert self.tree is not None
        return [
            (e.block, UNDELIVERED if (p, e.block) in self.undelivered else truth(e.block, epoch))
            for e in self.tree.entries.get(p, [])
        ]

    def root_of(self, p: int, epoch: int, kind: int) -> bytes:
        """A follower's true root; an adversary's by `kind`: true, lying on a block, random."""
        assert self.tree is not None
        name = self.pname(p)
        leaves = self.follower_leaves(p, epoch)
        if name not in FOLLOWERS and leaves:
            if kind % 3 == 1:
                leaves = [
                    (b, lie(b, epoch)) if i == 0 else (b, d) for i, (b, d) in enumerate(leaves)
                ]
            elif kind % 3 == 2:
                self.leaves[(p, epoch)] = None
                return h(50_000 + 100 * epoch + p)
        if not leaves:
            self.leaves[(p, epoch)] = None
            return h(60_000 + p)
        self.leaves[(p, epoch)] = leaves
        return merkle.result_root(self.task, epoch, leaves)

    def followers_report(self) -> None:
        """Followers report what they never received, before their first root."""
        if self.state() != TRAINING or self.t.epoch != 0 or self.t.full or self.tree is None:
            return
        for name in FOLLOWERS:
            p = self.pid.get(name)
            if p is None or p not in self.t.active or self.t.bids[PROCESSING][p].last_submitted:
                continue
            mine = [
                i
                for i, e in enumerate(self.tree.entries.get(p, []))
                if (p, e.block) in self.undelivered and (p, e.block) not in self.t.reported
            ]
            if mine:
                blocks = [
                    (
                        *merkle.split_block_id(self.tree.entries[p][i].block),
                        self.tree.entry_proof(p, i),
                    )
                    for i in mine
                ]
                self.call(
                    "report_undelivered",
                    name,
                    lambda n=name, q=p, b=blocks: self.model.report_undelivered(
                        self.addr[n], self.task, q, b
                    ),
                    self.task,
                    p,
                    [(o, i, e.as_tuple()) for o, i, e in blocks],
                )

    @precondition(lambda self: self.state() == TRAINING)
    @rule(kinds=st.lists(st.integers(0, 2), min_size=4, max_size=4), forge=st.integers(0, 9))
    def relay(self, kinds: list[int], forge: int) -> None:
        self.followers_report()
        epoch = self.t.epoch
        signed, model_signed = [], []
        for n, p in enumerate(sorted(self.t.active)):
            root = self.root_of(p, epoch, kinds[n % 4])
            signer = (
                self.people[self.pname(p)] if forge else self.people["A1"]
            )  # forge == 0: forged
            s = sign_root(signer, self.model.domain, self.task, epoch, root)
            signed.append(s.as_tuple())
            model_signed.append(s)
        self.call(
            "relay_epoch",
            "R",
            lambda: self.model.relay_epoch(self.addr["R"], now(), self.task, epoch, model_signed),
            self.task,
            epoch,
            signed,
        )

    @precondition(lambda self: self.state() == TRAINING)
    @rule(who=st.integers(0, 3), kind=st.integers(0, 2), by_self=st.booleans())
    def submit(self, who: int, kind: int, by_self: bool) -> None:
        self.followers_report()
        name = PROCS[who]
        p = self.pid[name]
        epoch = self.t.epoch
        root = self.root_of(p, epoch, kind)
        signed = (
            SignedRoot.unsigned(root)
            if by_self
            else sign_root(self.people[name], self.model.domain, self.task, epoch, root)
        )
        sender = name if by_self else "R"
        self.call(
            "submit_root",
            sender,
            lambda: self.model.submit_root(self.addr[sender], now(), self.task, epoch, p, signed),
            self.task,
            epoch,
            p,
            signed.as_tuple(),
        )

    @precondition(lambda self: self.state() == TRAINING)
    @rule(go_on=st.integers(0, 4), marks=st.integers(0, 15), late=st.booleans())
    def close(self, go_on: int, marks: int, late: bool) -> None:
        if late:
            self.travel_to_time(self.t.deadline + 1)
        bitmap = sum(1 << self.pid[PROCS[i]] for i in range(4) if marks >> i & 1)
        epoch = self.t.epoch
        model = h(8 + epoch)
        self.call(
            "close_epoch",
            "R",
            lambda: self.model.close_epoch(
                self.addr["R"], now(), self.task, epoch, model, go_on > 0, bitmap
            ),
            self.task,
            epoch,
            model,
            go_on > 0,
            bitmap,
        )

    @precondition(lambda self: self.state() == TRAINING)
    @rule(
        kinds=st.lists(st.integers(0, 2), min_size=4, max_size=4),
        marks=st.integers(0, 15),
        go_on=st.integers(0, 9),
        late=st.integers(0, 3),
    )
    def an_epoch(self, kinds: list[int], marks: int, go_on: int, late: int) -> None:
        """The usual course: every root (relayed, or late and one by one), then the close."""
        if late == 0:
            self.travel_to_time(self.t.deadline + 1)
            for n, name in enumerate(PROCS):
                if self.pid.get(name) in self.t.active:
                    self.submit(n, kinds[n], True)
        else:
            self.relay(kinds, 1)
        self.close(go_on, marks, False)

    # ------------------------------------------------------------ disputes

    @precondition(
        lambda self: self.window_open() and self.tree is not None and self.t.book.closed > 0
    )
    @rule(accuser=st.sampled_from(["R", "O1", "O3", "H", "F", "A1", "A2", "X"]), pick=picks)
    def open_dispute(self, accuser: str, pick: int) -> None:
        """Anyone accuses anyone of one block in a closed epoch (mostly one with a root)."""
        assert self.tree is not None
        book = self.t.book
        pairs = [
            (p, i, e)
            for e in range(book.closed)
            for p, es in self.tree.entries.items()
            for i in range(len(es))
            if book.root_of(e, p) is not None or pick % 5 == 0
        ]
        if not pairs:
            return
        p, i, epoch = pairs[pick % len(pairs)]
        entry = self.tree.entry_proof(p, i)
        block = self.tree.entries[p][i].block
        o, b = merkle.split_block_id(block)
        where = self.t.book.proof(epoch)
        block_number = boa.env.evm.patch.block_number
        self.call(
            "open_dispute",
            accuser,
            lambda: self.model.open_dispute(
                self.addr[accuser],
                now(),
                block_number,
                self._funds,
                self.task,
                epoch,
                p,
                o,
                b,
                entry,
                where,
            ),
            self.task,
            epoch,
            p,
            o,
            b,
            entry.as_tuple(),
            where.as_tuple(),
        )

    def open_disputes(self, state: int) -> list[int]:
        return [
            n for n, d in enumerate(self.model.disputes) if d.state == state and d.task == self.task
        ]

    @precondition(
        lambda self: self.window_open() and self.tree is not None and self.t.book.closed > 0
    )
    @rule(
        accuser=st.sampled_from(["R", "O1", "H", "A1", "A2", "X"]),
        pick=picks,
        beacon=st.integers(0, 2**32),
        votes=st.lists(st.integers(0, 2), min_size=3, max_size=3),
        owner=st.integers(0, 2),
        shown=st.booleans(),
        value=st.integers(0, 2),
    )
    def a_dispute(
        self,
        accuser: str,
        pick: int,
        beacon: int,
        votes: list[int],
        owner: int,
        shown: bool,
        value: int,
    ) -> None:
        """A whole dispute: accused, drawn, voted (adversaries: truth, a lie or nothing; the
        block's owner likewise), the leaf shown or not, resolved."""
        before = len(self.model.disputes)
        self.open_dispute(accuser, pick)
        if len(self.model.disputes) == before:
            return
        d = before
        self.draw(d, beacon)
        dm = self.model.disputes[d]
        if dm.state != 2:
            return
        for slot, i in enumerate(dm.panel):
            name = self.pname(i)
            if name not in FOLLOWERS and votes[slot] < 2:
                digest = (truth(dm.block, dm.epoch), lie(dm.block, dm.epoch))[votes[slot]]
                c = merkle.vote_commitment(d, self.addr[name], digest)
                self.call(
                    "commit_vote",
                    name,
                    lambda n=name, cc=c: self.model.commit_vote(self.addr[n], now(), d, cc),
                    d,
                    c,
                )
        owner_name = (
            self.name_of.get(self.t.bids[DATA][dm.owner_bid].bidder.lower())
            if dm.owner_bid in self.t.bids[DATA]
            else None
        )
        if owner_name and owner < 2:
            digest = (truth(dm.block, dm.epoch), lie(dm.block, dm.epoch))[owner]
            c = merkle.vote_commitment(d, self.addr[owner_name], digest)
            self.call(
                "commit_vote",
                owner_name,
                lambda: self.model.commit_vote(self.addr[owner_name], now(), d, c),
                d,
                c,
            )
        self.followers_act(now())
        if shown and dm.shown == bytes(32):
            self.travel_to_time(dm.vote_deadline + 1)
            self.show(d, "R", False)
        self.travel_to_time(dm.vote_deadline + GRACE + 1)
        self.resolve_dispute(d, value, "X")

    @precondition(lambda self: bool(self.open_disputes(1)))
    @rule(pick=picks, beacon=st.integers(0, 2**32))
    def draw(self, pick: int, beacon: int) -> None:
        ds = self.open_disputes(1)
        d = pick if pick in ds else ds[pick % len(ds)]
        target = self.model.disputes[d].open_block + DELAY
        gap = target + 1 - boa.env.evm.patch.block_number
        if gap > 0:
            boa.env.time_travel(blocks=gap)
        if boa.env.evm.patch.block_number - target - 1 < 256:
            set_beacon(target, beacon.to_bytes(32, "big"))
        block_number = boa.env.evm.patch.block_number
        self.call("draw", "X", lambda: self.model.draw(self.addr["X"], now(), block_number, d), d)

    @precondition(lambda self: bool(self.open_disputes(2)))
    @rule(
        pick=picks, voter=st.sampled_from(["A1", "A2", "O1", "O2", "O3", "X"]), honest=st.booleans()
    )
    def vote(self, pick: int, voter: str, honest: bool) -> None:
        ds = self.open_disputes(2)
        d = ds[pick % len(ds)]
        dm = self.model.disputes[d]
        digest = truth(dm.block, dm.epoch) if honest else lie(dm.block, dm.epoch)
        c = merkle.vote_commitment(d, self.addr[voter], digest)
        self.call(
            "commit_vote",
            voter,
            lambda: self.model.commit_vote(self.addr[voter], now(), d, c),
            d,
            c,
        )

    @precondition(lambda self: bool(self.open_disputes(2)))
    @rule(pick=picks, who=st.sampled_from(["R", "A1", "X"]), wrong=st.booleans())
    def show(self, pick: int, who: str, wrong: bool) -> None:
        """Anyone who has the accused's committed leaves (the requester got its results) shows
        one, or tries a wrong digest."""
        ds = self.open_disputes(2)
        d = pick if pick in ds else ds[pick % len(ds)]
        dm = self.model.disputes[d]
        leaves = self.leaves.get((dm.accused, dm.epoch))
        if leaves is None:
            leaves = [(e.block, h(3)) for e in self.tree.entries[dm.accused]] if self.tree else []
        if not leaves:
            return
        digest = leaves[dm.entry_index][1] if not wrong else h(4)
        proof = merkle.result_proof(self.task, dm.epoch, leaves, dm.entry_index)
        self.call(
            "show_leaf",
            who,
            lambda: self.model.show_leaf(self.addr[who], now(), d, digest, proof),
            d,
            digest,
            proof,
        )

    @precondition(lambda self: bool(self.open_disputes(2)))
    @rule(pick=picks, value=st.integers(0, 2), who=st.sampled_from(["R", "H", "X"]))
    def resolve_dispute(self, pick: int, value: int, who: str) -> None:
        ds = self.open_disputes(2)
        if not ds:
            return
        d = pick if pick in ds else ds[pick % len(ds)]
        dm = self.model.disputes[d]
        agreed = (truth(dm.block, dm.epoch), lie(dm.block, dm.epoch), dm.shown)[value]
        r = self.call(
            "resolve_dispute",
            who,
            lambda: self.model.resolve_dispute(self.addr[who], now(), d, agreed),
            d,
            agreed,
        )
        if r is None:
            return
        for e in r.events:
            if type(e).__name__ == "ProcessorSlashed":
                name = self.pname(e.processor)
                event(f"slashed: {'follower' if name in FOLLOWERS else 'adversary'} ({e.fault})")
                if name in FOLLOWERS:
                    self.slashed_followers.append(name)
                    # the stated condition: only a captured panel without a follower can do it
                    panel = {self.pname(i) for i in dm.panel}
                    assert e.fault == 2 and not panel & set(FOLLOWERS), (name, panel, e)

    # ------------------------------------------------------------ money and time

    @precondition(lambda self: self.task >= 0)
    @rule(kind=st.integers(0, 4), who=st.sampled_from(NAMES), pick=picks)
    def money(self, kind: int, who: str, pick: int) -> None:
        """collect, claim, collect_requester, withdraw or withdraw_reserve, mostly by whoever
        is entitled."""
        slots = sorted(self.t.slots)
        side, i = slots[pick % len(slots)]
        bidder = self.name_of.get(self.t.slots[(side, i)][0].lower(), who)
        if kind == 0:
            who = bidder if pick % 4 else who
            self.call(
                "collect",
                who,
                lambda: self.model.collect(self.addr[who], now(), self.task, side, i),
                self.task,
                side,
                i,
            )
        elif kind == 1:
            self.call(
                "claim",
                who,
                lambda: self.model.claim(self.addr[who], now(), self.task, side, i),
                self.task,
                side,
                i,
            )
        elif kind == 2:
            who = "R" if pick % 4 else who
            self.call(
                "collect_requester",
                who,
                lambda: self.model.collect_requester(self.addr[who], self.task),
                self.task,
            )
        elif kind == 3:
            self.call("withdraw", who, lambda: self.model.withdraw(self.addr[who]))
        else:
            who = "RES" if pick % 4 else "R"
            self.call("withdraw_reserve", who, lambda: self.model.withdraw_reserve(self.addr[who]))

    @precondition(lambda self: self.state() in (ASSIGNING, TRAINING))
    @rule(who=st.sampled_from(PROCS))
    def claim_timeout(self, who: str) -> None:
        p = self.pid[who]
        self.call(
            "claim_timeout",
            who,
            lambda: self.model.claim_timeout(self.addr[who], now(), self.task, PROCESSING, p),
            self.task,
            PROCESSING,
            p,
        )

    def followers_act(self, until: int) -> None:
        """Before the clock passes `until`: followers vote the truth where drawn and show
        their leaf when accused, inside each window."""
        for d, dm in enumerate(self.model.disputes):
            if dm.state != 2 or dm.task != self.task:
                continue
            for slot, i in enumerate(dm.panel):
                name = self.pname(i)
                if name in FOLLOWERS and slot not in dm.votes and now() <= dm.vote_deadline:
                    c = merkle.vote_commitment(d, self.addr[name], truth(dm.block, dm.epoch))
                    self.call(
                        "commit_vote",
                        name,
                        lambda n=name, x=d, cc=c: self.model.commit_vote(
                            self.addr[n], now(), x, cc
                        ),
                        d,
                        c,
                    )
            name = self.pname(dm.accused)
            if name in FOLLOWERS and dm.shown == bytes(32):
                all_voted = all(n in dm.votes for n in range(len(dm.panel)))
                if not all_voted and until > dm.vote_deadline:
                    travel_to(max(now(), dm.vote_deadline + 1))
                    all_voted = True
                if all_voted and now() <= dm.vote_deadline + GRACE:
                    leaves = self.leaves[(dm.accused, dm.epoch)]
                    assert leaves is not None
                    digest = leaves[dm.entry_index][1]
                    proof = merkle.result_proof(self.task, dm.epoch, leaves, dm.entry_index)
                    self.call(
                        "show_leaf",
                        name,
                        lambda n=name, x=d, g=digest, pr=proof: self.model.show_leaf(
                            self.addr[n], now(), x, g, pr
                        ),
                        d,
                        digest,
                        proof,
                    )

    def travel_to_time(self, target: int) -> None:
        self.followers_act(target)
        travel_to(max(now(), target))

    @rule(step=st.sampled_from([1, 60, 300, 600, 1_300, 1_300, GRACE + 700]))
    def travel(self, step: int) -> None:
        self.travel_to_time(now() + step)

    # ------------------------------------------------------------ invariants

    @invariant()
    def money_is_conserved(self) -> None:
        rig = self.rig
        liabilities = sum(rig.liabilities(t) for t in range(rig.num_tasks()))
        assert (
            self.token.balanceOf(rig.address)
            == liabilities + rig.total_claimable() + rig.reserve_balance()
        )
        assert (rig.total_claimable(), rig.reserve_balance()) == (
            self.model.total_claimable,
            self.model.reserve_balance,
        )

    @invariant()
    def views_agree_with_the_model(self) -> None:
        if self.task < 0:
            return
        rig, t = self.rig, self.t
        clock = rig.clock_of(self.task)
        flags = int(t.first_closed) | (2 if t.full else 0) | (4 if t.requester_paid else 0)
        assert (clock.state, clock.epoch, clock.deadline, clock.flags) == (
            t.state,
            t.epoch,
            t.deadline,
            flags,
        )
        assert (clock.full_epochs, clock.spent) == (t.full_epochs, t.spent())
        if t.state == TRAINING:
            assert (clock.submitted, clock.active) == (self.model._submitted(t), len(t.active))
        assert rig.active_of(self.task)[0] == sum(1 << i for i in t.active)
        assert rig.liabilities(self.task) == t.liabilities
        assert rig.requester_owed(self.task) == self.model.requester_owed(self.task)
        for side, i in t.slots:
            assert rig.owed(self.task, side, i) == self.model.owed(self.task, side, i, now())
            bid = t.bids[side].get(i)
            view = rig.get_bid(self.task, side, i)
            if bid is not None:
                assert (view.amount, view.fill, view.winner, view.slashed) == (
                    bid.amount,
                    bid.fill,
                    bid.winner,
                    bid.slashed,
                )
                assert (view.undelivered, view.open_disputes if side else 0) == (
                    bid.undelivered,
                    bid.open_disputes if side else 0,
                )
        if t.state >= TRAINING:
            assert bytes(rig.epoch_commitments(self.task)[1]) == t.book.history()
        for a in self.addr.values():
            assert rig.claimable(a) == self.model.claimable.get(a, 0)
        for n, d in enumerate(self.model.disputes):
            v = rig.dispute_of(n)
            assert (v.state, list(v.panel), bytes(v.shown), v.bond, v.vote_deadline) == (
                d.state,
                d.panel,
                d.shown,
                d.bond,
                d.vote_deadline,
            )


def test_market_state_machine(
    rig: Rig,
    token: Any,
    requester: str,
    owners: list[str],
    processors: list[LocalAccount],
    outsider: str,
    reserve: str,
) -> None:
    from .helpers import account

    cast = {
        "R": account("requester"),
        "O1": account("owner0"),
        "O2": account("owner1"),
        "O3": account("owner2"),
    }
    cast |= {name: processors[i] for i, name in enumerate(PROCS)}
    cast["X"] = account("outsider")
    MarketMachine.rig = rig
    MarketMachine.token = token
    MarketMachine.people = cast
    MarketMachine.reserve = reserve
    run_state_machine_as_test(
        MarketMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
