"""The commitments' Python side: trees, proofs, accumulators and EIP-712 signatures (the
contract side of the same vectors: tests/chain/contracts/test_merkle_vectors.py)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from fedmarket.chain import merkle
from fedmarket.chain.merkle import AssignmentTree, Entry, EpochBook, Tree, block_id
from fedmarket.chain.signing import SignedRoot, domain_separator, root_digest, sign_root

MARKET = "0x" + "3a" * 20


def leaves(n: int) -> list[bytes]:
    return [bytes(keccak(i.to_bytes(32, "big"))) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 17])
def test_every_leaf_proves_and_no_other_does(n: int) -> None:
    tree = Tree(leaves(n))
    assert len(tree.proof(0)) == merkle.depth(n) == (n - 1).bit_length()
    for i, leaf in enumerate(leaves(n)):
        assert merkle.verify(leaf, i, n, tree.proof(i), tree.root)
        assert not merkle.verify(leaf, (i + 1) % max(n, 2), n, tree.proof(i), tree.root) or n == 1
    assert not merkle.verify(b"\x01" * 32, 0, n, tree.proof(0), tree.root)
    # an index beyond the proof's depth does not climb
    assert merkle.climb(leaves(n)[0], 1 << merkle.depth(n), tree.proof(0)) is None


def test_a_node_cannot_pass_for_a_leaf() -> None:
    """The proof's length is fixed by the leaf count (the contract takes it from the
    committed record), and leaves are hashed from tagged preimages of their own length."""
    tree = Tree(leaves(4))
    inner = tree.levels[1][0]  # node over leaves 0 and 1
    assert merkle.climb(inner, 0, [tree.levels[1][1]]) == tree.root
    assert not merkle.verify(inner, 0, 4, [tree.levels[1][1]], tree.root)
    leaf = merkle.result_leaf(1, 2, 3, b"\x04" * 32)
    assert leaf != merkle.node(b"\x00" * 32, b"\x00" * 32)


def test_an_assignment_proves_each_entry_under_its_processor_only() -> None:
    entries = {
        0: [Entry(block_id(0, 0), 64), Entry(block_id(1, 0), 70)],
        3: [Entry(block_id(2, 1), 64)],
    }
    tree = AssignmentTree(7, entries)
    assert [r.processor for r in tree.records] == [0, 3]
    assert tree.records[0].points == 134
    for p, es in entries.items():
        for i, e in enumerate(es):
            proof = tree.entry_proof(p, i)
            assert proof.check(7, e.block, tree.root)
            assert not proof.check(8, e.block, tree.root)  # another task
            assert not proof.check(7, block_id(9, 9), tree.root)
    assert tree.holders(block_id(1, 0)) == [(0, 1)]


def test_the_epoch_book_chains_releases_roots_and_closes() -> None:
    book = EpochBook(3)
    for e in range(3):
        book.release(e, bytes([e + 1]) * 32)
        book.record(e, 0, bytes([10 + e]) * 32)
        book.record(e, 2, bytes([20 + e]) * 32)
        book.closed = e + 1
    h = bytes(32)
    for e in range(3):
        h = merkle.history_step(h, merkle.epoch_acc(3, e, bytes([e + 1]) * 32, book.roots[e]))
    assert book.history() == h
    proof = book.proof(1)
    acc = merkle.epoch_acc(3, 1, proof.model_digest, proof.roots)
    again = merkle.history_step(proof.history_before, acc)
    for a in proof.later:
        again = merkle.history_step(again, a)
    assert again == h and book.root_of(1, 2) == bytes([21]) * 32
    with pytest.raises(ValueError):
        book.proof(3)


def test_root_signatures_are_eip712_and_recover_their_signer() -> None:
    account = Account.from_key(keccak(b"signer"))
    domain = domain_separator(31337, MARKET)
    root = b"\x42" * 32
    typed = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "EpochRoot": [
                    {"name": "task", "type": "uint256"},
                    {"name": "epoch", "type": "uint256"},
                    {"name": "root", "type": "bytes32"},
                ],
            },
            "primaryType": "EpochRoot",
            "domain": {
                "name": "fedmarket",
                "version": "2",
                "chainId": 31337,
                "verifyingContract": MARKET,
            },
            "message": {"task": 5, "epoch": 2, "root": root},
        }
    )
    assert bytes(keccak(b"\x19" + typed.version + typed.header + typed.body)) == root_digest(
        domain, 5, 2, root
    )
    signed = sign_root(account, domain, 5, 2, root)
    assert signed.signer(domain, 5, 2) == account.address
    assert signed.signer(domain, 5, 3) != account.address  # another epoch
    assert signed.signer(domain_separator(1, MARKET), 5, 2) != account.address  # another chain
    assert SignedRoot(root, 27, b"\x00" * 32, b"\x00" * 32).signer(domain, 5, 2) is None


def test_draw_panel_picks_without_replacement_by_weight() -> None:
    weights = [(1, 100), (4, 300), (7, 600)]
    counts = dict.fromkeys((1, 4, 7), 0)
    for n in range(300):
        panel = merkle.draw_panel(merkle.draw_seed(n.to_bytes(32, "big"), 0), weights, size=1)
        counts[panel[0]] += 1
    assert counts[1] < counts[4] < counts[7]
    full = merkle.draw_panel(merkle.draw_seed(b"\x01" * 32, 3), weights)
    assert sorted(full) == [1, 4, 7]
    assert merkle.draw_panel(b"\x00" * 32, []) == []
