"""The spec's ``[privacy]`` section, parsed and validated, and what it asks of the crypto layer."""

from __future__ import annotations

import math
import random

import pytest

from fedmarket.errors import ConfigError
from fedmarket.models.kinds import get_kind
from fedmarket.privacy.accounting import epsilon_spent
from fedmarket.privacy.noise import gaussian_totals
from fedmarket.privacy.policy import crypto_privacy, noise_allowance, noise_std
from fedmarket.protocol.crypto import Layout, Privacy
from fedmarket.protocol.plaintext import Plaintext
from fedmarket.spec import parse_spec

from ..test_spec import VALID


def spec_text(privacy: str = "", *, block_points: int = 0, max_epochs: int = 30) -> str:
    text = VALID.replace("max_epochs = 5", f"max_epochs = {max_epochs}")
    text = text.replace(
        "[run]", f"[he]\nblock_points = {block_points}\n\n[privacy]\n{privacy}\n[run]"
    )
    return text


def test_the_defaults() -> None:
    spec = parse_spec(spec_text("enabled = true")).spec
    section = spec.privacy
    assert (section.epsilon, section.delta, section.clip_norm) == (8.0, 1e-5, 1.0)
    assert section.floor(2) == 64
    assert section.floor(100) == 102  # at least n_features + 2
    sigma = section.noise_multiplier(spec.task.max_epochs)
    assert sigma == pytest.approx(3.29, abs=0.01)  # docs/privacy.md's table, T = 30
    # what the accountant reports after the cap is the published budget, and no more
    spent = epsilon_spent(sigma, section.delta, spec.task.max_epochs)
    assert 7.9 < spent <= 8.0 + 1e-6
    assert epsilon_spent(sigma, section.delta, 10) < spent
    # off by default: the spec hashes it all the same, so bidders see what they agree to
    plain = parse_spec(VALID).spec
    assert not plain.privacy.enabled and b'"privacy"' in plain.canonical_json()
    assert plain.canonical_json() != parse_spec(spec_text("enabled = true")).spec.canonical_json()


def test_what_the_crypto_is_asked() -> None:
    spec = parse_spec(spec_text("enabled = true\nclip_norm = 2.0\nmin_block_points = 100")).spec
    assert crypto_privacy(spec) == Privacy(min_block_points=100, clip_norm=2.0, noise=True)
    # the floor holds every task to it; clip and noise only a private one
    assert crypto_privacy(parse_spec(VALID).spec) == Privacy(min_block_points=64)
    layout = Layout(get_kind("logistic"), 2, 1, 4096, clip_norm=2.0, private=True)
    expected = spec.privacy.noise_multiplier(30) * get_kind("logistic").sensitivity(2, 1, 2.0)
    assert noise_std(spec, layout) == pytest.approx(expected)
    assert noise_std(parse_spec(VALID).spec, layout) == 0.0
    # the published keys carry it to every party
    keys = Plaintext().keygen(
        kind=spec.kind,
        n_features=2,
        n_outputs=1,
        preset="n8192",
        expected_samples=400,
        privacy=crypto_privacy(spec),
    )
    public = Plaintext().public(keys.public.data, party="requester")
    assert (public.layout.min_block_points, public.layout.clip, public.layout.private) == (
        100,
        2.0,
        True,
    )
    assert math.isclose(public.layout.sensitivity, layout.sensitivity)


@pytest.mark.parametrize(
    ("privacy", "block_points", "message"),
    [
        ("min_block_points = 63", 0, "min_block_points"),
        ("min_block_points = 16", 0, "min_block_points"),
        ("epsilon = 0", 0, "epsilon"),
        ("epsilon = 17", 0, "epsilon"),
        ("epsilon = nan", 0, "epsilon"),
        ("delta = 0.01", 0, "delta"),
        ("clip_norm = 0", 0, "clip_norm"),
        ("clip_norm = inf", 0, "clip_norm"),
        ("enabled = 1", 0, "enabled"),
        ("colour = 3", 0, "colour"),
        ("enabled = true", 64, "block_points"),  # a split could leave a block below 64
        ("enabled = true\nmin_block_points = 500", 0, "num_points"),
    ],
)
def test_bad_sections_are_refused(privacy: str, block_points: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec_text(privacy, block_points=block_points))


def test_small_blocks_are_fine_without_privacy() -> None:
    """Specs that do not enable it keep what they could do before (tests, the twin's bench)."""
    spec = parse_spec(spec_text("", block_points=16)).spec
    assert spec.he.block_points == 16 and not spec.privacy.enabled
    assert parse_spec(spec_text("enabled = true", block_points=128)).spec.he.block_points == 128


def test_the_noise_allowance_covers_honest_noise() -> None:
    """The bound the requester raises by: no draw of the owners' sampler exceeds it."""
    std = 7.0
    draws = gaussian_totals((20_000,), std, random.Random(5))
    assert 0.97 * std < float(draws.std()) < 1.03 * std
    assert float(abs(draws).max()) < noise_allowance(std)
    assert noise_allowance(0.0) == 0.0
    with pytest.raises(ValueError):
        noise_allowance(float("nan"))
