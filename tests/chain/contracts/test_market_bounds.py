"""Market: absurd inputs get a revert reason, never a bare arithmetic overflow."""

from __future__ import annotations

from typing import Any

import boa

from .conftest import Standard


def test_huge_processing_bids_are_refused_with_a_reason(market: Any, bidding: Standard) -> None:
    processor = bidding.processors[0]
    with boa.reverts("market: bad amount"):
        market.bid_processing(bidding.task, 2**200, 1, sender=processor)
    with boa.reverts("market: price too large"):
        market.bid_processing(bidding.task, 1, 2**200, sender=processor)
