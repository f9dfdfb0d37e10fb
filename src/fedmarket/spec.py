"""Task specs: the TOML a requester announces, validated, with its canonical on-chain hash.

A spec file has the announced task (``[task]``, ``[budget]``, ``[features]``, ``[labels]``,
``[he]``, ``[stopping]``, ``[offchain]``, ``[privacy]``) and, for local runs only, ``[run]``
(which parties exist and where their data comes from). Only the announced part is hashed: it
is what bidders agree to.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from eth_utils import keccak
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedmarket.errors import ConfigError

if TYPE_CHECKING:
    from fedmarket.models.kinds import ModelKind

MAX_SPEC_BYTES = 1 << 20

PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSection(_Strict):
    """What is being trained, how much data, and the clock."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    model: Annotated[str, Field(min_length=1)]  # a model kind: fedmarket.models.kinds
    num_points: PositiveInt
    epoch_seconds: PositiveInt
    max_epochs: Annotated[int, Field(gt=0, le=100_000, strict=True)]
    bidding_seconds: PositiveInt
    late_penalty_bps: Annotated[int, Field(ge=0, le=10_000, strict=True)] = 2_000
    # An accuser's bond, as a share of the accused processor's stake (the contract's
    # `dispute_bond_bps`, at least 10 %): paid to the accused when a panel clears it.
    dispute_bond_bps: Annotated[int, Field(ge=1_000, le=10_000, strict=True)] = 2_500
    # hidden units of a network model (mlp); 0: the kind's default (32)
    hidden: Annotated[int, Field(ge=0, le=1024, strict=True)] = 0

    @field_validator("model")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from fedmarket.models.kinds import KINDS

        if value not in KINDS:
            raise ValueError(f"{value!r} is not a model kind; use one of: {', '.join(KINDS)}")
        return value


class BudgetSection(_Strict):
    """Budgets in token base units (integers: money is never a float)."""

    data: NonNegativeInt
    processing: NonNegativeInt
    token_decimals: Annotated[int, Field(ge=0, le=36, strict=True)] = 18
    # What each auditor on the winning side of a dispute earns, out of the accuser's bond.
    audit_fee: NonNegativeInt = 0


class BackboneSection(_Strict):
    """A published frozen feature extractor (``fedmarket.backbone``): an ONNX file named by its
    sha256, run by every owner on its raw samples of ``input_shape``; its embeddings are the
    features ``names`` list (and ``mean``/``std`` scale)."""

    file: Annotated[str, Field(min_length=1)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    input_shape: Annotated[list[Annotated[int, Field(gt=0, strict=True)]], Field(min_length=1)]
    # raw values are multiplied by this before the backbone (e.g. 1/16 for 0..16 pixels)
    input_scale: Annotated[float, Field(gt=0)] = 1.0


class FeaturesSection(_Strict):
    """The feature schema: names in order, and the scaling every owner applies before encrypting.

    Every owner maps a feature to ``clip((x - mean) / (spread * std), -1, 1)`` before
    encrypting (the encrypted program needs |x| <= 1). The requester publishes the constants
    (from public knowledge or its own validation set) so that every owner encodes alike.
    """

    names: Annotated[list[str], Field(min_length=1, max_length=1024)]
    mean: list[float]
    std: list[float]
    spread: Annotated[float, Field(gt=0)] = 2.5
    backbone: BackboneSection | None = None

    @model_validator(mode="after")
    def _lengths(self) -> FeaturesSection:
        n = len(self.names)
        if len(set(self.names)) != n:
            raise ValueError("feature names must be unique")
        for field in ("mean", "std"):
            values = getattr(self, field)
            if len(values) != n:
                raise ValueError(f"{field} has {len(values)} values but there are {n} features")
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{field} must be finite numbers")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive for every feature")
        return self


