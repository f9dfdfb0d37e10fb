"""The published backbone: loaded only under its sha256, embeddings as onnxruntime gives them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

from fedmarket.backbone import Backbone, embed_for_task, sha256_of, spec_backbone, task_features
from fedmarket.backbones import onnx_bytes
from fedmarket.errors import ConfigError
from fedmarket.spec import load_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn_head.toml"
SHA = "cda0e604011d9dce6b27565c3edcb6937c816205f093b6a4049bc1053bcd9027"  # the example's CNN


@pytest.fixture
def CNN(tmp_path: Path) -> Path:
    """The built-in digits CNN written out as a file (what a spec may name instead)."""
    path = tmp_path / "digits_cnn.onnx"
    path.write_bytes(onnx_bytes("digits-cnn"))
    return path


def images(n: int = 40) -> np.ndarray:
    return load_digits().images[:n] / 16.0


def test_embeddings_equal_a_direct_onnxruntime_run(CNN: Path) -> None:
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


def test_a_file_with_another_hash_is_refused(CNN: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    shutil.copy(CNN, other)
    with other.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ConfigError, match="sha256"):
        Backbone.load(other, sha256=SHA, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="sha256"):
        Backbone.load(CNN, sha256="0" * 64, input_shape=(1, 8, 8))


def test_bad_shapes_and_values_are_refused(CNN: Path, tmp_path: Path) -> None:
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


def test_the_builtin_backbone_is_the_example_spec_file_bytes(CNN: Path, tmp_path: Path) -> None:
    """``builtin:digits-cnn`` is the exact bytes the example names by sha256, and a spec naming
    it embeds as one naming the same bytes as a file beside it."""
    assert sha256_of(CNN) == SHA
    spec = load_spec(EXAMPLE).spec
    section = spec.features.backbone
    assert section is not None and section.file == "builtin:digits-cnn" and section.sha256 == SHA
    raw = images().reshape(40, -1) * 16  # raw pixels: the spec scales them by 1/16
    builtin = task_features(spec, raw, base=tmp_path / "nowhere")
    as_file = spec.model_copy(
        update={
            "features": spec.features.model_copy(
                update={"backbone": section.model_copy(update={"file": CNN.name})}
            )
        }
    )
    assert np.array_equal(task_features(as_file, raw, base=tmp_path), builtin)
    assert builtin.shape == (40, len(spec.features.names))


def test_unknown_missing_or_altered_builtins_are_clear_errors(tmp_path: Path) -> None:
    section = load_spec(EXAMPLE).spec.features.backbone
    assert section is not None
    with pytest.raises(ConfigError, match="unknown built-in backbone 'mnist-cnn'") as unknown:
        spec_backbone(section.model_copy(update={"file": "builtin:mnist-cnn"}), tmp_path)
    assert "builtin:digits-cnn" in (unknown.value.hint or "")
    with pytest.raises(ConfigError, match="cannot read backbone") as missing:
        spec_backbone(section.model_copy(update={"file": "cnn.onnx"}), tmp_path)
    assert "builtin:digits-cnn" in (missing.value.hint or "")
    # the spec's hash binds a built-in backbone as it binds a file
    with pytest.raises(ConfigError, match="sha256"):
        spec_backbone(section.model_copy(update={"sha256": "0" * 64}), tmp_path)


def test_a_run_refuses_a_backbone_it_cannot_load_before_the_chain(tmp_path: Path) -> None:
    """``fedmarket run`` checks the spec's backbone in setup: nothing is announced or paid."""
    from fedmarket.run import run_task
    from fedmarket.spec import SpecFile

    data = load_spec(EXAMPLE).model_dump()
    data["features"]["backbone"]["file"] = "builtin:mnist-cnn"
    phases: list[str] = []
    with pytest.raises(ConfigError, match="unknown built-in backbone"):
        run_task(
            SpecFile.model_validate(data),
            base=tmp_path,
            chain_url="memory",
            progress=lambda event, info: phases.append(str(info.get("phase"))),
        )
    assert phases == ["setup"]
