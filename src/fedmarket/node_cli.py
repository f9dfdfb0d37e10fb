"""``fedmarket node`` and ``fedmarket request``: one party per process, across machines.

``node`` runs a Flower SuperNode whose ClientApp plays a data owner or a processor with the
given key (``fedmarket.runtime.flower.node``); ``request`` submits the requester's ServerApp
to a SuperLink and waits for the task to end. See docs/deploy.md.
"""

from __future__ import annotations

import contextlib
import json
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
            "no TLS certificate given",
            hint="pass --root-certificates CA.crt (`make certs` makes a test CA), or "
            "--insecure on a trusted loopback network only",
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
    capacity: int = typer.Option(0, help="processor: points per epoch offered"),
    price: int = typer.Option(0, help="price per point (per epoch for processors), base units"),
    workers: int = typer.Option(2, help="processor: worker processes"),
    processing_price: int = typer.Option(
        0, help="owner+processor: price per point per epoch for processing your own data"
    ),
    attack: str = typer.Option("", help="simulated misbehaviour, for tests (docs/integrity.md)"),
    insecure: bool = typer.Option(False, help="No TLS (loopback tests only)."),
    root_certificates: Path | None = typer.Option(None, help="CA certificate of the SuperLink."),
    port: int = typer.Option(9094, help="Local port of this SuperNode's ClientApp API."),
    watch_seconds: float = typer.Option(
        30.0, help="How often to check the chain for a requester that timed out."
    ),
) -> None:
    """Serve as a data owner or a processor until stopped (Ctrl-C).

    Beside the SuperNode it watches the chain: if the requester vanishes (its deadline plus
    the grace period passes), the node claims the timeout and collects what it is owed.
    """
    from fedmarket.deploy_cli import load_key
    from fedmarket.runtime.flower.loopback import flower_env, node_config

    if role not in ("owner", "processor", "owner+processor"):
        raise ConfigError(f"--role must be owner, processor or owner+processor, got {role!r}")
    if "owner" in role and (not data or points <= 0):
        raise ConfigError("an owner needs --data and --points > 0")
    if role == "processor" and capacity <= 0:
        raise ConfigError("a processor needs --capacity > 0")
    _security(insecure, root_certificates)
    account = load_key(key, password_file)  # fails here, clearly, on a wrong password
    options: dict[str, Any] = {
        "role": role,
        "name": name or role,
        "key": str(key.resolve()),
        "chain": chain,
        "market": market,
        "state": str(state.resolve()),
        "price": price,
    }
    if password_file is not None:
        options["password-file"] = str(password_file.resolve())
    if "owner" in role:
        options |= {"data": data, "label-column": label_column, "shard": shard,
                    "split": split, "seed": seed, "points": points}  # fmt: skip
    if "processor" in role:
        options |= {"capacity": capacity or points, "workers": workers}
    if role == "owner+processor":
        if processing_price <= 0:
            raise ConfigError("owner+processor needs --processing-price > 0")
        options["processing-price"] = processing_price
    if attack:
        options["attack"] = attack
    security = ["--insecure"] if insecure else ["--root-certificates", str(root_certificates)]
    args = ["flower-supernode", *security, "--superlink", superlink, "--port", str(port)]
    args += ["--node-config", node_config(options)]
    typer.echo(f"{role} {account.address}: SuperNode for {superlink}, state in {state}")
    home = state.resolve().parent / f".flwr-{state.stem}"
    proc = subprocess.Popen(args, env=flower_env(home))

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the SuperNode too, not just this wrapper

    signal.signal(signal.SIGTERM, on_term)
    try:
        while proc.poll() is None:
            _watch(options)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=watch_seconds)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=15)
    if proc.returncode not in (0, -15, None):
        raise ConfigError(
            f"the SuperNode exited with code {proc.returncode}",
            hint="check --superlink and the TLS options (its log is above)",
        )


def _watch(options: dict[str, Any]) -> None:
    from fedmarket.errors import FedmarketError
    from fedmarket.runtime.flower.node import Node, NodeConfig

    try:
        node = Node(NodeConfig.parse(options))
        try:
            done = node.watch()
        finally:
            node.close()
    except FedmarketError as exc:
        typer.echo(f"watch: {exc}", err=True)
        return
    if done:
        typer.echo(done)


def request(
    task: Path = typer.Argument(..., help="The task spec (TOML)."),
    chain: str = typer.Option(..., help="JSON-RPC URL of the Ethereum node."),
    market: str = typer.Option(..., help="The market contract's address (`fedmarket chain up`)."),
    key: Path = typer.Option(..., help="The requester's keystore."),
    superlink: str = typer.Option("127.0.0.1:8000", help="The SuperLink's HOST:PORT."),
    password_file: Path | None = typer.Option(None, help="First line: the keystore password."),
    nodes: int = typer.Option(1, help="How many SuperNodes to wait for."),
    out: Path = typer.Option(Path("runs/request"), help="Where result.json goes."),
    timeout: float = typer.Option(300.0, help="Seconds a round waits for a node's reply."),
    insecure: bool = typer.Option(False, help="No TLS (loopback tests only)."),
    root_certificates: Path | None = typer.Option(None, help="CA certificate of the SuperLink."),
) -> None:
    """Announce TASK, run it across the federation's nodes, settle; print the result."""
    from fedmarket.deploy_cli import load_key
    from fedmarket.runtime.flower.loopback import APP, flower_env

    _security(insecure, root_certificates)
    if not task.is_file():
        raise ConfigError(f"task spec {task} does not exist")
    load_key(key, password_file)  # a wrong password fails here, not inside the ServerApp
    home = out.resolve() / ".flwr-cli"
    home.mkdir(parents=True, exist_ok=True)
    security = (
        f'root-certificates = "{root_certificates.resolve()}"'
        if root_certificates is not None
        else "insecure = true"
    )
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
        "out": str(out.resolve()),
        "timeout": timeout,
    }
    if password_file is not None:
        config["password-file"] = str(password_file.resolve())
    result_file = out / "result.json"
    result_file.unlink(missing_ok=True)
    run_config = " ".join(f"{k}={json.dumps(v)}" for k, v in config.items())
    done = subprocess.run(
        ["flwr", "run", str(APP), "market", "--run-config", run_config], env=flower_env(home)
    )
    if done.returncode != 0:
        raise ConfigError(
            "the SuperLink did not accept the run", hint="check --superlink and the TLS options"
        )
    typer.echo("submitted; waiting for the requester to finish ...")
    while not result_file.exists():
        time.sleep(2.0)
    result = json.loads(result_file.read_text())
    if result.get("status") != "finished":
        raise ConfigError(f"the task failed: {result.get('error', 'see the SuperLink log')}")
    for e in result["epochs"]:
        typer.echo(f"epoch {e['epoch']}: metric {e['metric']:.4f}, missing {e['missing']}, "
                   f"flagged {e['flagged']}")  # fmt: skip
    typer.echo(f"done: {result['stop_reason']}; result in {result_file}")


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


def register(app: typer.Typer, chain_app: typer.Typer) -> None:
    app.command("node")(node)
    app.command("request")(request)
    chain_app.command("deploy")(chain_deploy)
