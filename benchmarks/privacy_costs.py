"""What privacy adds to an epoch under CKKS: the seeded compact model and the owners' noise.

Per task shape (breast cancer, Framingham, digits: features, outputs and samples as the
examples; random data, since no cost here depends on the values), the median over ``--repeats``
runs of:

* requester: the seeded public-key encryption of the compact model (``encrypt_model``), and for
  reference what HE spec v4 did instead: one symmetric encryption per model ciphertext (Bz/c
  per class group, c the z-copies v4 chose);
* owner: re-encrypting a revealed model and checking it (``check_revealed_model``), and one
  noise message per block (``encrypt_noise``);
* processor: parsing and projecting the model (``EncryptedModel.from_bytes``: averaging the
  copies, expanding the diagonals) against parsing v4's model ciphertexts, once per epoch;
  adding one block's noise (parse and one addition per class group); and the v5 program on one
  block for scale (v4's program with z-copies did c times fewer z products; not replayed here).

Bytes: the model message (v5 compact vs v4 diagonals) and a noise message.
Writes ``benchmarks/results/privacy_costs.json`` and prints a table.
Run: ``.venv/bin/python benchmarks/privacy_costs.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tenseal.sealapi as sa
from rich.console import Console
from rich.table import Table

from fedmarket.he._seal import TOP, dump
from fedmarket.he.crypto import CKKS, CKKSKeys
from fedmarket.he.model import EncryptedModel
from fedmarket.he.noise import add_noise_to, parse_noise
from fedmarket.he.packing import EncryptedBlock
from fedmarket.he.program import process_block
from fedmarket.models.kinds import get_kind
from fedmarket.privacy.owner import check_revealed_model, clip_rows
from fedmarket.protocol.crypto import Privacy

RESULTS = Path(__file__).resolve().parent / "results" / "privacy_costs.json"
# (name, kind, features, outputs, samples in one block): the examples' shapes
SHAPES = [
    ("breast_cancer", "logistic", 30, 1, 340),
    ("framingham", "logistic", 15, 1, 2193),
    ("digits", "multiclass", 64, 10, 1078),
]
SEED = bytes(range(32))


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, kind: str, d: int, k: int, n: int, repeats: int) -> dict[str, Any]:
    privacy = Privacy(min_block_points=64, clip_norm=1.0, noise=True)
    keys = CKKS().keygen(
        kind=get_kind(kind),
        n_features=d,
        n_outputs=k,
        preset="n8192",
        expected_samples=n,
        privacy=privacy,
    )
    assert isinstance(keys, CKKSKeys)
    public = CKKS().public(keys.public.data, party="requester")
    context = keys.keypair.public
    spec = context.spec
    runtime = context.runtime
    rng = np.random.default_rng(0)
    W = get_kind(kind).certify(rng.normal(0, 1, (k, d + 1)), d, 1.0)
    X = clip_rows(rng.uniform(-1, 1, (n, d)), 1.0)
    T = np.eye(k)[rng.integers(0, k, n)] if k > 1 else rng.integers(0, 2, (n, 1)).astype(float)
    block_bytes = public.encrypt_block(X, T, block_id="b")

    model = keys.encrypt_model(W, epoch=1, seed=SEED)
    digest = hashlib.sha256(model).digest()
    noise = public.encrypt_noise(block_id="b", epoch=1, std=10.0, rng=random.Random(0))

    # HE spec v4 for reference: Bz/c symmetric encryptions per class group, with the z-copies
    # c v4's for_task chose for this many samples (its rule, replayed here)
    copies = 1
    needed = max(n, spec.lanes)
    if spec.lanes >= 4:
        while copies * 2 <= spec.model_baby and spec.length // (copies * 2) >= needed:
            copies *= 2
    symmetric = sa.Encryptor(runtime.context, keys.keypair.secret_key)
    weights = spec.poly.kappa * W if spec.is_logistic else W

    def v4_model() -> list[bytes]:
        out = []
        for group in range(spec.n_groups):
            rows = weights[group * spec.class_lanes : (group + 1) * spec.class_lanes]
            for b in range(spec.model_baby // copies):
                plain = runtime.encode(
                    spec.to_physical(spec.model_layout(rows, b)), TOP, runtime.scales.model
                )
                out.append(dump(symmetric.encrypt_symmetric(plain)))
        return out

    v4_payloads = v4_model()

    def v4_parse() -> None:
        for payload in v4_payloads:
            runtime.load_ciphertext(
                payload, level=TOP, scale=runtime.scales.model, what="m", party="r"
            )

    parsed_model = EncryptedModel.from_bytes(context, model)
    block = EncryptedBlock.from_bytes(context, block_bytes)
    results = process_block(context, parsed_model, block)

    def add_noise() -> None:
        extra = parse_noise(context, noise, party="r", block_id="b", epoch=1)
        add_noise_to(context, results, extra)

    timings = {
        "requester_model_v5_s": median_seconds(
            lambda: keys.encrypt_model(W, epoch=1, seed=SEED), repeats
        ),
        "requester_model_v4_s": median_seconds(v4_model, repeats),
        "owner_check_s": median_seconds(
            lambda: check_revealed_model(public, digest, W, epoch=1, seed=SEED), repeats
        ),
        "owner_noise_per_block_s": median_seconds(
            lambda: public.encrypt_noise(block_id="b", epoch=1, std=10.0, rng=random.Random(0)),
            repeats,
        ),
        "processor_model_v5_s": median_seconds(
            lambda: EncryptedModel.from_bytes(context, model), repeats
        ),
        "processor_model_v4_s": median_seconds(v4_parse, repeats),
        "processor_noise_per_block_s": median_seconds(add_noise, repeats),
        "processor_program_per_block_s": median_seconds(
            lambda: process_block(context, parsed_model, block), repeats
        ),
    }
    return {
        "task": name,
        "kind": kind,
        "features": d,
        "outputs": k,
        "samples": n,
        "lanes": spec.lanes,
        "class_lanes": spec.class_lanes,
        "groups": spec.n_groups,
        "model_copies": spec.model_copies,
        "model_baby": spec.model_baby,
        "v4_z_copies": copies,
        "model_bytes_v5": len(model),
        "model_bytes_v4": sum(len(p) for p in v4_payloads),
        "noise_bytes_per_block": len(noise),
        **timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = [measure(*shape, repeats=args.repeats) for shape in SHAPES]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "repeats": args.repeats,
                "statistic": "median",
                "load_average": os.getloadavg(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    table = Table(title=f"privacy costs per epoch (median of {args.repeats})")
    for column in ("task", "who", "v5 (privacy)", "v4 (z-copies c)"):
        table.add_column(column)
    for r in rows:
        ms = {key: 1000 * value for key, value in r.items() if key.endswith("_s")}
        table.add_row(
            r["task"],
            "requester model",
            f"{ms['requester_model_v5_s']:.1f} ms, {r['model_bytes_v5'] / 1e3:.0f} kB",
            f"{ms['requester_model_v4_s']:.1f} ms, {r['model_bytes_v4'] / 1e3:.0f} kB "
            f"(c = {r['v4_z_copies']})",
        )
        table.add_row("", "owner check", f"{ms['owner_check_s']:.1f} ms", "-")
        table.add_row(
            "",
            "owner noise / block",
            f"{ms['owner_noise_per_block_s']:.1f} ms, {r['noise_bytes_per_block'] / 1e3:.0f} kB",
            "-",
        )
        table.add_row(
            "",
            "processor model",
            f"{ms['processor_model_v5_s']:.1f} ms",
            f"{ms['processor_model_v4_s']:.1f} ms",
        )
        table.add_row(
            "",
            "processor noise / block",
            f"{ms['processor_noise_per_block_s']:.2f} ms",
            f"program {ms['processor_program_per_block_s']:.0f} ms / block",
        )
    Console().print(table)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
