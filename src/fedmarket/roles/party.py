"""What every party has: a name, a chain account, the market, the crypto, a way to get paid."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from pydantic import ValidationError

from fedmarket.chain.client import Side
from fedmarket.chain.ledger import Market, Token
from fedmarket.errors import UntrustedInputError
from fedmarket.protocol.crypto import Crypto, default_crypto
from fedmarket.roles.channel import data_root
from fedmarket.roles.messages import DataManifest, TaskAnnouncement
from fedmarket.spec import TaskSpec


@dataclass
class Party:
    """Base of the three roles. ``market`` and ``token`` already act as ``account``."""

    name: str
    account: LocalAccount
    market: Market
    token: Token
    crypto: Crypto = field(default_factory=default_crypto, kw_only=True)
    task_id: int | None = field(default=None, init=False)
    paid_in: int = field(default=0, init=False)  # escrow and stakes sent to the market
    received: int = field(default=0, init=False)  # withdrawn from the market
    # every token movement with the market: (what, amount), negative when paid in
    transfers: list[tuple[str, int]] = field(default_factory=list, init=False)

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
        self.transfers.append(("collect", amount))
        self.received += amount
        return amount

    def check_manifest(self, manifest: DataManifest) -> None:
        """Refuse an owner's manifest unless it matches that owner's winning bid on chain."""
        assert self.task_id is not None
        party = f"owner {manifest.owner}"
        if manifest.task_id != self.task_id:
            raise UntrustedInputError(f"manifest is for task {manifest.task_id}", party=party)
        index = self.market.bid_index(self.task_id, Side.DATA, manifest.owner)
        bid = self.market.get_bid(self.task_id, Side.DATA, index - 1) if index else None
        if bid is None or not bid.winner:
            raise UntrustedInputError("is not a winning data owner of this task", party=party)
        if len(manifest.digests) != len(manifest.block_sizes):
            raise UntrustedInputError("manifest sizes and digests differ in number", party=party)
        if sum(manifest.block_sizes) != bid.fill:
            raise UntrustedInputError(
                f"manifest has {sum(manifest.block_sizes)} points, the chain says {bid.fill}",
                party=party,
            )
        if data_root(manifest.digests) != bid.data_root:
            raise UntrustedInputError("manifest does not match the data root on chain", party=party)

    def read_announcement(self, message: TaskAnnouncement) -> TaskSpec:
        """The announced spec, once it and the public keys match what is on chain."""
        party = "requester"
        if message.market.lower() != self.market.address.lower():
            raise UntrustedInputError(
                f"announces a task on market {message.market}, not ours", party=party
            )
        try:
            spec = TaskSpec.model_validate_json(message.spec_json)
        except ValidationError as exc:
            raise UntrustedInputError(f"announced an invalid spec: {exc}", party=party) from None
        task = self.market.tasks(message.task_id)
        if task.spec_hash != spec.spec_hash():
            raise UntrustedInputError("the spec does not match the spec hash on chain", party=party)
        if task.public_context_hash != hashlib.sha256(message.public_context).digest():
            raise UntrustedInputError(
                "the public context does not match its hash on chain", party=party
            )
        self.task_id = message.task_id
        return spec
