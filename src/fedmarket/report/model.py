"""The report's data: plain frozen records that round-trip through JSON exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_VERSION = 2


@dataclass(frozen=True)
class PartyRecord:
    """One party: its name, role and chain account, and bytes it sent and received."""

    name: str
    role: str  # requester | owner | processor
    address: str
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(frozen=True)
class TokenFlow:
    """One party's tokens over the run, in base units (integers)."""

    party: str
    start: int
    end: int
    paid_in: int  # escrow and stakes sent to the market
    received: int  # withdrawn from the market
    transfers: list[tuple[str, int]] = field(default_factory=list)  # (what, amount), in order

    @property
    def net(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class GasRecord:
    """One transaction."""

    party: str
    function: str
    gas: int


@dataclass(frozen=True)
class EpochRecord:
    """One closed epoch."""

    epoch: int
    metric: float  # validation metric of the encrypted-trained model
    baseline: float | None  # the same algorithm in plaintext, same epoch (None if not run)
    loss: float | None
    on_time: list[str]
    late: list[str]
    missing: list[str]
    flagged: list[str]  # slashed on chain (convicted) for this epoch's results
    seconds: float
    # roots on chain whose results the requester did not get or could not use (unpaid)
    not_received: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunReport:
    """Everything a run produced, except the model (saved beside it)."""

    task: str
    task_id: int
    spec_hash: str
    chain: str
    market: str
    metric_name: str
    parties: list[PartyRecord]
    epochs: list[EpochRecord]
    tokens: list[TokenFlow]
    gas: list[GasRecord]
    phases: dict[str, float]  # wall seconds per phase, in order
    stop_reason: str
    dust: int = 0  # what the task put in the market's reserve (penalties, marks, slashes)
    notes: list[str] = field(default_factory=list)
    # Every flag (what the requester acted on: a dispute for proven evidence, a refusal to
    # pay for repeated statistical alarms) with its evidence, and the evidence that did not
    # (yet) lead to one: dicts as fedmarket.integrity's to_json gives them.
    flags: list[dict[str, Any]] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    # the final model's metric on rows no party saw (simulations with [run] test_fraction)
    test_metric: float | None = None
    # every dispute the requester opened, and how the contract decided it
    disputes: list[dict[str, Any]] = field(default_factory=list)
    # the same algorithm in plaintext on the same points and epochs, on those rows
    baseline_test_metric: float | None = None
    # scikit-learn's estimator of the kind on the same points, scored on the validation set
    sklearn_metric: float | None = None
    token_decimals: int = 18  # amounts are integers in base units; 10**decimals is one token
    # a private task: (epsilon, delta, epochs, clip, floor, noise) and epsilon spent per owner
    privacy: dict[str, Any] | None = None
    version: int = REPORT_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for flow, record in zip(data["tokens"], self.tokens, strict=True):
            flow["net"] = record.net
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunReport:
        if data.get("version") != REPORT_VERSION:
            raise ValueError(f"report version {data.get('version')!r}, expected {REPORT_VERSION}")
        tokens = [{k: v for k, v in t.items() if k != "net"} for t in data["tokens"]]
        return cls(
            **{
                **data,
                "parties": [PartyRecord(**p) for p in data["parties"]],
                "epochs": [EpochRecord(**e) for e in data["epochs"]],
                "tokens": [
                    TokenFlow(**{**t, "transfers": [tuple(x) for x in t.get("transfers", [])]})
                    for t in tokens
                ],
                "gas": [GasRecord(**g) for g in data["gas"]],
            }
        )

    def gas_by_function(self) -> dict[str, tuple[int, int]]:
        """(calls, total gas) per contract function."""
        out: dict[str, tuple[int, int]] = {}
        for g in self.gas:
            calls, total = out.get(g.function, (0, 0))
            out[g.function] = (calls + 1, total + g.gas)
        return out
