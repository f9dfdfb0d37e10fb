"""``fedmarket superlink``, ``node`` and ``request``: one party per process, across machines.

``superlink`` runs Flower's SuperLink, gated to fedmarket's app (``runtime.flower.gate``);
``node`` plays a data owner or a processor with the given key, in one long-lived process that
speaks the SuperLink's Fleet API (``runtime.flower.serve``, ``runtime.flower.node``);
``request`` submits the requester's ServerApp to the SuperLink on this machine and prints the
task's progress until it ends. See docs/deploy.md.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import typer

from fedmarket.errors import ConfigError


def _security(insecure: bool, root_certificates: Path | None) -> None:
    if insecure and root_certificates is not None:
        raise ConfigError("choose --insecure or --root-certificates, not both")
    if not insecure and root_certificates is None:
        raise ConfigError(
            "no TLS certificate given: pass --root-certificates CA.crt (`make certs` makes a "
            "test CA), or --insecure on a trusted loopback network only"
        )
    if root_certificates is not None and not root_certificates.is_file():
        raise ConfigError(f"certificate file {root_certificates} does not exist")


def node(
    role: str = typer.Option(
        ..., help="owner, processor, or owner+processor (own-compute: process your own data)"
    ),
    key: Path = typer.Option(..., help="This node's keystore (`fedmarket keys new`)."),
    superlink: str = typer.Option(..., help="The SuperLink's HOST:PORT."),
    chain: str = typer.Option(..., help="JSON-RPC URL of the Ethereum node."),
    market: str = typer.Option(
        ..., help="The market contract to take tasks on (the only one this node trusts)."
    ),
    password_file: Path | None = typer.Option(None, help="First line: the keystore password."),
    state: Path = typer.Option(Path("node-state.sqlite"), help="Where the node keeps its state."),
    name: str = typer.Option("", help="A name for logs and reports (default: the role)."),
    data: str = typer.Option("", help="owner: the data set, e.g. csv:my.csv or sklearn:digits"),
    label_column: str = typer.Option("target", help="owner: the label column of a CSV"),
    shard: str = typer.Option("0/1", help="owner: take share i of k of the training split"),
    split: str = typer.Option("iid", help="owner: how shares are dealt: iid or dirichlet:ALPHA"),
    seed: int = typer.Option(0, help="owner: the seed the shares are dealt with"),
    points: int = typer.Option(0, help="owner: points offered"),
    max_epsilon: float = typer.Option(
        0.0,
        help="owner: sell only into tasks with differential privacy at this epsilon or less "
        "(docs/privacy.md); 0: any task",
    ),
    capacity: int = typer.Option(0, help="processor: points per epoch offered"),
    price: int = typer.Option(0, help="price per point (per epoch for processors), base units"),
    workers: int = typer.Option(2, help="processor: worker processes"),
    processing_price: int = typer.Option(
        0, help="owner+processor: price per point per epoch for processing your own data"
    ),
    attack: str = typer.Option("", help="simulated misbehaviour, for tests (docs/integrity.md)"),
    insecure: bool = typer.Option(False, help="No TLS (loopback tests only)."),
    root_certificates: Path | None = typer.Option(None, help="CA certificate of the SuperLink."),
    allow_app: list[str] = typer.Option(
        [], help="Also answer runs of this FAB (its SHA-256); default: fedmarket's app only."
    ),
    watch_seconds: float = typer.Option(
        30.0, help="How often to check the chain for a requester that timed out."
    ),
    idle_poll: float = typer.Option(
        1.0, help="Seconds between polls of the SuperLink when nothing is going on."
    ),
    connect_timeout: float = typer.Option(
        30.0, help="Seconds to wait for the SuperLink at start before giving up."
    ),
    port: int | None = typer.Option(None, hidden=True),
) -> None:
    """Serve as a data owner or a processor until stopped (Ctrl-C).

    One long-lived process: the keystore is decrypted once, and the node keeps its party warm
    across messages and tasks (state saved after every message, so a restarted node resumes).
    It runs no code from the SuperLink or the requester: only fedmarket's own handlers, for
    runs of fedmarket's app (others are refused and logged). Beside the messages it watches
    the chain: if the requester vanishes (its deadline plus the grace period passes), the node
    claims the timeout and collects what it is owed.
    """
    import logging
    import threading

    from fedmarket.deploy_cli import load_key
    from fedmarket.runtime.flower import compat
    from fedmarket.runtime.flower.node import NodeConfig, NodeWorker
    from fedmarket.runtime.flower.pin import AppPin
    from fedmarket.runtime.flower.serve import NodeProcess, PollPolicy, wait_for_superlink

    if port is not None:
        raise ConfigError("--port is gone (a fedmarket node opens no port): leave it out")
    if role not in ("owner", "processor", "owner+processor"):
        raise ConfigError(f"--role must be owner, processor or owner+processor, got {role!r}")
    if "owner" in role and (not data or points <= 0):
        raise ConfigError("an owner needs --data and --points > 0")
    if role == "processor" and capacity <= 0:
        raise ConfigError("a processor needs --capacity > 0")
    if role == "owner+processor" and processing_price <= 0:
        raise ConfigError("owner+processor needs --processing-price > 0")
    if not (math.isfinite(max_epsilon) and max_epsilon >= 0):
        raise ConfigError(f"--max-epsilon must be a number >= 0, got {max_epsilon}")
    if workers < 1 or workers > 64:
        raise ConfigError(f"--workers must be 1..64, got {workers}")
    _check_fabs(allow_app)
    _security(insecure, root_certificates)
    compat.check_version()
    _quiet_flower()
    options: dict[str, Any] = {
        "role": role, "name": name or role, "chain": chain, "market": market,
        "state": str(state.resolve()), "price": price,
    }  # fmt: skip
    if "owner" in role:
        options |= {"data": data, "label-column": label_column, "shard": shard,
                    "split": split, "seed": seed, "points": points}  # fmt: skip
        if max_epsilon:
            options["max-epsilon"] = max_epsilon
    if "processor" in role:
        options |= {"capacity": capacity or points, "workers": workers}
    if role == "owner+processor":
        options["processing-price"] = processing_price
    if attack:
        options["attack"] = attack
    cfg = NodeConfig.parse(options)
    account = load_key(key, password_file)  # the only time the keystore is decrypted
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ca = str(root_certificates.resolve()) if root_certificates is not None else None
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        wait_for_superlink(superlink, ca, connect_timeout, stop)
        worker = NodeWorker(cfg, account)
        try:
            typer.echo(
                f"{role} {account.address}: node for {superlink}, state in {state}", err=True
            )
            NodeProcess(
                worker,
                superlink,
                root_certificates=ca,
                pin=AppPin.with_extra(allow_app),
                policy=PollPolicy(idle=idle_poll),
                watch_seconds=watch_seconds,
            ).serve(stop)
        finally:
            worker.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quiet_flower() -> None:
    """No telemetry or update checks from the flwr code this process runs."""
    from fedmarket.runtime.flower.loopback import QUIET

    for k, v in QUIET.items():
        os.environ.setdefault(k, v)


def request(
    task: Path = typer.Argument(..., help="The task spec (TOML)."),
    chain: str = typer.Option(..., help="JSON-RPC URL of the Ethereum node."),
    market: str = typer.Option(..., help="The market contract's address (`fedmarket chain up`)."),
    key: Path = typer.Option(..., help="The requester's keystore."),
    superlink: str = typer.Option(
        "127.0.0.1:8000", help="The SuperLink's HOST:PORT (this machine)."
    ),
    password_file: Path | None = typer.Option(None, help="First line: the keystore password."),
    nodes: int = typer.Option(1, help="How many nodes to wait for."),
    out: Path = typer.Option(
        Path("runs/request"), help="Where the report, the model and result.json go."
    ),
    timeout: float = typer.Option(300.0, help="Seconds a round waits for a node's reply."),
    wait: float = typer.Option(120.0, help="Seconds to wait for the nodes to connect."),
    insecure: bool = typer.Option(False, help="No TLS (loopback tests only)."),
    root_certificates: Path | None = typer.Option(None, help="CA certificate of the SuperLink."),
) -> None:
    """Announce TASK, run it across the federation's nodes, settle; print each epoch as it
    happens, and leave the report and the model in --out.

    Flower runs the requester (a ServerApp) on the SuperLink's machine, so run this there: it
    reads the key and the spec, and writes --out, on that machine's disk.
    """
    from fedmarket.deploy_cli import load_key
    from fedmarket.runtime.flower import compat
    from fedmarket.runtime.flower.gate import issue_ticket
    from fedmarket.runtime.flower.loopback import APP, flower_env
    from fedmarket.runtime.flower.serve import health

    _security(insecure, root_certificates)
    if not task.is_file():
        raise ConfigError(f"task spec {task} does not exist")
    if nodes < 1:
        raise ConfigError(f"--nodes must be at least 1, got {nodes}")
    if timeout <= 0 or wait < 0:
        raise ConfigError("--timeout must be positive and --wait not negative")
    _on_this_machine(superlink)
    compat.check_version()
    load_key(key, password_file)  # a wrong password fails here, not inside the ServerApp
    ca = str(root_certificates.resolve()) if root_certificates is not None else None
    problem = health(superlink, ca)
    if problem is not None:
        raise ConfigError(
            f"no SuperLink at {superlink} ({problem}): start it first, or check --superlink "
            "and the TLS options"
        )
    out = out.resolve()
    home = out / ".flwr-cli"
    home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{ca}"' if ca is not None else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "market"\n\n[superlink.market]\naddress = "{superlink}"\n'
        f"{security}\n"
    )
    config: dict[str, Any] = {
        "spec": str(task.resolve()),
        "chain": chain,
        "market": market,
        "key": str(key.resolve()),
        "nodes": nodes,
        "out": str(out),
        "timeout": timeout,
        "wait": wait,
    }
    if password_file is not None:
        config["password-file"] = str(password_file.resolve())
    result_file = out / "result.json"
    for stale in (result_file, out / "progress.jsonl"):
        stale.unlink(missing_ok=True)
    config["ticket"] = issue_ticket(out)  # the ServerApp runs only with it (gate.py)
    run_config = " ".join(f"{k}={json.dumps(v)}" for k, v in config.items())
    env = flower_env(home)
    done = subprocess.run(
        ["flwr", "run", str(APP), "market", "--run-config", run_config, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
    )
    run_id = _run_id(done.stdout)
    if done.returncode != 0 or run_id is None:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(
            f"the SuperLink did not accept the run ({why[-1] if why else 'no reason given'}): "
            "check --superlink and the TLS options"
        )
    typer.echo(f"run {run_id} submitted; waiting for {nodes} node(s) ...")
    result = _follow(out, run_id, env)
    if result.get("status") != "finished":
        raise ConfigError(f"the task failed: {result.get('error', 'see the SuperLink log')}")
    typer.echo(f"done: {result['stop_reason']}")
    typer.echo(f"report: {out / 'report.md'}   model: {out / 'model.npz'}   result: {result_file}")


def _on_this_machine(superlink: str) -> None:
    """The ServerApp runs where the SuperLink runs, and reads and writes this machine's files:
    refuse a SuperLink elsewhere rather than wait for a result that lands on another disk."""
    import socket

    host = superlink.rsplit(":", 1)[0].strip("[]") or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        raise ConfigError(f"cannot resolve the SuperLink's host {host!r}") from None
    for family, _, _, _, address in infos:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((address[0], 0))  # binds only to an address of this machine
                return
            except OSError:
                continue
    raise ConfigError(
        f"the SuperLink {superlink} is not on this machine: Flower runs the requester where "
        "the SuperLink runs, so run `fedmarket request` there (docs/deploy.md)"
    )


def _run_id(stdout: str) -> int | None:
    try:
        data = json.loads(stdout)
        return int(data["run-id"])
    except (ValueError, KeyError, TypeError):
        return None


def _follow(out: Path, run_id: int, env: dict[str, str]) -> dict[str, Any]:
    """Print the requester's progress as it happens; its result.json once written."""
    progress, result_file = out / "progress.jsonl", out / "result.json"
    seen, last_news = 0, time.monotonic()
    while True:
        if progress.exists():
            lines = progress.read_text().splitlines()
            for line in lines[seen:]:
                _show(line)
            if len(lines) > seen:
                seen, last_news = len(lines), time.monotonic()
        if result_file.exists():
            for line in progress.read_text().splitlines()[seen:] if progress.exists() else []:
                _show(line)
            result: dict[str, Any] = json.loads(result_file.read_text())
            return result
        if time.monotonic() - last_news > 30:  # silent a while: is the run still alive?
            last_news = time.monotonic()
            status = _run_status(run_id, env)
            if status.startswith("finished") and not result_file.exists():
                time.sleep(1.0)
                if not result_file.exists():
                    return {"status": "failed", "error": f"the run ended ({status}) early"}
        time.sleep(0.2)


