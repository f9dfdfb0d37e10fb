"""The ServerApp: the requester, driving the protocol over Flower and a real chain.

Run config (``fedmarket request`` writes it): ``spec`` (task TOML; its ``[run]`` section
names the data set the requester's validation split comes from), ``chain`` (JSON-RPC URL),
``market`` (address), ``key`` / ``password-file`` (the requester's keystore), ``nodes`` (how
many SuperNodes to wait for), ``out`` (where the report, the model and ``result.json`` go),
``timeout`` (seconds a round waits for replies), ``wait`` (seconds to wait for the nodes).

The protocol is the one driver every runtime runs (``fedmarket.protocol.driver``); this module
only carries its envelopes as Flower messages (``FlowerTransport``) and writes what
``fedmarket run`` writes: report.json, report.md, the plots and model.npz, plus result.json.
The requester learns each node's chain account from a signed challenge (``identity``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from fedmarket.chain.backends import Chain, rpc
from fedmarket.chain.client import MarketClient, TokenClient
from fedmarket.errors import FedmarketError, UntrustedInputError
from fedmarket.parties import DataSource
from fedmarket.protocol.driver import Driver
from fedmarket.protocol.transport import Envelope, Peer, Traffic, Transport
from fedmarket.report.build import Member, balances, build_report, write_results
from fedmarket.roles.requester import Requester
from fedmarket.run import stopping_rules, wait_until
from fedmarket.runtime.flower import identity, records
from fedmarket.runtime.flower.clientapp import SILENT
from fedmarket.spec import load_spec

app = ServerApp()
log = logging.getLogger("fedmarket.requester")


@dataclass
class _Node:
    node_id: int
    peer: Peer


class FlowerTransport(Transport):
    """The protocol's transport over a Flower ``Grid``: one message per party and action."""

    def __init__(self, grid: Grid, run_id: int, timeout: float) -> None:
        self.grid = grid
        self.run_id = run_id
        self.timeout = timeout
        self.nodes: dict[str, _Node] = {}  # address (lower) -> node
        self.traffic = Traffic()
        self.problems: list[str] = []

    def _problem(self, text: str) -> None:
        log.warning(text)
        self.problems.append(text)

    def discover(self, expected: int, wait: float) -> None:
        """Wait for ``expected`` nodes, and learn (again, after restarts) who each one is."""
        deadline = time.monotonic() + wait
        while True:
            ids = set(self.grid.get_node_ids())
            known = {n.node_id for n in self.nodes.values()}
            if ids - known:
                self._hello(sorted(ids - known))
            if len([n for n in self.nodes.values() if n.node_id in ids]) >= expected:
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
                records.pack(Envelope({"challenge": nonces[n]})),
                dst_node_id=n,
                message_type="query.hello",
            )
            for n in node_ids
        ]
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            n = reply.metadata.src_node_id
            party = f"node {n}"
            try:
                if reply.has_error():
                    raise UntrustedInputError(f"failed: {reply.error.reason}", party=party)
                fields = records.unpack(reply.content, party=party).fields
                address = identity.recover(
                    self.run_id, n, nonces[n], str(fields.get("signature", "")), party=party
                )
                if address.lower() != str(fields.get("address", "")).lower():
                    raise UntrustedInputError(
                        "signature is not from the address it claims", party=party
                    )
                roles = tuple(str(fields.get("role", "")).split("+"))
                self.nodes[address.lower()] = _Node(
                    n, Peer(address, str(fields.get("name", address))[:64], roles)
                )
            except UntrustedInputError as exc:
                self._problem(f"identity: {exc}")

    def peers(self) -> list[Peer]:
        self.discover(0, 0)
        return [n.peer for n in self.nodes.values()]

    def ask(
        self,
        action: str,
        requests: Mapping[str, Envelope],
        *,
        timeout: float | None = None,
    ) -> dict[str, Envelope]:
        self.discover(0, 0)  # pick up restarted nodes under their new ids
        messages, who = [], {}
        for address, request in requests.items():
            node = self.nodes.get(address.lower())
            if node is None:
                self._problem(f"{action}: no node for {address}")
                continue
            messages.append(
                Message(records.pack(request), dst_node_id=node.node_id,
                        message_type=f"query.{action}")
            )  # fmt: skip
            who[node.node_id] = (address, node.peer)
            self.traffic.sent["requester"] += request.size
            self.traffic.received[node.peer.name] += request.size
            self.traffic.messages[action] += 1
        out: dict[str, Envelope] = {}
        replies = self.grid.send_and_receive(messages, timeout=timeout or self.timeout)
        for reply in replies:
            found = who.get(reply.metadata.src_node_id)
            if found is None:
                continue
            address, peer = found
            party = f"{'+'.join(peer.roles)} {peer.name}"
            try:
                if reply.has_error():
                    raise UntrustedInputError(f"failed: {reply.error.reason}", party=party)
                envelope = records.unpack(reply.content, party=party)
            except UntrustedInputError as exc:
                self._problem(f"{action}: {exc}")
                continue
            self.traffic.sent[peer.name] += envelope.size
            self.traffic.received["requester"] += envelope.size
            if envelope.fields.get(SILENT):
                continue
            if envelope.problem is not None:
                self._problem(f"{action}: {party}: {envelope.problem}")
                continue
            out[address] = envelope
        for address, peer in who.values():
            if address not in out and not any(peer.name in p for p in self.problems[-1:]):
                self._problem(f"{action}: no answer from {peer.name}")
        return out


