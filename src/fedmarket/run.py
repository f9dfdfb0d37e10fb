"""Run one task end to end in one process: the paper's Figure 2 on a chain of your choice.

The runner builds the parties a spec's ``[run]`` section lists (``fedmarket.parties``), each
with its own chain account, and hands them to the protocol's one driver
(``fedmarket.protocol.driver``) over the in-process transport: every message crosses as wire
bytes, counted per party. Simulated misbehaviour named in a party's ``attack`` lives in the
roles (``fedmarket.attacks``) and runs the same way on every runtime. With the plaintext crypto
(``fedmarket.protocol.plaintext``) the same run is the twin the integrity benchmark measures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmarket.backbone import feature_columns, raw_width, spec_backbone, task_features
from fedmarket.chain.backends import Chain, dev_keys, embedded, rpc
from fedmarket.chain.client import MarketClient, TokenClient, deploy
from fedmarket.chain.ledger import Market, Token
from fedmarket.chain.memory import MemoryChain, memory_chain
from fedmarket.data import Dataset, check_task_data, scale
from fedmarket.errors import ConfigError, FedmarketError
from fedmarket.models.linear import Model
from fedmarket.models.training import TrainConfig, TrainResult, fit_plaintext
from fedmarket.parties import (
    DataSource,
    OwnerPlan,
    ProcessorPlan,
    make_node,
    owner_price,
    processor_price,
)
from fedmarket.privacy.owner import clip_rows
from fedmarket.protocol.crypto import Crypto, default_crypto
from fedmarket.protocol.driver import Driver, ProgressFn, TaskRun
from fedmarket.protocol.interrupts import Interrupts
from fedmarket.protocol.party import PartyNode
from fedmarket.report import RunReport
from fedmarket.report.build import Member, balances, build_report, write_results
from fedmarket.roles import messages
from fedmarket.roles.requester import EpochOutcome, Requester
from fedmarket.roles.stopping import BudgetLeft, Plateau, StoppingRule, TargetReached
from fedmarket.runtime.local import LocalTransport
from fedmarket.spec import SpecFile, TaskSpec, load_spec

GRACE_SECONDS = 3600
MEMORY = "memory"  # chain_url of the in-memory ledger (fedmarket.chain.memory): simulations


@dataclass
class RunResult:
    """What a run leaves: the report, the model, and where they were written."""

    report: RunReport
    model: Model
    out: Path | None
    outcomes: list[EpochOutcome] = field(default_factory=list)
    chain_seconds: float = 0.0  # waiting for the protocol's transactions (not deploy/mint)
    codec_seconds: float = 0.0  # encoding and decoding messages
    run: TaskRun | None = None
    test: Dataset | None = None  # rows held out from every party ([run] test_fraction)
    # the same algorithm in plaintext on the points the owners sold, as many epochs as the run
    reference: TrainResult | None = None


def fund(token: Token, needs: dict[str, int], *, names: dict[str, str]) -> None:
    """Make sure every account holds what it will escrow or stake, before any task exists:
    a development token is minted; any other token must already be there."""
    short = {a: n - token.balance_of(a) for a, n in needs.items() if token.balance_of(a) < n}
    if not short:
        return
    try:
        for address, amount in short.items():
            token.mint(address, amount)
    except FedmarketError:
        missing = ", ".join(f"{names.get(a, a)} ({a}) needs {n} more" for a, n in short.items())
        raise ConfigError(
            f"the market's token {token.address} cannot be minted here and {missing}",
            hint="fund these accounts with the token first; nothing was escrowed",
        ) from None


def stopping_rules(spec: SpecFile) -> list[StoppingRule]:
    """The rules a spec's ``[stopping]`` section asks for, the budget check first."""
    s = spec.stopping
    rules: list[StoppingRule] = [BudgetLeft()]
    if s.target is not None:
        rules.append(TargetReached(s.target))
    if s.patience > 0:
        rules.append(Plateau(s.patience, s.min_delta))
    return rules


def wait_until(chain: Chain | MemoryChain, timestamp: int) -> None:
    """Move a development chain's clock to ``timestamp``; wait for a real one."""
    now = chain.timestamp()
    if now >= timestamp:
        return
    try:
        chain.time_travel(timestamp - now)  # embedded, anvil, hardhat
    except FedmarketError:
        time.sleep(timestamp - now + 1)  # a real chain: wait


