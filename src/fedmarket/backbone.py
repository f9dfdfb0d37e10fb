"""A published, frozen feature extractor that data owners run on their own raw data.

The task spec may name a backbone: an ONNX file by its sha256 and the shape of one raw input.
The file is either beside the spec (``file = "backbone/cnn.onnx"``, on an owner's side in its
copy of the task's files) or one that ships inside fedmarket (``file = "builtin:digits-cnn"``,
``fedmarket.backbones``); either way its bytes must have the spec's sha256.
Each owner loads the file (refusing any whose hash differs: the requester cannot swap in other
code), runs it with onnxruntime on its own samples, and then scales and encrypts the
embeddings as it would any features; processors train the head (logistic, multiclass or mlp)
on the encrypted embeddings. No code of the requester runs on an owner's machine: an ONNX file
is a graph of standard operators that onnxruntime interprets, and the session is limited to one
thread and to the default CPU provider.

Owner side::

    backbone = Backbone.load(path, sha256=spec_sha256, input_shape=(1, 8, 8))
    features = backbone.embed(raw)  # (n, backbone.dim), then scale and encrypt_block
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedmarket.backbones import BUILTIN, PREFIX, onnx_bytes
from fedmarket.errors import ConfigError

# A backbone small enough to travel with a task (the digits CNN is ~60 kB); larger files are
# refused before they are hashed or parsed.
MAX_BACKBONE_BYTES = 64 * 1024 * 1024
MAX_INPUT_VALUES = 1 << 20  # per sample
MAX_EMBEDDING_DIM = 4096
BATCH = 256  # samples per onnxruntime call: bounds the memory of one call


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file (what a spec names a backbone by)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Backbone:
    """A checked ONNX feature extractor: one float32 input (batch, *input_shape), one 2-D output."""

    sha256: str
    input_shape: tuple[int, ...]
    dim: int
    _session: Any
    _input: str
    _output: str

    @classmethod
    def load(cls, path: str | Path, *, sha256: str, input_shape: tuple[int, ...]) -> Backbone:
        """Load ``path`` if its sha256 is ``sha256``; check its input and output shapes."""
        p = Path(path)
        try:
            size = p.stat().st_size
        except OSError as exc:
            raise ConfigError(
                f"cannot read backbone {p}: {exc.strerror}",
                hint="features.backbone.file names an ONNX file relative to the spec's folder "
                "(an owner's copy of the task's files), or a built-in one: "
                + ", ".join(PREFIX + n for n in BUILTIN),
            ) from None
        if size > MAX_BACKBONE_BYTES:
            raise ConfigError(f"backbone {p} is {size} bytes, over {MAX_BACKBONE_BYTES}")
        return cls.from_bytes(p.read_bytes(), sha256=sha256, input_shape=input_shape, name=str(p))

    @classmethod
    def from_bytes(
        cls, data: bytes, *, sha256: str, input_shape: tuple[int, ...], name: str
    ) -> Backbone:
        """``data`` (ONNX bytes, called ``name`` in errors) if its sha256 is ``sha256``."""
        if len(data) > MAX_BACKBONE_BYTES:
            raise ConfigError(f"backbone {name} is {len(data)} bytes, over {MAX_BACKBONE_BYTES}")
        got = hashlib.sha256(data).hexdigest()
        if got != sha256.lower():
            raise ConfigError(
                f"backbone {name} has sha256 {got}, the task names {sha256}",
                hint="use exactly the file the task spec names; never another version",
            )
        shape = tuple(int(v) for v in input_shape)
        if not shape or any(v < 1 for v in shape) or math.prod(shape) > MAX_INPUT_VALUES:
            raise ConfigError(f"backbone input shape {input_shape} is not a valid sample shape")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigError(f"backbone {name} is not a valid ONNX model: {exc}") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ConfigError("a backbone has exactly one input and one output")
        if inputs[0].type != "tensor(float)":
            raise ConfigError(f"backbone input must be float32, not {inputs[0].type}")
        declared = inputs[0].shape
        if len(declared) != len(shape) + 1 or any(
            isinstance(d, int) and d != s for d, s in zip(declared[1:], shape, strict=True)
        ):
            raise ConfigError(f"backbone input is {declared}, the task says (batch, *{shape})")
        probe = session.run(None, {inputs[0].name: np.zeros((1, *shape), np.float32)})[0]
        if probe.ndim != 2 or not 1 <= probe.shape[1] <= MAX_EMBEDDING_DIM:
            raise ConfigError(f"backbone output must be (batch, dim), got {probe.shape}")
        return cls(got, shape, int(probe.shape[1]), session, inputs[0].name, outputs[0].name)

    def embed(self, raw: np.ndarray) -> np.ndarray:
        """(n, dim) float64 embeddings of ``raw`` ((n, *input_shape), or (n, prod(shape)))."""
        raw = np.asarray(raw)
        n = raw.shape[0] if raw.ndim else 0
        try:
            batch = raw.astype(np.float32).reshape((n, *self.input_shape))
        except ValueError:
            raise ConfigError(
                f"backbone input must be (n, *{self.input_shape}), got {raw.shape}"
            ) from None
        if not np.all(np.isfinite(batch)):
            raise ConfigError("backbone input must be finite numbers")
        out = [
            self._session.run([self._output], {self._input: batch[i : i + BATCH]})[0]
            for i in range(0, n, BATCH)
        ]
        embeddings = np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
        return embeddings.astype(np.float64)


def embed_for_task(
    raw: np.ndarray, *, path: str | Path, sha256: str, input_shape: tuple[int, ...]
) -> np.ndarray:
    """What an owner calls before scaling and encrypting: load (hash-checked) and embed."""
    return Backbone.load(path, sha256=sha256, input_shape=input_shape).embed(raw)


def _within(base: Path, name: str) -> Path:
    """``name`` under ``base``, never outside it: a spec names a file, not a path to roam."""
    root = base.resolve()
    path = (root / name).resolve()
    if root != path and root not in path.parents:
        raise ConfigError(
            f"backbone file {name!r} is outside {root}",
            hint="keep the backbone beside the spec, and name it relative to it",
        )
    return path


def spec_backbone(section: Any, base: Path | None) -> Backbone:
    """The backbone a spec's ``[features.backbone]`` names: a built-in one
    (``builtin:NAME``) or a file under ``base`` (the spec's folder, or an owner's copy of the
    task's files), loaded only if its bytes have the spec's sha256."""
    shape = tuple(section.input_shape)
    if section.file.startswith(PREFIX):
        data = onnx_bytes(section.file.removeprefix(PREFIX))
        return Backbone.from_bytes(
            data, sha256=section.sha256, input_shape=shape, name=section.file
        )
    path = _within(base or Path.cwd(), section.file)
    return Backbone.load(path, sha256=section.sha256, input_shape=shape)


def task_features(spec: Any, X: np.ndarray, *, base: Path | None) -> np.ndarray:
    """The features a task trains on: the raw data, or, when the spec names a backbone, its
    embeddings of the raw data (``spec_backbone``: checked against the spec's sha256)."""
    backbone = spec.features.backbone
    if backbone is None:
        return np.asarray(X, dtype=np.float64)
    model = spec_backbone(backbone, base)
    return model.embed(np.asarray(X, dtype=np.float64) * backbone.input_scale)


def raw_width(spec: Any) -> int:
    """Columns of the raw data a task takes (before any backbone)."""
    backbone = spec.features.backbone
    return len(spec.features.names) if backbone is None else math.prod(backbone.input_shape)


def feature_columns(spec: Any) -> tuple[str, ...] | None:
    """The data set's columns a task takes, by name (``fedmarket.data.select_features``):
    ``features.names``; None with a backbone (those name its embeddings: it takes the raw
    data's columns as they are)."""
    return tuple(spec.features.names) if spec.features.backbone is None else None
