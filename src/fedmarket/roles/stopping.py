"""When the requester backs off: small rules over the history of validation metrics.

Each rule sees the metric history (one value per closed epoch, higher is better unless
the rule says otherwise) and returns a reason to stop, or None to go on. The requester
stops at the first rule that gives a reason; the reason goes into the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class EpochView:
    """What a stopping rule may look at after an epoch."""

    epoch: int
    metrics: Sequence[float]  # the validation metric after each closed epoch, oldest first
    higher_is_better: bool
    budget_left: int  # processing budget not yet spent, token base units
    epoch_cost: int  # what one more epoch costs at most
    epochs_left: int


class StoppingRule(Protocol):
    def __call__(self, view: EpochView) -> str | None: ...


@dataclass(frozen=True)
class Plateau:
    """Stop when the metric has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int = 3
    min_delta: float = 0.001

    def __call__(self, view: EpochView) -> str | None:
        m = list(view.metrics) if view.higher_is_better else [-x for x in view.metrics]
        if self.patience <= 0 or len(m) <= self.patience:
            return None
        best_before = max(m[: -self.patience])
        # as in Keras' EarlyStopping: an improvement must exceed min_delta, so equal is none
        if max(m[-self.patience :]) - self.min_delta <= best_before:
            return f"no improvement of {self.min_delta} in {self.patience} epochs"
        return None


@dataclass(frozen=True)
class TargetReached:
    """Stop once the metric reaches ``target``."""

    target: float

    def __call__(self, view: EpochView) -> str | None:
        if not view.metrics:
            return None
        last = view.metrics[-1]
        hit = last >= self.target if view.higher_is_better else last <= self.target
        return f"target {self.target} reached ({last:.4f})" if hit else None


@dataclass(frozen=True)
class BudgetLeft:
    """Stop when the budget cannot pay for another epoch (or the contract's epochs run out)."""

    def __call__(self, view: EpochView) -> str | None:
        if view.epochs_left <= 0:
            return "max_epochs reached"
        if view.budget_left < view.epoch_cost:
            return f"budget left ({view.budget_left}) below one epoch's cost ({view.epoch_cost})"
        return None


@dataclass(frozen=True)
class Callback:
    """Stop when a user function says so; it returns a reason or None."""

    fn: Callable[[EpochView], str | None]

    def __call__(self, view: EpochView) -> str | None:
        return self.fn(view)


def first_reason(rules: Sequence[StoppingRule], view: EpochView) -> str | None:
    """The first rule's reason to stop, or None to go on."""
    for rule in rules:
        reason = rule(view)
        if reason:
            return reason
    return None