def wait_blocks(chain: Chain | MemoryChain, blocks: int) -> None:
    """Mine ``blocks`` empty blocks on a development chain; wait for them on a real one."""
    try:
        chain.mine(blocks)
    except FedmarketError:
        assert isinstance(chain, Chain)
        target = chain.w3.eth.block_number + blocks
        while chain.w3.eth.block_number < target:
            time.sleep(1)


def run_task(
    spec_file: SpecFile,
    *,
    chain_url: str | None = None,
    out: str | Path | None = None,
    base: Path | None = None,
    workers: int = 2,
    progress: ProgressFn | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    rules: list[StoppingRule] | None = None,
    crypto: Crypto | None = None,
    capture: list[tuple[str, str, str, bytes]] | None = None,
    transport: Callable[[list[PartyNode]], LocalTransport] | None = None,
    interrupts: Interrupts | None = None,
    market: str | None = None,
) -> RunResult:
    """Play one task; ``stop_requested`` (or a first press on ``interrupts``) makes the
    requester back off at the next boundary."""
    progress = progress or (lambda event, data: None)
    if spec_file.run is None:
        raise ConfigError(
            "the spec has no [run] section: nothing says which parties to simulate",
            hint="add one (see examples/breast_cancer.toml) or use `fedmarket init`",
        )
    crypto = crypto or default_crypto()
    run = spec_file.run
    spec = spec_file.spec
    setup_start = time.perf_counter()
    progress("phase", {"phase": "setup"})
    # The data first: a task it cannot serve fails here, before anything touches a chain.
    source = DataSource(
        run.dataset,
        spec.labels.column,
        run.validation_fraction,
        run.seed,
        run.alpha,
        base,
        run.test_fraction,
        feature_columns(spec),
    )
    train, val, test = source.split()
    notes = list(train.notes)
    for part, rows in (("training", train), ("validation", val)):
        check_task_data(
            rows,
            kind=spec.kind,
            classes=list(spec.labels.classes),
            n_features=raw_width(spec),
            where=f"the {part} split of {run.dataset}",
        )
    if spec.features.backbone is not None:  # a missing or altered backbone, before the chain
        spec_backbone(spec.features.backbone, base)
    own = [run.requester_points] if run.scenario == "own-data" else []
    shares = source.shares(train, own + [o.points for o in run.owners])
    n_parties = 1 + len(run.owners) + len(run.processors)
    chain: Chain | MemoryChain
    market_client: Market
    token: Token
    if market is not None and chain_url in (None, MEMORY):
        raise ConfigError("an existing market needs a chain URL", hint="pass chain_url too")
    if chain_url == MEMORY:
        # every simulated party signs honestly, so the ledger may skip the signature checks
        chain, market_client, token = memory_chain(
            dev_keys(n_parties + 1), grace_seconds=GRACE_SECONDS, trust_signatures=True
        )
    else:
        chain = (
            embedded(n_parties + 1)
            if chain_url is None
            else rpc(chain_url, dev_keys(n_parties + 1))
        )
        if market is None:
            market_client, token = deploy(chain.w3, chain.accounts[0], GRACE_SECONDS)
        else:
            market_client = MarketClient.at(chain.w3, market, chain.accounts[0])
            token = TokenClient.at(chain.w3, market_client.token(), chain.accounts[0])
    requester_account = chain.accounts[1]

    requester = Requester(
        "requester",
        requester_account,
        market_client.as_(requester_account),
        token.as_(requester_account),
        crypto=crypto,
        spec=spec,
        X_val=val.X,
        y_val=val.y,
        rules=stopping_rules(spec_file) + list(rules or []),
        seed=run.seed,
        self_processing=run.scenario == "own-compute",
        base=base,
    )
    members = [Member("requester", ("requester",), requester.address)]
    nodes: list[PartyNode] = []
    sold: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # owner address -> (X, y)
    if run.scenario == "own-data":
        # The requester sells its own data into its own task at price 0: the greedy
        # allocation takes it first, the contract pays it nothing, and its own data weighs
        # nothing in the shares of a slash.
        mine = shares.pop(0)
        plan = OwnerPlan(mine.X, mine.y, run.requester_points, 0, base=base)
        nodes.append(
            make_node(
                "requester",
                requester_account,
                requester.market,
                requester.token,
                crypto,
                owner=plan,
            )
        )
        sold[requester.address.lower()] = (mine.X, mine.y)
        members[0] = Member("requester", ("requester", "owner"), requester.address)
    stakes: dict[str, int] = {}
    index = 2
    for i, (cfg, share) in enumerate(zip(run.owners, shares, strict=True)):
        account = chain.accounts[index]
        index += 1
        X, y = share.X, share.y
        if cfg.attack:
            notes.append(f"{cfg.name} is dishonest: {cfg.attack} (simulated)")
        price = owner_price(cfg.strategy, cfg.price, seed=run.seed, index=i)
        processing = None
        roles: tuple[str, ...] = ("owner",)
        if run.scenario == "own-compute":
            # Each owner processes exactly its own encrypted points: the requester's key
            # never meets anyone else's data on the requester's machine.
            processing = ProcessorPlan(cfg.points, run.processing_price, workers)
            stakes[account.address] = cfg.points * run.processing_price * spec.task.max_epochs
            roles = ("owner", "processor")
        selling = OwnerPlan(
            X, y, cfg.points, price, cfg.attack, run.seed, i, base, max_epsilon=cfg.max_epsilon
        )
        nodes.append(
            make_node(
                cfg.name,
                account,
                market_client.as_(account),
                token.as_(account),
                crypto,
                owner=selling,
                processor=processing,
            )
        )
        members.append(Member(cfg.name, roles, account.address))
        sold[account.address.lower()] = (X, y)
    for i, pcfg in enumerate(run.processors):
        account = chain.accounts[index]
        index += 1
        price = processor_price(pcfg.strategy, pcfg.price, seed=run.seed, index=i)
        plan_p = ProcessorPlan(pcfg.capacity, price, workers, pcfg.attack, run.seed * 3001 + i)
        nodes.append(
            make_node(
                pcfg.name,
                account,
                market_client.as_(account),
                token.as_(account),
                crypto,
                processor=plan_p,
            )
        )
        stakes[account.address] = pcfg.capacity * price * spec.task.max_epochs
        members.append(Member(pcfg.name, ("processor",), account.address))
    needs = {requester.address: spec.budget.data + spec.budget.processing, **stakes}
    fund(token, needs, names={m.address: m.name for m in members})
    # a development token also gives the requester enough for the bonds of its disputes (what
    # it lacks of them); on any other token the requester brings them itself
    short = needs[requester.address] + sum(stakes.values()) - token.balance_of(requester.address)
    if short > 0:
        with contextlib.suppress(FedmarketError):
            token.mint(requester.address, short)
    addresses = [m.address for m in members]
    start = balances(token, addresses)
    local = (transport or (lambda n: LocalTransport(n, capture=capture)))(nodes)
    setup_seconds = time.perf_counter() - setup_start

    driver = Driver(
        requester,
        local,
        wait_until=lambda ts: wait_until(chain, ts),
        progress=progress,
        stop_requested=stop_requested,
        vanish_at=int(run.requester_attack.split("@")[1]) if run.requester_attack else None,
        wait_blocks=lambda n: wait_blocks(chain, n),
        interrupts=interrupts or Interrupts(),
    )
    market_start = token.balance_of(market_client.address)
    codec_start = messages.CODEC_SECONDS[0]
    try:
        task_run = driver.run()
        if driver.vanish_at is not None and requester.task_id is not None:
            # Nobody hears from the requester again: once its deadline and the grace period
            # have passed, every party claims the timeout and collects, as nodes do; then,
            # once the dispute window after the timeout has passed, the stakes come back.
            for _ in ("timeout", "stakes"):
                clock = requester.market.clock_of(requester.task_id)
                wait_until(chain, clock.deadline + GRACE_SECONDS + 1)
                for node in nodes:
                    done = node.watch(requester.market.now())
                    if done:
                        task_run.notes.append(f"{node.name}: {done}")
    finally:
        local.close()
    task_run.phases = {"setup": setup_seconds, **task_run.phases}
    task_run.notes = notes + task_run.notes
    end = balances(token, addresses)
    # No token is created or lost: what the parties' balances lost, the market holds (the
    # dust, and what is owed to a party that never came to collect).
    held = token.balance_of(market_client.address) - market_start
    if sum(end[a] - start[a] for a in end) + held != 0 or not market_client.solvency().holds:
        raise FedmarketError("token conservation failed: this is a bug, please report it")

    reference, sklearn_metric = _references(spec_file, requester, sold, val, base)
    baseline = [r.metric for r in reference.history] if reference is not None else []
    test_metric = baseline_test_metric = None
    if test is not None and requester.optimizer is not None:
        f = spec.features
        X_test = _clipped(
            spec, scale(task_features(spec, test.X, base=base), f.mean, f.std, f.spread)
        )
        test_metric = spec.kind.evaluate(requester.model(), X_test, test.y, spec.labels)
        if reference is not None:
            baseline_test_metric = spec.kind.evaluate(reference.model, X_test, test.y, spec.labels)
    report = build_report(
        requester=requester,
        run=task_run,
        members=members,
        traffic=local.traffic,
        start=start,
        end=end,
        chain=chain.name,
        gas=market_client.gas_log.entries,
        baseline=baseline,
        test_metric=test_metric,
        baseline_test_metric=baseline_test_metric,
        sklearn_metric=sklearn_metric,
    )
    model = requester.model() if requester.optimizer is not None else None
    out_path = None
    if out is not None:
        with driver.interrupts.shielded():
            out_path = write_results(Path(out), report, requester)
    chain_seconds = sum(
        e.seconds for e in market_client.gas_log.entries if e.function not in ("deploy", "mint")
    )
    assert model is not None, "the task never started"
    return RunResult(
        report,
        model,
        out_path,
        list(requester.outcomes),
        chain_seconds,
        messages.CODEC_SECONDS[0] - codec_start,
        task_run,
        test,
        reference,
    )


