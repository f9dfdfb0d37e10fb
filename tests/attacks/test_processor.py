"""Processor attacks: parsing, and each attack's one face over both crypto implementations."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

from fedmarket.attacks import (
    PROCESSOR_FORMS,
    Collude,
    Corrupt,
    Crash,
    Late,
    Partial,
    ProcessorAttack,
    RandomTotals,
    Scale,
    Stale,
    ZeroTotals,
    clear_side_channel,
    parse_processor_attack,
)
from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.models.kinds import get_kind
from fedmarket.protocol.crypto import Crypto, TaskKeys
from fedmarket.protocol.plaintext import Plaintext

N_SAMPLES = {"o/0": 100, "o/1": 400, "p/0": 50}


@functools.cache
def keys_for(crypto: str) -> TaskKeys:
    """Keys of a 3-output, 3-feature task (totals of shape (3, 4))."""
    if crypto == "ckks":
        from fedmarket.he.crypto import CKKS

        implementation: Crypto = CKKS()
    else:
        implementation = Plaintext()
    return implementation.keygen(
        kind=get_kind("multiclass"), n_features=3, n_outputs=3, preset="n8192",
        expected_samples=600,
    )  # fmt: skip


SHAPE = (3, 4)


def honest_totals(epoch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 + epoch)
    return {b: rng.normal(0.0, 0.2, SHAPE) * n for b, n in N_SAMPLES.items()}


def honest_results(keys: TaskKeys, epoch: int) -> dict[str, bytes]:
    """Stand-in honest results: known totals in the result format."""
    return {
        b: keys.public.forge(block_id=b, epoch=epoch, n_samples=N_SAMPLES[b], totals=t)
        for b, t in honest_totals(epoch).items()
    }


def opened(keys: TaskKeys, results: dict[str, bytes], epoch: int) -> dict[str, np.ndarray]:
    out = {}
    for block, data in results.items():
        sums = keys.decrypt_result(data, party="cheat", epoch=epoch, block_id=block)
        assert sums.n_samples == N_SAMPLES[block]
        out[block] = sums.sums
    return out


def play(
    attack: ProcessorAttack, epochs: int, seed: int = 0, start: int = 0, crypto: str = "plain"
) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Run the attack for some epochs; returns what the requester decrypts each epoch."""
    keys = keys_for(crypto)
    rng = np.random.default_rng(seed)
    memory: dict[str, Any] = {}
    out = []
    for epoch in range(start, start + epochs):
        honest = honest_results(keys, epoch) if attack.needs_honest(epoch, memory) else None
        before = dict(honest or {})
        sent = attack.apply(keys.public, epoch, honest, N_SAMPLES, rng, memory)
        assert honest is None or honest == before  # the honest results are never changed
        out.append(opened(keys, sent, epoch))
    return out, memory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("random", RandomTotals(0.5)),
        ("random:2", RandomTotals(2.0)),
        ("zero", ZeroTotals()),
        ("stale", Stale(0.01)),
        ("stale:0.1", Stale(0.1)),
        ("partial:0.25", Partial(0.25)),
        ("partial:1", Partial(1.0)),
        ("scale:3", Scale(3)),
        ("scale:-100", Scale(-100)),
        ("sign-flip", Scale(-1)),
        ("late", Late()),
        ("crash@2", Crash(2)),
        ("collude:ring:random", Collude("ring", 0.5)),
        ("collude:ring-2:random:0.1", Collude("ring-2", 0.1)),
    ],
)
def test_parse_valid(text: str | None, expected: ProcessorAttack | None) -> None:
    attack = parse_processor_attack(text)
    assert attack == expected
    if attack is not None:
        assert parse_processor_attack(attack.text) == attack == parse_processor_attack(str(attack))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "randomly",
        "random:0",
        "random:-1",
        "random:inf",
        "stale:-0.1",
        "partial",
        "partial:0",
        "partial:1.5",
        "scale:1",
        "scale:0",
        "scale:101",
        "scale:2.5",
        "sign-flip:2",
        "crash@",
        "crash@x",
        "crash@-1",
        "collude:ring",
        "collude:ring:zero",
        "collude::random",
        "collude:a b:random",
        "label-flip",
        3,
    ],
)
def test_parse_invalid_names_the_valid_forms(text: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_processor_attack(text)  # type: ignore[arg-type]
    assert info.value.hint is not None
    for form in PROCESSOR_FORMS:
        assert form in info.value.hint


def test_names_are_kinds_and_text_has_the_parameters() -> None:
    kinds = {
        "random:2": ("random", "random:2.0"),
        "stale": ("stale", "stale:0.01"),
        "partial:0.5": ("partial", "partial:0.5"),
        "scale:-3": ("scale", "scale:-3"),
        "sign-flip": ("sign-flip", "sign-flip"),
        "crash@4": ("crash", "crash@4"),
        "collude:g:random": ("collude", "collude:g:random"),
        "zero": ("zero", "zero"),
        "late": ("late", "late"),
    }
    for text, (name, canonical) in kinds.items():
        attack = parse_processor_attack(text)
        assert attack is not None and (attack.name, attack.text) == (name, canonical)


@pytest.mark.parametrize(
    "attack",
    [RandomTotals(), ZeroTotals(), Stale(), Partial(0.5), Scale(3), Late(), Crash(3), Collude("g")],
)
def test_attacks_are_deterministic_with_a_seeded_rng(attack: ProcessorAttack) -> None:
    clear_side_channel()
    first, _ = play(attack, 5, seed=4)
    clear_side_channel()
    second, _ = play(attack, 5, seed=4)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for block in a:
            np.testing.assert_array_equal(a[block], b[block])


def test_random_and_zero() -> None:
    (first, second), _ = play(RandomTotals(0.5), 2)
    for block, n in N_SAMPLES.items():
        assert np.max(np.abs(first[block])) <= 0.5 * n
        assert np.max(np.abs(first[block])) > 0.2 * n  # uses the range, not a sliver of it
        assert not np.array_equal(first[block], second[block])
    assert not RandomTotals().needs_honest(0)
    (zeros,), _ = play(ZeroTotals(), 1)
    assert zeros.keys() == N_SAMPLES.keys()
    assert all(not np.any(v) for v in zeros.values())


def test_stale_replays_its_first_result_with_noise() -> None:
    attack = Stale(0.01)
    results, memory = play(attack, 30, start=2)
    first = honest_totals(2)
    for block in N_SAMPLES:
        np.testing.assert_array_equal(results[0][block], first[block])
    assert not attack.needs_honest(3, memory) and attack.needs_honest(3)
    for block, n in N_SAMPLES.items():
        noise = np.array([r[block] - first[block] for r in results[1:]])
        assert 0.005 * n < noise.std() < 0.02 * n
        assert not np.array_equal(results[1][block], results[2][block])
    with pytest.raises(ValueError, match="honest"):
        attack.apply(keys_for("plain").public, 0, None, N_SAMPLES, np.random.default_rng(0), {})


def test_partial_skips_about_s_and_replays_the_previous_result() -> None:
    keys = keys_for("plain")
    attack = Partial(0.3)
    rng = np.random.default_rng(5)
    memory: dict[str, Any] = {}
    skipped = 0
    previous: dict[str, np.ndarray] = {}
    epochs = 400
    for epoch in range(epochs):
        honest = honest_results(keys, epoch)
        out = opened(keys, attack.apply(keys.public, epoch, honest, N_SAMPLES, rng, memory), epoch)
        for block in N_SAMPLES:
            if block in memory["skipped"]:
                np.testing.assert_array_equal(out[block], previous.get(block, np.zeros(SHAPE)))
                skipped += 1
            else:
                np.testing.assert_array_equal(out[block], honest_totals(epoch)[block])
        previous = out
    assert skipped / (epochs * len(N_SAMPLES)) == pytest.approx(0.3, abs=0.04)
    # S = 1: never computes anything, zeros first, then the same zeros replayed.
    assert not Partial(1.0).needs_honest(0)
    results, _ = play(Partial(1.0), 3)
    assert all(not np.any(v) for r in results for v in r.values())


def test_scale_late_and_crash() -> None:
    (scaled,), _ = play(Scale(-1), 1)
    (honest,), _ = play(Late(), 1)
    for block in N_SAMPLES:
        np.testing.assert_array_equal(scaled[block], -honest_totals(0)[block])
        np.testing.assert_array_equal(honest[block], honest_totals(0)[block])
    assert Late().submits_late and not Scale(3).submits_late
    crash = Crash(2)
    results, _ = play(crash, 4)
    assert [bool(r) for r in results] == [True, True, False, False]
    assert [crash.answers(e) for e in range(4)] == [True, True, False, False]
    assert [crash.needs_honest(e) for e in range(4)] == [True, True, False, False]


def test_colluders_agree_and_others_do_not() -> None:
    clear_side_channel()
    one, _ = play(Collude("ring"), 3, seed=1)
    two, _ = play(Collude("ring"), 3, seed=2)
    other, _ = play(Collude("other"), 3, seed=1)
    for a, b, c in zip(one, two, other, strict=True):
        for block, n in N_SAMPLES.items():
            np.testing.assert_array_equal(a[block], b[block])
            assert not np.array_equal(a[block], c[block])
            assert np.max(np.abs(a[block])) <= 0.5 * n
    assert not np.array_equal(one[0]["o/0"], one[1]["o/0"])  # fresh every epoch
    assert not np.array_equal(one[0]["o/0"], one[0]["o/1"] / 4)  # and every block
    clear_side_channel()


@pytest.mark.parametrize("crypto", ["plain", "ckks"])
def test_a_corrupt_result_is_refused_at_decryption(crypto: str) -> None:
    keys = keys_for(crypto)
    honest = honest_results(keys, 1)
    bad = Corrupt().apply(keys.public, 1, honest, N_SAMPLES, np.random.default_rng(0), {})
    for block, data in bad.items():
        assert data != honest[block]
        with pytest.raises(UntrustedInputError):
            keys.decrypt_result(data, party="p", epoch=1, block_id=block, bound=1e6)


@pytest.mark.parametrize(
    "attack", [RandomTotals(), ZeroTotals(), Scale(-1), Scale(3), Stale(), Partial(1.0)]
)
def test_under_ckks_an_attack_decrypts_to_what_it_does_in_the_twin(
    attack: ProcessorAttack,
) -> None:
    """The one face over both crypto implementations: the same totals up to CKKS noise."""
    clear_side_channel()
    plain, _ = play(attack, 2, seed=3, crypto="plain")
    clear_side_channel()
    he, _ = play(attack, 2, seed=3, crypto="ckks")
    for p_epoch, h_epoch in zip(plain, he, strict=True):
        for block in N_SAMPLES:
            np.testing.assert_allclose(h_epoch[block], p_epoch[block], rtol=1e-3, atol=0.05)


def test_ckks_colluders_send_the_same_bytes() -> None:
    clear_side_channel()
    keys = keys_for("ckks")
    one = Collude("ring").apply(keys.public, 4, None, N_SAMPLES, np.random.default_rng(1), {})
    two = Collude("ring").apply(keys.public, 4, None, N_SAMPLES, np.random.default_rng(2), {})
    assert one == two
    clear_side_channel()
