"""The plaintext twin's crypto: the protocol's crypto interface with no encryption at all.

Encrypted training decrypts to exactly the block totals ``ModelKind.gradient_sums`` computes
(CKKS noise, about 2^-20 of a total, aside), and the HE program is deterministic, so replicas
agree byte for byte exactly when their totals agree. This implementation therefore carries
plaintext features, models and totals in the same roles, messages, driver and checks that
users run, thousands of times faster than CKKS: ``benchmarks/integrity.py`` runs its
attack x defence matrix on it. It protects nothing and is refused by any party built with
the CKKS crypto (its published bytes are not a CKKS context).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct

import numpy as np

from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.models.kinds import ModelKind, get_kind
from fedmarket.protocol.crypto import BlockTotals, Crypto, Layout, Pool, PublicKeys, TaskKeys

MAGIC = b"FMPT"
KEYS, BLOCK, MODEL, RESULT = 1, 2, 3, 4
MAX_BYTES = 64 << 20
MAX_HEADER = 1 << 16
BLOCK_SIZE = 4096


def _pack(kind: int, header: dict[str, object], *arrays: np.ndarray) -> bytes:
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = b"".join(np.ascontiguousarray(a, dtype="<f8").tobytes() for a in arrays)
    return MAGIC + struct.pack(">BI", kind, len(head)) + head + body


def _unpack(data: bytes, kind: int, *, party: str, what: str) -> tuple[dict[str, object], bytes]:
    def bad(problem: str) -> UntrustedInputError:
        return UntrustedInputError(f"bad {what}: {problem}", party=party)

    if not isinstance(data, bytes | bytearray) or len(data) > MAX_BYTES:
        raise bad("not bytes, or too large")
    if len(data) < 9 or data[:4] != MAGIC:
        raise bad("not a plaintext-twin message")
    got, size = struct.unpack_from(">BI", data, 4)
    if got != kind:
        raise bad(f"message kind {got}, expected {kind}")
    if size > MAX_HEADER or 9 + size > len(data):
        raise bad("header length out of range")
    try:
        header = json.loads(bytes(data[9 : 9 + size]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("header is not an object")
    return header, bytes(data[9 + size :])


def _field(header: dict[str, object], key: str, typ: type, *, party: str, what: str) -> object:
    value = header.get(key)
    if type(value) is not typ:
        raise UntrustedInputError(
            f"bad {what}: field {key!r} missing or not {typ.__name__}", party=party
        )
    return value


def _arrays(
    body: bytes, shapes: list[tuple[int, ...]], *, party: str, what: str
) -> list[np.ndarray]:
    sizes = [int(np.prod(s)) * 8 for s in shapes]
    if len(body) != sum(sizes):
        raise UntrustedInputError(
            f"bad {what}: {len(body)} data bytes, expected {sum(sizes)}", party=party
        )
    out, at = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        values = np.frombuffer(body[at : at + size], dtype="<f8").reshape(shape).astype(np.float64)
        out.append(values)
        at += size
    return out


class PlainPool(Pool):
    """Blocks held in this process; the program is the kind's plaintext totals."""

    def __init__(self, keys: PlainPublic) -> None:
        self._keys = keys
        self._blocks: dict[str, bytes] = {}

    def add_block(self, data: bytes, *, party: str) -> None:
        block_id, _, _ = self._keys.parse_block(data, party=party)
        self._blocks[block_id] = data

    def run_epoch(self, model: bytes, *, party: str) -> dict[str, bytes]:
        return {
            block_id: self._keys.run_program(
                model, data, model_party=party, block_party="local state"
            )
            for block_id, data in self._blocks.items()
        }

    def close(self) -> None:
        self._blocks.clear()


