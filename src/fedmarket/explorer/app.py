"""The explorer's web app: Starlette routes, Jinja2 pages, a server-sent event stream.

Pages are rendered on the server from :mod:`fedmarket.explorer.data` (the chain) and
:mod:`fedmarket.explorer.runs` (run folders, spec files); the browser only draws the metric
chart (uPlot, shipped in ``static/``) and, on the live page, swaps in a fresh copy of the
task's body whenever the stream says the chain moved. Nothing is fetched from the network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from fedmarket.errors import FedmarketError
from fedmarket.explorer.data import MarketInfo, MarketReader, TaskDetail
from fedmarket.explorer.runs import RunIndex, RunInfo, SpecInfo
from fedmarket.units import format_units

__all__ = ["create_app"]

HERE = Path(__file__).resolve().parent
# what the live page waits between looks at the chain, and between keep-alive comments
POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
# record fields that hold token base units: JSON carries them as strings (they pass 2**53)
MONEY = frozenset(
    [
        "data_budget",
        "processing_budget",
        "budget",
        "spent",
        "price",
        "stake",
        "earned",
        "pay",
        "forfeited",
        "to_reserve",
        "to_participants",
        "bond",
        "to_accuser",
        "to_accused",
        "fees",
        "audit_fee",
        "paid_in",
        "refunded",
        "credited",
        "owed",
        "data_pay",
        "processing_pay",
        "slashed",
        "liabilities",
        "dust",
        "claimable",
        "withdrawn",
        "entitled",
        "net",
        "data_cost",
        "processing_cost_per_epoch",
    ]
)


def jsonable(value: Any, key: str = "") -> Any:
    """A record as JSON: money as decimal strings of base units, bytes as 0x hex."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: jsonable(getattr(value, f.name), f.name) for f in dataclasses.fields(value)}
        for name in ("entitled", "net", "budget"):
            if hasattr(type(value), name) and isinstance(getattr(type(value), name), property):
                out[name] = str(getattr(value, name))
        return out
    if isinstance(value, dict):
        return {str(k): jsonable(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, key) for v in value]
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, bool) or value is None or isinstance(value, float | str):
        return value
    if isinstance(value, int):
        return str(value) if key in MONEY else value
    return str(value)


class Explorer:
    """What every page needs: the chain reader, the run index, formatting."""

    def __init__(self, reader: MarketReader, runs: RunIndex) -> None:
        self.reader = reader
        self.runs = runs

    def names(self, hashes: dict[int, str] | None = None) -> dict[str, str]:
        if hashes is None:
            hashes = {t.id: t.spec_hash for t in self.reader.tasks()}
        return self.runs.names(self.reader.address, hashes)

    def run_of(self, task: int, spec_hash: str) -> tuple[RunInfo | None, list[Path]]:
        return self.runs.run_for(self.reader.address, task, spec_hash)


