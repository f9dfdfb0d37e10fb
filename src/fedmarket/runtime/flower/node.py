"""A data owner, a processor or both, warm in one long-lived process: the protocol's party side.

``NodeWorker`` holds what a node needs across messages, epochs and tasks: its account (the
keystore decrypted once), its chain clients, and its ``fedmarket.protocol.party.PartyNode``
(built by ``fedmarket.parties`` from the node's options; the roles keep the parsed public
context and the processor's pool with its blocks). Every action goes to ``PartyNode.handle``;
after each one the party's state is written to a local SQLite file (``NodeStore``), so a
killed node resumes where it was.

State is kept per (chain, market, task): a fresh chain that reuses task 0 on the same market
address (a new anvil, say) is another chain to the node, which then bids again instead of
answering "already bid" for a task it never saw.

Options (``fedmarket node`` builds them): ``role`` (owner, processor, or owner+processor for the
own-compute scenario), ``name``, ``chain`` (JSON-RPC URL), ``market`` (the only market this node
takes tasks on), ``state`` (SQLite path); owners: ``data`` (a data set as in specs),
``label-column``, ``shard`` (``i/k``: owner i of k equal shares of the training split),
``points``, ``price``, ``seed``, ``validation-fraction``, ``split``; processors: ``capacity``,
``price``, ``workers``. Either may have ``attack`` (simulated misbehaviour).
"""

from __future__ import annotations

import hashlib
import pickle
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from fedmarket.chain.backends import rpc
from fedmarket.chain.client import MarketClient, TokenClient
from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.parties import DataSource, OwnerPlan, ProcessorPlan, make_node
from fedmarket.protocol.crypto import Crypto, default_crypto
from fedmarket.protocol.party import PartyNode
from fedmarket.protocol.transport import Envelope
from fedmarket.runtime.flower import identity

ROLES = ("owner", "processor", "owner+processor")


