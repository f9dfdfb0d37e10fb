"""The run report: what happened in a task, as JSON, Markdown and PNG plots."""

from fedmarket.report.model import (
    EpochRecord,
    GasRecord,
    PartyRecord,
    RunReport,
    TokenFlow,
)
from fedmarket.report.render import load_report, render_markdown, write_report

__all__ = [
    "EpochRecord",
    "GasRecord",
    "PartyRecord",
    "RunReport",
    "TokenFlow",
    "load_report",
    "render_markdown",
    "write_report",
]
