"""The processor pool: bad blocks are the owner's fault, duplicates are refused, a dead worker
is reported, and a script needs no entry-point guard to use it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedmarket.errors import CryptoError, UntrustedInputError
from fedmarket.he import ProcessorPool, encrypt_block, encrypt_model, run_program, wire

from .conftest import Setup, random_data, random_weights


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_block_names_its_owner(logistic: Setup, workers: int) -> None:
    block = encrypt_block(logistic.public, *random_data(logistic.spec, 10)[:2], block_id="x")
    with ProcessorPool(logistic.public.data, workers=workers) as pool:
        pool.add_block(block[: len(block) // 2], party="owner-5")
        with pytest.raises(UntrustedInputError, match="owner-5") as info:
            pool.block_ids()
        assert info.value.party == "owner-5"


def test_a_block_sent_twice_is_refused(logistic: Setup) -> None:
    block = encrypt_block(logistic.public, *random_data(logistic.spec, 10)[:2], block_id="x")
    with ProcessorPool(logistic.public.data, workers=0) as pool:
        pool.add_block(block, party="owner-5")
        pool.add_block(block, party="owner-6")
        with pytest.raises(UntrustedInputError, match="already received"):
            pool.block_ids()


@pytest.mark.slow
def test_a_bad_model_leaves_the_pool_usable(logistic: Setup) -> None:
    """Every worker's error reply is consumed, so the next epoch gets its own answers."""
    blocks = [
        encrypt_block(
            logistic.public, *random_data(logistic.spec, 20, seed=i)[:2], block_id=f"b{i}"
        )
        for i in range(2)
    ]
    good = encrypt_model(logistic.keypair, random_weights(logistic.spec), epoch=2)
    # A well-formed envelope whose last ciphertext is not a SEAL object: only the workers,
    # which parse the ciphertexts, can refuse it.
    envelope = wire.unpack(good, kind=wire.Kind.MODEL, party="t", max_bytes=1 << 30)
    payloads = [*envelope.payloads[:-1], b"\0" * len(envelope.payloads[-1])]
    bad = wire.pack(wire.Kind.MODEL, logistic.public.digest, envelope.meta, payloads)
    with ProcessorPool(logistic.public.data, workers=2) as pool:
        for block in blocks:
            pool.add_block(block)
        with pytest.raises(UntrustedInputError, match="requester-9"):
            pool.run_epoch(bad, party="requester-9")
        results = pool.run_epoch(good)
    assert results == {f"b{i}": run_program(logistic.public, good, blocks[i]) for i in range(2)}


UNGUARDED = """
import sys
from pathlib import Path
from fedmarket.he import ProcessorPool
folder = Path(sys.argv[1])
with ProcessorPool((folder / "context").read_bytes(), workers=2) as pool:
    pool.add_block((folder / "block").read_bytes())
    results = pool.run_epoch((folder / "model").read_bytes())
(folder / "out").write_bytes(results["b0"])
"""


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="workers are plain subprocesses on POSIX only")
def test_a_script_without_a_main_guard_can_use_the_pool(logistic: Setup, tmp_path: Path) -> None:
    """Workers do not re-import the caller's main module, so top-level code runs once."""
    block = encrypt_block(logistic.public, *random_data(logistic.spec, 30)[:2], block_id="b0")
    model = encrypt_model(logistic.keypair, random_weights(logistic.spec), epoch=1)
    for name, data in (("context", logistic.public.data), ("block", block), ("model", model)):
        (tmp_path / name).write_bytes(data)
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_bytes() == run_program(logistic.public, model, block)


@pytest.mark.slow
def test_a_killed_worker_is_reported_not_waited_for(logistic: Setup) -> None:
    block = encrypt_block(logistic.public, *random_data(logistic.spec, 30)[:2], block_id="b0")
    model = encrypt_model(logistic.keypair, random_weights(logistic.spec), epoch=1)
    with ProcessorPool(logistic.public.data, workers=1) as pool:
        pool.add_block(block)
        # A real fault: the worker process is killed from outside (the OOM killer, an admin).
        worker = pool._procs[0]
        assert worker.is_alive()
        os.kill(worker.pid, signal.SIGKILL)
        with pytest.raises(CryptoError, match="worker exited"):
            pool.run_epoch(model)