def _show(line: str) -> None:
    try:
        event = json.loads(line)
    except ValueError:
        return
    kind = event.get("event")
    if kind == "phase":
        typer.echo(f"> {event.get('phase')}")
    elif kind == "task":
        typer.echo(f"  task {event.get('task')} on market {event.get('market')}, "
                   f"{event.get('bids')} bid(s)")  # fmt: skip
    elif kind == "epoch":
        metric = event.get("metric")
        shown = f"{metric:.4f}" if isinstance(metric, float) else str(metric)
        typer.echo(f"  epoch {event.get('epoch')}: validation {shown}")
    elif kind == "nodes":
        typer.echo(f"  {event.get('nodes')} node(s) identified")


def _run_status(run_id: int, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["flwr", "ls", "market", "--run-id", str(run_id), "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
    )
    try:
        runs = json.loads(done.stdout).get("runs", [])
        return str(runs[0].get("status", "")) if runs else ""
    except (ValueError, AttributeError):
        return ""


def chain_deploy(
    chain: str = typer.Option(..., help="JSON-RPC URL, e.g. a Sepolia endpoint."),
    key: Path = typer.Option(..., help="The deployer's keystore (it pays the gas)."),
    password_file: Path | None = typer.Option(None, help="First line: the keystore password."),
    token: str = typer.Option("", help="An existing ERC-20 to pay in (default: a new DevToken)."),
    grace: int = typer.Option(86_400, help="Seconds after a deadline before timeouts apply."),
    out: Path | None = typer.Option(None, help="Write the addresses here as JSON."),
) -> None:
    """Deploy the market (and a DevToken unless --token) on any chain; print the addresses."""
    from fedmarket.chain.backends import rpc
    from fedmarket.chain.client import deploy
    from fedmarket.deploy_cli import load_key

    account = load_key(key, password_file)
    c = rpc(chain, [account.key.hex()])
    market, tok = deploy(c.w3, c.accounts[0], grace, token_address=token or None)
    info = {"chain": chain, "market": market.address, "token": tok.address, "chain_id": c.chain_id}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(info, indent=2) + "\n")
    typer.echo(json.dumps(info, indent=2))


