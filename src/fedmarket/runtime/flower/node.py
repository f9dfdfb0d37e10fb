"""A data owner or a processor as a Flower SuperNode: the roles, rebuilt per message.

Flower runs every message in a fresh ClientApp process, and a node may be restarted at any
time, so a node's whole state lives in a local SQLite file (``state`` in its node config) and
every handler is: load the state, rebuild the role object (``roles.owner.DataOwner`` or
``roles.processor.Processor``, unchanged), act - on chain with the node's own key - save,
reply. A restarted node resumes the task from that file.

Node config (``flower-supernode --node-config``, written by ``fedmarket node``):
``role`` (owner|processor), ``name``, ``key`` (keystore file), ``password-file``, ``chain``
(JSON-RPC URL), ``state`` (SQLite path); owners: ``data`` (a data set as in specs),
``shard`` (``i/k``: this owner's share of the training split), ``points``, ``price``;
processors: ``capacity``, ``price``, ``workers``. Either may have ``attack`` (simulated
misbehaviour, ``fedmarket.attacks``).
"""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount
from flwr.app import RecordDict

from fedmarket.attacks import parse_owner_attack, parse_processor_attack
from fedmarket.chain.backends import rpc
from fedmarket.chain.client import MarketClient, TokenClient
from fedmarket.data import Dataset, load_dataset, partition, split_validation
from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.he import PublicContext
from fedmarket.roles.channel import ChannelKeys
from fedmarket.roles.messages import (
    Assignment,
    BlockRef,
    ChannelKey,
    DataManifest,
    EncryptedModel,
    EpochResult,
    SealedBlock,
    TaskAnnouncement,
    encode,
)
from fedmarket.roles.owner import DataOwner
from fedmarket.roles.processor import Processor
from fedmarket.runtime.flower import identity, records
from fedmarket.spec import TaskSpec

REQUESTER = "requester"


@dataclass(frozen=True)
class NodeConfig:
    role: str
    name: str
    key: str
    password_file: str | None
    chain: str
    state: str
    options: Mapping[str, Any]

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> NodeConfig:
        missing = [k for k in ("role", "key", "chain", "state") if k not in config]
        if missing:
            raise ConfigError(
                f"node config lacks {', '.join(missing)}",
                hint="start nodes with `fedmarket node`, which writes the node config",
            )
        role = str(config["role"])
        if role not in ("owner", "processor"):
            raise ConfigError(f"node role must be owner or processor, got {role!r}")
        return cls(
            role=role,
            name=str(config.get("name", role)),
            key=str(config["key"]),
            password_file=str(config["password-file"]) if "password-file" in config else None,
            chain=str(config["chain"]),
            state=str(config["state"]),
            options=dict(config),
        )

    def int(self, key: str, default: int | None = None) -> int:
        if key not in self.options:
            if default is None:
                raise ConfigError(f"{self.role} node config lacks {key}")
            return default
        return int(self.options[key])


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


def owner_data(cfg: NodeConfig) -> Dataset:
    """This owner's share: shard i of k of the data set's training split (as `fedmarket run`
    deals it), so the requester's validation split never overlaps it."""
    data = load_dataset(str(cfg.options["data"]))
    seed = cfg.int("seed", 0)
    train, _ = split_validation(data, float(cfg.options.get("validation-fraction", 0.2)), seed=seed)
    i, k = (int(x) for x in str(cfg.options.get("shard", "0/1")).split("/"))
    points = cfg.int("points")
    return partition(train, [points] * k, seed=seed + 1)[i]


