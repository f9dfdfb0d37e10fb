"""Token amounts print exactly from integers."""

from __future__ import annotations

import pytest

from fedmarket.units import format_units


@pytest.mark.parametrize(
    ("amount", "decimals", "expected"),
    [
        (0, 18, "0"),
        (10**18, 18, "1"),
        (1_234_500_000_000_000_000, 18, "1.2345"),
        (-810_390_000_000_000_000, 18, "-0.81039"),
        (1_000_000_000_000_000_001, 18, "~1"),
        (1234567, 0, "1,234,567"),
        (5, 2, "0.05"),
    ],
)
def test_format_units(amount: int, decimals: int, expected: str) -> None:
    assert format_units(amount, decimals) == expected


def test_sign_and_bad_arguments() -> None:
    assert format_units(10**18, 18, sign=True) == "+1"
    with pytest.raises(ValueError):
        format_units(1, -1)
