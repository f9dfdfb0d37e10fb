"""What every party has: a name, a chain account, the market, the crypto, a way to get paid."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from pydantic import ValidationError

from fedmarket.chain import merkle
from fedmarket.chain.client import Side
from fedmarket.chain.events import DataCommitted
from fedmarket.chain.ledger import Market, Token
from fedmarket.errors import UntrustedInputError
from fedmarket.protocol.crypto import Crypto, default_crypto
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
        """Collect everything this party's bids on the task can collect now (pay, refunds,
        stakes once the task is over and the grace period has passed) and withdraw every
        credit (bonds, fees, shares, refunds); returns the amount received."""
        amount = 0
        if self.task_id is not None:
            for side in Side:
                index = self.market.bid_index(self.task_id, side, self.address)
                if index and self.market.owed(self.task_id, side, index - 1) > 0:
                    amount += self.market.collect(self.task_id, side, index - 1).value
        if self.market.claimable(self.address) > 0:
            amount += self.market.withdraw().value
        if amount:
            self.transfers.append(("collect", amount))
            self.received += amount
        return amount

    def check_manifest(self, manifest: DataManifest) -> None:
        """Refuse an owner's manifest unless it is the one that owner committed on chain
        (``DataCommitted``: its winning bid, block sizes and digests)."""
        assert self.task_id is not None
        party = f"owner {manifest.owner}"
        if manifest.task_id != self.task_id:
            raise UntrustedInputError(f"manifest is for task {manifest.task_id}", party=party)
        committed = [
            e
            for e in self.market.logs(DataCommitted, task=self.task_id)
            if e.owner.lower() == manifest.owner.lower()
        ]
        if not committed:
            raise UntrustedInputError("committed no data on chain", party=party)
        event = committed[-1]
        bid = self.market.get_bid(self.task_id, Side.DATA, event.bid)
        if not bid.winner or bid.bidder.lower() != manifest.owner.lower():
            raise UntrustedInputError("is not a winning data owner of this task", party=party)
        if list(manifest.block_sizes) != list(event.block_sizes) or [
            bytes(d) for d in manifest.digests
        ] != [bytes(d) for d in event.digests]:
            raise UntrustedInputError(
                "manifest does not match the one committed on chain", party=party
            )

    def owner_bids(self) -> dict[str, int]:
        """Winning owners (address, lower case) -> their data bid, from the chain."""
        assert self.task_id is not None
        data, _ = self.market.book_of(self.task_id)
        out = {}
        for i in range(128):
            if data >> i & 1:
                out[self.market.get_bid(self.task_id, Side.DATA, i).bidder.lower()] = i
        return out

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
        terms = self.market.terms(message.task_id)
        context_hash = hashlib.sha256(message.public_context).digest()
        if terms.terms_hash != merkle.terms_hash(spec.spec_hash(), context_hash):
            raise UntrustedInputError(
                "the spec or the public context does not match the task's terms on chain",
                party=party,
            )
        self.task_id = message.task_id
        return spec
