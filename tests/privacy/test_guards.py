"""Privacy guards against a requester who deviates (issue 14): the adversary is the requester,
who relays every message between owners and processors and writes the spec.

- Key substitution: it swaps its own channel key in for a processor's (or replays a key signed
  for another task, or forges a signature); owners seal nothing to a key the processor's chain
  account did not sign for this task on this market.
- Tiny totals: it asks for small blocks (``he.block_points``) or wins small fills; owners never
  encrypt a block below ``privacy.min_block_points``, and a requester whose HE layout could
  force one cannot announce.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from fedmarket.chain.signing import (
    channel_key_signer,
    domain_separator,
    sign_channel_key,
)
from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.protocol.party import PartyNode
from fedmarket.protocol.plaintext import Plaintext
from fedmarket.protocol.transport import Envelope
from fedmarket.roles.channel import ChannelKeys, open_sealed
from fedmarket.roles.messages import ChannelKey, DataManifest, SealedBlock, decode, encode
from fedmarket.roles.owner import block_bounds, check_block_floor
from fedmarket.run import run_task
from fedmarket.runtime.local import LocalTransport
from fedmarket.spec import SpecFile, load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MARKET = "0x" + "11" * 20
DOMAIN = domain_separator(31337, MARKET)


def test_a_channel_key_is_its_processors_only_for_its_task_chain_and_market() -> None:
    processor, requester = Account.create(), Account.create()
    key = ChannelKeys.generate().public
    signature = sign_channel_key(processor, DOMAIN, 7, key)
    assert channel_key_signer(DOMAIN, 7, processor.address, key, signature) == processor.address
    # the requester's own key under the processor's name: the signature no longer recovers
    mine = ChannelKeys.generate().public
    assert channel_key_signer(DOMAIN, 7, processor.address, mine, signature) != processor.address
    # signed by the requester's account: recovers to the requester, not the processor
    forged = sign_channel_key(requester, DOMAIN, 7, mine)
    assert channel_key_signer(DOMAIN, 7, processor.address, mine, forged) != processor.address
    # replayed from another task, chain or market
    assert channel_key_signer(DOMAIN, 8, processor.address, key, signature) != processor.address
    other_chain = domain_separator(1, MARKET)
    assert channel_key_signer(other_chain, 7, processor.address, key, signature) != (
        processor.address
    )
    other_market = domain_separator(31337, "0x" + "22" * 20)
    assert channel_key_signer(other_market, 7, processor.address, key, signature) != (
        processor.address
    )
    # garbage is nobody's signature
    assert channel_key_signer(DOMAIN, 7, processor.address, key, bytes(65)) is None
    assert channel_key_signer(DOMAIN, 7, processor.address, key, b"\xff" * 65) is None
    assert channel_key_signer(DOMAIN, 7, processor.address, key, signature[:64]) is None


@given(
    floor=st.integers(64, 300),
    extra=st.integers(0, 5000),
    slack=st.integers(0, 4000),
    block_points=st.one_of(st.just(0), st.integers(1, 5000)),
)
def test_blocks_are_never_below_the_floor_nor_above_a_ciphertext(
    floor: int, extra: int, slack: int, block_points: int
) -> None:
    capacity = 2 * floor - 1 + slack
    fill = floor + extra
    bounds = block_bounds(fill, capacity, block_points, floor)
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    assert bounds[0] == 0 and bounds[-1] == fill
    assert all(floor <= s <= capacity for s in sizes)
    assert max(sizes) - min(sizes) <= 1
    # as many blocks as the requester asked for, unless one more would break the floor
    wanted = -(-fill // block_points) if block_points else -(-fill // capacity)
    assert len(sizes) >= min(wanted, -(-fill // capacity)) or fill < floor * (len(sizes) + 1)
    assert len(sizes) <= max(wanted, -(-fill // capacity))


def test_the_floor_wins_over_a_requester_asking_for_tiny_blocks() -> None:
    # he.block_points = 1 asks for one sample per total: the owner cuts blocks of the floor
    bounds = block_bounds(200, 4096, 1, 64)
    assert [b - a for a, b in itertools.pairwise(bounds)] == [67, 66, 67]
    with pytest.raises(UntrustedInputError, match="below the task's floor"):
        block_bounds(63, 4096, 0, 64)  # a fill forced below the floor (the contract refuses too)
    with pytest.raises(UntrustedInputError, match="cannot be cut"):
        block_bounds(65, 64, 0, 64)  # a layout too small to honour the floor
    with pytest.raises(ConfigError, match="min_block_points"):
        check_block_floor(100, 64)
    check_block_floor(127, 64)


class KeySwapping(LocalTransport):
    """The requester relays channel keys to owners: this one swaps in a key of its own, under
    the processor's real signature or under one by its own account, to read the blocks."""

    def __init__(self, nodes: list[PartyNode], *, forge: bool) -> None:
        super().__init__(nodes)
        self.forge = forge
        self.mine = ChannelKeys.generate()
        self.thief = Account.create()
        self.swapped = 0

    def ask(
        self, action: str, requests: Mapping[str, Envelope], *, timeout: float | None = None
    ) -> dict[str, Envelope]:
        if action == "seal":
            requests = {a: self._swap(e) for a, e in requests.items()}
        return super().ask(action, requests, timeout=timeout)

    def _swap(self, envelope: Envelope) -> Envelope:
        frames = list(envelope.frames)
        for i in range(1, len(frames)):
            key = decode(frames[i], ChannelKey, party="test")
            signature = key.signature
            if self.forge:
                signature = sign_channel_key(self.thief, DOMAIN, key.task_id, self.mine.public)
            frames[i] = encode(
                key.model_copy(update={"public_key": self.mine.public, "signature": signature})
            )
            self.swapped += 1
        return Envelope(envelope.fields, tuple(frames))


