"""Every example spec runs end to end (one short epoch, real CKKS, the embedded chain)."""

from __future__ import annotations

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
    spec = SpecFile.model_validate(data)
    try:
        result = run_task(spec, base=path.parent, out=tmp_path, workers=0)
    except ConfigError as exc:
        if "no such data file" in exc.message:  # the shared data set beside the repository
            pytest.skip(f"{path.name}: {exc.message}")
        raise
    report = result.report
    assert report.stop_reason == "max_epochs reached"
    assert len(report.epochs) == 1 and report.flags == []
    # the model trained, and the saved one (raw features in) loads back
    assert report.epochs[0].metric > (0.5 if spec.kind.metric == "accuracy" else 0.0)
    assert load_model(tmp_path).n_features == len(spec.features.names)
    assert sum(t.net for t in report.tokens) == -report.dust
