"""The run report from what the requester saw, the transport counted and the chain recorded.

Every runtime builds its report here: the in-process runner and the Flower requester alike.
Token flows come from the chain (the market's events and token balances), not from the
parties' own bookkeeping, so they are the same whoever runs the requester and wherever the
other parties live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmarket.chain.client import GasEntry
from fedmarket.chain.events import BidPlaced, Collected, DisputeOpened, TaskCreated, Withdrawn
from fedmarket.chain.ledger import Market, Token
from fedmarket.models.scaled import ScaledModel, scaling_path
from fedmarket.protocol.driver import TaskRun
from fedmarket.protocol.transport import Traffic
from fedmarket.report.model import EpochRecord, GasRecord, PartyRecord, RunReport, TokenFlow
from fedmarket.roles.requester import Requester


@dataclass(frozen=True)
class Member:
    """One chain account in the task: display name, roles, address."""

    name: str
    roles: tuple[str, ...]
    address: str


def transfers(market: Market, task: int, start_block: int) -> dict[str, list[tuple[str, int]]]:
    """Every token movement between an account and the market for this task, by address:
    ("escrow", -budget), ("stake", -stake), ("bond", -bond), ("collect", +amount),
    ("withdraw", +amount), oldest first by kind."""
    out: dict[str, list[tuple[str, int]]] = {}
    for created in market.logs(TaskCreated, task=task, from_block=start_block):
        budget = created.data_budget + created.processing_budget
        out.setdefault(created.requester.lower(), []).append(("escrow", -budget))
    for bid in market.logs(BidPlaced, task=task, from_block=start_block):
        if bid.stake:
            out.setdefault(bid.bidder.lower(), []).append(("stake", -bid.stake))
    for d in market.logs(DisputeOpened, task=task, from_block=start_block):
        out.setdefault(d.accuser.lower(), []).append(("bond", -d.bond))
    for c in market.logs(Collected, task=task, from_block=start_block):
        out.setdefault(c.account.lower(), []).append(("collect", c.amount))
    for w in market.logs(Withdrawn, from_block=start_block):
        out.setdefault(w.account.lower(), []).append(("withdraw", w.amount))
    return out


def balances(token: Token, addresses: Sequence[str]) -> dict[str, int]:
    return {a.lower(): token.balance_of(a) for a in addresses}


def build_report(
    *,
    requester: Requester,
    run: TaskRun,
    members: Sequence[Member],
    traffic: Traffic,
    start: Mapping[str, int],
    end: Mapping[str, int],
    chain: str,
    gas: Sequence[GasEntry] = (),
    baseline: Sequence[float] = (),
    test_metric: float | None = None,
    baseline_test_metric: float | None = None,
    sklearn_metric: float | None = None,
) -> RunReport:
    """The report of one task as ``requester`` played it (members include the requester)."""
    spec = requester.spec
    assert spec is not None
    task_id = requester.task_id or 0
    market = requester.market
    name_of = {m.address.lower(): m.name for m in members}
    moved = transfers(market, task_id, run.start_block) if requester.task_id is not None else {}

    def named(addresses: Sequence[str]) -> list[str]:
        return [name_of.get(a.lower(), a) for a in addresses]

    tokens = []
    for m in members:
        a = m.address.lower()
        flows = moved.get(a, [])
        tokens.append(
            TokenFlow(
                m.name,
                start[a],
                end[a],
                -sum(x for _, x in flows if x < 0),
                sum(x for _, x in flows if x > 0),
                flows,
            )
        )
    outcomes = requester.outcomes
    return RunReport(
        task=spec.task.name,
        task_id=task_id,
        spec_hash="0x" + spec.spec_hash().hex(),
        chain=chain,
        market=market.address,
        metric_name=spec.kind.metric,
        parties=[
            PartyRecord(
                m.name,
                "+".join(m.roles),
                m.address,
                traffic.sent[m.name],
                traffic.received[m.name],
            )
            for m in members
        ],
        epochs=[
            EpochRecord(
                epoch=o.epoch,
                metric=o.metric,
                baseline=baseline[o.epoch] if o.epoch < len(baseline) else None,
                loss=None,
                on_time=named(o.on_time),
                late=named(o.late),
                missing=named(o.missing),
                flagged=named(o.flagged),
                seconds=o.seconds,
                not_received=named(o.not_received),
            )
            for o in outcomes
        ],
        tokens=tokens,
        gas=[
            GasRecord(name_of.get(e.sender.lower(), e.sender), e.function, e.gas_used) for e in gas
        ],
        phases=dict(run.phases),
        stop_reason=run.stop_reason,
        dust=market.reserved(task_id) if requester.task_id is not None else 0,
        notes=list(run.notes),
        flags=[
            {**f.to_json(), "party": name_of.get(f.party.lower(), f.party)}
            for o in outcomes
            for f in o.flags
        ],
        alarms=[
            {**e.to_json(), "party": name_of.get(e.party.lower(), e.party)}
            for o in outcomes
            for e in o.evidence
            if not any(f.party == e.party for f in o.flags)
        ],
        test_metric=test_metric,
        disputes=[
            {
                "epoch": d.epoch,
                "processor": name_of.get(d.processor.lower(), d.processor),
                "block": f"{name_of.get(d.block.owner.lower(), d.block.owner)}/{d.block.index}",
                "dispute": d.dispute,
                "outcome": d.outcome.name.lower() if d.outcome is not None else None,
                "panel": [name_of.get(a.lower(), a) for a in d.panel],
                "evidence": d.evidence.to_json(),
                "note": d.note,
            }
            for d in requester.disputes
        ],
        baseline_test_metric=baseline_test_metric,
        sklearn_metric=sklearn_metric,
        token_decimals=spec.budget.token_decimals,
        privacy=_privacy(requester, name_of),
    )


def _privacy(requester: Requester, name_of: Mapping[str, str]) -> dict[str, Any] | None:
    """A private task's promise and what each owner spent of it (None without DP)."""
    spec = requester.spec
    assert spec is not None
    if not spec.privacy.enabled:
        return None
    p = spec.privacy
    sigma = p.noise_multiplier(spec.task.max_epochs)
    layout = requester.keys.public.layout if requester.keys is not None else None
    return {
        "epsilon": p.epsilon,
        "delta": p.delta,
        "max_epochs": spec.task.max_epochs,
        "clip_norm": p.clip_norm,
        "floor": layout.min_block_points if layout is not None else p.min_block_points,
        "noise_multiplier": sigma,
        "noise_std": sigma * layout.sensitivity if layout is not None else None,
        "spent": {name_of.get(o, o): eps for o, eps in requester.privacy_spent().items()},
    }


def write_results(out: Path, report: RunReport, requester: Requester) -> Path:
    """The model first (what the requester paid for), then report.json, then what renders it.

    A task in which no epoch closed has no model: any model.npz left in ``out`` by an earlier
    run is removed rather than passed off as this one's.
    """
    from fedmarket.data import scaler
    from fedmarket.report.render import write_report

    spec = requester.spec
    assert spec is not None
    out.mkdir(parents=True, exist_ok=True)
    model_file = out / "model.npz"
    if requester.outcomes and requester.optimizer is not None:
        f, labels = spec.features, spec.labels
        ScaledModel(
            requester.model(),
            scaler(f.mean, f.std, f.spread),
            target_center=labels.target_center,
            target_scale=labels.target_scale,
            clip_norm=spec.privacy.clip_norm if spec.privacy.enabled else 0.0,
        ).save(model_file)
    else:
        model_file.unlink(missing_ok=True)
        scaling_path(model_file).unlink(missing_ok=True)
    return write_report(report, out)