def _references(
    spec_file: SpecFile,
    requester: Requester,
    sold: dict[str, tuple[np.ndarray, np.ndarray]],
    val: Dataset,
    base: Path | None,
) -> tuple[TrainResult | None, float | None]:
    """The report's references on the very points the owners sold (their first ``fill``):
    the same algorithm in plaintext for as many epochs as the run closed (its final model is
    then the run's twin), and scikit-learn's estimator of the kind.

    Computed by the simulator (which sees everything), never by a party.
    """
    spec = spec_file.spec
    parts = [
        (X[:fill], y[:fill])
        for address, fill in requester.owners.items()
        if (data := sold.get(address.lower())) is not None
        for X, y in [data]
    ]
    epochs = len(requester.outcomes)
    if not parts or not sum(len(y) for _, y in parts):
        return None, None
    f = spec.features
    raw = task_features(spec, np.vstack([x for x, _ in parts]), base=base)
    X = _clipped(spec, scale(raw, f.mean, f.std, f.spread))
    y = np.concatenate([y for _, y in parts])
    X_val = _clipped(spec, scale(task_features(spec, val.X, base=base), f.mean, f.std, f.spread))
    reference = None
    if epochs:
        with contextlib.suppress(ValueError, ArithmeticError):  # e.g. diverged: no reference
            reference = fit_plaintext(
                X,
                y,
                kind=spec.kind,
                X_val=X_val,
                y_val=val.y,
                config=TrainConfig(epochs=epochs, hidden=spec.task.hidden),
                labels=spec.labels,
            )
    return reference, _sklearn_metric(spec.kind.name, X, y, X_val, val.y)


def _clipped(spec: TaskSpec, X: np.ndarray) -> np.ndarray:
    """Rows as a private task's model sees them (its owners clip every sample)."""
    return clip_rows(X, spec.privacy.clip_norm) if spec.privacy.enabled else X


def _sklearn_metric(
    kind: str, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray
) -> float | None:
    """scikit-learn's LogisticRegression (one-vs-rest for multiclass) or LinearRegression."""
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    try:
        if kind == "linear":
            return float(LinearRegression().fit(X, y).score(X_val, y_val))
        if kind in ("logistic", "multiclass"):
            model = LogisticRegression(max_iter=5000)
            if kind == "multiclass":
                return float(OneVsRestClassifier(model).fit(X, y).score(X_val, y_val))
            return float(model.fit(X, y).score(X_val, y_val))
    except ValueError:  # e.g. one class among the points sold
        return None
    return None


def run_file(path: str | Path, **kwargs: object) -> RunResult:
    """Load a spec file and run it; relative data paths resolve against its folder."""
    p = Path(path)
    return run_task(load_spec(p), base=p.parent, **kwargs)  # type: ignore[arg-type]
