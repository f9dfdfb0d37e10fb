"""The ServerApp: the requester, driving the protocol over Flower and a real chain.

Run config (``fedmarket request`` writes it): ``spec`` (task TOML; its ``[run]`` section
names the data set the requester's validation split comes from), ``chain`` (JSON-RPC URL),
``market`` (address), ``key`` / ``password-file`` (the requester's keystore), ``nodes`` (how
many nodes to wait for), ``out`` (where the report, the model, ``progress.jsonl`` and
``result.json`` go), ``timeout`` (seconds a round waits for replies), ``wait`` (seconds to
wait for the nodes). Flower runs a ServerApp on the SuperLink's machine, so these paths are
read and written there: the requester hosts the SuperLink (docs/deploy.md).

The protocol is the one driver every runtime runs (``fedmarket.protocol.driver``); this module
only carries its envelopes as Flower messages (``FlowerTransport``) and writes what
``fedmarket run`` writes, through the same code (``report.build.write_results``, the explorer's
``ProgressWriter``): model.npz, report.json, report.md, the plots, progress.json and spec.toml;
plus result.json, and one line per phase and epoch in progress.jsonl as they happen.
The requester learns each node's chain account from a signed challenge (``identity``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from fedmarket.backbone import feature_columns
from fedmarket.chain.backends import Chain, rpc
from fedmarket.chain.client import MarketClient, TokenClient
from fedmarket.errors import FedmarketError, UntrustedInputError
from fedmarket.explorer.runs import ProgressWriter
from fedmarket.parties import DataSource
from fedmarket.protocol.driver import Driver
from fedmarket.protocol.transport import Envelope, Peer, Traffic, Transport
from fedmarket.report.build import Member, balances, build_report, write_results
from fedmarket.roles.requester import Requester
from fedmarket.run import stopping_rules, wait_blocks, wait_until
from fedmarket.runtime.flower import compat, identity, records
from fedmarket.runtime.flower.gate import take_ticket
from fedmarket.spec import TaskSpec, load_spec

app = ServerApp()
log = logging.getLogger("fedmarket.requester")
PROGRESS, RESULT = "progress.jsonl", "result.json"
TTL_MARGIN = 300.0  # a message outlives its round by this much, then the SuperLink drops it
FIRST_POLL, MAX_POLL = 0.005, 0.05  # the requester's back-off while it waits for replies
# Every request costs the SuperLink a few ms of CPU, so the requester sleeps through most of
# a round it has seen before (this share of the last one), then polls with the back-off.
EXPECT_SHARE = 0.7
DISCOVER_EVERY = 5.0  # seconds: how often an ask looks for new (restarted) nodes


@dataclass
class _Node:
    node_id: int
    peer: Peer


class FlowerTransport(Transport):
    """The protocol's transport over a Flower ``Grid``: one message per party and action,
    pushed at once, the replies pulled with a short back-off until all are in or the round
    times out."""

    def __init__(self, grid: Grid, run_id: int, timeout: float) -> None:
        self.grid = grid
        self.run_id = run_id
        self.timeout = timeout
        self.nodes: dict[str, _Node] = {}  # address (lower) -> node
        self.traffic = Traffic()
        self.problems: list[str] = []
        # per action: (seconds to push, seconds until the last reply was in), for the bench
        self.timings: dict[str, list[tuple[float, float]]] = {}
        self._last_discover = -1e9
        self.requests: Counter[str] = Counter()  # SuperLink requests by kind (objects aside)
        # what ``records.unpack`` accepts on either side; the driver batches bulk steps under it
        self.max_bytes = records.MAX_MESSAGE_BYTES
        self.largest: dict[str, int] = {}  # per action, the largest envelope either way (bytes)

    def _problem(self, text: str) -> None:
        log.warning(text)
        self.problems.append(text)

    def exchange(self, messages: list[Message], timeout: float) -> dict[int, Message]:
        """Push ``messages``; the replies that came back within ``timeout``, by the index of
        the message each answers."""
        if not messages:
            return {}
        start = time.monotonic()
        index = {mid: i for i, mid in enumerate(self.grid.push_messages(messages)) if mid}
        self.requests["push"] += 1
        pushed = time.monotonic()
        kind = messages[0].metadata.message_type.removeprefix("query.")
        pending = set(index)
        replies: dict[int, Message] = {}
        deadline = time.monotonic() + timeout
        delay = FIRST_POLL
        before = [waited for _, waited in self.timings.get(kind, [])[-3:]]
        if before:
            time.sleep(min(EXPECT_SHARE * min(before), max(0.0, deadline - time.monotonic())))
        while pending:
            got = list(self.grid.pull_messages(pending))
            self.requests["poll"] += 1
            for reply in got:
                answered = reply.metadata.reply_to_message_id
                if answered in pending:
                    pending.discard(answered)
                    replies[index[answered]] = reply
            if not pending or time.monotonic() >= deadline:
                break
            if got:
                delay = FIRST_POLL
                continue
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(MAX_POLL, delay * 2)
        self.timings.setdefault(kind, []).append((pushed - start, time.monotonic() - pushed))
        return replies

    def _note_size(self, action: str, size: int) -> None:
        self.largest[action] = max(self.largest.get(action, 0), size)

    def _message(self, node_id: int, action: str, envelope: Envelope, timeout: float) -> Message:
        return Message(
            records.pack(envelope),
            dst_node_id=node_id,
            message_type=f"query.{action}",
            ttl=timeout + TTL_MARGIN,
        )

    def discover(self, expected: int, wait: float) -> None:
        """Wait for ``expected`` nodes, and learn (again, after restarts) who each one is."""
        deadline = time.monotonic() + wait
        while True:
            self._last_discover = time.monotonic()
            ids = set(self.grid.get_node_ids())
            self.requests["nodes"] += 1
            known = {n.node_id for n in self.nodes.values()}
            if ids - known:
                self._hello(sorted(ids - known))
            if len([n for n in self.nodes.values() if n.node_id in ids]) >= expected:
                return
            if time.monotonic() > deadline:
                found = len([n for n in self.nodes.values() if n.node_id in ids])
                why = f" ({'; '.join(self.problems[-3:])})" if self.problems else ""
                raise FedmarketError(
                    f"only {found} of {expected} nodes identified within {wait:.0f} s{why}: "
                    "start the nodes first (`fedmarket node ...`) and check their logs"
                )
            time.sleep(0.25)

    def _hello(self, node_ids: list[int]) -> None:
        nonces = {n: identity.challenge() for n in node_ids}
        messages = [
            self._message(n, "hello", Envelope({"challenge": nonces[n]}), self.timeout)
            for n in node_ids
        ]
        for i, reply in self.exchange(messages, self.timeout).items():
            n = node_ids[i]
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
        if time.monotonic() - self._last_discover > DISCOVER_EVERY:
            self.discover(0, 0)  # pick up restarted nodes under their new ids
        wait = timeout or self.timeout
        messages, who = [], []
        for address, request in requests.items():
            node = self.nodes.get(address.lower())
            if node is None:
                self._problem(f"{action}: no node for {address}")
                continue
            if request.size > self.max_bytes:  # the node would refuse it after the upload
                self._problem(
                    f"{action}: message of {request.size} bytes for {node.peer.name} exceeds "
                    f"the limit of {self.max_bytes}"
                )
                continue
            self._note_size(action, request.size)
            messages.append(self._message(node.node_id, action, request, wait))
            who.append((address, node.peer))
            self.traffic.sent["requester"] += request.size
            self.traffic.received[node.peer.name] += request.size
            self.traffic.messages[action] += 1
        out: dict[str, Envelope] = {}
        failed: set[str] = set()
        for i, reply in self.exchange(messages, wait).items():
            address, peer = who[i]
            party = f"{'+'.join(peer.roles)} {peer.name}"
            try:
                if reply.has_error():
                    raise UntrustedInputError(f"failed: {reply.error.reason}", party=party)
                envelope = records.unpack(reply.content, party=party)
            except UntrustedInputError as exc:
                self._problem(f"{action}: {exc}")
                failed.add(address)
                continue
            self._note_size(action, envelope.size)
            self.traffic.sent[peer.name] += envelope.size
            self.traffic.received["requester"] += envelope.size
            if envelope.fields.get(records.SILENT):
                continue
            if envelope.problem is not None:
                self._problem(f"{action}: {party}: {envelope.problem}")
                failed.add(address)
                continue
            out[address] = envelope
        for address, peer in who:
            if address not in out and address not in failed:
                self._problem(f"{action}: no answer from {peer.name}")
                self._last_discover = -1e9  # restarted under a new id? look next time
        return out


class Progress:
    """The driver's progress as JSON lines in ``out/progress.jsonl``, written as it happens
    (``fedmarket request`` prints them), and in the ServerApp's log; once the spec is read,
    also ``progress.json`` and ``spec.toml`` as ``fedmarket run`` keeps them (what
    ``fedmarket explorer --runs`` shows while the task trains)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._file: IO[str] = (out / PROGRESS).open("a")
        self._live: ProgressWriter | None = None

    def follow(self, spec_path: Path, spec: TaskSpec) -> None:
        self._live = ProgressWriter(
            self.out, "0x" + spec.spec_hash().hex(), spec.kind.metric, spec_source=spec_path
        )

    def __call__(self, event: str, data: dict[str, object]) -> None:
        log.warning("%s %s", event, data)
        line = {"event": event, **data, "time": round(time.time(), 3)}
        self._file.write(json.dumps(line, default=str) + "\n")
        self._file.flush()
        if self._live is not None:
            self._live(event, dict(data))

    def close(self) -> None:
        self._file.close()


