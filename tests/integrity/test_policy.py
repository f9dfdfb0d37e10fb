"""The flag policy: proven evidence flags at once, statistical evidence only when repeated."""

from __future__ import annotations

import pytest

from fedmarket.integrity.policy import FlagPolicy
from fedmarket.integrity.types import Evidence, Strength

P, Q = "0xp", "0xq"


def stat(party: str, epoch: int, score: float = 5.0, role: str = "processor") -> Evidence:
    return Evidence(party, role, epoch, "distance", Strength.STATISTICAL, "z", score)


def proof(party: str, epoch: int) -> Evidence:
    return Evidence(party, "processor", epoch, "audit", Strength.PROVEN, "recomputed", 1.0)


def test_proven_evidence_flags_in_the_same_epoch() -> None:
    policy = FlagPolicy()
    [flag] = policy.decide(0, [proof(P, 0)], active={P, Q})
    assert flag.party == P and flag.proven and flag.epoch == 0


def test_one_statistical_alarm_is_not_a_flag_but_two_in_three_epochs_are() -> None:
    policy = FlagPolicy(repeat=2, window=3)
    assert policy.decide(0, [stat(P, 0)], active={P, Q}) == []
    assert policy.decide(1, [], active={P, Q}) == []
    [flag] = policy.decide(2, [stat(P, 2)], active={P, Q})
    assert flag.party == P and not flag.proven
    assert [e.epoch for e in flag.evidence] == [0, 2]


def test_alarms_outside_the_window_do_not_add_up() -> None:
    policy = FlagPolicy(repeat=2, window=3)
    assert policy.decide(0, [stat(P, 0)], active={P}) == []
    assert policy.decide(3, [stat(P, 3)], active={P}) == []  # epoch 0 has left the window
    assert [f.party for f in policy.decide(4, [stat(P, 4)], active={P})] == [P]


def test_owners_inactive_and_already_flagged_parties_are_never_flagged() -> None:
    policy = FlagPolicy(repeat=1, window=1)
    assert policy.decide(0, [stat(P, 0, role="owner")], active={P}) == []
    assert policy.decide(0, [proof(Q, 0)], active={P}) == []  # Q has left the task
    assert [f.party for f in policy.decide(1, [proof(P, 1)], active={P})] == [P]
    assert policy.decide(2, [proof(P, 2)], active={P}) == []  # slashed once only
    assert policy.flagged == {P}


def test_at_most_the_contracts_limit_per_epoch_proven_first() -> None:
    policy = FlagPolicy(repeat=1, window=1, max_flags=2)
    evidence = [stat("0xs1", 0, 9.0), proof("0xp1", 0), stat("0xs2", 0, 6.0)]
    flags = policy.decide(0, evidence, active={"0xs1", "0xs2", "0xp1"})
    assert [f.party for f in flags] == ["0xp1", "0xs1"]


def test_repeat_cannot_exceed_window() -> None:
    with pytest.raises(ValueError):
        FlagPolicy(repeat=4, window=3)
