"""Back-off rules: each stops exactly when it should."""

from __future__ import annotations

from fedmarket.roles.stopping import (
    BudgetLeft,
    Callback,
    EpochView,
    Plateau,
    TargetReached,
    first_reason,
)


def view(
    metrics: list[float], *, higher: bool = True, budget: int = 100, left: int = 5
) -> EpochView:
    return EpochView(len(metrics) - 1, metrics, higher, budget, epoch_cost=10, epochs_left=left)


def test_plateau_waits_for_patience_then_stops() -> None:
    rule = Plateau(patience=2, min_delta=0.01)
    assert rule(view([0.5, 0.6])) is None
    assert rule(view([0.5, 0.6, 0.605, 0.609])) is not None
    assert rule(view([0.5, 0.6, 0.605, 0.62])) is None


def test_plateau_on_a_loss_looks_for_decrease() -> None:
    rule = Plateau(patience=1, min_delta=0.0)
    assert rule(view([1.0, 0.8], higher=False)) is None
    assert rule(view([1.0, 0.8, 0.9], higher=False)) is not None


def test_target_and_budget_and_callback() -> None:
    assert TargetReached(0.9)(view([0.8, 0.91])) is not None
    assert TargetReached(0.9)(view([0.8, 0.89])) is None
    assert TargetReached(0.2)(view([0.3, 0.19], higher=False)) is not None
    assert BudgetLeft()(view([0.5], budget=9)) is not None
    assert BudgetLeft()(view([0.5], left=0)) == "max_epochs reached"
    assert BudgetLeft()(view([0.5])) is None
    stop_at_two = Callback(lambda v: "user said so" if v.epoch >= 2 else None)
    assert stop_at_two(view([0.1, 0.2])) is None
    assert stop_at_two(view([0.1, 0.2, 0.3])) == "user said so"


def test_first_reason_takes_the_first_rule_that_fires() -> None:
    rules = [TargetReached(0.95), Plateau(patience=1, min_delta=0.0)]
    assert first_reason(rules, view([0.9, 0.96])) == "target 0.95 reached (0.9600)"
    assert first_reason(rules, view([0.9, 0.9])) == "no improvement of 0.0 in 1 epochs"
    assert first_reason(rules, view([0.9, 0.92])) is None
