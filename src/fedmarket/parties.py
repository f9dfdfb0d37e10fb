"""Who plays a task in a simulation: each party's data share and roles, built the same way on
every runtime (``fedmarket run`` builds all of them in one process; ``fedmarket node`` builds
one per process from its options).

An owner's share is its slice of the data set's training split (the requester's validation
split never overlaps it), dealt IID or label-skewed by ``[run] split``; a poisoning attack is
seeded by the owner's index, and a bidding strategy draws its price with another seed. The
same inputs give the same party wherever it runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from eth_account.signers.local import LocalAccount

from fedmarket.attacks import parse_owner_attack, parse_processor_attack
from fedmarket.chain.ledger import Market, Token
from fedmarket.data import Dataset, load_dataset, partition, split_validation
from fedmarket.protocol.crypto import Crypto
from fedmarket.protocol.party import PartyNode, Roles
from fedmarket.roles.bidding import bid_price
from fedmarket.roles.owner import DataOwner
from fedmarket.roles.processor import Processor


@dataclass(frozen=True)
class DataSource:
    """Where the owners' rows and the requester's validation rows come from."""

    dataset: str
    label_column: str = "target"
    validation_fraction: float = 0.2
    seed: int = 0
    alpha: float | None = None  # Dirichlet label skew of the owners' shares; None: IID
    base: Path | None = None  # relative CSV paths resolve against this folder
    test_fraction: float = 0.0  # held out from everyone first (a simulation's test set)
    # the columns the task takes, by name (``fedmarket.backbone.feature_columns(spec)``);
    # None: every feature column of the data set
    features: tuple[str, ...] | None = None

    def split(self) -> tuple[Dataset, Dataset, Dataset | None]:
        """(training split, the requester's validation split, the held-out test split)."""
        data = load_dataset(
            self.dataset, label_column=self.label_column, base=self.base, features=self.features
        )
        test = None
        if self.test_fraction > 0:
            data, test = split_validation(data, self.test_fraction, seed=self.seed + 7)
        train, val = split_validation(data, self.validation_fraction, seed=self.seed)
        return train, val, test

    def load(self) -> tuple[Dataset, Dataset]:
        """(training split, the requester's validation split)."""
        train, val, _ = self.split()
        return train, val

    def shares(self, train: Dataset, sizes: list[int]) -> list[Dataset]:
        """Owner i gets ``sizes[i]`` training rows."""
        return partition(train, sizes, seed=self.seed + 1, alpha=self.alpha)


@dataclass(frozen=True)
class OwnerPlan:
    """A simulated owner: its data share, its bid and its (simulated) misbehaviour; ``index``
    (its place among the owners) seeds a poisoning attack."""

    X: np.ndarray
    y: np.ndarray
    points: int
    price: int
    attack: str | None = None
    seed: int = 0
    index: int = 0
    base: Path | None = None  # the owner's copy of the task's published files (a backbone)
    max_epsilon: float | None = None  # sells only into tasks with DP at most this epsilon


@dataclass(frozen=True)
class ProcessorPlan:
    capacity: int
    price: int
    workers: int = 2
    attack: str | None = None
    seed: int = 0


def owner_price(strategy: str, price: int, *, seed: int, index: int) -> int:
    return bid_price(strategy, price, random.Random(seed * 1009 + index))


def processor_price(strategy: str, price: int, *, seed: int, index: int) -> int:
    return bid_price(strategy, price, random.Random(seed * 2003 + index))


def make_node(
    name: str,
    account: LocalAccount,
    market: Market,
    token: Token,
    crypto: Crypto,
    *,
    owner: OwnerPlan | None = None,
    processor: ProcessorPlan | None = None,
) -> PartyNode:
    """A party with one or both roles; fresh role objects for every new task it joins."""

    def roles() -> Roles:
        o = p = None
        if owner is not None:
            o = DataOwner(
                name,
                account,
                market,
                token,
                crypto=crypto,
                X=owner.X,
                y=owner.y,
                points=owner.points,
                price=owner.price,
                attack=parse_owner_attack(owner.attack),
                attack_seed=owner.seed * 4001 + owner.index,
                base=owner.base,
                max_epsilon=owner.max_epsilon,
            )
        if processor is not None:
            p = Processor(
                name,
                account,
                market,
                token,
                crypto=crypto,
                capacity=processor.capacity,
                price=processor.price,
                workers=processor.workers,
                attack=parse_processor_attack(processor.attack),
                seed=processor.seed,
            )
        return o, p

    return PartyNode(name, roles)
