"""The market's commitments, byte for byte as Market.vy hashes them: one module for the roles,
the ledgers and the tests.

Every tree is an *indexed* binary tree over keccak256, padded with empty (zero) leaves to a
power of two; a proof lists the siblings from the leaf up, bit ``d`` of the leaf's index
says whether the node at depth ``d`` is a right child, and its length is
``ceil(log2(count))``. Leaves and inner nodes carry one-byte domain tags and have different
preimage lengths, so a node can never pass for a leaf:

    result leaf = keccak(0x00 | task | epoch | block_id | digest)      a processor's result
    node        = keccak(0x01 | left | right)
    entry leaf  = keccak(0x02 | task | block_id | size)                 an assignment entry
    record leaf = keccak(0x03 | task | processor | count << 128 | points | subroot)

``block_id = owner_bid << 32 | block_index``. A processor's result root for an epoch is the
tree over its result leaves *in the order of its assignment entries*, so "block b is entry i
of P" and "P's digest for b is leaf i" share an index. Epochs are chained:

    epoch start = keccak(0x04 | task | epoch | model_digest)      at the model's release
    each root   = keccak(0x05 | acc | processor | root)            in recorded order
    history     = keccak(0x06 | history | acc)                      at each close
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils import keccak

RESULT_LEAF = b"\x00"
NODE = b"\x01"
ENTRY_LEAF = b"\x02"
RECORD_LEAF = b"\x03"
EPOCH_START = b"\x04"
EPOCH_ROOT = b"\x05"
HISTORY = b"\x06"
VOTE = b"\x07"
DRAW = b"\x08"
TERMS = b"\x0b"
EMPTY = bytes(32)
#: The digest an honest processor commits for a block it never received (and reported).
UNDELIVERED = bytes(keccak(b"fedmarket/undelivered/v1"))
MAX_DEPTH = 16


def _u(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _h(*parts: bytes) -> bytes:
    return bytes(keccak(b"".join(parts)))


def block_id(owner_bid: int, block_index: int) -> int:
    """The contract's id of block ``block_index`` of data bid ``owner_bid``."""
    return owner_bid << 32 | block_index


def split_block_id(block: int) -> tuple[int, int]:
    """(owner bid, block index) of a block id."""
    return block >> 32, block & 0xFFFFFFFF


def node(left: bytes, right: bytes) -> bytes:
    return _h(NODE, left, right)


def result_leaf(task: int, epoch: int, block: int, digest: bytes) -> bytes:
    return _h(RESULT_LEAF, _u(task), _u(epoch), _u(block), digest)


def entry_leaf(task: int, block: int, size: int) -> bytes:
    return _h(ENTRY_LEAF, _u(task), _u(block), _u(size))


def record_leaf(task: int, record: Record) -> bytes:
    return _h(
        RECORD_LEAF,
        _u(task),
        _u(record.processor),
        _u(record.count << 128 | record.points),
        record.subroot,
    )


def terms_hash(spec_hash: bytes, public_context_hash: bytes) -> bytes:
    """What ``create_task`` stores for the spec and the public context (``terms().terms_hash``)."""
    return _h(TERMS, spec_hash, public_context_hash)


def depth(count: int) -> int:
    """ceil(log2(count)): the proof length of a tree over ``count`` leaves."""
    if count < 1:
        raise ValueError("a tree needs at least one leaf")
    return (count - 1).bit_length()


class Tree:
    """An indexed tree over ``leaves`` (already hashed), padded with empty leaves."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a tree needs at least one leaf")
        width = 1 << depth(len(leaves))
        level = list(leaves) + [EMPTY] * (width - len(leaves))
        self.levels = [level]
        while len(level) > 1:
            level = [node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
            self.levels.append(level)
        self.count = len(leaves)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        if not 0 <= index < self.count:
            raise IndexError(f"leaf {index} of a tree of {self.count}")
        out = []
        for level in self.levels[:-1]:
            out.append(level[index ^ 1])
            index >>= 1
        return out


def climb(leaf: bytes, index: int, proof: Sequence[bytes]) -> bytes | None:
    """The root ``proof`` leads to from ``leaf`` at ``index`` (None if the index is too deep)."""
    h = leaf
    for sibling in proof:
        h = node(h, sibling) if index & 1 == 0 else node(sibling, h)
        index >>= 1
    return h if index == 0 else None


def verify(leaf: bytes, index: int, count: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``leaf`` is leaf ``index`` of the ``count``-leaf tree with ``root``."""
    return 0 <= index < count and len(proof) == depth(count) and climb(leaf, index, proof) == root


