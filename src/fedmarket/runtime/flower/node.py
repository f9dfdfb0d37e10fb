"""A data owner, a processor or both as a Flower SuperNode: the protocol's party side.

Flower runs every message in a fresh ClientApp process, and a node may be restarted at any
time, so the node's state lives in a local SQLite file (``state`` in its node config): every
message loads it into a ``fedmarket.protocol.party.PartyNode`` (the same dispatcher the
in-process runtime uses, built by ``fedmarket.parties`` from the node's options), handles the
action - on chain with the node's own key -, saves it and replies. A restarted node resumes.

Node config (``flower-supernode --node-config``, written by ``fedmarket node``):
``role`` (owner, processor, or owner+processor for the own-compute scenario), ``name``, ``key``
(keystore file), ``password-file``, ``chain`` (JSON-RPC URL), ``market`` (the only market this
node takes tasks on), ``state`` (SQLite path); owners: ``data`` (a data set as in specs),
``label-column``, ``shard`` (``i/k``: owner i of k equal shares of the training split),
``points``, ``price``, ``seed``, ``validation-fraction``, ``split``; processors: ``capacity``,
``price``, ``workers``. Either may have ``attack`` (simulated misbehaviour).
"""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from fedmarket.chain.backends import rpc
from fedmarket.chain.client import MarketClient, TokenClient
from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.parties import DataSource, OwnerPlan, ProcessorPlan, make_node
from fedmarket.protocol.crypto import default_crypto
from fedmarket.protocol.party import PartyNode
from fedmarket.protocol.transport import Envelope
from fedmarket.runtime.flower import identity

ROLES = ("owner", "processor", "owner+processor")


@dataclass(frozen=True)
class NodeConfig:
    role: str
    name: str
    key: str
    password_file: str | None
    chain: str
    market: str
    state: str
    options: Mapping[str, Any]

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> NodeConfig:
        missing = [k for k in ("role", "key", "chain", "market", "state") if k not in config]
        if missing:
            raise ConfigError(
                f"node config lacks {', '.join(missing)}",
                hint="start nodes with `fedmarket node`, which writes the node config",
            )
        role = str(config["role"])
        if role not in ROLES:
            raise ConfigError(f"node role must be one of {', '.join(ROLES)}, got {role!r}")
        return cls(
            role=role,
            name=str(config.get("name", role)),
            key=str(config["key"]),
            password_file=str(config["password-file"]) if "password-file" in config else None,
            chain=str(config["chain"]),
            market=str(config["market"]),
            state=str(config["state"]),
            options=dict(config),
        )

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.role.split("+"))

    def int(self, key: str, default: int | None = None) -> int:
        if key not in self.options:
            if default is None:
                raise ConfigError(f"{self.role} node config lacks {key}")
            return default
        try:
            return int(self.options[key])
        except (TypeError, ValueError):
            raise ConfigError(f"node config {key} must be an integer") from None

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.options.get(key, default)
        return None if value is None or value == "" else str(value)


class NodeStore:
    """The node's state: one pickled dict per key in a local SQLite file it alone writes."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB)")

    def get(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else pickle.loads(row[0])  # our own file, never remote

    def put(self, key: str, value: Any) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, pickle.dumps(value))
            )

    def close(self) -> None:
        self._db.close()


def load_account(cfg: NodeConfig) -> LocalAccount:
    from fedmarket.deploy_cli import load_key

    return load_key(Path(cfg.key), Path(cfg.password_file) if cfg.password_file else None)


def owner_plan(cfg: NodeConfig) -> OwnerPlan:
    """This owner's share: shard i of k equal shares of the data set's training split (as
    `fedmarket run` deals owners with equal points), so the requester's validation split never
    overlaps it."""
    data = cfg.text("data")
    if data is None:
        raise ConfigError("an owner node needs data (a data set, e.g. sklearn:digits)")
    split = cfg.text("split", "iid") or "iid"
    source = DataSource(
        data,
        label_column=cfg.text("label-column", "target") or "target",
        validation_fraction=float(cfg.options.get("validation-fraction", 0.2)),
        seed=cfg.int("seed", 0),
        alpha=None if split == "iid" else float(split.split(":", 1)[1]),
        test_fraction=float(cfg.options.get("test-fraction", 0.0)),
    )
    try:
        i, k = (int(x) for x in str(cfg.options.get("shard", "0/1")).split("/"))
    except ValueError:
        raise ConfigError("shard must be i/k, e.g. 0/2") from None
    if not 0 <= i < k:
        raise ConfigError(f"shard {i}/{k}: i must be in 0..k-1")
    points = cfg.int("points")
    train, _ = source.load()
    share = source.shares(train, [points] * k)[i]
    files = cfg.text("files")  # the task's published files (a backbone), on this node
    return OwnerPlan(
        share.X,
        share.y,
        points,
        cfg.int("price"),
        cfg.text("attack"),
        source.seed,
        i,
        Path(files) if files else Path(cfg.state).parent,
    )


class Node:
    """One message's worth of a SuperNode: the party rebuilt from its options and its state."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.store = NodeStore(cfg.state)
        self.account = load_account(cfg)
        self._party: PartyNode | None = None

    def close(self) -> None:
        if self._party is not None:
            self._party.close()
        self.store.close()

    def party(self) -> PartyNode:
        if self._party is None:
            cfg = self.cfg
            chain = rpc(cfg.chain, [self.account.key.hex()])
            market = MarketClient.at(chain.w3, cfg.market, chain.accounts[0])
            token = TokenClient.at(chain.w3, market.token(), chain.accounts[0])
            owner = owner_plan(cfg) if "owner" in cfg.roles else None
            processor = None
            if "processor" in cfg.roles:
                capacity = cfg.int("capacity", owner.points if owner else None)
                processor = ProcessorPlan(
                    capacity,
                    cfg.int("processing-price", cfg.int("price")),
                    cfg.int("workers", 2),
                    cfg.text("attack") if owner is None else None,
                    cfg.int("seed", 0),
                )
            node = make_node(
                cfg.name, self.account, market, token, default_crypto(),
                owner=owner, processor=processor,
            )  # fmt: skip
            node.restore(self.store.get("party", {}))
            self._party = node
        return self._party

    def save(self) -> None:
        if self._party is not None:
            self.store.put("party", self._party.state())

    def handle(self, action: str, request: Envelope) -> Envelope | None:
        """The party's reply to one action; the state is saved whatever happened."""
        try:
            return self.party().handle(action, request)
        finally:
            self.save()

    def hello(self, fields: Mapping[str, Any], run_id: int, node_id: int) -> Envelope:
        """Prove which chain account runs this node (a signed challenge)."""
        nonce = str(fields.get("challenge", ""))
        if len(nonce) != 64:
            raise UntrustedInputError("sent a malformed challenge", party="requester")
        return Envelope(
            {
                "role": self.cfg.role,
                "name": self.cfg.name,
                "address": self.account.address,
                "signature": identity.sign(self.account, run_id, node_id, nonce),
            }
        )

    def watch(self) -> str | None:
        """Claim the timeout of a task whose requester vanished, and collect."""
        party = self.party()
        if party.task_id is None:
            return None
        now = party.parties[0].market.now()
        try:
            return party.watch(now)
        finally:
            self.save()
