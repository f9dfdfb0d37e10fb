"""Determinism: the same block and model give byte-identical results in separate processes.

Cross-checking replicated blocks compares digests of the processors' results, so honest
processors must agree to the byte. Each run below is a fresh interpreter (its own SEAL memory
pools, import order and address layout).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedmarket.he import ProcessorPool, encrypt_block, encrypt_model, run_program

from .conftest import Setup, random_data, random_weights, setup_for

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fedmarket.he import PublicContext, run_program
    folder = Path(sys.argv[1])
    context = PublicContext.from_bytes((folder / "context").read_bytes())
    out = run_program(context, (folder / "model").read_bytes(), (folder / "block").read_bytes())
    (folder / sys.argv[2]).write_bytes(out)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["multiclass", "copies", "parts"])
def test_two_processes_give_identical_bytes(name: str, tmp_path: Path) -> None:
    setup = setup_for(name)
    X, labels, _ = random_data(setup.spec, 900, seed=21)
    (tmp_path / "context").write_bytes(setup.public.data)
    (tmp_path / "block").write_bytes(encrypt_block(setup.public, X, labels, block_id="d"))
    (tmp_path / "model").write_bytes(
        encrypt_model(setup.keypair, random_weights(setup.spec), epoch=3)
    )
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), f"out{i}"]) for i in range(2)
    ]
    assert [child.wait(timeout=300) for child in children] == [0, 0]
    first, second = (tmp_path / "out0").read_bytes(), (tmp_path / "out1").read_bytes()
    here = run_program(
        setup.public, (tmp_path / "model").read_bytes(), (tmp_path / "block").read_bytes()
    )
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    assert first == second == here


@pytest.mark.slow
def test_pool_results_equal_the_single_process_program(logistic: Setup, multiclass: Setup) -> None:
    for setup, blocks in ((logistic, 3), (multiclass, 1)):  # one block: groups split
        rng = np.random.default_rng(5)
        data = [
            encrypt_block(
                setup.public, *random_data(setup.spec, 100 + i, seed=i)[:2], block_id=f"b{i}"
            )
            for i in range(blocks)
        ]
        model = encrypt_model(
            setup.keypair, random_weights(setup.spec, seed=int(rng.integers(99))), epoch=7
        )
        with ProcessorPool(setup.public.data, workers=2) as pool:
            for block in data:
                pool.add_block(block, party="owner-1")
            results = pool.run_epoch(model)
        assert sorted(results) == [f"b{i}" for i in range(blocks)]
        for i, block in enumerate(data):
            assert results[f"b{i}"] == run_program(setup.public, model, block)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["parts", "parts_linear"])
@pytest.mark.parametrize(("blocks", "workers"), [(1, 2), (2, 3), (2, 2), (1, 1)])
def test_two_parts_on_two_workers_equal_one_process(name: str, blocks: int, workers: int) -> None:
    """The parts side by side (one block on two workers, or two blocks on three), whole
    blocks per worker, and both parts in one process all give the same bytes."""
    setup = setup_for(name)
    data = [
        encrypt_block(setup.public, *random_data(setup.spec, 300 + i, seed=i)[:2], block_id=f"b{i}")
        for i in range(blocks)
    ]
    model = encrypt_model(setup.keypair, random_weights(setup.spec, seed=3), epoch=2)
    with ProcessorPool(setup.public.data, workers=workers) as pool:
        for block in data:
            pool.add_block(block)
        first = pool.run_epoch(model)
        assert pool.run_epoch(model) == first  # the second round starts from a clean state
    for i, block in enumerate(data):
        assert first[f"b{i}"] == run_program(setup.public, model, block)