@pytest.mark.parametrize("forge", [False, True], ids=["processor-signature", "own-signature"])
def test_owners_seal_nothing_to_a_key_the_requester_swapped_in(forge: bool) -> None:
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = 2
    spec = SpecFile.model_validate(data)
    made: list[KeySwapping] = []
    capture: list[tuple[str, str, str, bytes]] = []

    def swapping(nodes: list[PartyNode]) -> KeySwapping:
        made.append(KeySwapping(nodes, forge=forge))
        made[-1].capture = capture
        return made[-1]

    result = run_task(
        spec, base=EXAMPLES, workers=0, crypto=Plaintext(), chain_url="memory", transport=swapping
    )
    (adversary,) = made
    assert adversary.swapped > 0
    sealed = []
    for _, _, _, frame in capture:
        try:
            sealed.append(decode(frame, SealedBlock, party="test"))
        except UntrustedInputError:
            continue  # another kind of message
    opened = 0
    for block in sealed:
        try:
            open_sealed(block.sealed, adversary.mine, party="owner", max_bytes=1 << 30)
            opened += 1
        except UntrustedInputError:
            pass
    assert opened == 0  # not one block was sealed to the requester's key
    notes = " ".join(result.report.notes)
    assert "did not sign" in notes, notes


def test_a_spec_asking_for_one_sample_per_block_gets_blocks_of_the_floor() -> None:
    """The requester writes he.block_points = 1 (one sample per decrypted total): owners cut
    their fills into blocks of at least the floor anyway, and the run still trains."""
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = 2
    data["he"]["block_points"] = 1
    spec = SpecFile.model_validate(data)
    capture: list[tuple[str, str, str, bytes]] = []
    result = run_task(
        spec, base=EXAMPLES, workers=0, crypto=Plaintext(), chain_url="memory", capture=capture
    )
    sizes = []
    for _, _, _, frame in capture:
        try:
            sizes += decode(frame, DataManifest, party="test").block_sizes
        except UntrustedInputError:
            continue  # another kind of message
    floor = spec.spec.privacy.min_block_points
    assert sizes and min(sizes) >= floor >= 64
    assert len(sizes) > 2  # the request was honoured as far as the floor allows
    assert result.report.epochs
