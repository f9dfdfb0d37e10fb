"""The run report round-trips through JSON and renders every section and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmarket.errors import ConfigError
from fedmarket.report import (
    EpochRecord,
    GasRecord,
    PartyRecord,
    RunReport,
    TokenFlow,
    load_report,
    write_report,
)


def sample() -> RunReport:
    return RunReport(
        task="bc",
        task_id=0,
        spec_hash="0x" + "11" * 32,
        chain="embedded",
        market="0x" + "22" * 20,
        metric_name="accuracy",
        parties=[
            PartyRecord("A", "requester", "0x" + "aa" * 20, 10, 20),
            PartyRecord("D", "processor", "0x" + "dd" * 20, 20, 10),
        ],
        epochs=[
            EpochRecord(0, 0.9, 0.91, 0.3, ["D"], [], [], [], 1.5),
            EpochRecord(1, 0.95, 0.95, 0.2, [], ["D"], [], [], 1.4),
        ],
        tokens=[TokenFlow("A", 1000, 700, 500, 200), TokenFlow("D", 1000, 1300, 100, 400)],
        gas=[GasRecord("A", "create_task", 200_000), GasRecord("D", "submit_result", 40_000)],
        phases={"announce": 0.1, "epochs": 3.0},
        stop_reason="max_epochs reached",
    )


def test_report_round_trips_and_renders(tmp_path: Path) -> None:
    report = sample()
    write_report(report, tmp_path)
    assert load_report(tmp_path) == report
    data = json.loads((tmp_path / "report.json").read_text())
    assert [t["net"] for t in data["tokens"]] == [-300, 300]
    md = (tmp_path / "report.md").read_text()
    assert "Final validation accuracy: 0.9500" in md
    assert "| D | processor | 1000 | 100 | 400 | +300 |" in md
    assert "Sum of net changes: +0" in md
    for plot in ("metric.png", "tokens.png", "phases.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loading_a_folder_without_a_report_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no report here"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text('{"version": 99}')
    with pytest.raises(ConfigError, match="not a fedmarket report"):
        load_report(tmp_path)