class LabelsSection(_Strict):
    """The label column; ``classes`` for classification, empty for regression.

    Regression targets are encrypted as ``clip((y - target_center) / target_scale, -1, 1)``
    (the program needs |t| <= 1); the saved model undoes it, so it predicts in y's units.
    """

    column: Annotated[str, Field(min_length=1)] = "target"
    classes: list[int] = Field(default_factory=list)
    target_center: float = 0.0
    target_scale: Annotated[float, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _finite(self) -> LabelsSection:
        if not (math.isfinite(self.target_center) and math.isfinite(self.target_scale)):
            raise ValueError("target_center and target_scale must be finite numbers")
        return self


class HESection(_Strict):
    """CKKS parameters, by preset name (see ``fedmarket.he``), and the block size.

    ``block_points`` caps the samples per encrypted block (0: as many as a ciphertext
    holds). Smaller blocks cost more compute but give finer assignment and cross-checks.
    """

    preset: Annotated[str, Field(min_length=1)] = "n8192"
    block_points: Annotated[int, Field(ge=0, strict=True)] = 0


Monitor = Literal["distance", "cosine", "norm", "stability", "validation"]


class IntegritySection(_Strict):
    """How the requester checks processors; announced so bidders can price it in.

    ``replication`` is the fraction of blocks silently given to a second processor
    (their results must be byte-identical); the rest configures the statistical monitors,
    the robust aggregator and the flag policy (``fedmarket.integrity``).
    """

    replication: Annotated[float, Field(ge=0, le=1)] = 0.1
    # Robust aggregation over block gradients (fedmarket.integrity.aggregators): mean (the
    # paper's algorithm exactly), median, trimmed-mean[:BETA], krum[:F], fltrust (default:
    # best in benchmarks/integrity.py against poisoned data, IID and non-IID).
    aggregator: Annotated[str, Field(min_length=1)] = "fltrust"
    # Statistical evidence: a party's median robust z-score above this is an alarm; an alarm
    # becomes a flag (a slash) only in `repeat` of the last `window` epochs.
    z_threshold: Annotated[float, Field(gt=0)] = 4.0
    repeat: PositiveInt = 2
    window: PositiveInt = 3
    # Blocks recomputed by their owners per epoch beyond one per alarmed processor.
    audits: NonNegativeInt = 2
    monitors: list[Monitor] = Field(default_factory=lambda: list(get_args(Monitor)))

    @model_validator(mode="after")
    def _known(self) -> IntegritySection:
        from fedmarket.integrity.aggregators import get_aggregator

        try:
            get_aggregator(self.aggregator)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        if self.repeat > self.window:
            raise ValueError(f"repeat ({self.repeat}) cannot exceed window ({self.window})")
        return self


MIN_BLOCK_POINTS = 64  # the protocol's floor (the contract's MIN_FILL)


class StoppingSection(_Strict):
    """When the requester backs off: metric plateau, target reached, or budget floor."""

    patience: Annotated[int, Field(ge=0, strict=True)] = 3
    min_delta: Annotated[float, Field(ge=0)] = 0.001
    target: float | None = None
    metric: Literal["accuracy", "loss", "r2"] = "accuracy"


class OffchainSection(_Strict):
    """Where parties reach the requester off chain."""

    endpoint: Annotated[str, Field(min_length=1)] = "inproc://"


class PrivacySection(_Strict):
    """Record-level differential privacy against the requester (docs/privacy.md).

    When ``enabled``, every owner clips each sample's scaled features to L2 norm ``clip_norm``,
    encrypts blocks of at least ``floor`` samples, checks each epoch's revealed model and adds
    Gaussian noise to its blocks' totals so that the requester's whole view of a record over
    ``task.max_epochs`` epochs is (``epsilon``, ``delta``)-DP (the noise multiplier follows from
    the accountant, ``fedmarket.privacy.accounting``). ``min_block_points`` may raise the
    protocol floor (64), never lower it; the floor is also at least n_features + 2. The floor
    holds whether or not DP is enabled: it is the contract's ``min_fill`` (data bids and fills
    below it revert) and owners never encrypt a block below it.
    """

    enabled: Annotated[bool, Field(strict=True)] = False
    epsilon: Annotated[float, Field(gt=0, le=16, allow_inf_nan=False)] = 8.0
    delta: Annotated[float, Field(gt=0, le=1e-3, allow_inf_nan=False)] = 1e-5
    clip_norm: Annotated[float, Field(gt=0, le=1024, allow_inf_nan=False)] = 1.0
    min_block_points: Annotated[int, Field(ge=MIN_BLOCK_POINTS, le=1 << 20, strict=True)] = (
        MIN_BLOCK_POINTS
    )

    def floor(self, n_features: int) -> int:
        """The fewest samples per block (and per decrypted total) for a task of
        ``n_features``: ``max(min_block_points, n_features + 2)``."""
        return max(self.min_block_points, n_features + 2)

    def noise_multiplier(self, epochs: int) -> float:
        """sigma (noise std over the sensitivity) for ``epochs`` releases at (epsilon, delta)."""
        from fedmarket.privacy.accounting import noise_multiplier

        return noise_multiplier(self.epsilon, self.delta, epochs)


class TaskSpec(_Strict):
    """The announced task: what bidders agree to; ``keccak(canonical JSON)`` goes on chain."""

    task: TaskSection
    budget: BudgetSection
    features: FeaturesSection
    labels: LabelsSection = Field(default_factory=LabelsSection)
    he: HESection = Field(default_factory=HESection)
    integrity: IntegritySection = Field(default_factory=IntegritySection)
    privacy: PrivacySection = Field(default_factory=PrivacySection)
    stopping: StoppingSection = Field(default_factory=StoppingSection)
    offchain: OffchainSection = Field(default_factory=OffchainSection)

    @model_validator(mode="after")
    def _model_vs_labels(self) -> TaskSpec:
        kind = self.kind
        classes = self.labels.classes
        if len(set(classes)) != len(classes):
            raise ValueError("labels.classes must be unique")
        problem = kind.classes_problem(classes)
        if problem:
            raise ValueError(problem)
        if self.task.hidden and not kind.network:
            raise ValueError(f"task.hidden is for network models (mlp), not {kind.name}")
        if kind.sigmoid and (self.labels.target_center, self.labels.target_scale) != (0.0, 1.0):
            raise ValueError("labels.target_center and target_scale are for regression only")
        floor = max(MIN_BLOCK_POINTS, len(self.features.names) + 2)
        if "min_block_points" not in self.privacy.model_fields_set:
            # not set: the floor itself (a spec with many features needs more than 64)
            object.__setattr__(
                self, "privacy", self.privacy.model_copy(update={"min_block_points": floor})
            )
        if self.privacy.min_block_points < floor:
            raise ValueError(
                f"privacy.min_block_points must be at least {floor} "
                f"(64, and the number of features + 2 = {len(self.features.names) + 2})"
            )
        if self.privacy.min_block_points > self.task.num_points:
            raise ValueError("privacy.min_block_points cannot exceed task.num_points")
        if self.privacy.enabled:
            floor = self.privacy.min_block_points
            if self.he.block_points and self.he.block_points < 2 * floor:
                # splitting a fill into near-equal blocks of at most block_points then never
                # leaves one below the floor
                raise ValueError(
                    f"he.block_points must be 0 or at least {2 * floor} (twice the privacy "
                    f"floor of {floor}), got {self.he.block_points}"
                )
        return self

    @property
    def kind(self) -> ModelKind:
        """The task's model kind (``fedmarket.models.kinds``)."""
        from fedmarket.models.kinds import get_kind

        return get_kind(self.task.model)

    def canonical_json(self) -> bytes:
        """Sorted keys, no whitespace, defaults filled in: equal specs give equal bytes."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False
        ).encode()

    def spec_hash(self) -> bytes:
        """The 32-byte ``keccak256`` of :meth:`canonical_json`, as ``create_task`` takes it."""
        return bytes(keccak(self.canonical_json()))


class OwnerConfig(_Strict):
    """A simulated data owner in a local run."""

    name: Annotated[str, Field(min_length=1, max_length=32)]
    points: PositiveInt
    price: NonNegativeInt
    strategy: str = "fixed"  # see fedmarket.roles.bidding
    attack: str | None = None  # see fedmarket.attacks (simulated misbehaviour)
    # sells only into tasks whose [privacy] is enabled with epsilon at most this (None: any)
    max_epsilon: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _attack(self) -> OwnerConfig:
        from fedmarket.attacks import parse_owner_attack

        _check_attack(parse_owner_attack, self.attack)
        return self


class ProcessorConfig(_Strict):
    """A simulated processor in a local run."""

    name: Annotated[str, Field(min_length=1, max_length=32)]
    capacity: PositiveInt
    price: PositiveInt
    strategy: str = "fixed"  # see fedmarket.roles.bidding
    attack: str | None = None  # see fedmarket.attacks (simulated misbehaviour)

    @model_validator(mode="after")
    def _attack(self) -> ProcessorConfig:
        from fedmarket.attacks import parse_processor_attack

        _check_attack(parse_processor_attack, self.attack)
        return self


def _check_attack(parse: Any, text: str | None) -> None:
    try:
        parse(text)
    except ConfigError as exc:
        raise ValueError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None


class RunSection(_Strict):
    """Local runs only (not announced, not hashed): the data source and the parties.

    ``scenario`` is one of the paper's three: ``buy-all`` (the requester buys data and
    compute), ``own-data`` (it sells its own ``requester_points`` into its task at price 0
    and buys compute), ``own-compute`` (owners process their own encrypted data, so the
    requester never handles data under its own key; ``processing_price`` is what each
    owner asks per point per epoch).
    """

    dataset: Annotated[str, Field(min_length=1)]
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    # Rows held out from everyone before the validation split (simulations: the report then
    # gives the final model's accuracy on data no party saw).
    test_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.0
    seed: int = 0
    # How the training rows are dealt to owners: "iid", or "dirichlet:ALPHA" (label skew:
    # each owner's label mix drawn from Dirichlet(ALPHA); smaller is more skewed).
    split: Annotated[str, Field(pattern=r"^(iid|dirichlet:[0-9]*\.?[0-9]+)$")] = "iid"
    scenario: Literal["buy-all", "own-data", "own-compute"] = "buy-all"
    # A simulated requester fault: "vanish@N" stops answering at epoch N (no close, no
    # settle); the other parties then claim the timeout and collect.
    requester_attack: Annotated[str, Field(pattern=r"^vanish@[0-9]{1,6}$")] | None = None
    requester_points: NonNegativeInt = 0
    processing_price: NonNegativeInt = 0
    owners: list[OwnerConfig] = Field(default_factory=list)
    processors: list[ProcessorConfig] = Field(default_factory=list)

    @property
    def alpha(self) -> float | None:
        """Dirichlet(alpha) label skew of the owners' shares (None: IID)."""
        return None if self.split == "iid" else float(self.split.split(":", 1)[1])

    @model_validator(mode="after")
    def _parties(self) -> RunSection:
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError("split dirichlet:ALPHA needs ALPHA > 0")
        names = [o.name for o in self.owners] + [p.name for p in self.processors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"party names must be unique, repeated: {', '.join(dupes)}")
        if self.scenario == "own-compute":
            if self.processors:
                raise ValueError(
                    "in own-compute the owners process their own data: list no processors"
                )
            if not self.owners or self.processing_price <= 0:
                raise ValueError("own-compute needs owners and a positive processing_price")
        elif not self.processors:
            raise ValueError("a run needs at least one processor")
        if self.scenario == "own-data" and self.requester_points <= 0:
            raise ValueError("own-data needs requester_points > 0 (the requester's own data)")
        if self.scenario != "own-data" and self.requester_points:
            raise ValueError("requester_points is only for the own-data scenario")
        return self


