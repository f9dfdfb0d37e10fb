"""Dishonest data owners: what they encrypt instead of their honest data.

Each attack's ``apply(X, y, *, features, classes, rng)`` takes the owner's raw data (features
before the spec's scaling, labels as the data set has them: values of ``labels.classes``, or
regression targets when ``classes`` is empty) and returns new arrays; the inputs are never
modified. ``features`` is the spec's ``[features]`` section (or anything with ``mean``,
``std`` and ``spread``): the announced range of feature i is mean_i ± spread * std_i, which the
spec's scaling maps onto [-1, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from fedmarket.errors import ConfigError

DEFAULT_BACKDOOR_FRACTION = 0.5
TRIGGER_FEATURES = 2  # the backdoor trigger sets this many features (the last ones)


class FeatureRanges(Protocol):
    """What the attacks read of ``fedmarket.spec.FeaturesSection``."""

    @property
    def mean(self) -> Sequence[float]: ...

    @property
    def std(self) -> Sequence[float]: ...

    @property
    def spread(self) -> float: ...


def _bounds(features: FeatureRanges, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(features.mean, dtype=np.float64)
    half = features.spread * np.asarray(features.std, dtype=np.float64)
    if mean.shape != (n_features,) or half.shape != (n_features,):
        raise ConfigError(
            f"the data has {n_features} features but the spec lists {mean.shape[0]} means "
            f"and {half.shape[0]} stds"
        )
    return mean - half, mean + half


def _check(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.array(X, dtype=np.float64)  # copies: nothing below touches the caller's arrays
    y = np.array(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ConfigError(f"expected X (n, d) and y (n,), got {X.shape} and {y.shape}")
    return X, y


def _class_index(y: np.ndarray, classes: Sequence[float]) -> np.ndarray:
    """Index of each label in ``classes``; a label outside them is a ConfigError."""
    values = np.asarray(classes, dtype=np.float64)
    match = y.astype(np.float64)[:, None] == values[None, :]
    unknown = ~match.any(axis=1)
    if unknown.any():
        bad = sorted({float(v) for v in y[unknown]})[:5]
        raise ConfigError(f"labels {bad} are not among the task's classes {list(classes)}")
    return np.argmax(match, axis=1)


def apply_trigger(X: np.ndarray, features: FeatureRanges) -> np.ndarray:
    """``X`` (raw features) with the backdoor trigger: the last two features at the top of
    their announced range (mean + spread * std, so exactly +1 after the spec's scaling).

    A benchmark applies it to test points to measure the backdoor's success rate.
    """
    out = np.array(X, dtype=np.float64)
    if out.ndim != 2:
        raise ConfigError(f"expected X of shape (n, d), got {out.shape}")
    _, top = _bounds(features, out.shape[1])
    k = min(TRIGGER_FEATURES, out.shape[1])
    out[:, -k:] = top[-k:]
    return out


class OwnerAttack(ABC):
    """Base of the owner attacks; subclasses are frozen dataclasses."""

    delivers: ClassVar[bool] = True  # False: the owner sells its points but never sends them

    @property
    @abstractmethod
    def name(self) -> str:
        """The kind of attack, without parameters (``label-flip``, ``backdoor``...)."""

    @property
    def text(self) -> str:
        """The attack as a spec writes it, parameters included (``parse_owner_attack`` reads
        it back to an equal object)."""
        return self.name

    def __str__(self) -> str:
        return self.text

    @abstractmethod
    def apply(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        features: FeatureRanges,
        classes: Sequence[float],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The (X, y) this owner encrypts, as new arrays."""


@dataclass(frozen=True)
class LabelFlip(OwnerAttack):
    """``label-flip``: binary labels swapped, multiclass labels moved to the next class in
    ``classes`` order (a derangement: no label stays), regression targets negated."""

    @property
    def name(self) -> str:
        return "label-flip"

    def apply(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        features: FeatureRanges,
        classes: Sequence[float],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        X, y = _check(X, y)
        if not len(classes):
            return X, -y
        index = _class_index(y, classes)
        flipped = np.asarray(classes)[(index + 1) % len(classes)]
        return X, flipped.astype(y.dtype)


@dataclass(frozen=True)
class Artificial(OwnerAttack):
    """``artificial``: made-up data of the same size: each feature uniform over its announced
    range, labels uniform over the classes (regression: uniform over the owner's own target
    range, min(y)..max(y))."""

    @property
    def name(self) -> str:
        return "artificial"

    def apply(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        features: FeatureRanges,
        classes: Sequence[float],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        X, y = _check(X, y)
        n, d = X.shape
        low, high = _bounds(features, d)
        fake_X = rng.uniform(low, high, (n, d))
        if len(classes):
            fake_y = rng.choice(np.asarray(classes), n)
        elif n:
            fake_y = rng.uniform(float(np.min(y)), float(np.max(y)), n)
        else:
            fake_y = np.zeros(0)
        return fake_X, fake_y.astype(y.dtype)


@dataclass(frozen=True)
class Backdoor(OwnerAttack):
    """``backdoor[:FRACTION][:TARGET]``: a random FRACTION of the samples (at least one) get the
    trigger (``apply_trigger``) and the label TARGET (default: the first class; regression:
    1.0). The rest are unchanged."""

    fraction: float = DEFAULT_BACKDOOR_FRACTION
    target: float | None = None

    @property
    def name(self) -> str:
        return "backdoor"

    @property
    def text(self) -> str:
        text = f"backdoor:{float(self.fraction)!r}"
        return text if self.target is None else f"{text}:{float(self.target)!r}"

    def apply_trigger(self, X: np.ndarray, features: FeatureRanges) -> np.ndarray:
        """``apply_trigger`` (the module function): the trigger this attack plants."""
        return apply_trigger(X, features)

    def target_class(self, classes: Sequence[float]) -> float:
        """The label triggered samples get: TARGET, else the first class (regression: 1.0,
        the top of the [-1, 1] range the encrypted program takes targets in)."""
        if self.target is None:
            return float(classes[0]) if len(classes) else 1.0
        if len(classes) and float(self.target) not in {float(c) for c in classes}:
            raise ConfigError(
                f"backdoor target {self.target:g} is not one of the task's classes {list(classes)}"
            )
        return float(self.target)

    def apply(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        features: FeatureRanges,
        classes: Sequence[float],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        X, y = _check(X, y)
        n = X.shape[0]
        target = self.target_class(classes)
        if n == 0:
            return X, y
        count = min(n, max(1, int(self.fraction * n + 0.5)))
        chosen = rng.choice(n, count, replace=False)
        X[chosen] = apply_trigger(X[chosen], features)
        y[chosen] = target
        return X, y


@dataclass(frozen=True)
class NoDelivery(OwnerAttack):
    """``no-delivery``: wins its bid, then never sends its blocks (the runtime skips the owner;
    ``apply`` leaves the data as it is)."""

    delivers: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return "no-delivery"

    def apply(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        features: FeatureRanges,
        classes: Sequence[float],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        return _check(X, y)