def _fmt_time(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt_span(seconds: int) -> str:
    seconds = abs(int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _environment(info: MarketInfo, names: dict[str, str]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def tokens(amount: int, sign: bool = False) -> Markup:
        text = format_units(int(amount), info.decimals, sign=sign)
        return Markup(
            f'<span class="amt" data-units="{int(amount)}" '
            f'title="{int(amount)} base units">{escape(text)} {escape(info.symbol)}</span>'
        )

    def party(address: str, short: bool = True) -> Markup:
        name = names.get(address.lower())
        shown = f"{address[:6]}…{address[-4:]}" if short else address
        label = f"{escape(name)} <small>{escape(shown)}</small>" if name else escape(shown)
        return Markup(
            f'<a class="party" href="/party/{escape(address)}" data-address="{escape(address)}" '
            f'title="{escape(address)}">{label}</a>'
        )

    def when(ts: int) -> Markup:
        if not ts:
            return Markup("—")
        delta = int(ts) - info.now
        rel = "now" if delta == 0 else (f"in {_fmt_span(delta)}" if delta > 0 else
                                         f"{_fmt_span(delta)} ago")  # fmt: skip
        return Markup(
            f'<time data-ts="{int(ts)}" title="{_fmt_time(int(ts))}">{_fmt_time(int(ts))}</time> '
            f'<small class="rel">({rel})</small>'
        )

    env.filters.update(tokens=tokens, party=party, when=when, span=_fmt_span)
    env.globals.update(info=info, names=names)
    return env


def _render(
    request: Request, explorer: Explorer, name: str, context: dict[str, Any], status: int = 200
) -> Response:
    info = explorer.reader.info()
    names = context.pop("names", None)
    if names is None:
        names = explorer.names()
    templates = Jinja2Templates(env=_environment(info, names))
    return templates.TemplateResponse(request, name, context, status_code=status)


def _task_context(explorer: Explorer, detail: TaskDetail) -> dict[str, Any]:
    summary = detail.summary
    specs = explorer.runs.specs_by_hash()
    spec: SpecInfo | None = specs.get(summary.spec_hash.lower())
    run, others = explorer.run_of(summary.id, summary.spec_hash)
    metrics: dict[int, float] = {}
    baseline: dict[int, float] = {}
    metric_name = ""
    flags: dict[int, list[dict[str, Any]]] = {}
    alarms: dict[int, list[dict[str, Any]]] = {}
    names: dict[str, str] = {}
    if run is not None and run.report is not None:
        report = run.report
        metric_name = report.metric_name
        names = {p.address.lower(): p.name for p in report.parties}
        by_name = {p.name: p.address for p in report.parties}
        for e in report.epochs:
            metrics[e.epoch] = e.metric
            if e.baseline is not None:
                baseline[e.epoch] = e.baseline
        for kind, target in (("flags", flags), ("alarms", alarms)):
            for f in getattr(report, kind):
                entry = dict(f)
                entry["address"] = by_name.get(str(f.get("party")), str(f.get("party")))
                target.setdefault(int(f.get("epoch", -1)), []).append(entry)
    elif run is not None and run.progress is not None:
        metric_name = run.progress.metric_name
        metrics = dict(run.progress.metrics)
    chart = {
        "metric": metric_name or "metric",
        "epochs": [e.epoch for e in detail.epochs if e.epoch in metrics],
        "values": [metrics[e.epoch] for e in detail.epochs if e.epoch in metrics],
        "baseline": [baseline.get(e.epoch) for e in detail.epochs if e.epoch in metrics],
    }
    processors = [b.bidder for b in detail.bids if b.side == "processing" and b.winner]
    winners = {b.bidder.lower() for b in detail.bids if b.winner}
    return {
        "task": detail,
        "s": summary,
        "spec": spec,
        "spec_status": "verified" if spec else ("mismatch" if others else "missing"),
        "mismatched": others,
        "run": run,
        "metrics": metrics,
        "baseline": baseline,
        "metric_name": metric_name,
        "flags": flags,
        "alarms": alarms,
        "chart": json.dumps(chart),
        "processors": processors,
        "winners": winners,
        "run_names": names,
    }


def create_app(reader: MarketReader, runs: RunIndex) -> Starlette:
    """The explorer over ``reader``'s market, with run folders and specs from ``runs``."""
    explorer = Explorer(reader, runs)

    def market(request: Request) -> Response:
        tasks = reader.tasks()
        specs = runs.specs_by_hash()
        hashes = {t.id: t.spec_hash for t in tasks}
        order = ["training", "assigning", "bidding", "finished", "cancelled"]
        groups = [(state, [t for t in tasks if t.state == state]) for state in order]
        open_bids = {
            t.id: [b for b in reader.task(t.id).bids if not b.withdrawn]  # type: ignore[union-attr]
            for t in tasks
            if t.state == "bidding"
        }
        return _render(
            request,
            explorer,
            "market.html",
            {
                "groups": groups,
                "count": len(tasks),
                "specs": {t.id: specs.get(t.spec_hash.lower()) for t in tasks},
                "open_bids": open_bids,
                "names": explorer.names(hashes),
            },
        )

    def _detail(request: Request) -> TaskDetail:
        raw = request.path_params["task"]
        try:
            task = int(raw)
        except ValueError:
            raise HTTPException(
                404, f"{raw!r} is not a task id (tasks are numbered from 0)"
            ) from None
        detail = reader.task(task)
        if detail is None:
            count = reader.num_tasks()
            raise HTTPException(
                404,
                f"no task {task} on market {reader.address} (it has {count} "
                f"task{'s' if count != 1 else ''}: ids 0 to {count - 1})"
                if count
                else f"no task {task} on market {reader.address}: it has no tasks yet",
            )
        return detail

    def task_page(request: Request) -> Response:
        detail = _detail(request)
        return _render(
            request, explorer, "task.html", {**_task_context(explorer, detail), "live": False}
        )

    def live_page(request: Request) -> Response:
        detail = _detail(request)
        return _render(
            request, explorer, "task.html", {**_task_context(explorer, detail), "live": True}
        )

    def task_body(request: Request) -> Response:
        detail = _detail(request)
        context = {**_task_context(explorer, detail), "live": True}
        return _render(request, explorer, "_task_body.html", context)

    async def task_events(request: Request) -> Response:
        detail = await run_in_threadpool(_detail, request)
        task = detail.summary.id

        async def stream() -> AsyncIterator[str]:
            last = ""
            quiet = 0.0
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                try:
                    found = await run_in_threadpool(reader.task, task)
                except FedmarketError as exc:
                    yield f"event: trouble\ndata: {json.dumps(exc.message)}\n\n"
                    await asyncio.sleep(POLL_SECONDS * 3)
                    continue
                assert found is not None
                if found.fingerprint != last:
                    last = found.fingerprint
                    yield f"data: {json.dumps({'fingerprint': last})}\n\n"
                    quiet = 0.0
                    if found.summary.state in ("finished", "cancelled"):
                        yield f"event: done\ndata: {json.dumps(found.summary.state)}\n\n"
                        return
                elif quiet >= KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await asyncio.sleep(POLL_SECONDS)
                quiet += POLL_SECONDS

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    def party_page(request: Request) -> Response:
        address = request.path_params["address"]
        view = reader.party(address)
        if view is None:
            from eth_utils import is_address

            raise HTTPException(
                404,
                f"{address!r} is not an address"
                if not is_address(address)
                else f"{address} never requested, bid or collected on market {reader.address}",
            )
        return _render(request, explorer, "party.html", {"p": view})

    def api_market(request: Request) -> Response:
        return JSONResponse({"market": jsonable(reader.info()), "tasks": jsonable(reader.tasks())})

    def api_task(request: Request) -> Response:
        return JSONResponse(jsonable(_detail(request)))

    def api_party(request: Request) -> Response:
        view = reader.party(request.path_params["address"])
        if view is None:
            raise HTTPException(404, "no such party on this market")
        return JSONResponse(jsonable(view))

    async def not_found(request: Request, exc: Exception) -> Response:
        detail = getattr(exc, "detail", "not found")
        status = getattr(exc, "status_code", 404)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": detail}, status_code=status)
        return await run_in_threadpool(
            _render, request, explorer, "error.html", {"message": detail, "status": status}, status
        )

    async def chain_failed(request: Request, exc: Exception) -> Response:
        message = exc.message if isinstance(exc, FedmarketError) else str(exc)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=502)
        return HTMLResponse(
            "<!doctype html><title>chain unavailable</title>"
            f"<h1>The chain did not answer</h1><p>{escape(message)}</p>"
            "<p>Check that the node is running, then reload.</p>",
            status_code=502,
        )

    routes = [
        Route("/", market),
        Route("/task/{task}", task_page),
        Route("/task/{task}/live", live_page),
        Route("/task/{task}/body", task_body),
        Route("/task/{task}/events", task_events),
        Route("/party/{address}", party_page),
        Route("/api/market", api_market),
        Route("/api/task/{task}", api_task),
        Route("/api/party/{address}", api_party),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: not_found, FedmarketError: chain_failed},
    )