def _chain(run_config: Mapping[str, Any]) -> tuple[Chain, Any]:
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


def run(grid: Grid, run_id: int, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Play the task over the federation; write the report and the model; return a summary."""
    spec_path = Path(str(cfg["spec"]))
    spec_file = load_spec(spec_path)
    spec, run_section = spec_file.spec, spec_file.run
    if run_section is None:
        raise FedmarketError("the spec needs a [run] section naming the validation data")
    out = Path(str(cfg["out"]))
    chain, account = _chain(cfg)
    market = MarketClient.at(chain.w3, str(cfg["market"]), chain.accounts[0])
    token = TokenClient.at(chain.w3, market.token(), chain.accounts[0])
    source = DataSource(
        run_section.dataset,
        spec.labels.column,
        run_section.validation_fraction,
        run_section.seed,
        run_section.alpha,
        spec_path.parent,
        run_section.test_fraction,
    )
    _, val = source.load()
    transport = FlowerTransport(grid, run_id, float(cfg.get("timeout", 300)))
    transport.discover(int(cfg.get("nodes", 1)), float(cfg.get("wait", 120)))
    requester = Requester(
        "requester",
        account,
        market,
        token,
        spec=spec,
        X_val=val.X,
        y_val=val.y,
        rules=stopping_rules(spec_file),
        seed=run_section.seed,
        self_processing=run_section.scenario == "own-compute",
        base=spec_path.parent,
    )
    start_time = time.perf_counter()
    peers = transport.peers()
    members = [Member("requester", ("requester",), requester.address)]
    for peer in peers:
        if peer.address.lower() == requester.address.lower():  # own data: the requester's node
            members[0] = Member("requester", ("requester", *peer.roles), requester.address)
        else:
            members.append(Member(peer.name, peer.roles, peer.address))
    addresses = [m.address for m in members]
    start = balances(token, addresses)
    driver = Driver(
        requester,
        transport,
        wait_until=lambda ts: wait_until(chain, ts),
        progress=lambda event, data: log.warning("%s %s", event, data),
    )
    task_run = driver.run()
    end = balances(token, addresses)
    report = build_report(
        requester=requester,
        run=task_run,
        members=members,
        traffic=transport.traffic,
        start=start,
        end=end,
        chain=str(cfg["chain"]),
        gas=market.gas_log.entries,
    )
    write_results(out, report, requester)
    task = requester.task_id or 0
    name_of = {m.address.lower(): m.name for m in members}

    def names(addresses: list[str]) -> list[str]:
        return [name_of.get(a.lower(), a) for a in addresses]

    return {
        "status": "finished",
        "task_id": requester.task_id,
        "stop_reason": task_run.stop_reason,
        "seconds": time.perf_counter() - start_time,
        "epoch_seconds": [o.seconds for o in requester.outcomes],
        "epochs": [
            {
                "epoch": o.epoch,
                "metric": o.metric,
                "on_time": names(o.on_time),
                "late": names(o.late),
                "missing": names(o.missing),
                "flagged": names(o.flagged),
                "not_received": names(o.not_received),
                "evidence": [e.to_json() for e in o.evidence],
            }
            for o in requester.outcomes
        ],
        "balances": {m.name: end[m.address.lower()] for m in members}
        | {"market": token.balance_of(market.address)},
        "unsettled": {
            m.name: owed
            for m in members
            if (owed := market.owed(task, m.address) + market.claimable(m.address))
        },
        "dust": market.dust(task),
        "bytes_sent": dict(transport.traffic.received),  # requester -> node
        "bytes_received": dict(transport.traffic.sent),  # node -> requester
        "epoch_bytes_sent": task_run.epoch_sent,
        "epoch_bytes_received": task_run.epoch_received,
        "events": task_run.notes,
        "winners": {role: names(a) for role, a in task_run.winners.items()},
    }
