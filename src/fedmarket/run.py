"""Run one task end to end in one process: the paper's Figure 2 on a chain of your choice.

The driver creates the parties a spec's ``[run]`` section lists, each with its own chain
account, and plays the protocol in order; every message crosses a
:class:`~fedmarket.runtime.local.LocalNetwork` as wire bytes. It is also the simulator that
injects the misbehaviour a spec names in a party's ``attack`` (``fedmarket.attacks``): owners
that poison their data or never deliver it, processors that forge, skip, replay, scale, come
late (``late``) or stop answering (``crash@2``). Forgeries are real ciphertexts made with the
public key; crashes and lateness are simulated in one process, never real.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmarket.attacks import parse_owner_attack, parse_processor_attack
from fedmarket.chain.allocation import InfeasibleAllocation
from fedmarket.chain.backends import Chain, dev_keys, embedded, rpc
from fedmarket.chain.client import MarketClient, TokenClient, deploy
from fedmarket.data import Dataset, load_dataset, partition, scale, scaler, split_validation
from fedmarket.errors import ConfigError, FedmarketError, UntrustedInputError
from fedmarket.models.linear import Model
from fedmarket.models.scaled import ScaledModel
from fedmarket.models.training import TrainConfig, fit_plaintext
from fedmarket.report import EpochRecord, GasRecord, PartyRecord, RunReport, TokenFlow
from fedmarket.roles.bidding import bid_price
from fedmarket.roles.messages import BlockRef, ChannelKey, EncryptedModel, EpochResult
from fedmarket.roles.owner import DataOwner
from fedmarket.roles.party import Party
from fedmarket.roles.processor import Processor
from fedmarket.roles.requester import EpochOutcome, Requester
from fedmarket.roles.stopping import BudgetLeft, Plateau, StoppingRule, TargetReached
from fedmarket.runtime.local import LocalNetwork
from fedmarket.spec import SpecFile, load_spec

GRACE_SECONDS = 3600
ProgressFn = Callable[[str, dict[str, object]], None]


@dataclass
class RunResult:
    """What a run leaves: the report, the model, and where they were written."""

    report: RunReport
    model: Model
    out: Path | None
    outcomes: list[EpochOutcome] = field(default_factory=list)
    chain_seconds: float = 0.0  # waiting for the protocol's transactions (not deploy/mint)
    codec_seconds: float = 0.0  # encoding and decoding messages


class _TaskOver(Exception):
    """The task ended before training (e.g. cancelled); the run goes on to settle."""


def _rules(spec: SpecFile) -> list[StoppingRule]:
    s = spec.stopping
    rules: list[StoppingRule] = [BudgetLeft()]
    if s.target is not None:
        rules.append(TargetReached(s.target))
    if s.patience > 0:
        rules.append(Plateau(s.patience, s.min_delta))
    return rules


@contextmanager
def _phase(phases: dict[str, float], name: str, progress: ProgressFn) -> Iterator[None]:
    progress("phase", {"phase": name})
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start


def run_task(
    spec_file: SpecFile,
    *,
    chain_url: str | None = None,
    out: str | Path | None = None,
    base: Path | None = None,
    workers: int = 2,
    progress: ProgressFn | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    network: LocalNetwork | None = None,
    rules: list[StoppingRule] | None = None,
) -> RunResult:
    """Play one task; ``stop_requested`` makes the requester back off at the next epoch."""
    progress = progress or (lambda event, data: None)
    if spec_file.run is None:
        raise ConfigError(
            "the spec has no [run] section: nothing says which parties to simulate",
            hint="add one (see examples/breast_cancer.toml) or use `fedmarket init`",
        )
    run = spec_file.run
    spec = spec_file.spec
    phases: dict[str, float] = {}
    notes: list[str] = []

    with _phase(phases, "setup", progress):
        n_parties = 1 + len(run.owners) + len(run.processors)
        chain: Chain = (
            embedded(n_parties + 1)
            if chain_url is None
            else rpc(chain_url, dev_keys(n_parties + 1))
        )
        deployer, requester_account = chain.accounts[0], chain.accounts[1]
        market, token = deploy(chain.w3, deployer, GRACE_SECONDS)
        data = load_dataset(run.dataset, label_column=spec.labels.column, base=base)
        notes += data.notes
        if len(data.feature_names) != len(spec.features.names):
            raise ConfigError(
                f"data set {run.dataset} has {len(data.feature_names)} features, "
                f"the spec lists {len(spec.features.names)}"
            )
        train, val = split_validation(data, run.validation_fraction, seed=run.seed)
        own = [run.requester_points] if run.scenario == "own-data" else []
        shares = partition(train, own + [o.points for o in run.owners], seed=run.seed + 1)
        owner_attack = {c.name: parse_owner_attack(c.attack) for c in run.owners}
        processor_attack = {c.name: parse_processor_attack(c.attack) for c in run.processors}
        classes = np.asarray(spec.labels.classes)

        def party_clients(index: int) -> tuple[MarketClient, TokenClient]:
            account = chain.accounts[index]
            return market.as_(account), token.as_(account)

        m, t = party_clients(1)
        requester = Requester(
            "requester",
            requester_account,
            m,
            t,
            spec=spec,
            X_val=val.X,
            y_val=val.y,
            rules=_rules(spec_file) + list(rules or []),
            seed=run.seed,
            wait_until=lambda ts: _wait_until(chain, ts),
            self_processing=run.scenario == "own-compute",
        )
        owners = []
        if run.scenario == "own-data":
            # The requester sells its own data into its own task at price 0: the greedy
            # allocation takes it first, and the contract pays it nothing and no slash share.
            mine = shares.pop(0)
            owners.append(
                DataOwner(
                    "requester",
                    requester_account,
                    requester.market,
                    requester.token,
                    X=mine.X,
                    y=mine.y,
                    points=run.requester_points,
                    price=0,
                )
            )
        for i, (cfg, share) in enumerate(zip(run.owners, shares, strict=True)):
            m, t = party_clients(2 + i)
            poison = owner_attack[cfg.name]
            if poison is not None and _attack_name(poison) != "no-delivery":
                X, y = poison.apply(
                    share.X,
                    share.y,
                    features=spec.features,
                    classes=list(classes),
                    rng=np.random.default_rng(run.seed * 4001 + i),
                )
                share = Dataset(X, y, share.feature_names)
                notes.append(f"{cfg.name} poisons its data: {_attack_name(poison)} (simulated)")
            owners.append(
                DataOwner(
                    cfg.name,
                    chain.accounts[2 + i],
                    m,
                    t,
                    X=share.X,
                    y=share.y,
                    points=cfg.points,
                    price=bid_price(cfg.strategy, cfg.price, random.Random(run.seed * 1009 + i)),
                )
            )
        processors = []
        for i, pcfg in enumerate(run.processors):
            index = 2 + len(run.owners) + i
            m, t = party_clients(index)
            processors.append(
                Processor(
                    pcfg.name,
                    chain.accounts[index],
                    m,
                    t,
                    capacity=pcfg.capacity,
                    price=bid_price(pcfg.strategy, pcfg.price, random.Random(run.seed * 2003 + i)),
                    workers=workers,
                    attack=processor_attack[pcfg.name],
                    seed=run.seed * 3001 + i,
                )
            )
        if run.scenario == "own-compute":
            # Each owner processes exactly its own encrypted points: the requester's key
            # never meets anyone else's data on the requester's machine.
            processors = [
                Processor(
                    o.name,
                    o.account,
                    o.market,
                    o.token,
                    capacity=o.points,
                    price=run.processing_price,
                    workers=workers,
                )
                for o in owners
            ]
        budget = spec.budget.data + spec.budget.processing
        token.mint(requester.address, budget)
        for p in processors:
            token.mint(p.address, p.capacity * p.price * spec.task.max_epochs)
        everyone = [requester, *owners, *processors]  # role objects; an account may play two
        accounts: dict[str, list[Party]] = {}
        for party in everyone:
            accounts.setdefault(party.address, []).append(party)
        start_balance = {a: token.balance_of(a) for a in accounts}
        net = network if network is not None else LocalNetwork()
        name_of = {p.address.lower(): p.name for p in reversed(everyone)}

    crashed: set[str] = set()
    owner_of = {o.address.lower(): o for o in owners}

    def arbitrate(ref: BlockRef, model: EncryptedModel) -> bytes | None:
        """A disputed block goes to its owner, who recomputes it from its own ciphertexts."""
        owner = owner_of.get(ref.owner.lower())
        if owner is None:
            return None
        payload = owner.recompute(ref, net.deliver(requester.name, owner.name, model))
        answer = EpochResult(
            task_id=model.task_id,
            epoch=model.epoch,
            processor=owner.address,
            blocks=[ref],
            payloads=[payload],
        )
        return net.deliver(owner.name, requester.name, answer).payloads[0]

    requester.arbiter = arbitrate
    stop_reason = "not started"
    try:
        with _phase(phases, "announce+bid", progress):
            announcement = requester.announce()
            for o in owners:
                o.on_announcement(net.deliver(requester.name, o.name, announcement), spec)
            for p in processors:
                p.on_announcement(net.deliver(requester.name, p.name, announcement), spec)
            progress("task", {"task": requester.task_id, "market": market.address})

        with _phase(phases, "resolve", progress):
            _wait_until(chain, requester.market.tasks(requester.task_id or 0).bidding_deadline + 1)
            try:
                requester.resolve()
            except InfeasibleAllocation as exc:
                # The requester takes its budget back; every stake is refunded in full.
                requester.market.cancel(requester.task_id or 0)
                raise _TaskOver(f"cancelled: {exc.message}") from None
            winners_p = [p for p in processors if p.won() > 0]
            keys: dict[str, ChannelKey] = {}
            for p in winners_p:
                keys[p.address] = net.deliver(p.name, "owners", p.channel_key(), via=requester.name)

        with _phase(phases, "encrypt+distribute", progress):
            delivering = []
            for o in owners:
                if _attack_name(owner_attack.get(o.name)) == "no-delivery":
                    o.won()
                    notes.append(f"{o.name} won but never delivered (simulated fault)")
                    continue
                manifest = o.prepare(spec.he.block_points)
                if manifest is None:
                    continue
                delivering.append(o)
                requester.on_manifest(net.deliver(o.name, requester.name, manifest))
                for p in winners_p:
                    p.on_manifest(net.deliver(o.name, p.name, manifest))
            assignment = requester.assign()
            for party in [*delivering, *winners_p]:
                net.deliver(requester.name, party.name, assignment)
            for p in winners_p:
                p.on_assignment(assignment)
            for o in delivering:
                for processor, sealed in o.seal_blocks(assignment, keys):
                    target = next(p for p in winners_p if p.address == processor)
                    target.on_block(net.deliver(o.name, target.name, sealed, via=requester.name))

        with _phase(phases, "epochs", progress):
            while True:
                if stop_requested():
                    stop_reason = requester.back_off() + " (interrupted)"
                    break
                model_msg = requester.model_message()
                late: list[Processor] = []
                for p in processors:
                    if p not in winners_p or p.address in requester.slashed:
                        continue
                    attack = processor_attack.get(p.name)
                    if attack is not None and not attack.answers(requester.epoch):
                        if p.name not in crashed:
                            notes.append(
                                f"{p.name} stopped answering at epoch {requester.epoch} "
                                "(simulated crash)"
                            )
                            crashed.add(p.name)
                        continue
                    if attack is not None and attack.submits_late:
                        late.append(p)
                        continue
                    _serve(p, requester, net, model_msg, notes)
                if late:
                    # The late ones answer after the epoch's deadline (simulated on the chain's
                    # clock): the contract pays them less, by the announced late penalty.
                    clock = requester.market.clock_of(requester.task_id or 0)
                    _wait_until(chain, clock.deadline + 1)
                    for p in late:
                        _serve(p, requester, net, model_msg, notes)
                outcome = requester.close_epoch()
                progress("epoch", {"epoch": outcome.epoch, "metric": outcome.metric})
                if outcome.finished:
                    stop_reason = outcome.stop_reason or ""
                    break
    except _TaskOver as over:
        stop_reason = str(over)
    except KeyboardInterrupt:
        stop_reason = requester.back_off() + " (interrupted)"
    finally:
        for p in processors:
            p.close()

    with _phase(phases, "settle", progress):
        for party in everyone:
            party.settle()
        end_balance = {a: token.balance_of(a) for a in accounts}
        task_id = requester.task_id or 0
        dust = market.dust(task_id)
        solvency = market.solvency()
        if sum(end_balance[a] - start_balance[a] for a in accounts) != -dust or not solvency.holds:
            raise FedmarketError("token conservation failed: this is a bug, please report it")

    baseline = _plaintext_baseline(spec_file, owners, val, requester)
    report = RunReport(
        task=spec.task.name,
        task_id=task_id,
        spec_hash="0x" + spec.spec_hash().hex(),
        chain=chain.name,
        market=market.address,
        metric_name=spec.kind.metric,
        parties=[
            PartyRecord(
                roles[0].name,
                "+".join(dict.fromkeys(_role(p) for p in roles)),
                address,
                net.sent[roles[0].name],
                net.received[roles[0].name],
            )
            for address, roles in accounts.items()
        ],
        epochs=[
            EpochRecord(
                epoch=o.epoch,
                metric=o.metric,
                baseline=baseline[o.epoch] if o.epoch < len(baseline) else None,
                loss=None,
                on_time=[name_of[a.lower()] for a in o.on_time],
                late=[name_of[a.lower()] for a in o.late],
                missing=[name_of[a.lower()] for a in o.missing],
                flagged=[name_of[a.lower()] for a in o.flagged],
                seconds=o.seconds,
            )
            for o in requester.outcomes
        ],
        tokens=[
            TokenFlow(
                roles[0].name,
                start_balance[address],
                end_balance[address],
                sum(p.paid_in for p in roles),
                sum(p.received for p in roles),
                [t for p in roles for t in p.transfers],
            )
            for address, roles in accounts.items()
        ],
        gas=[
            GasRecord(name_of.get(e.sender.lower(), e.sender), e.function, e.gas_used)
            for e in market.gas_log.entries
        ],
        phases=phases,
        stop_reason=stop_reason,
        dust=dust,
        notes=notes,
        flags=[
            {**f.to_json(), "party": name_of.get(f.party.lower(), f.party)}
            for o in requester.outcomes
            for f in o.flags
        ],
        alarms=[
            {**e.to_json(), "party": name_of.get(e.party.lower(), e.party)}
            for o in requester.outcomes
            for e in o.evidence
            if not any(f.party == e.party for f in o.flags)
        ],
    )
    model = requester.model()
    out_path = None
    if out is not None:
        from fedmarket.report import write_report

        out_path = write_report(report, out)
        f = spec.features
        ScaledModel(model, scaler(f.mean, f.std, f.spread)).save(out_path / "model.npz")
    chain_seconds = sum(
        e.seconds for e in market.gas_log.entries if e.function not in ("deploy", "mint")
    )
    return RunResult(
        report, model, out_path, list(requester.outcomes), chain_seconds, net.codec_seconds
    )


def _attack_name(attack: object) -> str:
    return str(getattr(attack, "name", "")) if attack is not None else ""


def _serve(
    p: Processor, requester: Requester, net: LocalNetwork, model: EncryptedModel, notes: list[str]
) -> None:
    """One processor's epoch: the model out, its results (digest on chain) back."""
    result = p.on_model(net.deliver(requester.name, p.name, model))
    try:
        requester.on_result(net.deliver(p.name, requester.name, result))
    except UntrustedInputError as exc:
        notes.append(f"epoch {requester.epoch}: rejected {exc}")


