"""Honest parties on label-skewed data are never flagged: the product runs its audits.

Real owners are never IID. A label-skewed owner's blocks are statistical outliers every epoch,
so monitors alone would accuse the honest processors that compute them; the requester then
has the block's owner recompute it (an audit), the bytes match, and the alarm is cleared.
This runs the real encrypted protocol (CKKS, the embedded chain), not the twin.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmarket.run import run_task
from fedmarket.spec import SpecFile, load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def skewed_spec(seed: int, *, epochs: int = 15) -> SpecFile:
    """breast cancer, 6 owners with Dirichlet(0.3) label mixes, 3 processors, one block per
    owner. Without audits the monitors flag an honest processor in 7 of 8 seeds of this task
    (measured on the twin: 1-2 flags each in seeds 1-7); every seed below is one of those."""
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = epochs
    data["task"]["num_points"] = 6 * 75
    data["stopping"]["patience"] = 0
    data["he"]["block_points"] = 0
    data["budget"]["processing"] *= 3
    run = data["run"]
    run["seed"] = seed
    run["split"] = "dirichlet:0.3"
    run["owners"] = [
        {"name": f"owner{i + 1}", "points": 75, "price": 10**15 + i * 10**13} for i in range(6)
    ]
    run["processors"] = [
        {"name": f"processor{i + 1}", "capacity": 150, "price": 10**14 + i * 10**12}
        for i in range(3)
    ]
    return SpecFile.model_validate(data)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_honest_processors_on_label_skewed_owners_are_never_flagged(
    seed: int, tmp_path: Path
) -> None:
    result = run_task(skewed_spec(seed), base=EXAMPLES, out=tmp_path, workers=0)
    report = result.report
    assert len(report.epochs) == 15
    assert report.flags == []
    assert all(e.flagged == [] for e in report.epochs)
    # the skew is real (the monitors did fire on some blocks) and audits cleared it
    audits = sum(len(o.audited) for o in result.outcomes)
    assert audits > 0 and all(all(o.audited.values()) for o in result.outcomes)
    assert report.epochs[-1].metric >= 0.85