class SpecFile(TaskSpec):
    """A whole spec file: the announced task plus an optional local-run section."""

    run: RunSection | None = None

    @property
    def spec(self) -> TaskSpec:
        """The announced part alone."""
        data = self.model_dump(exclude={"run"})
        return TaskSpec.model_validate(data)


def _line_of(source: str, loc: Sequence[str | int]) -> int | None:
    """Best-effort line number of the TOML key at ``loc`` (tomllib keeps no positions).

    ``loc`` is pydantic's path, e.g. ``("run", "owners", 1, "price")``: the integer picks
    the second ``[[run.owners]]`` table.
    """
    lines = source.splitlines()
    path = list(loc)
    header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    # Deepest match wins: the key's own line inside its table, else an enclosing table header.
    while path:
        if isinstance(path[-1], int):
            path.pop()
            continue
        table, key = path[:-1], path[-1]
        current: list[str | int] = []
        seen: dict[tuple[str, ...], int] = {}
        for number, line in enumerate(lines, start=1):
            m = header.match(line)
            if m:
                names = tuple(part.strip().strip('"') for part in m.group(2).split("."))
                current = list(names)
                if m.group(1) == "[[":
                    seen[names] = seen.get(names, -1) + 1
                    current.append(seen[names])
                if current[: len(path)] == path:
                    return number
                continue
            if current == table and re.match(rf'^\s*"?{re.escape(key)}"?\s*=', line):
                return number
        path.pop()
    return None


