"""The ServerApp: the requester, driving the protocol over Flower and a real chain.

Run config (``fedmarket request`` writes it): ``spec`` (task TOML; its ``[run]`` section
names the data set the requester's validation split comes from), ``chain`` (JSON-RPC URL),
``market`` (address), ``key`` / ``password-file`` (the requester's keystore), ``nodes`` (how
many SuperNodes to wait for), ``out`` (a folder for ``result.json``), ``timeout`` (seconds
a round waits for replies).

The steps are the in-process driver's (``fedmarket.run``), with the requester's messages
going out as Flower messages and the roles unchanged. The requester learns each node's chain
account from a signed challenge (``identity``) and from then on talks only to winners.
Sealed blocks from owners go through it to processors, which it cannot open.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from fedmarket.chain.backends import Chain, rpc
from fedmarket.chain.client import MarketClient, TokenClient
from fedmarket.data import load_dataset, split_validation
from fedmarket.errors import FedmarketError, UntrustedInputError
from fedmarket.roles.messages import (
    BlockRef,
    ChannelKey,
    DataManifest,
    EncryptedModel,
    EpochResult,
    encode,
)
from fedmarket.roles.requester import Requester
from fedmarket.runtime.flower import identity, records
from fedmarket.spec import load_spec

app = ServerApp()
log = logging.getLogger("fedmarket.requester")


@dataclass
class Peer:
    node_id: int
    role: str
    name: str
    address: str


@dataclass
class Session:
    """The requester's view of the federation: who is who, and bytes per party."""

    grid: Grid
    run_id: int
    timeout: float
    peers: dict[str, Peer] = field(default_factory=dict)  # address (lower) -> peer
    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    events: list[str] = field(default_factory=list)

    def names(self, addresses: list[str]) -> list[str]:
        return [self.peers[a.lower()].name for a in addresses if a.lower() in self.peers]

    def note(self, text: str) -> None:
        log.warning(text)
        self.events.append(text)

    def discover(self, expected: int, wait: float) -> None:
        """Wait for ``expected`` nodes, and learn (again, after restarts) who each one is."""
        deadline = time.monotonic() + wait
        while True:
            ids = set(self.grid.get_node_ids())
            known = {p.node_id for p in self.peers.values()}
            if ids - known:
                self._hello(sorted(ids - known))
            if len([p for p in self.peers.values() if p.node_id in ids]) >= expected:
                return
            if time.monotonic() > deadline:
                raise FedmarketError(
                    f"only {len(ids)} of {expected} nodes connected within {wait:.0f} s",
                    hint="start the nodes first (`fedmarket node ...`) and check their logs",
                )
            time.sleep(1.0)

    def _hello(self, node_ids: list[int]) -> None:
        nonces = {n: identity.challenge() for n in node_ids}
        messages = [
            Message(
                records.pack({"challenge": nonces[n]}), dst_node_id=n, message_type="query.hello"
            )
            for n in node_ids
        ]
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            n = reply.metadata.src_node_id
            party = f"node {n}"
            try:
                if reply.has_error():
                    raise UntrustedInputError(f"failed: {reply.error.reason}", party=party)
                fields, _ = records.unpack(reply.content, party=party)
                address = identity.recover(
                    self.run_id, n, nonces[n], str(fields.get("signature", "")), party=party
                )
                if address.lower() != str(fields.get("address", "")).lower():
                    raise UntrustedInputError(
                        "signature is not from the address it claims", party=party
                    )
                self.peers[address.lower()] = Peer(
                    n, str(fields.get("role")), str(fields.get("name")), address
                )
            except UntrustedInputError as exc:
                self.note(f"identity: {exc}")

    def ask(
        self,
        addresses: list[str],
        action: str,
        *,
        fields: dict[str, Any] | None = None,
        frames: list[bytes] | None = None,
        per_node: dict[str, tuple[dict[str, Any], list[bytes]]] | None = None,
        timeout: float | None = None,
    ) -> dict[str, tuple[dict[str, Any], list[bytes]]]:
        """Send ``action`` to the peers at ``addresses``; their good replies by address.

        A node that is gone, times out, or answers with an error is logged and left out.
        """
        self.discover(0, 0)  # pick up restarted nodes under their new ids
        messages, who = [], {}
        for address in addresses:
            peer = self.peers.get(address.lower())
            if peer is None:
                self.note(f"{action}: no node for {address}")
                continue
            f, fr = per_node[address] if per_node is not None else (fields or {}, frames or [])
            messages.append(
                Message(
                    records.pack(f, fr), dst_node_id=peer.node_id, message_type=f"query.{action}"
                )
            )
            who[peer.node_id] = peer
            self.sent[peer.name] += sum(map(len, fr))
        out: dict[str, tuple[dict[str, Any], list[bytes]]] = {}
        replies = self.grid.send_and_receive(messages, timeout=timeout or self.timeout)
        for reply in replies:
            peer = who.get(reply.metadata.src_node_id)
            if peer is None:
                continue
            party = f"{peer.role} {peer.name}"
            try:
                if reply.has_error():
                    raise UntrustedInputError(f"failed: {reply.error.reason}", party=party)
                got = records.unpack(reply.content, party=party)
            except UntrustedInputError as exc:
                self.note(f"{action}: {exc}")
                continue
            if "error" in got[0]:
                self.note(f"{action}: {party}: {got[0]['error']}")
                continue
            self.received[peer.name] += sum(map(len, got[1]))
            out[peer.address] = got
        for peer in who.values():
            if peer.address not in out and not any(peer.name in e for e in self.events[-1:]):
                self.note(f"{action}: no answer from {peer.role} {peer.name}")
        return out