class PlainPublic(PublicKeys):
    def __init__(self, data: bytes, layout: Layout) -> None:
        self.data = data
        self.digest = hashlib.sha256(data).digest()
        self.layout = layout

    @property
    def _shape(self) -> tuple[int, int]:
        return self.layout.totals_shape

    # ---- messages ------------------------------------------------------------------------
    def encrypt_block(self, X: np.ndarray, targets: np.ndarray, *, block_id: str) -> bytes:
        L = self.layout
        X = np.asarray(X, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.float64)
        if targets.ndim == 1:
            targets = targets[:, None]
        n = X.shape[0]
        if X.ndim != 2 or X.shape[1] != L.n_features or not 1 <= n <= L.block_size:
            raise ConfigError(f"a block holds 1..{L.block_size} samples of {L.n_features} features")
        if not np.all(np.isfinite(X)) or np.max(np.abs(X)) > 1.0:
            raise ConfigError("features must be finite and scaled into [-1, 1]")
        if targets.shape != (n, L.n_outputs) or not np.all(np.isfinite(targets)):
            raise ConfigError(f"expected ({n}, {L.n_outputs}) finite targets")
        header = {"block_id": block_id, "n_samples": n, "keys": self.digest.hex()}
        return _pack(BLOCK, header, X, targets)

    @property
    def max_block_bytes(self) -> int:
        L = self.layout
        return 8 * L.block_size * (L.n_features + L.n_outputs) + (1 << 16)

    def parse_block(self, data: bytes, *, party: str) -> tuple[str, np.ndarray, np.ndarray]:
        what = "block"
        header, body = _unpack(data, BLOCK, party=party, what=what)
        if header.get("keys") != self.digest.hex():
            raise UntrustedInputError("block was made under other keys", party=party)
        block_id = str(_field(header, "block_id", str, party=party, what=what))
        n = int(_field(header, "n_samples", int, party=party, what=what))  # type: ignore[call-overload]
        if not 1 <= n <= self.layout.block_size:
            raise UntrustedInputError("block: n_samples out of range", party=party)
        X, T = _arrays(
            body, [(n, self.layout.n_features), (n, self.layout.n_outputs)], party=party, what=what
        )
        if not np.all(np.isfinite(X)) or np.max(np.abs(X)) > 1.0 or not np.all(np.isfinite(T)):
            raise UntrustedInputError("block: values out of range", party=party)
        return block_id, X, T

    def parse_model(self, data: bytes, *, party: str) -> tuple[int, np.ndarray]:
        header, body = _unpack(data, MODEL, party=party, what="model")
        if header.get("keys") != self.digest.hex():
            raise UntrustedInputError("model was made under other keys", party=party)
        epoch = int(_field(header, "epoch", int, party=party, what="model"))  # type: ignore[call-overload]
        (W,) = _arrays(body, [self._shape], party=party, what="model")
        if not np.all(np.isfinite(W)):
            raise UntrustedInputError("model weights are not finite", party=party)
        return epoch, W

    def result(self, *, block_id: str, epoch: int, n_samples: int, totals: np.ndarray) -> bytes:
        header = {
            "block_id": block_id,
            "epoch": epoch,
            "n_samples": n_samples,
            "keys": self.digest.hex(),
        }
        return _pack(RESULT, header, np.asarray(totals, dtype=np.float64).reshape(self._shape))

    def parse_result(self, data: bytes, *, party: str) -> BlockTotals:
        what = "result"
        header, body = _unpack(data, RESULT, party=party, what=what)
        if header.get("keys") != self.digest.hex():
            raise UntrustedInputError("result was made under other keys", party=party)
        block_id = str(_field(header, "block_id", str, party=party, what=what))
        epoch = int(_field(header, "epoch", int, party=party, what=what))  # type: ignore[call-overload]
        n = int(_field(header, "n_samples", int, party=party, what=what))  # type: ignore[call-overload]
        (sums,) = _arrays(body, [self._shape], party=party, what=what)
        return BlockTotals(block_id, epoch, n, sums)

    # ---- the program ---------------------------------------------------------------------
    def pool(self, workers: int) -> Pool:
        return PlainPool(self)

    def run_program(
        self, model: bytes, block: bytes, *, model_party: str, block_party: str
    ) -> bytes:
        epoch, W = self.parse_model(model, party=model_party)
        block_id, X, T = self.parse_block(block, party=block_party)
        totals = self.layout.kind.gradient_sums(W, X, T)
        return self.result(block_id=block_id, epoch=epoch, n_samples=len(X), totals=totals)

    # ---- a cheater's tools ---------------------------------------------------------------
    def forge(self, *, block_id: str, epoch: int, n_samples: int, totals: np.ndarray) -> bytes:
        return self.result(block_id=block_id, epoch=epoch, n_samples=n_samples, totals=totals)

    def scale(self, result: bytes, factor: int, *, party: str) -> bytes:
        r = self.parse_result(result, party=party)
        return self.forge(
            block_id=r.block_id, epoch=r.epoch, n_samples=r.n_samples, totals=factor * r.sums
        )

    def add_noise(self, result: bytes, noise: np.ndarray, *, party: str) -> bytes:
        r = self.parse_result(result, party=party)
        return self.forge(
            block_id=r.block_id, epoch=r.epoch, n_samples=r.n_samples, totals=r.sums + noise
        )

    def restamp(self, result: bytes, *, epoch: int, party: str) -> bytes:
        r = self.parse_result(result, party=party)
        return self.forge(block_id=r.block_id, epoch=epoch, n_samples=r.n_samples, totals=r.sums)

    def corrupt(self, result: bytes) -> bytes:
        r = self.parse_result(result, party="self")
        nan = np.full(self._shape, np.nan)
        return self.forge(block_id=r.block_id, epoch=r.epoch, n_samples=r.n_samples, totals=nan)


