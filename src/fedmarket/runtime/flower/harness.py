"""A whole task on loopback, for the multi-process tests and ``make bench-deploy``: anvil
(``fedmarket chain up``), a SuperLink, a ``fedmarket node`` per owner and processor, each with
its own keystore (anvil's dev keys: public, for tests only) and state file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from fedmarket.chain.backends import dev_keys
from fedmarket.deploy_cli import FUNDED_DEV_ACCOUNTS, RunningChain, chain_up, write_key
from fedmarket.runtime.flower.loopback import Federation, Tls
from fedmarket.spec import SpecFile, dump_spec, load_spec

EXAMPLES = Path(__file__).resolve().parents[4] / "examples"
PASSWORD = "loopback-test-password"


@dataclass
class Party:
    name: str
    role: str
    index: int  # anvil dev account
    options: dict[str, Any]


def small_spec(
    folder: Path, epochs: int = 3, *, example: str = "breast_cancer.toml", **integrity: Any
) -> Path:
    """An example with few epochs, no plateau stop and 64-point blocks."""
    data = load_spec(EXAMPLES / example).model_dump()
    data["task"]["max_epochs"] = epochs
    data["task"]["epoch_seconds"] = 600
    data["stopping"]["patience"] = 0
    data["he"]["block_points"] = 64
    data["integrity"].update(integrity)
    path = folder / "task.toml"
    path.write_text(dump_spec(SpecFile.model_validate(data)))
    return path


def ten_party_spec(folder: Path, epochs: int = 3) -> Path:
    """``small_spec`` with 452 points from 4 owners (113 each: a node's ``--shard i/k`` deals
    equal shares) and 5 processors (91/91/90/90/90 points per epoch); with ``parties`` a
    sixth processor that asks too much makes ten nodes."""
    path = small_spec(folder, epochs)
    data = load_spec(path).model_dump()
    data["task"]["num_points"] = 452
    data["run"]["owners"] = [
        {"name": f"owner{i + 1}", "points": 113, "price": 10**15 + i * 10**13} for i in range(4)
    ]
    data["run"]["processors"] = [
        {"name": f"processor{j + 1}", "capacity": c, "price": 10**14 + j * 10**12}
        for j, c in enumerate([91, 91, 90, 90, 90])
    ]
    path = folder / "task10.toml"
    path.write_text(dump_spec(SpecFile.model_validate(data)))
    return path


def parties(spec: Path, extra_processor: bool = True, **attacks: str) -> list[Party]:
    """The spec's parties as nodes: owners get equal shards of the training split; in
    own-data the requester's own points are a node of its own (its key, price 0); in
    own-compute every owner is an owner+processor node."""
    s = load_spec(spec)
    assert s.run is not None
    run = s.run
    out = []
    sellers = [(o.name, o.points, o.price) for o in run.owners]
    if run.scenario == "own-data":
        sellers.insert(0, ("requester-data", run.requester_points, 0))
    for i, (name, points, price) in enumerate(sellers):
        own = name == "requester-data"
        index = 1 if own else 2 + i - int(run.scenario == "own-data")
        options: dict[str, Any] = {
            "data": s.run.dataset, "shard": f"{i}/{len(sellers)}",
            "points": points, "price": price, "seed": s.run.seed,
        }  # fmt: skip
        role = "owner"
        if run.scenario == "own-compute":
            role = "owner+processor"
            options |= {"capacity": points, "processing-price": run.processing_price,
                        "workers": 1}  # fmt: skip
        out.append(Party(name, role, index, options))
    processors = [(p.name, p.capacity, p.price) for p in s.run.processors]
    if extra_processor:  # asks too much: wins nothing
        processors.append((f"processor{len(processors) + 1}", 227, 10**18))
    for j, (name, capacity, price) in enumerate(processors):
        out.append(Party(name, "processor", 2 + len(s.run.owners) + j, {
            "capacity": capacity, "price": price, "workers": 1,
        }))  # fmt: skip
    for p in out:
        if p.name in attacks:
            p.options["attack"] = attacks[p.name]
    return out


class Loopback:
    """Everything for one multi-process task; ``with Loopback(tmp) as lb: lb.run()``."""

    def __init__(
        self,
        workdir: Path,
        spec: Path,
        members: list[Party],
        *,
        tls: Path | None,
        **node_options: Any,
    ):
        self.workdir = workdir
        self.node_options = node_options  # for every node, e.g. {"watch-seconds": 1}
        self.spec = spec
        self.members = members
        self.tls = tls
        workdir.mkdir(parents=True, exist_ok=True)
        keys = dev_keys(2 + max((m.index for m in members), default=0))
        (workdir / "password").write_text(PASSWORD + "\n")
        self.keys = {}
        # `chain up` funds the first FUNDED_DEV_ACCOUNTS dev accounts; the rest are funded here
        self.fund = [
            str(Account.from_key(keys[m.index]).address)
            for m in members
            if m.index >= FUNDED_DEV_ACCOUNTS
        ]
        for name, index in [("requester", 1), *((m.name, m.index) for m in members)]:
            path = workdir / "keys" / f"{name}.json"
            write_key(path, keys[index], PASSWORD, overwrite=True)
            self.keys[name] = path
        self.chain: RunningChain | None = None
        self.fed: Federation | None = None

    def __enter__(self) -> Loopback:
        self.chain = chain_up(fund=self.fund)
        self.fed = Federation(self.workdir, Tls(self.tls) if self.tls else None).__enter__()
        for m in self.members:
            self.start(m)
        return self

    def start(self, m: Party) -> None:
        assert self.chain is not None and self.fed is not None
        self.fed.start_node(m.name, {
            "role": m.role, "name": m.name, "key": str(self.keys[m.name]),
            "password-file": str(self.workdir / "password"), "chain": self.chain.url,
            "market": self.chain.info["market"],
            "state": str(self.workdir / "state" / f"{m.name}.sqlite"),
            **self.node_options, **m.options,
        })  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        if self.fed is not None:
            self.fed.close()
        if self.chain is not None:
            self.chain.stop()

    def config(self, **config: Any) -> dict[str, Any]:
        assert self.chain is not None
        return {
            "spec": str(self.spec), "chain": self.chain.url,
            "market": self.chain.info["market"], "key": str(self.keys["requester"]),
            "password-file": str(self.workdir / "password"), "nodes": len(self.members),
            "out": str(self.workdir / "out"), "timeout": 120.0, **config,
        }  # fmt: skip

    def run(self, **config: Any) -> dict[str, Any]:
        assert self.fed is not None
        return self.fed.request(self.config(**config))
