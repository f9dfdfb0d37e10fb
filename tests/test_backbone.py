"""The published backbone: loaded only under its sha256, embeddings as onnxruntime gives them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

from fedmarket.backbone import Backbone, embed_for_task, sha256_of
from fedmarket.errors import ConfigError

CNN = Path(__file__).resolve().parents[1] / "examples" / "backbone" / "digits_cnn.onnx"
SHA = sha256_of(CNN)


def images(n: int = 40) -> np.ndarray:
    return load_digits().images[:n] / 16.0


def test_embeddings_equal_a_direct_onnxruntime_run() -> None:
    raw = images()
    backbone = Backbone.load(CNN, sha256=SHA, input_shape=(1, 8, 8))
    assert backbone.dim == 31
    direct = ort.InferenceSession(str(CNN), providers=["CPUExecutionProvider"]).run(
        None, {"image": raw.reshape(-1, 1, 8, 8).astype(np.float32)}
    )[0]
    got = backbone.embed(raw.reshape(len(raw), -1))  # flat rows work too
    assert got.shape == (40, 31) and got.dtype == np.float64
    assert np.array_equal(got, direct.astype(np.float64))
    assert np.array_equal(embed_for_task(raw, path=CNN, sha256=SHA, input_shape=(1, 8, 8)), got)


def test_a_file_with_another_hash_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "cnn.onnx"
    shutil.copy(CNN, other)
    with other.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ConfigError, match="sha256"):
        Backbone.load(other, sha256=SHA, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="sha256"):
        Backbone.load(CNN, sha256="0" * 64, input_shape=(1, 8, 8))


def test_bad_shapes_and_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="input"):
        Backbone.load(CNN, sha256=SHA, input_shape=(1, 9, 9))
    backbone = Backbone.load(CNN, sha256=SHA, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="must be"):
        backbone.embed(np.zeros((3, 10)))
    with pytest.raises(ConfigError, match="finite"):
        backbone.embed(np.full((2, 64), np.nan))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="ONNX"):
        Backbone.load(junk, sha256=sha256_of(junk), input_shape=(1, 8, 8))
