"""Bidding strategies, chosen per party in the spec's [run] section.

``fixed`` bids the configured price; ``jitter:F`` draws the price uniformly within ±F of it
(seeded, so runs repeat), which is how a market of independent sellers looks. Prices stay
integers: the draw is in basis points.
"""

from __future__ import annotations

import random

from fedmarket.errors import ConfigError

STRATEGIES = ("fixed", "jitter:F (0 <= F < 1)")


def bid_price(strategy: str, price: int, rng: random.Random) -> int:
    """The price a party bids under ``strategy`` (integer base units)."""
    if strategy == "fixed":
        return price
    kind, _, arg = strategy.partition(":")
    if kind == "jitter":
        try:
            spread = float(arg)
        except ValueError:
            spread = -1.0
        if not 0 <= spread < 1:
            raise ConfigError(f"bad strategy {strategy!r}", hint="jitter:F takes 0 <= F < 1")
        bps = int(spread * 10_000)
        return price * (10_000 + rng.randint(-bps, bps)) // 10_000
    raise ConfigError(
        f"unknown bidding strategy {strategy!r}", hint=f"use one of: {', '.join(STRATEGIES)}"
    )