def superlink(
    port: int = typer.Option(8000, min=1, max=65535, help="The port nodes and `flwr` reach."),
    host: str = typer.Option(
        "127.0.0.1", help="The address to listen on; 0.0.0.0 lets other machines' nodes in."
    ),
    home: Path = typer.Option(Path("runs/flwr/link"), help="The SuperLink's folder (FLWR_HOME)."),
    ssl_ca_certfile: Path | None = typer.Option(None, help="TLS: the CA certificate."),
    ssl_certfile: Path | None = typer.Option(None, help="TLS: this SuperLink's certificate."),
    ssl_keyfile: Path | None = typer.Option(None, help="TLS: its private key."),
    insecure: bool = typer.Option(False, help="No TLS (loopback tests only)."),
    allow_app: list[str] = typer.Option(
        [], help="Also run this FAB's ServerApp (its SHA-256); default: fedmarket's app only."
    ),
) -> None:
    """Run Flower's SuperLink for your tasks until stopped (Ctrl-C): flower-superlink, except
    that it runs the ServerApp of fedmarket's app only (anyone who reaches its port can submit
    a run; other apps are refused before anything in them is installed)."""
    from fedmarket.runtime.flower import compat
    from fedmarket.runtime.flower.gate import ALLOW_ENV
    from fedmarket.runtime.flower.loopback import superlink_command

    tls = [ssl_ca_certfile, ssl_certfile, ssl_keyfile]
    if insecure == any(f is not None for f in tls) or (not insecure and None in tls):
        raise ConfigError(
            "pass --ssl-ca-certfile, --ssl-certfile and --ssl-keyfile (`make certs` makes "
            "them), or --insecure on a trusted loopback network only"
        )
    for f in tls:
        if f is not None and not f.is_file():
            raise ConfigError(f"certificate file {f} does not exist")
    _check_fabs(allow_app)
    compat.check_version()
    security = ["--insecure"]
    if not insecure:
        security = [
            "--ssl-ca-certfile", str(ssl_ca_certfile), "--ssl-certfile", str(ssl_certfile),
            "--ssl-keyfile", str(ssl_keyfile),
        ]  # fmt: skip
    args, env = superlink_command(port, security, home.resolve(), host=host)
    env[ALLOW_ENV] = ",".join(allow_app)
    proc = subprocess.Popen(args, env=env)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # the terminal sent Ctrl-C to the SuperLink too
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code not in (0, -signal.SIGTERM, -signal.SIGINT, 130):
        raise ConfigError(
            f"the SuperLink exited with code {code}: is port {port} taken? (its log is above)"
        )


def _check_fabs(fabs: list[str]) -> None:
    for fab in fabs:
        if len(fab) != 64 or any(c not in "0123456789abcdefABCDEF" for c in fab):
            raise ConfigError(f"--allow-app takes a FAB's SHA-256 (64 hex digits), got {fab!r}")


def register(app: typer.Typer, chain_app: typer.Typer) -> None:
    app.command("superlink")(superlink)
    app.command("node")(node)
    app.command("request")(request)
    chain_app.command("deploy")(chain_deploy)