@dataclass(frozen=True)
class NodeConfig:
    role: str
    name: str
    chain: str
    market: str
    state: str
    options: Mapping[str, Any]

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> NodeConfig:
        missing = [k for k in ("role", "chain", "market", "state") if k not in config]
        if missing:
            raise ConfigError(f"node options lack {', '.join(missing)}")
        role = str(config["role"])
        if role not in ROLES:
            raise ConfigError(f"node role must be one of {', '.join(ROLES)}, got {role!r}")
        return cls(
            role=role,
            name=str(config.get("name", role)),
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
                raise ConfigError(f"a {self.role} node needs {key}")
            return default
        try:
            return int(self.options[key])
        except (TypeError, ValueError):
            raise ConfigError(f"node option {key} must be an integer") from None

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.options.get(key, default)
        return None if value is None or value == "" else str(value)


# ---------------------------------------------------------------- state on disk

BLOB_BYTES = 4096  # byte strings at least this long are stored once, by content hash


@dataclass(frozen=True)
class _Blob:
    digest: str


class NodeStore:
    """The node's state in a local SQLite file it alone writes: one small row per
    (scope, task) - the scope names the chain and the market - and every large byte string
    (the public context, blocks) once, by content hash, so saving after a message writes
    only what changed."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # the node's loop and its chain watcher take turns (NodeProcess holds a lock)
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS task_state (
                    scope TEXT, task INTEGER, seq INTEGER, body BLOB,
                    PRIMARY KEY (scope, task));
                CREATE TABLE IF NOT EXISTS blob (digest TEXT PRIMARY KEY, data BLOB);
                CREATE TABLE IF NOT EXISTS blob_ref (scope TEXT, task INTEGER, digest TEXT);
                CREATE INDEX IF NOT EXISTS blob_ref_key ON blob_ref (scope, task);
                """
            )
        self._known = {row[0] for row in self._db.execute("SELECT digest FROM blob")}
        # id(bytes) -> (the bytes, digest): a block or context saved again is not rehashed
        self._digests: dict[int, tuple[bytes, str]] = {}

    def _split(
        self, value: Any, blobs: dict[str, bytes], seen: dict[int, tuple[bytes, str]]
    ) -> Any:
        if isinstance(value, bytes) and len(value) >= BLOB_BYTES:
            cached = self._digests.get(id(value))
            if cached is not None and cached[0] is value:
                digest = cached[1]
            else:
                digest = hashlib.blake2b(value, digest_size=32).hexdigest()
            seen[id(value)] = (value, digest)
            blobs[digest] = value
            return _Blob(digest)
        if isinstance(value, dict):
            return {k: self._split(v, blobs, seen) for k, v in value.items()}
        if isinstance(value, list | tuple):
            items = [self._split(v, blobs, seen) for v in value]
            return items if isinstance(value, list) else tuple(items)
        return value

    def _join(self, value: Any) -> Any:
        if isinstance(value, _Blob):
            row = self._db.execute("SELECT data FROM blob WHERE digest = ?", (value.digest,))
            found = row.fetchone()
            if found is None:
                raise ConfigError("the node's state file is damaged: a stored block is missing")
            return bytes(found[0])
        if isinstance(value, dict):
            return {k: self._join(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            items = [self._join(v) for v in value]
            return items if isinstance(value, list) else tuple(items)
        return value

    def save(self, scope: str, task: int, state: Mapping[str, Any]) -> None:
        blobs: dict[str, bytes] = {}
        seen: dict[int, tuple[bytes, str]] = {}
        body = pickle.dumps(self._split(dict(state), blobs, seen))
        self._digests = seen
        with self._db:
            before = {
                r[0]
                for r in self._db.execute(
                    "SELECT digest FROM blob_ref WHERE scope = ? AND task = ?", (scope, task)
                )
            }
            new = [(d, b) for d, b in blobs.items() if d not in self._known]
            self._db.executemany("INSERT OR IGNORE INTO blob (digest, data) VALUES (?, ?)", new)
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM task_state").fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO task_state (scope, task, seq, body) VALUES (?, ?, ?, ?)",
                (scope, task, seq[0], body),
            )
            if before != set(blobs):
                self._db.execute("DELETE FROM blob_ref WHERE scope = ? AND task = ?", (scope, task))
                self._db.executemany(
                    "INSERT INTO blob_ref (scope, task, digest) VALUES (?, ?, ?)",
                    [(scope, task, d) for d in blobs],
                )
                if before - set(blobs):
                    self._db.execute(
                        "DELETE FROM blob WHERE digest NOT IN (SELECT digest FROM blob_ref)"
                    )
                    self._known = {r[0] for r in self._db.execute("SELECT digest FROM blob")}
        self._known.update(d for d, _ in new)

    def latest(self, scope: str) -> tuple[int, dict[str, Any]] | None:
        """The task last saved in ``scope`` and its state (our own file: never remote bytes)."""
        row = self._db.execute(
            "SELECT task, body FROM task_state WHERE scope = ? ORDER BY seq DESC LIMIT 1", (scope,)
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), self._join(pickle.loads(row[1]))

    def tasks(self, scope: str) -> list[int]:
        rows = self._db.execute(
            "SELECT task FROM task_state WHERE scope = ? ORDER BY task", (scope,)
        )
        return [int(r[0]) for r in rows]

    def close(self) -> None:
        self._db.close()


# ---------------------------------------------------------------- the warm party


def owner_plan(cfg: NodeConfig) -> OwnerPlan:
    """This owner's share: shard i of k equal shares of the data set's training split (as
    `fedmarket run` deals owners with equal points), so the requester's validation split never
    overlaps it."""
    data = cfg.text("data")
    if data is None:
        raise ConfigError("an owner node needs data (a data set, e.g. sklearn:digits)")
    split = cfg.text("split", "iid") or "iid"
    try:
        alpha = None if split == "iid" else float(split.split(":", 1)[1])
    except (IndexError, ValueError):
        raise ConfigError(f"split must be iid or dirichlet:ALPHA, got {split!r}") from None
    source = DataSource(
        data,
        label_column=cfg.text("label-column", "target") or "target",
        validation_fraction=float(cfg.options.get("validation-fraction", 0.2)),
        seed=cfg.int("seed", 0),
        alpha=alpha,
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
        max_epsilon=float(cfg.options["max-epsilon"]) if "max-epsilon" in cfg.options else None,
    )


def chain_scope(chain_id: int, genesis: str, market: str) -> str:
    """Which chain and market a node's task state belongs to. A development chain restarted
    from scratch keeps its id and its contract addresses but not its genesis block."""
    return f"{chain_id}/{genesis.lower()}/{market.lower()}"


class NodeWorker:
    """One node's party, built once and kept warm; ``handle`` answers one action."""

    def __init__(
        self, cfg: NodeConfig, account: LocalAccount, *, crypto: Crypto | None = None
    ) -> None:
        self.cfg = cfg
        self.account = account
        chain = rpc(cfg.chain, [account.key.hex()])
        market = MarketClient.at(chain.w3, cfg.market, chain.accounts[0])
        token = TokenClient.at(chain.w3, market.token(), chain.accounts[0])
        genesis = chain.w3.eth.get_block(0)["hash"]
        self.scope = chain_scope(chain.chain_id, bytes(genesis).hex(), market.address)
        self.market = market
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
        self.party: PartyNode = make_node(
            cfg.name, account, market, token, crypto or default_crypto(),
            owner=owner, processor=processor,
        )  # fmt: skip
        self.store = NodeStore(cfg.state)
        self.save_seconds = 0.0  # the last save's (the node logs it)
        saved = self.store.latest(self.scope)
        if saved is not None:
            self.party.restore(saved[1])  # parses the context and starts the pool once

    @property
    def address(self) -> str:
        return str(self.account.address)

    def busy(self) -> bool:
        """A winner of a task it has not settled: it may be asked something at any moment
        (an owner, to recompute a block for an audit)."""
        p = self.party
        won = any(getattr(role, "fill", 0) for role in p.parties)
        return p.task_id is not None and not p.settled and bool(won)

    def handle(self, action: str, request: Envelope) -> Envelope | None:
        """The party's reply to one action (``None``: a simulated crash); the state is saved
        whatever happened."""
        try:
            return self.party.handle(action, request)
        finally:
            start = time.monotonic()
            self.save()
            self.save_seconds = time.monotonic() - start

    def save(self) -> None:
        task = self.party.task_id
        if task is not None:
            self.store.save(self.scope, task, self.party.state())

    def hello(self, fields: Mapping[str, Any], run_id: int, node_id: int) -> Envelope:
        """Prove which chain account runs this node (a signed challenge)."""
        nonce = str(fields.get("challenge", ""))
        if len(nonce) != 64:
            raise UntrustedInputError("sent a malformed challenge", party="requester")
        return Envelope(
            {
                "role": self.cfg.role,
                "name": self.cfg.name,
                "address": self.address,
                "signature": identity.sign(self.account, run_id, node_id, nonce),
            }
        )

    def watch(self) -> str | None:
        """Claim the timeout of a task whose requester vanished, and collect."""
        if self.party.task_id is None:
            return None
        try:
            return self.party.watch(self.market.now())
        finally:
            self.save()

    def close(self) -> None:
        self.party.close()
        self.store.close()
