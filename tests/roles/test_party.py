"""Every party checks an owner's manifest against the one the owner committed on chain."""

from __future__ import annotations

import pytest

from fedmarket.chain.backends import embedded
from fedmarket.chain.client import deploy
from fedmarket.errors import UntrustedInputError
from fedmarket.roles.channel import block_digest
from fedmarket.roles.messages import DataManifest
from fedmarket.roles.party import Party


def test_forged_manifests_are_refused() -> None:
    chain = embedded(5)
    deployer, requester, owner, processor, outsider = chain.accounts
    market, token = deploy(chain.w3, deployer, 3600)
    for who, amount in ((requester, 10_000), (processor, 10_000)):
        token.mint(who.address, amount)
        token.as_(who).approve(market.address, amount)
    task = (
        market.as_(requester)
        .create_task(b"\x01" * 32, b"\x02" * 32, 100, 60, 1, 1000, 1000, 60, 0)
        .value
    )
    market.as_(owner).bid_data(task, 100, 1)
    market.as_(processor).bid_processing(task, 100, 1)
    chain.time_travel(61)
    market.as_(requester).resolve_greedy(task)
    digests = [block_digest(b"block-0"), block_digest(b"block-1")]
    market.as_(owner).commit_data(task, 0, [64, 36], digests)

    party = Party("requester", requester, market.as_(requester), token.as_(requester))
    party.task_id = task
    good = DataManifest(task_id=task, owner=owner.address, block_sizes=[64, 36], digests=digests)
    party.check_manifest(good)
    for forged, why in [
        (good.model_copy(update={"digests": digests[::-1]}), "committed on chain"),
        (good.model_copy(update={"block_sizes": [64, 35]}), "committed on chain"),
        (good.model_copy(update={"block_sizes": [100]}), "committed on chain"),
        (good.model_copy(update={"owner": outsider.address}), "committed no data"),
        (good.model_copy(update={"task_id": task + 1}), "is for task"),
    ]:
        with pytest.raises(UntrustedInputError, match=why):
            party.check_manifest(forged)
