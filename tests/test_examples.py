"""Every example spec runs end to end (one short epoch, real CKKS, the embedded chain), from a
copy of examples/ without its data or binary files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedmarket import load_model
from fedmarket.errors import ConfigError
from fedmarket.run import run_task
from fedmarket.spec import SpecFile, load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_example_runs_end_to_end(path: Path, tmp_path: Path) -> None:
    data = load_spec(path).model_dump()
    data["task"]["max_epochs"] = 1
    if data["task"]["model"] == "mlp":
        # a network block is ~280 MB whatever its fill: one owner, one block keeps this short
        # (the full example is what `make bench-deep` runs)
        data["task"]["num_points"] = 256
        data["run"]["owners"] = [dict(data["run"]["owners"][0], points=256)]
    spec = SpecFile.model_validate(data)
    # From a copy of examples/ with its text files only (the specs and scripts): a copy of the
    # repository that keeps source and documentation but no data or binary file (.csv, .onnx)
    # must run every example; a data set outside the repository is read where it is.
    base = path.parent
    if not str(data["run"]["dataset"]).startswith("csv:../"):
        base = tmp_path / "examples"
        base.mkdir()
        for text in [*EXAMPLES.glob("*.toml"), *EXAMPLES.glob("*.py")]:
            shutil.copy(text, base)
    try:
        result = run_task(spec, base=base, out=tmp_path / "out", workers=0)
    except ConfigError as exc:
        if "no such data file" in exc.message:  # the shared data set beside the repository
            pytest.skip(f"{path.name}: {exc.message}")
        raise
    report = result.report
    assert report.stop_reason == "max_epochs reached"
    assert len(report.epochs) == 1 and report.flags == []
    # the model trained past chance, and the saved one (raw features in) loads back
    chance = 1 / len(spec.labels.classes) if spec.kind.metric == "accuracy" else 0.0
    assert report.epochs[0].metric > chance + 0.1
    assert load_model(tmp_path / "out").n_features == len(spec.features.names)
    assert sum(t.net for t in report.tokens) == -report.dust