# ---------------------------------------------------------------- the assignment


@dataclass(frozen=True)
class Record:
    """One processor's line of the assignment: how many entries, how many points, their root."""

    processor: int  # processing bid index
    count: int
    points: int
    subroot: bytes

    def as_tuple(self) -> tuple[int, int, int, bytes]:
        return (self.processor, self.count, self.points, self.subroot)


@dataclass(frozen=True)
class EntryProof:
    """Block ``block`` (``size`` points) is entry ``entry_index`` of ``record.processor``."""

    record: Record
    record_index: int
    record_proof: tuple[bytes, ...]
    entry_index: int
    size: int
    entry_proof: tuple[bytes, ...]

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.record.as_tuple(),
            self.record_index,
            list(self.record_proof),
            self.entry_index,
            self.size,
            list(self.entry_proof),
        )

    def check(self, task: int, block: int, root: bytes) -> bool:
        """Whether this proves ``block`` under the assignment ``root`` of ``task``."""
        r = self.record
        return verify(
            entry_leaf(task, block, self.size), self.entry_index, r.count, self.entry_proof,
            r.subroot,
        ) and climb(record_leaf(task, r), self.record_index, self.record_proof) == root  # fmt: skip


@dataclass(frozen=True)
class Entry:
    block: int
    size: int


class AssignmentTree:
    """The whole assignment as the requester commits it: ``entries[processor]`` is that
    processor's list of (block, size), in the order its results will be committed."""

    def __init__(self, task: int, entries: Mapping[int, Sequence[Entry]]) -> None:
        self.task = task
        self.entries = {p: list(e) for p, e in sorted(entries.items()) if e}
        self.subtrees = {
            p: Tree([entry_leaf(task, e.block, e.size) for e in es])
            for p, es in self.entries.items()
        }
        self.records = [
            Record(p, len(es), sum(e.size for e in es), self.subtrees[p].root)
            for p, es in self.entries.items()
        ]
        self.position = {r.processor: i for i, r in enumerate(self.records)}
        self.top = Tree([record_leaf(task, r) for r in self.records]) if self.records else None

    @property
    def root(self) -> bytes:
        return self.top.root if self.top is not None else EMPTY

    def record(self, processor: int) -> Record:
        return self.records[self.position[processor]]

    def record_proof(self, processor: int) -> tuple[bytes, ...]:
        assert self.top is not None
        return tuple(self.top.proof(self.position[processor]))

    def entry_proof(self, processor: int, entry_index: int) -> EntryProof:
        e = self.entries[processor][entry_index]
        return EntryProof(
            self.record(processor),
            self.position[processor],
            self.record_proof(processor),
            entry_index,
            e.size,
            tuple(self.subtrees[processor].proof(entry_index)),
        )

    def holders(self, block: int) -> list[tuple[int, int]]:
        """(processor, entry index) of every entry of ``block``."""
        return [
            (p, i) for p, es in self.entries.items() for i, e in enumerate(es) if e.block == block
        ]


# ---------------------------------------------------------------- results and epochs


def result_root(task: int, epoch: int, leaves: Sequence[tuple[int, bytes]]) -> bytes:
    """A processor's root over (block, digest) in its entry order."""
    return Tree([result_leaf(task, epoch, b, d) for b, d in leaves]).root


def result_proof(task: int, epoch: int, leaves: Sequence[tuple[int, bytes]], i: int) -> list[bytes]:
    return Tree([result_leaf(task, epoch, b, d) for b, d in leaves]).proof(i)


def epoch_start(task: int, epoch: int, model_digest: bytes) -> bytes:
    return _h(EPOCH_START, _u(task), _u(epoch), model_digest)