def _role(party: Party) -> str:
    return {"Requester": "requester", "DataOwner": "owner", "Processor": "processor"}[
        type(party).__name__
    ]


def _wait_until(chain: Chain, timestamp: int) -> None:
    """Move a development chain's clock to ``timestamp``; wait for a real one."""
    now = chain.timestamp()
    if now >= timestamp:
        return
    try:
        chain.time_travel(timestamp - now)  # embedded, anvil, hardhat
    except FedmarketError:
        time.sleep(timestamp - now + 1)  # a real chain: wait


def _plaintext_baseline(
    spec_file: SpecFile, owners: list[DataOwner], val: Dataset, requester: Requester
) -> list[float]:
    """The same algorithm in plaintext on the same points, per epoch: the report's reference.

    Computed by the simulator (which sees everything), never by a party.
    """
    spec = spec_file.spec
    sold = [(o.X[: o.fill], o.y[: o.fill]) for o in owners if o.fill > 0]
    if not sold:
        return []
    f = spec.features
    X = scale(np.vstack([x for x, _ in sold]), f.mean, f.std, f.spread)
    y = np.concatenate([y for _, y in sold])
    result = fit_plaintext(
        X,
        y,
        kind=spec.kind,
        X_val=scale(val.X, f.mean, f.std, f.spread),
        y_val=val.y,
        config=TrainConfig(epochs=spec.task.max_epochs),
    )
    return [r.metric for r in result.history]


def run_file(path: str | Path, **kwargs: object) -> RunResult:
    """Load a spec file and run it; relative data paths resolve against its folder."""
    p = Path(path)
    return run_task(load_spec(p), base=p.parent, **kwargs)  # type: ignore[arg-type]