class Node:
    """One message's worth of a node: state loaded, role rebuilt."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.store = NodeStore(cfg.state)
        self.account = load_account(cfg)
        self.state: dict[str, Any] = self.store.get("task", {})
        self._role: DataOwner | Processor | None = None

    def close(self) -> None:
        if isinstance(self._role, Processor):
            self._role.close()
        self.store.close()

    def save(self) -> None:
        self.store.put("task", self.state)

    # ---------------------------------------------------------------- the role object

    def _clients(self, market: str) -> tuple[MarketClient, TokenClient]:
        chain = rpc(self.cfg.chain, [self.account.key.hex()])
        m = MarketClient.at(chain.w3, market, chain.accounts[0])
        return m, TokenClient.at(chain.w3, m.token(), chain.accounts[0])

    def role(self) -> DataOwner | Processor:
        if self._role is not None:
            return self._role
        st = self.state
        market, token = self._clients(st["market"])
        cfg = self.cfg
        role: DataOwner | Processor
        if cfg.role == "owner":
            share = owner_data(cfg)
            X, y = share.X, share.y
            attack = parse_owner_attack(cfg.options.get("attack"))
            spec = TaskSpec.model_validate_json(st["spec_json"])
            if attack is not None and attack.delivers:
                X, y = attack.apply(
                    X,
                    y,
                    features=spec.features,
                    classes=list(spec.labels.classes),
                    rng=np.random.default_rng(cfg.int("seed", 0)),
                )
            role = DataOwner(
                cfg.name,
                self.account,
                market,
                token,
                X=X,
                y=y,
                points=cfg.int("points"),
                price=cfg.int("price"),
            )
            role.spec = spec
            role.blocks = list(st.get("blocks", []))
            role.fill = int(st.get("fill", 0))
        else:
            role = Processor(
                cfg.name,
                self.account,
                market,
                token,
                capacity=cfg.int("capacity"),
                price=cfg.int("price"),
                workers=cfg.int("workers", 2),
                attack=parse_processor_attack(cfg.options.get("attack")),
                seed=cfg.int("seed", 0),
            )
            if "channel" in st:
                role.channel = ChannelKeys(*st["channel"])
            role.memory = st.setdefault("memory", {})
            role.fill = int(st.get("fill", 0))
        role.task_id = st.get("task_id")
        if "context" in st:
            role.context = PublicContext.from_bytes(st["context"], party=REQUESTER)
        if isinstance(role, Processor):
            for owner, data in st.get("manifests", {}).items():
                role.manifests[owner] = records.one([data], DataManifest, party="local state")
            role.expected = [BlockRef(owner=o, index=i) for o, i in st.get("expected", [])]
            for (o, i), block in st.get("blocks", {}).items():
                role.restore_block(BlockRef(owner=o, index=i), block)
        self._role = role
        return role

    # ---------------------------------------------------------------- handlers

    def hello(self, fields: Mapping[str, Any], run_id: int, node_id: int) -> RecordDict:
        nonce = str(fields.get("challenge", ""))
        if len(nonce) != 64:
            raise UntrustedInputError("sent a malformed challenge", party=REQUESTER)
        return records.pack(
            {
                "role": self.cfg.role,
                "name": self.cfg.name,
                "address": self.account.address,
                "signature": identity.sign(self.account, run_id, node_id, nonce),
                "task": int(self.state.get("task_id", -1)),
            }
        )

    def announce(self, frames: list[bytes]) -> RecordDict:
        message = records.one(frames, TaskAnnouncement, party=REQUESTER)
        if self.state.get("task_id") == message.task_id:
            return records.pack({"status": "already bid"})  # a restarted or repeated node
        spec = TaskSpec.model_validate_json(message.spec_json)
        self.state = {
            "task_id": None,
            "market": message.market,
            "spec_json": message.spec_json,
            "context": message.public_context,
        }
        role = self.role()
        role.on_announcement(message, spec)
        self.state["task_id"] = message.task_id
        self.save()
        return records.pack({"status": "bid"})

    def channel_key(self) -> RecordDict:
        role = self.role()
        assert isinstance(role, Processor)
        if role.won() == 0:
            return records.pack({"status": "lost"})
        self.state["fill"] = role.fill
        self.state["channel"] = (role.channel.private, role.channel.public)
        self.save()
        return records.pack_messages({"status": "won"}, [role.channel_key()])

    def prepare(self) -> RecordDict:
        role = self.role()
        assert isinstance(role, DataOwner)
        if self.cfg.options.get("attack") == "no-delivery":
            role.won()
            return records.pack({"status": "withheld"})
        spec = TaskSpec.model_validate_json(self.state["spec_json"])
        manifest = role.prepare(spec.he.block_points)
        if manifest is None:
            return records.pack({"status": "lost"})
        self.state["fill"] = role.fill
        self.state["blocks"] = role.blocks
        self.save()
        return records.pack_messages({"status": "won"}, [manifest])

    def setup(self, frames: list[bytes]) -> RecordDict:
        role = self.role()
        assert isinstance(role, Processor)
        assignment = records.one(frames, Assignment, party=REQUESTER)
        manifests = records.many(frames, DataManifest, party=REQUESTER, start=1)
        for manifest in manifests:
            role.on_manifest(manifest)
        role.on_assignment(assignment)
        self.state["manifests"] = {m.owner.lower(): encode(m) for m in manifests}
        self.state["expected"] = [(r.owner, r.index) for r in role.expected]
        self.save()
        return records.pack({"status": "ready", "blocks": len(role.expected)})

    def seal(self, frames: list[bytes]) -> RecordDict:
        role = self.role()
        assert isinstance(role, DataOwner)
        assignment = records.one(frames, Assignment, party=REQUESTER)
        keys = {k.processor: k for k in records.many(frames, ChannelKey, party=REQUESTER, start=1)}
        sealed = role.seal_blocks(assignment, keys)
        return records.pack_messages(
            {"processors": ",".join(p for p, _ in sealed)}, [s for _, s in sealed]
        )

    def blocks(self, frames: list[bytes]) -> RecordDict:
        role = self.role()
        assert isinstance(role, Processor)
        for message in records.many(frames, SealedBlock, party=REQUESTER):
            role.on_block(message)
        self.state["blocks"] = {(r.owner, r.index): b for r, b in role.blocks.items()}
        self.save()
        return records.pack({"status": "stored", "blocks": len(role.blocks)})

    def model(self, frames: list[bytes]) -> RecordDict:
        role = self.role()
        assert isinstance(role, Processor)
        message = records.one(frames, EncryptedModel, party=REQUESTER)
        result = role.on_model(message)
        self.save()  # the attack memory, if any
        return records.pack_messages({"epoch": message.epoch}, [result])

    def recompute(self, frames: list[bytes], fields: Mapping[str, Any]) -> RecordDict:
        role = self.role()
        assert isinstance(role, DataOwner)
        message = records.one(frames, EncryptedModel, party=REQUESTER)
        ref = BlockRef(owner=role.address, index=int(fields["index"]))
        payload = role.recompute(ref, message)
        answer = EpochResult(
            task_id=message.task_id,
            epoch=message.epoch,
            processor=role.address,
            blocks=[ref],
            payloads=[payload],
        )
        return records.pack_messages({}, [answer])

    def settle(self) -> RecordDict:
        role = self.role()
        amount = role.settle()
        self.state["settled"] = True
        self.save()
        return records.pack({"received": str(amount)})

    def watch(self) -> str | None:
        """If the requester is gone (its deadline plus the grace period has passed while the
        task is open), end the task with ``claim_timeout`` and collect. What ``fedmarket
        node`` runs every few seconds beside its SuperNode; returns what it did, if anything."""
        from fedmarket.chain.client import TaskState

        task = self.state.get("task_id")
        if task is None or self.state.get("settled"):
            return None
        role = self.role()
        market = role.market
        clock = market.clock_of(task)
        if clock.state == TaskState.BIDDING:
            return None
        what = "the task is over"
        if clock.state in (TaskState.ASSIGNING, TaskState.TRAINING):
            now = int(market.w3.eth.get_block("latest")["timestamp"])
            if now <= clock.deadline + market.grace_seconds() or not role.won():
                return None
            market.claim_timeout(task)
            what = f"the requester timed out at epoch {clock.epoch}: claimed the timeout"
        amount = role.settle()
        self.state["settled"] = True
        self.save()
        return f"{what}; collected {amount}"
