"""What the explorer knows off chain: run folders (report.json, progress.json) and spec files.

The chain holds a task's hashes and money; the metric curve, the flags' evidence, party names
and the spec itself live with the requester. ``fedmarket run`` writes them into its ``--out``
folder (``progress.json`` while it trains, ``spec.toml`` and ``report.json``), and the
explorer matches them to on-chain tasks by market address, task id and spec hash, so a
stale folder from another chain is never shown as this task's.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmarket.errors import FedmarketError
from fedmarket.report.model import RunReport

__all__ = ["PROGRESS_FILE", "SPEC_FILE", "Progress", "ProgressWriter", "RunIndex", "SpecInfo"]

PROGRESS_FILE = "progress.json"
SPEC_FILE = "spec.toml"
_PROGRESS_VERSION = 1
_MAX_FILES = 5_000  # a --runs folder is a user's folder: never walk a whole disk
_MAX_SPEC_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Progress:
    """A run in flight as its requester saw it: the validation metric after each epoch."""

    market: str
    task: int
    spec_hash: str
    metric_name: str
    metrics: tuple[tuple[int, float], ...]  # (epoch, metric)


class ProgressWriter:
    """``fedmarket run``'s progress hook: keeps ``progress.json`` in the run folder current.

    Written atomically (a temporary file, then a rename) so a reader never sees half a file.
    """

    def __init__(
        self, out: Path, spec_hash: str, metric_name: str, spec_source: Path | None = None
    ) -> None:
        self.path = Path(out) / PROGRESS_FILE
        self.spec_source = spec_source
        self.spec_hash = spec_hash
        self.metric_name = metric_name
        self.market = ""
        self.task: int | None = None
        self.metrics: list[tuple[int, float]] = []

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "task":
            self.market, self.task, self.metrics = str(data["market"]), int(data["task"]), []
            self._copy_spec()
        elif event == "epoch" and self.task is not None:
            self.metrics.append((int(data["epoch"]), float(data["metric"])))
        else:
            return
        self._write()

    def _copy_spec(self) -> None:
        # the announced spec beside the run, so the explorer can show it (checked by hash)
        if self.spec_source is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.spec_source, self.path.parent / SPEC_FILE)
        except (OSError, shutil.SameFileError):
            pass

    def _write(self) -> None:
        body = {
            "version": _PROGRESS_VERSION,
            "market": self.market,
            "task": self.task,
            "spec_hash": self.spec_hash,
            "metric_name": self.metric_name,
            "epochs": [{"epoch": e, "metric": m} for e, m in self.metrics],
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(body) + "\n")
            os.replace(tmp, self.path)
        except OSError:
            pass  # the live view is a convenience; the run goes on without it


@dataclass(frozen=True)
class SpecInfo:
    path: Path
    text: str
    spec_hash: str  # 0x hex of keccak(canonical JSON), what create_task records
    name: str
    model: str
    features: tuple[str, ...]
    classes: tuple[float, ...]
    he_preset: str
    endpoint: str
    summary: dict[str, Any]  # the announced sections, for display


@dataclass(frozen=True)
class RunInfo:
    folder: Path
    report: RunReport | None
    progress: Progress | None

    @property
    def spec_hash(self) -> str:
        if self.report is not None:
            return self.report.spec_hash
        return self.progress.spec_hash if self.progress is not None else ""


def _load_progress(path: Path) -> Progress | None:
    try:
        data = json.loads(path.read_text())
        if data.get("version") != _PROGRESS_VERSION or data.get("task") is None:
            return None
        return Progress(
            market=str(data["market"]),
            task=int(data["task"]),
            spec_hash=str(data["spec_hash"]),
            metric_name=str(data["metric_name"]),
            metrics=tuple((int(e["epoch"]), float(e["metric"])) for e in data["epochs"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_report(path: Path) -> RunReport | None:
    try:
        return RunReport.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_spec(path: Path) -> SpecInfo | None:
    from fedmarket.spec import parse_spec

    try:
        if path.stat().st_size > _MAX_SPEC_BYTES:
            return None
        text = path.read_text(encoding="utf-8")
        spec = parse_spec(text, source=str(path)).spec
    except (OSError, UnicodeDecodeError, FedmarketError, ValueError):
        return None  # not a task spec (any TOML may sit in a folder)
    announced = spec.model_dump(mode="json")
    return SpecInfo(
        path=path,
        text=text,
        spec_hash="0x" + spec.spec_hash().hex(),
        name=spec.task.name,
        model=spec.task.model,
        features=tuple(spec.features.names),
        classes=tuple(spec.labels.classes),
        he_preset=spec.he.preset,
        endpoint=spec.offchain.endpoint,
        summary=announced,
    )


class RunIndex:
    """Run folders and spec files under the given paths, re-read when a file changes."""

    def __init__(self, runs: Sequence[Path] = (), specs: Sequence[Path] = ()) -> None:
        self.runs = [Path(p) for p in runs]
        self.specs = [Path(p) for p in specs]
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[float, Any]] = {}

    def _files(self, roots: Iterable[Path], names: Iterable[str]) -> list[Path]:
        wanted = set(names)
        out: list[Path] = []
        for root in roots:
            if root.is_file():
                out.append(root)
                continue
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name in wanted or ("*.toml" in wanted and name.endswith(".toml")):
                        out.append(Path(folder) / name)
                        if len(out) >= _MAX_FILES:
                            return out
        return out

    def _cached(self, path: Path, load: Any) -> Any:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        hit = self._cache.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        value = load(path)
        self._cache[path] = (mtime, value)
        return value

    def specs_by_hash(self) -> dict[str, SpecInfo]:
        with self._lock:
            out: dict[str, SpecInfo] = {}
            for path in self._files([*self.specs, *self.runs], ["*.toml"]):
                info = self._cached(path, _load_spec)
                if info is not None:
                    out.setdefault(info.spec_hash, info)
            return out

    def _runs(self, market: str) -> list[tuple[float, int, RunInfo]]:
        # (newest file's mtime, task id, run) of every run folder that names ``market``
        found: list[tuple[float, int, RunInfo]] = []
        folders = {p.parent for p in self._files(self.runs, ["report.json", PROGRESS_FILE])}
        for folder in sorted(folders):
            report = self._cached(folder / "report.json", _load_report)
            progress = self._cached(folder / PROGRESS_FILE, _load_progress)
            if report is not None:
                named: tuple[str, int] = (report.market, report.task_id)
            elif progress is not None:
                named = (progress.market, progress.task)
            else:
                continue
            if named[0].lower() != market.lower():
                continue
            files = (folder / "report.json", folder / PROGRESS_FILE)
            stamp = max((p.stat().st_mtime for p in files if p.exists()), default=0.0)
            found.append((stamp, named[1], RunInfo(folder, report, progress)))
        found.sort(key=lambda x: x[0], reverse=True)
        return found

    def run_for(self, market: str, task: int, spec_hash: str) -> tuple[RunInfo | None, list[Path]]:
        """The newest run folder of ``task`` on ``market`` whose spec hash is the chain's, and
        the folders that name the task under another spec (a run on another chain that reused
        the address, or a tampered file): shown as such, never as this task's."""
        with self._lock:
            match: RunInfo | None = None
            others: list[Path] = []
            for _, task_id, run in self._runs(market):
                if task_id != task:
                    continue
                if run.spec_hash.lower() == spec_hash.lower():
                    match = match or run
                else:
                    others.append(run.folder)
            return match, others

    def names(self, market: str, spec_hashes: dict[int, str]) -> dict[str, str]:
        """Party names (address -> name, as ``fedmarket run`` named them) from the reports
        of this market's tasks."""
        with self._lock:
            out: dict[str, str] = {}
            for _, task_id, run in self._runs(market):
                if run.report is None or spec_hashes.get(task_id, "") != run.spec_hash.lower():
                    continue
                for p in run.report.parties:
                    out.setdefault(p.address.lower(), p.name)
            return out
