"""Untrusted bytes: truncated, bit-flipped, oversized and wrong-parameter inputs all fail cleanly.

Every parser must raise ``UntrustedInputError`` (naming the sender) or, for a flip SEAL cannot
tell from real data, accept a well-formed ciphertext; nothing else may escape, and the process
must survive (the last test runs a fuzzing loop in a child process and checks its exit code).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmarket.errors import UntrustedInputError
from fedmarket.he import (
    EncryptedBlock,
    EncryptedModel,
    KeyPair,
    PublicContext,
    decrypt_result,
    encrypt_block,
    encrypt_model,
    run_program,
    wire,
)
from fedmarket.he.packing import block_bytes_limit

from .conftest import Setup, make_setup, random_data, random_weights


@pytest.fixture(scope="module")
def messages(logistic: Setup) -> dict[str, tuple[bytes, Callable[[bytes], object]]]:
    """Each message kind with the parser its receiver runs."""
    X, labels, _ = random_data(logistic.spec, 64, seed=9)
    block = encrypt_block(logistic.public, X, labels, block_id="owner/fuzz")
    model = encrypt_model(logistic.keypair, random_weights(logistic.spec), epoch=1)
    result = run_program(logistic.public, model, block)
    return {
        "block": (block, lambda data: EncryptedBlock.from_bytes(logistic.public, data, party="o")),
        "model": (model, lambda data: EncryptedModel.from_bytes(logistic.public, data, party="r")),
        "result": (result, lambda data: decrypt_result(logistic.keypair, data, party="p")),
    }


KINDS = ("block", "model", "result")


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_messages_are_refused(kind: str, messages: dict) -> None:
    data, parse = messages[kind]
    cuts = {0, 1, 4, 40, 44, 60, len(data) // 2, len(data) - 100, len(data) - 1}
    cuts |= set(np.random.default_rng(1).integers(0, len(data), 8).tolist())
    for cut in sorted(cuts):
        with pytest.raises(UntrustedInputError):
            parse(data[:cut])


@pytest.mark.parametrize("kind", KINDS)
def test_bit_flips_fail_cleanly(kind: str, messages: dict) -> None:
    data, parse = messages[kind]
    rng = np.random.default_rng(2)
    # The envelope and metadata (first ~150 bytes), the SEAL headers, and the bulk.
    positions = list(range(0, 150, 3)) + rng.integers(0, len(data), 40).tolist()
    refused = 0
    for position in positions:
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        try:
            parse(bytes(flipped))
        except UntrustedInputError:
            refused += 1
    # Every flip in the envelope, metadata or SEAL header is caught; some flips inside
    # compressed coefficients decode to another valid ciphertext, which no parser can tell.
    assert refused >= 50


def test_appended_bytes_are_refused(messages: dict) -> None:
    data, parse = messages["result"]
    with pytest.raises(UntrustedInputError, match="trailing"):
        parse(data + b"\0")


def test_a_block_for_another_key_is_refused(logistic: Setup, messages: dict) -> None:
    other = KeyPair.generate(logistic.spec)
    X, labels, _ = random_data(logistic.spec, 10)
    foreign = encrypt_block(PublicContext.from_bytes(other.public.data), X, labels, block_id="x")
    with pytest.raises(UntrustedInputError, match="another public context") as info:
        EncryptedBlock.from_bytes(logistic.public, foreign, party="owner-3")
    assert info.value.party == "owner-3"
    # Relabelled with this task's digest, ciphertexts under another key of the same parameters
    # look valid to the processor. The requester then decrypts noise: still replicated (the
    # program's rotations act on whatever the slots hold) but far too large, and the padding
    # lanes are not empty, so the result is refused.
    relabelled = foreign[:8] + logistic.public.digest + foreign[40:]
    model = encrypt_model(logistic.keypair, random_weights(logistic.spec), epoch=1)
    result = run_program(logistic.public, model, relabelled, block_party="owner-3")
    with pytest.raises(UntrustedInputError, match=r"padding lanes|exceed"):
        decrypt_result(logistic.keypair, result, party="processor-1", bound=1000.0)


def test_ciphertexts_of_other_parameters_are_refused(logistic: Setup, messages: dict) -> None:
    """A block made under another preset but wrapped with this task's digest."""
    big = make_setup("logistic", 5)
    big_spec = type(big.spec).for_task(kind="logistic", n_features=5, preset="n16384")
    big_keys = KeyPair.generate(big_spec)
    X, labels, _ = random_data(big_spec, 10)
    foreign = encrypt_block(PublicContext.from_bytes(big_keys.public.data), X, labels, block_id="x")
    envelope = wire.unpack(foreign, kind=wire.Kind.BLOCK, party="t", max_bytes=1 << 33)
    count = 2 * logistic.spec.lanes + logistic.spec.n_groups
    payloads = list(envelope.payloads[:count])
    relabelled = wire.pack(wire.Kind.BLOCK, logistic.public.digest, envelope.meta, payloads)
    with pytest.raises(UntrustedInputError, match="owner-9"):
        EncryptedBlock.from_bytes(logistic.public, relabelled, party="owner-9")


def test_a_ciphertext_at_the_wrong_level_is_refused(logistic: Setup, messages: dict) -> None:
    """A result ciphertext (last level) where a model diagonal (top level) belongs."""
    model = wire.unpack(messages["model"][0], kind=wire.Kind.MODEL, party="t", max_bytes=1 << 30)
    result = wire.unpack(messages["result"][0], kind=wire.Kind.RESULT, party="t", max_bytes=1 << 30)
    payloads = [result.payloads[0], *model.payloads[1:]]
    forged = wire.pack(wire.Kind.MODEL, logistic.public.digest, model.meta, payloads)
    with pytest.raises(UntrustedInputError, match="wrong level"):
        EncryptedModel.from_bytes(logistic.public, forged, party="requester")