class PlainKeys(TaskKeys):
    def __init__(self, public: PlainPublic) -> None:
        self.public: PlainPublic = public

    def encrypt_model(self, weights: np.ndarray, *, epoch: int) -> bytes:
        header = {"epoch": epoch, "keys": self.public.digest.hex()}
        return _pack(
            MODEL, header, np.asarray(weights, dtype=np.float64).reshape(self.public._shape)
        )

    def decrypt_result(
        self,
        data: bytes,
        *,
        party: str,
        epoch: int,
        block_id: str,
        bound: float | None = None,
    ) -> BlockTotals:
        r = self.public.parse_result(data, party=party)
        if r.epoch != epoch:
            raise UntrustedInputError(
                f"result is for epoch {r.epoch}, expected {epoch}", party=party
            )
        if r.block_id != block_id:
            raise UntrustedInputError(f"result for unassigned block {r.block_id!r}", party=party)
        if not 1 <= r.n_samples <= self.public.layout.block_size:
            raise UntrustedInputError("result: n_samples out of range", party=party)
        if not np.all(np.isfinite(r.sums)):
            raise UntrustedInputError("result totals are not finite", party=party)
        peak = float(np.max(np.abs(r.sums)))
        if bound is not None and peak > bound:
            raise UntrustedInputError(
                f"result totals up to {peak:.3g} exceed the {bound:.3g} an honest block "
                "can produce",
                party=party,
            )
        return r


class Plaintext(Crypto):
    """No encryption: the twin for simulations and benchmarks. Never for real data."""

    name = "plaintext"

    def keygen(
        self,
        *,
        kind: ModelKind,
        n_features: int,
        n_outputs: int,
        preset: str,
        expected_samples: int,
        hidden: int = 0,
    ) -> TaskKeys:
        if kind.network and not hidden:
            hidden = kind.weight_shape(n_features, n_outputs)[0]  # the kind's default width
        header = {
            "kind": kind.name,
            "n_features": n_features,
            "n_outputs": n_outputs,
            "block_size": BLOCK_SIZE,
            "hidden": hidden,
            "nonce": secrets.token_hex(16),  # fresh per task, like a fresh key pair
        }
        data = _pack(KEYS, header)
        layout = Layout(kind, n_features, n_outputs, BLOCK_SIZE, hidden)
        return PlainKeys(PlainPublic(data, layout))

    def public(self, data: bytes, *, party: str) -> PublicKeys:
        what = "plaintext keys"
        header, body = _unpack(data, KEYS, party=party, what=what)
        if body:
            raise UntrustedInputError(f"bad {what}: trailing bytes", party=party)
        kind = get_kind(str(_field(header, "kind", str, party=party, what=what)))
        ints = {
            key: int(_field(header, key, int, party=party, what=what))  # type: ignore[call-overload]
            for key in ("n_features", "n_outputs", "block_size", "hidden")
        }
        if not (1 <= ints["n_features"] <= 1 << 16 and 1 <= ints["n_outputs"] <= 1024):
            raise UntrustedInputError(f"bad {what}: sizes out of range", party=party)
        if ints["block_size"] != BLOCK_SIZE:
            raise UntrustedInputError(f"bad {what}: block size", party=party)
        if not 0 <= ints["hidden"] <= 1024 or bool(ints["hidden"]) != kind.network:
            raise UntrustedInputError(f"bad {what}: hidden width", party=party)
        layout = Layout(kind, ints["n_features"], ints["n_outputs"], BLOCK_SIZE, ints["hidden"])
        return PlainPublic(bytes(data), layout)
