"""Processor attacks: parsing, the plaintext twin of each, and the HE face on real keys."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

from fedmarket.attacks import (
    PROCESSOR_FORMS,
    Collude,
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
from fedmarket.errors import ConfigError

SHAPE = (2, 4)
N_SAMPLES = {"o/0": 100, "o/1": 400, "p/0": 50}


def honest_totals(epoch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 + epoch)
    return {b: rng.normal(0.0, 0.2, SHAPE) * n for b, n in N_SAMPLES.items()}


def play(
    attack: ProcessorAttack, epochs: int, seed: int = 0, start: int = 0
) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Run the plaintext face for some epochs; checks the honest inputs are never changed."""
    rng = np.random.default_rng(seed)
    memory: dict[str, Any] = {}
    out = []
    for epoch in range(start, start + epochs):
        honest = honest_totals(epoch) if attack.needs_honest(epoch, memory) else None
        before = {b: v.copy() for b, v in (honest or {}).items()}
        result = attack.plain(epoch, honest, N_SAMPLES, rng, memory, shape=SHAPE)
        for block, values in (honest or {}).items():
            np.testing.assert_array_equal(values, before[block])
        for values in result.values():
            assert values.shape == SHAPE
            assert not any(values is h for h in (honest or {}).values())
        out.append(result)
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
def test_plain_face_is_deterministic_with_a_seeded_rng(attack: ProcessorAttack) -> None:
    first, _ = play(attack, 5, seed=4)
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
    with pytest.raises(ValueError, match="shape"):
        ZeroTotals().plain(0, None, N_SAMPLES, np.random.default_rng(0), {})


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
        attack.plain(0, None, N_SAMPLES, np.random.default_rng(0), {}, shape=SHAPE)


def test_partial_skips_about_s_and_replays_the_previous_result() -> None:
    attack = Partial(0.3)
    rng = np.random.default_rng(5)
    memory: dict[str, Any] = {}
    skipped = 0
    previous: dict[str, np.ndarray] = {}
    epochs = 400
    for epoch in range(epochs):
        honest = honest_totals(epoch)
        out = attack.plain(epoch, honest, N_SAMPLES, rng, memory)
        for block in N_SAMPLES:
            if block in memory["skipped"]:
                expected = previous.get(block, np.zeros(SHAPE))
                np.testing.assert_array_equal(out[block], expected)
                skipped += 1
            else:
                np.testing.assert_array_equal(out[block], honest[block])
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


# ---- the HE face -------------------------------------------------------------------------


@functools.cache
def he_setup() -> tuple[Any, Any]:
    from fedmarket.he import HESpec, KeyPair, PublicContext

    keypair = KeyPair.generate(HESpec.for_task(kind="logistic", n_features=3))
    return keypair, PublicContext.from_bytes(keypair.public.data)


HE_SAMPLES = {"o/0": 300, "o/1": 1000}


def he_honest(epoch: int) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
    """Stand-in honest results: known totals encrypted in the result layout."""
    from fedmarket.he import forge_result

    _, public = he_setup()
    rng = np.random.default_rng(epoch)
    totals = {b: rng.normal(0.0, 0.2, (1, 4)) * n for b, n in HE_SAMPLES.items()}
    return totals, {
        b: forge_result(public, block_id=b, epoch=epoch, n_samples=n, totals=totals[b])
        for b, n in HE_SAMPLES.items()
    }


def decrypt(results: dict[str, bytes], epoch: int) -> dict[str, np.ndarray]:
    from fedmarket.he import decrypt_result

    keypair, _ = he_setup()
    out = {}
    for block, data in results.items():
        sums = decrypt_result(keypair, data, party="cheat", epoch=epoch, block_ids=[block])
        assert sums.n_samples == HE_SAMPLES[block]
        out[block] = sums.sums
    return out


def test_he_face_matches_the_plain_face() -> None:
    _, public = he_setup()
    memory: dict[str, Any] = {}
    for attack in (RandomTotals(), ZeroTotals(), Scale(-1), Scale(3)):
        epoch = 1
        plain_honest, he_honest_bytes = he_honest(epoch)
        honest_plain = plain_honest if attack.needs_honest(epoch) else None
        honest_he = he_honest_bytes if attack.needs_honest(epoch) else None
        expected = attack.plain(
            epoch, honest_plain, HE_SAMPLES, np.random.default_rng(3), {}, shape=(1, 4)
        )
        got = decrypt(
            attack.encrypted(
                public, epoch, honest_he, HE_SAMPLES, np.random.default_rng(3), memory
            ),
            epoch,
        )
        for block in HE_SAMPLES:
            np.testing.assert_allclose(got[block], expected[block], rtol=1e-3, atol=1e-4)
    assert Crash(1).encrypted(public, 1, None, HE_SAMPLES, np.random.default_rng(0), {}) == {}


def test_he_stale_partial_and_collude() -> None:
    _, public = he_setup()
    rng = np.random.default_rng(0)
    # stale: epoch 0 honest, epoch 1 a restamped replay plus a little noise
    memory: dict[str, Any] = {}
    first_plain, first = he_honest(0)
    assert Stale().encrypted(public, 0, first, HE_SAMPLES, rng, memory) == first
    assert not Stale().needs_honest(1, memory)
    replay = decrypt(Stale().encrypted(public, 1, None, HE_SAMPLES, rng, memory), 1)
    for block, n in HE_SAMPLES.items():
        diff = np.abs(replay[block] - first_plain[block])
        assert 0 < diff.max() < 0.05 * n
    # partial:1 skips everything: zeros first, then those zeros replayed under the new epoch
    memory = {}
    for epoch in (0, 1):
        out = decrypt(Partial(1.0).encrypted(public, epoch, None, HE_SAMPLES, rng, memory), epoch)
        assert all(np.max(np.abs(v)) < 1e-6 for v in out.values())
    # collude: two colluders send the same bytes; the totals are the plain face's
    clear_side_channel()
    one = Collude("ring").encrypted(public, 4, None, HE_SAMPLES, np.random.default_rng(1), {})
    two = Collude("ring").encrypted(public, 4, None, HE_SAMPLES, np.random.default_rng(2), {})
    assert one == two
    expected = Collude("ring").plain(4, None, HE_SAMPLES, rng, {}, shape=(1, 4))
    for block, sums in decrypt(one, 4).items():
        np.testing.assert_allclose(sums, expected[block], rtol=1e-3, atol=1e-4)
    clear_side_channel()