def _chain(run_config: dict[str, Any]) -> tuple[Chain, Any]:
    from fedmarket.deploy_cli import load_key

    pw = run_config.get("password-file")
    account = load_key(Path(str(run_config["key"])), Path(str(pw)) if pw else None)
    return rpc(str(run_config["chain"]), [account.key.hex()]), account


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = dict(context.run_config)
    out = Path(str(cfg["out"]))
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"status": "failed"}
    try:
        result = run(grid, context.run_id, cfg)
    except FedmarketError as exc:
        result["error"] = str(exc)
        raise
    finally:
        (out / "result.json").write_text(json.dumps(result, indent=1, default=str))


def run(grid: Grid, run_id: int, cfg: dict[str, Any]) -> dict[str, Any]:
    from fedmarket.run import _rules, _wait_until

    spec_file = load_spec(Path(str(cfg["spec"])))
    spec, run_section = spec_file.spec, spec_file.run
    if run_section is None:
        raise FedmarketError("the spec needs a [run] section naming the validation data")
    chain, account = _chain(cfg)
    market = MarketClient.at(chain.w3, str(cfg["market"]), chain.accounts[0])
    token = TokenClient.at(chain.w3, market.token(), chain.accounts[0])
    data = load_dataset(run_section.dataset, label_column=spec.labels.column)
    _, val = split_validation(data, run_section.validation_fraction, seed=run_section.seed)
    session = Session(grid, run_id, float(cfg.get("timeout", 300)))
    requester = Requester(
        "requester",
        account,
        market,
        token,
        spec=spec,
        X_val=val.X,
        y_val=val.y,
        rules=_rules(spec_file),
        seed=run_section.seed,
        wait_until=lambda ts: _wait_until(chain, ts),
    )
    start = time.perf_counter()
    session.discover(int(cfg.get("nodes", 1)), float(cfg.get("wait", 120)))
    everyone = [p.address for p in session.peers.values()]
    announcement = requester.announce()
    session.ask(everyone, "announce", frames=[encode(announcement)])
    assert requester.task_id is not None
    _wait_until(chain, market.tasks(requester.task_id).bidding_deadline + 1)
    requester.resolve()
    processors, owners = sorted(requester.processors), sorted(requester.owners)

    keys = [
        records.one(fr, ChannelKey, party=f"processor {a}")
        for a, (f, fr) in session.ask(processors, "channel_key").items()
        if f.get("status") == "won"
    ]
    for address, (f, fr) in session.ask(owners, "prepare").items():
        if f.get("status") == "won":
            try:
                requester.on_manifest(records.one(fr, DataManifest, party=f"owner {address}"))
            except UntrustedInputError as exc:
                session.note(f"manifest: {exc}")
    assignment = requester.assign()
    manifests = [encode(m) for m in requester.manifests.values()]
    session.ask(processors, "setup", frames=[encode(assignment), *manifests])
    sealed: dict[str, list[bytes]] = {p: [] for p in processors}
    delivering = [a for a in owners if a.lower() in requester.manifests]
    for address, (f, fr) in session.ask(
        delivering, "seal", frames=[encode(assignment), *[encode(k) for k in keys]]
    ).items():
        targets = str(f.get("processors", "")).split(",") if fr else []
        if len(targets) != len(fr):
            session.note(f"seal: owner {address} sent {len(fr)} blocks for {len(targets)} targets")
            continue
        for target, frame in zip(targets, fr, strict=True):
            if target in sealed:
                sealed[target].append(frame)
    session.ask(processors, "blocks", per_node={p: ({}, frames) for p, frames in sealed.items()})

    def arbitrate(ref: BlockRef, model: EncryptedModel) -> bytes | None:
        answer = session.ask(
            [ref.owner], "recompute", fields={"index": ref.index}, frames=[encode(model)]
        ).get(ref.owner)
        if answer is None:
            return None
        return records.one(answer[1], EpochResult, party=f"owner {ref.owner}").payloads[0]

    requester.arbiter = arbitrate
    stop_reason = ""
    epoch_seconds: list[float] = []
    sent_before, received_before = Counter(session.sent), Counter(session.received)
    while True:
        t0 = time.perf_counter()
        model = requester.model_message()
        active = sorted(requester.active)
        for address, (_, fr) in session.ask(active, "model", frames=[encode(model)]).items():
            try:
                requester.on_result(records.one(fr, EpochResult, party=f"processor {address}"))
            except UntrustedInputError as exc:
                session.note(f"epoch {requester.epoch}: {exc}")
        outcome = requester.close_epoch()
        epoch_seconds.append(time.perf_counter() - t0)
        log.warning("epoch %d: metric %.4f", outcome.epoch, outcome.metric)
        if outcome.finished:
            stop_reason = outcome.stop_reason or ""
            break
    epoch_sent = session.sent - sent_before
    epoch_received = session.received - received_before
    requester.settle()
    session.ask(everyone, "settle")  # losers take their stakes back too
    balances = {p.name: token.balance_of(p.address) for p in session.peers.values()}
    balances |= {"requester": token.balance_of(requester.address)}
    # what stays in the market: owed to nodes that never came to settle, and dust
    balances["market"] = token.balance_of(market.address)
    unsettled = {
        p.name: market.owed(requester.task_id, p.address) + market.claimable(p.address)
        for p in session.peers.values()
    }
    return {
        "status": "finished",
        "task_id": requester.task_id,
        "stop_reason": stop_reason,
        "seconds": time.perf_counter() - start,
        "epoch_seconds": epoch_seconds,
        "epochs": [
            {
                "epoch": o.epoch,
                "metric": o.metric,
                "on_time": [
                    session.peers[a.lower()].name for a in o.on_time if a.lower() in session.peers
                ],
                "missing": [
                    session.peers[a.lower()].name for a in o.missing if a.lower() in session.peers
                ],
                "flagged": [
                    session.peers[a.lower()].name for a in o.flagged if a.lower() in session.peers
                ],
                "evidence": [e.to_json() for e in o.evidence],
            }
            for o in requester.outcomes
        ],
        "weights": requester.optimizer.weights.tolist() if requester.optimizer else None,
        "balances": balances,
        "unsettled": {k: v for k, v in unsettled.items() if v},
        "dust": market.dust(requester.task_id),
        "bytes_sent": dict(session.sent),
        "epoch_bytes_sent": dict(epoch_sent),  # requester -> node, during the epochs
        "epoch_bytes_received": dict(epoch_received),  # node -> requester
        "bytes_received": dict(session.received),
        "events": session.events,
        "winners": {
            "processors": [
                session.peers[a.lower()].name for a in processors if a.lower() in session.peers
            ],
            "owners": [session.peers[a.lower()].name for a in owners if a.lower() in session.peers],
        },
    }
