"""Parameter presets: security by the HE-standard table, and SEAL agreeing with it."""

from __future__ import annotations

import pytest

from fedmarket.errors import ConfigError
from fedmarket.he import DEFAULT_PRESET, PRESETS, HESpec, Preset, get_preset, security_level
from fedmarket.he._seal import runtime_for


@pytest.mark.parametrize(
    ("degree", "bits", "level"),
    [
        (8192, 218, 128),
        (8192, 219, 0),
        (8192, 152, 192),
        (8192, 118, 256),
        (16384, 305, 192),
        (16384, 306, 128),
        (4096, 109, 128),
        (4096, 110, 0),
    ],
)
def test_security_level_follows_the_he_standard_table(degree: int, bits: int, level: int) -> None:
    assert security_level(degree, bits) == level


def test_default_preset_is_n8192_at_128_bit_security() -> None:
    preset = get_preset(DEFAULT_PRESET)
    assert preset.poly_modulus_degree == 8192
    assert preset.total_bits == 218
    assert preset.security_bits == 128


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_seal_accepts_every_preset_at_its_claimed_security(name: str) -> None:
    kind = "mlp" if get_preset(name).deep else "logistic"
    spec = HESpec.for_task(
        kind=kind, n_features=3, n_outputs=2 if kind == "mlp" else 1, preset=name
    )
    runtime = runtime_for(spec)  # builds a SEALContext with the claimed security level
    assert len(runtime.primes) == len(spec.preset.coeff_mod_bit_sizes)
    assert [p.bit_length() for p in runtime.primes] == list(spec.preset.coeff_mod_bit_sizes)


def test_a_chain_over_the_security_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match="below 128-bit security"):
        Preset("big", 8192, 60, 40, 40, 40, 60, 30, 44)


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        get_preset("n1024")
    assert "n8192" in str(info.value)