def root_step(acc: bytes, processor: int, root: bytes) -> bytes:
    return _h(EPOCH_ROOT, acc, _u(processor), root)


def epoch_acc(
    task: int, epoch: int, model_digest: bytes, roots: Iterable[tuple[int, bytes]]
) -> bytes:
    acc = epoch_start(task, epoch, model_digest)
    for processor, root in roots:
        acc = root_step(acc, processor, root)
    return acc


def history_step(history: bytes, acc: bytes) -> bytes:
    return _h(HISTORY, history, acc)


@dataclass(frozen=True)
class EpochProof:
    """Where the accused's root of a closed epoch sits in the task's history."""

    model_digest: bytes
    roots: tuple[tuple[int, bytes], ...]  # (processor, root) in recorded order
    history_before: bytes
    later: tuple[bytes, ...]  # accumulators of the later closed epochs

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.model_digest,
            [list(r) for r in self.roots],
            self.history_before,
            list(self.later),
        )


@dataclass
class EpochBook:
    """A task's epochs as the chain recorded them (model digests and roots in order), from
    which any closed epoch's :class:`EpochProof` follows."""

    task: int
    models: dict[int, bytes] = field(default_factory=dict)
    roots: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    closed: int = 0  # epochs closed so far

    def release(self, epoch: int, model_digest: bytes) -> None:
        self.models[epoch] = model_digest
        self.roots.setdefault(epoch, [])

    def record(self, epoch: int, processor: int, root: bytes) -> None:
        self.roots.setdefault(epoch, []).append((processor, root))

    def acc(self, epoch: int) -> bytes:
        return epoch_acc(self.task, epoch, self.models[epoch], self.roots.get(epoch, []))

    def history(self, upto: int | None = None) -> bytes:
        h = EMPTY
        for e in range(self.closed if upto is None else upto):
            h = history_step(h, self.acc(e))
        return h

    def root_of(self, epoch: int, processor: int) -> bytes | None:
        return next((r for p, r in self.roots.get(epoch, []) if p == processor), None)

    def proof(self, epoch: int) -> EpochProof:
        if not 0 <= epoch < self.closed:
            raise ValueError(f"epoch {epoch} is not closed ({self.closed} closed)")
        return EpochProof(
            self.models[epoch],
            tuple(self.roots.get(epoch, [])),
            self.history(epoch),
            tuple(self.acc(e) for e in range(epoch + 1, self.closed)),
        )


# ---------------------------------------------------------------- disputes


def vote_commitment(dispute: int, voter: str, digest: bytes) -> bytes:
    """What a voter commits: keccak(0x07 | dispute | voter (32 bytes) | digest)."""
    return _h(VOTE, _u(dispute), bytes(12) + bytes.fromhex(voter.removeprefix("0x")), digest)


def draw_seed(beacon: bytes, dispute: int) -> bytes:
    return _h(DRAW, beacon, _u(dispute))


def draw_panel(seed: bytes, weights: Sequence[tuple[int, int]], size: int = 3) -> list[int]:
    """Up to ``size`` bid indices from ``weights`` ((index, weight > 0) in index order),
    weighted, without replacement, as ``MarketCourt.draw`` picks them."""
    left = list(weights)
    total = sum(w for _, w in left)
    picks: list[int] = []
    for t in range(size):
        if total == 0:
            break
        r = int.from_bytes(_h(seed, _u(t)), "big") % total
        for j, (i, w) in enumerate(left):
            if r < w:
                picks.append(i)
                total -= w
                del left[j]
                break
            r -= w
    return picks


__all__ = [
    "UNDELIVERED",
    "AssignmentTree",
    "Entry",
    "EntryProof",
    "EpochBook",
    "EpochProof",
    "Record",
    "Tree",
    "block_id",
    "climb",
    "depth",
    "draw_panel",
    "draw_seed",
    "entry_leaf",
    "epoch_acc",
    "epoch_start",
    "history_step",
    "record_leaf",
    "result_leaf",
    "result_proof",
    "result_root",
    "root_step",
    "split_block_id",
    "terms_hash",
    "verify",
    "vote_commitment",
]
