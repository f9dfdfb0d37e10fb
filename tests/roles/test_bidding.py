"""Bidding strategies give integer prices within their stated range, reproducibly."""

from __future__ import annotations

import random

import pytest

from fedmarket.errors import ConfigError
from fedmarket.roles.bidding import bid_price


def test_fixed_and_jitter() -> None:
    assert bid_price("fixed", 1000, random.Random(0)) == 1000
    prices = [bid_price("jitter:0.1", 10**15, random.Random(i)) for i in range(200)]
    assert all(isinstance(p, int) and 9 * 10**14 <= p <= 11 * 10**14 for p in prices)
    assert len(set(prices)) > 50
    assert bid_price("jitter:0.1", 10**15, random.Random(7)) == bid_price(
        "jitter:0.1", 10**15, random.Random(7)
    )


@pytest.mark.parametrize("strategy", ["undercut", "jitter:2", "jitter:x"])
def test_bad_strategies_are_named(strategy: str) -> None:
    with pytest.raises(ConfigError, match="strategy"):
        bid_price(strategy, 100, random.Random(0))
