"""An in-process driver: data owners -> processors -> requester, epoch after epoch.

Tests and the benchmark use it; the protocol layer calls the same pieces one by one, with bytes
travelling between parties: ``encrypt_block`` (owner), ``ProcessorPool`` / ``run_program``
(processor), ``encrypt_model`` / ``decrypt_result`` / ``RequesterOptimizer`` (requester).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from fedmarket.he.keys import KeyPair, PublicContext
from fedmarket.he.optimizer import RequesterOptimizer, decrypt_result, encrypt_model, max_abs_sum
from fedmarket.he.packing import encrypt_block, split_into_blocks
from fedmarket.he.params import DEFAULT_PRESET
from fedmarket.he.pool import ProcessorPool
from fedmarket.he.spec import HESpec
from fedmarket.models.kinds import ModelKind, get_kind
from fedmarket.models.linear import Model
from fedmarket.models.training import TrainConfig, encode_labels


@dataclass(frozen=True)
class EncryptedEpoch:
    epoch: int
    metric: float  # validation accuracy, or R^2 for linear regression
    max_abs_z: float  # on the validation set, for the look-ahead weights sent next
    seconds: float  # wall time of the whole epoch (encrypt model, process, decrypt, update)
    processor_seconds: float  # wall time of the processors' part
    model_bytes: int  # requester -> one processor
    result_bytes: int  # all processors -> requester


@dataclass(frozen=True)
class EncryptedTrainResult:
    model: Model
    history: tuple[EncryptedEpoch, ...]
    spec: HESpec
    context_bytes: int
    block_bytes: int  # all owners -> processors, once
    n_blocks: int
    setup_seconds: float  # key generation and the owners' encryption


def train_encrypted(
    X: np.ndarray,
    y: np.ndarray,
    *,
    kind: str | ModelKind,
    X_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainConfig | None = None,
    preset: str = DEFAULT_PRESET,
    workers: int = 2,
) -> EncryptedTrainResult:
    """Train on encrypted data; the same algorithm as ``fedmarket.models.fit_plaintext``.

    ``workers`` processes run the processor's program (0 runs it in this process).
    """
    config = config or TrainConfig()
    X = np.asarray(X, dtype=np.float64)
    k = get_kind(kind)
    classes, targets = encode_labels(k, y)
    start = time.perf_counter()
    spec = HESpec.for_task(
        kind=k.name,
        n_features=X.shape[1],
        n_outputs=targets.shape[1],
        preset=preset,
        expected_samples=X.shape[0],
        poly=config.poly,
        hidden=config.hidden if k.network else None,
    )
    keypair = KeyPair.generate(spec)
    # What owners and processors see: the published bytes, parsed and checked.
    public = PublicContext.from_bytes(keypair.public.data, party="requester")
    blocks = [
        encrypt_block(public, Xb, tb, block_id=f"owner-0/block-{i}")
        for i, (Xb, tb) in enumerate(split_into_blocks(X, targets, spec))
    ]
    setup = time.perf_counter() - start
    optimizer = RequesterOptimizer(spec, config, X_val)
    history = []
    with ProcessorPool(public.data, workers=workers) as pool:
        for block in blocks:
            pool.add_block(block, party="owner-0")
        block_ids = pool.block_ids()
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            weights = optimizer.lookahead
            model_bytes = encrypt_model(keypair, weights, epoch=epoch)
            proc_start = time.perf_counter()
            results = pool.run_epoch(model_bytes)
            proc_seconds = time.perf_counter() - proc_start
            sums = [
                decrypt_result(
                    keypair,
                    data,
                    party="processor-0",
                    epoch=epoch,
                    block_ids=block_ids,
                    bound=max_abs_sum(keypair, spec.block_size, weights),
                )
                for data in results.values()
            ]
            optimizer.update(sums)
            model = k.estimator(optimizer.weights, classes)
            history.append(
                EncryptedEpoch(
                    epoch=epoch,
                    metric=k.score(model, X_val, y_val),
                    max_abs_z=float(np.max(optimizer.guard.max_abs_z(optimizer.lookahead))),
                    seconds=time.perf_counter() - epoch_start,
                    processor_seconds=proc_seconds,
                    model_bytes=len(model_bytes),
                    result_bytes=sum(len(r) for r in results.values()),
                )
            )
    return EncryptedTrainResult(
        model=k.estimator(optimizer.weights, classes),
        history=tuple(history),
        spec=spec,
        context_bytes=len(keypair.public.data),
        block_bytes=sum(len(b) for b in blocks),
        n_blocks=len(blocks),
        setup_seconds=setup,
    )