def test_wrong_message_kind_and_count_are_refused(logistic: Setup, messages: dict) -> None:
    with pytest.raises(UntrustedInputError, match="is a MODEL message"):
        EncryptedBlock.from_bytes(logistic.public, messages["model"][0])
    envelope = wire.unpack(
        messages["result"][0], kind=wire.Kind.RESULT, party="t", max_bytes=1 << 30
    )
    two = wire.pack(wire.Kind.RESULT, logistic.public.digest, envelope.meta, [b"x", b"y"])
    with pytest.raises(UntrustedInputError, match="holds 2 ciphertexts, expected 1"):
        decrypt_result(logistic.keypair, two, party="p")


def test_oversized_messages_are_refused_before_parsing(logistic: Setup) -> None:
    limit = block_bytes_limit(logistic.spec)
    with pytest.raises(UntrustedInputError, match="over the"):
        EncryptedBlock.from_bytes(logistic.public, bytes(limit + 1))


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"block_id": "b", "epoch": 1}, "metadata fields"),
        ({"block_id": "b", "epoch": True, "n_samples": 5}, "must be int"),
        ({"block_id": "b", "epoch": -1, "n_samples": 5}, "out of range"),
        ({"block_id": "b" * 300, "epoch": 1, "n_samples": 5}, "too long"),
        ({"block_id": "b", "epoch": 1, "n_samples": 99999}, "n_samples"),
    ],
)
def test_bad_metadata_is_refused(logistic: Setup, messages: dict, meta: dict, message: str) -> None:
    envelope = wire.unpack(
        messages["result"][0], kind=wire.Kind.RESULT, party="t", max_bytes=1 << 30
    )
    forged = wire.pack(wire.Kind.RESULT, logistic.public.digest, meta, list(envelope.payloads))
    with pytest.raises(UntrustedInputError, match=message):
        decrypt_result(logistic.keypair, forged, party="p")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused(data: bytes) -> None:
    for kind in wire.Kind:
        with pytest.raises(UntrustedInputError):
            wire.unpack(data, kind=kind, party="fuzz", max_bytes=1 << 20, count=3)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 200),
    st.integers(0, 255),
    st.sampled_from(list(wire.Kind)),
)
def test_mutated_envelopes_are_refused_or_parsed(
    position: int, value: int, kind: wire.Kind
) -> None:
    data = bytearray(wire.pack(kind, bytes(32), {"a": 1}, [b"x" * 10, b"y" * 3]))
    data[position % len(data)] = value
    with contextlib.suppress(UntrustedInputError):
        wire.unpack(bytes(data), kind=kind, party="fuzz", max_bytes=1 << 20)


def test_public_context_corruption_is_refused(logistic: Setup) -> None:
    data = logistic.public.data
    for cut in (0, 50, len(data) // 3, len(data) - 1):
        with pytest.raises(UntrustedInputError):
            PublicContext.from_bytes(data[:cut], party="requester")
    rng = np.random.default_rng(4)
    for position in [*range(0, 120, 7), *rng.integers(0, len(data), 6).tolist()]:
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        with contextlib.suppress(UntrustedInputError):
            PublicContext.from_bytes(bytes(flipped), party="requester")


FUZZ_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from fedmarket.errors import UntrustedInputError
    from fedmarket.he import (EncryptedBlock, EncryptedModel, HESpec, KeyPair, PublicContext,
                              decrypt_result, encrypt_block, encrypt_model, run_program)
    spec = HESpec.for_task(kind="logistic", n_features=3)
    keys = KeyPair.generate(spec)
    public = PublicContext.from_bytes(keys.public.data)
    rng = np.random.default_rng(0)
    block = encrypt_block(public, rng.uniform(-1, 1, (20, 3)), rng.integers(0, 2, 20), block_id="b")
    model = encrypt_model(keys, rng.normal(0, 0.1, (1, 4)), epoch=0)
    result = run_program(public, model, block)
    parsers = [
        (block, lambda d: EncryptedBlock.from_bytes(public, d)),
        (model, lambda d: EncryptedModel.from_bytes(public, d)),
        (result, lambda d: decrypt_result(keys, d, party="p")),
    ]
    outcomes = {"refused": 0, "accepted": 0}
    for trial in range(1500):
        data, parse = parsers[trial % 3]
        mutated = bytearray(data)
        mode = rng.integers(0, 4)
        if mode == 0:
            mutated = mutated[: rng.integers(0, len(mutated))]
        elif mode == 1:
            for _ in range(rng.integers(1, 9)):
                mutated[rng.integers(0, len(mutated))] ^= 1 << int(rng.integers(0, 8))
        elif mode == 2:  # overwrite a run of bytes, SEAL headers included
            start = int(rng.integers(0, len(mutated) - 64))
            mutated[start : start + 64] = rng.bytes(64)
        else:  # zero a run (lengths, sizes, scale fields become 0)
            start = int(rng.integers(0, len(mutated) - 64))
            mutated[start : start + 16] = bytes(16)
        try:
            parse(bytes(mutated))
            outcomes["accepted"] += 1
        except UntrustedInputError:
            outcomes["refused"] += 1
    print(outcomes)
    """
)


@pytest.mark.slow
def test_fuzzing_never_crashes_the_process() -> None:
    """A SEAL abort would kill the interpreter; a child process makes that a test failure."""
    run = subprocess.run(
        [sys.executable, "-c", FUZZ_SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "refused" in run.stdout
