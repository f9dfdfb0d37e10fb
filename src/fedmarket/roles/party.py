"""What every party has: a name, a chain account, the market, and a way to get paid."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from fedmarket.chain.client import MarketClient, TokenClient
from fedmarket.errors import UntrustedInputError
from fedmarket.roles.messages import TaskAnnouncement


@dataclass
class Party:
    """Base of the three roles. ``market`` and ``token`` already act as ``account``."""

    name: str
    account: LocalAccount
    market: MarketClient
    token: TokenClient
    task_id: int | None = field(default=None, init=False)
    paid_in: int = field(default=0, init=False)  # escrow and stakes sent to the market
    received: int = field(default=0, init=False)  # withdrawn from the market

    @property
    def address(self) -> str:
        return str(self.account.address)

    def settle(self) -> int:
        """Claim what the task owes this party and withdraw everything credited."""
        if self.task_id is None or self.market.owed(self.task_id, self.address) == 0:
            if self.market.claimable(self.address) == 0:
                return 0
            amount = self.market.withdraw().value
        else:
            amount = self.market.collect(self.task_id).value
        self.received += amount
        return amount

    def check_announcement(self, message: TaskAnnouncement, spec_hash: bytes) -> None:
        """Refuse a task whose announced spec or context differs from what is on chain."""
        task = self.market.tasks(message.task_id)
        if task.spec_hash != spec_hash:
            raise UntrustedInputError(
                "the spec does not match the spec hash on chain", party="requester"
            )
        if task.public_context_hash != hashlib.sha256(message.public_context).digest():
            raise UntrustedInputError(
                "the public context does not match its hash on chain", party="requester"
            )
        self.task_id = message.task_id