def _format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_spec(text: str, *, source: str = "<spec>") -> SpecFile:
    """Parse and validate spec TOML; every problem names the field and its line."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise ConfigError(f"{source}: spec is larger than {MAX_SPEC_BYTES} bytes")
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid TOML: {exc}", hint="fix the syntax at the line shown"
        ) from None
    try:
        return SpecFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [p for p in error["loc"] if isinstance(p, str | int)]
            # pydantic appends union/validator tags; keep the path the user wrote
            where = _format_loc(loc) or "(top level)"
            line = _line_of(text, loc)
            at = f"{source}:{line}" if line else source
            problems.append(f"{at}: {where}: {error['msg']}")
        raise ConfigError(
            "invalid task spec:\n  " + "\n  ".join(problems),
            hint="see examples/*.toml or run `fedmarket init` for a valid starting point",
        ) from None


def load_spec(path: str | Path) -> SpecFile:
    """Read and validate a spec file; a missing or unreadable file is a :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such spec file", hint="check the path, or run `fedmarket init` to write one"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read spec file: {exc}") from None
    return parse_spec(text, source=str(p))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_spec(spec: SpecFile, *, comments: dict[str, str] | None = None) -> str:
    """Write a spec file back as TOML (defaults included), parseable by :func:`parse_spec`."""
    comments = comments or {}
    data = spec.model_dump(mode="python", exclude_none=True)
    out: list[str] = []
    for section, body in data.items():
        if section == "run":
            continue
        if section in comments:
            out.append(f"# {comments[section]}")
        out.append(f"[{section}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in body.items() if not isinstance(v, dict)]
        out.append("")
        for key, table in body.items():  # sub-tables, e.g. [features.backbone]
            if isinstance(table, dict):
                out.append(f"[{section}.{key}]")
                out += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
                out.append("")
    run = data.get("run")
    if run:
        if "run" in comments:
            out.append(f"# {comments['run']}")
        out.append("[run]")
        out += [
            f"{k} = {_toml_value(v)}" for k, v in run.items() if k not in ("owners", "processors")
        ]
        out.append("")
        for group in ("owners", "processors"):
            for party in run[group]:
                out.append(f"[[run.{group}]]")
                out += [f"{k} = {_toml_value(v)}" for k, v in party.items()]
                out.append("")
    return "\n".join(out)