def _chain(run_config: Mapping[str, Any]) -> tuple[Chain, Any]:
    from fedmarket.deploy_cli import load_key

    pw = run_config.get("password-file")
    account = load_key(Path(str(run_config["key"])), Path(str(pw)) if pw else None)
    return rpc(str(run_config["chain"]), [account.key.hex()]), account


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = dict(context.run_config)
    out = Path(str(cfg["out"]))
    take_ticket(out, str(cfg.get("ticket", "")))  # before anything is read or written
    (out / PROGRESS).unlink(missing_ok=True)
    result: dict[str, Any] = {"status": "failed"}
    progress = Progress(out)
    try:
        result = run(grid, context.run_id, cfg, progress)
    except FedmarketError as exc:
        result["error"] = str(exc)
        raise
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        progress.close()
        tmp = out / (RESULT + ".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        tmp.replace(out / RESULT)  # whoever waits for it never reads half a file


def run(
    grid: Grid,
    run_id: int,
    cfg: Mapping[str, Any],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Play the task over the federation; write the report and the model; return a summary."""
    compat.fast_object_pulls(
        max_bytes=records.MAX_MESSAGE_BYTES + (1 << 20), max_objects=records.MAX_OBJECTS
    )
    spec_path = Path(str(cfg["spec"]))
    spec_file = load_spec(spec_path)
    spec, run_section = spec_file.spec, spec_file.run
    if run_section is None:
        raise FedmarketError("the spec needs a [run] section naming the validation data")
    if progress is not None:
        progress.follow(spec_path, spec)
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
        feature_columns(spec),
    )
    _, val = source.load()
    transport = FlowerTransport(grid, run_id, float(cfg.get("timeout", 300)))
    transport.discover(int(cfg.get("nodes", 1)), float(cfg.get("wait", 120)))
    if progress is not None:
        progress("nodes", {"nodes": len(transport.nodes)})
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
        wait_blocks=lambda n: wait_blocks(chain, n),
        progress=progress or (lambda event, data: log.warning("%s %s", event, data)),
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
        "transport_seconds": transport.timings,
        "transport_requests": dict(transport.requests),
        "largest_message_bytes": transport.largest,
        "winners": {role: names(a) for role, a in task_run.winners.items()},
    }
