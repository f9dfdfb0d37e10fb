"""Market.collect: claim and withdraw in one transaction, with the same amounts as the two."""

from __future__ import annotations

from typing import Any

import boa

from .conftest import Standard
from .helpers import assert_conserved, balances


def test_collect_pays_what_claim_then_withdraw_would(
    market: Any, token: Any, assigning: Standard, everyone: list[str]
) -> None:
    task, loser = assigning.task, assigning.processors[2]
    owed = market.owed(task, loser)
    assert owed > 0  # a losing processor's whole stake is free after resolution
    before = balances(token, [loser])[loser]
    assert market.collect(task, sender=loser) == owed
    assert token.balanceOf(loser) - before == owed
    assert market.owed(task, loser) == 0 and market.claimable(loser) == 0
    assert_conserved(token, market, everyone)


def test_collect_also_pays_out_credit_from_other_tasks(
    market: Any, token: Any, assigning: Standard, everyone: list[str]
) -> None:
    task, loser = assigning.task, assigning.processors[2]
    market.claim(task, loser)  # credited by anyone, not yet withdrawn
    credited = market.claimable(loser)
    before = token.balanceOf(loser)
    # nothing more is owed for the task, but the earlier credit is paid out
    assert market.collect(task, sender=loser) == credited
    assert token.balanceOf(loser) - before == credited
    with boa.reverts("market: nothing to withdraw"):
        market.collect(task, sender=loser)
    assert_conserved(token, market, everyone)
