"""Start a whole federation as separate processes on this machine: a SuperLink, one
``fedmarket node`` per owner and processor, and a run of the requester's ServerApp. What the
multi-process tests and ``make bench-deploy`` use; docs/deploy.md gives the same commands.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmarket.errors import FedmarketError
from fedmarket.processes import stop_group
from fedmarket.runtime.flower.gate import gate_folder, issue_ticket
from fedmarket.runtime.flower.pin import APP_DIR as APP
from fedmarket.runtime.flower.serve import health

# Flower's processes phone home (telemetry, update checks) unless told not to. (The
# SuperLink's SuperExec looks for a new run once a second: paid once per task, and polling it
# faster costs the SuperLink CPU for the whole task.)
QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The SuperLink starts `flower-superexec` and `flwr-serverapp` by name: on PATH.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["FLWR_HOME"] = str(home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    for key, value in QUIET.items():
        env.setdefault(key, value)
    return env


def superlink_command(
    port: int,
    security: list[str],
    home: Path,
    *,
    host: str = "127.0.0.1",
    gated: bool = True,
) -> tuple[list[str], dict[str, str]]:
    """``flower-superlink``'s command line and environment: by default with the gated
    ``flwr-serverapp`` first on its PATH, so it runs fedmarket's app and nothing else
    (``gate``); ``security`` is ``["--insecure"]`` or the ``--ssl-*`` options."""
    env = flower_env(home)
    if gated:
        env["PATH"] = str(gate_folder(home / "gate")) + os.pathsep + env["PATH"]
    binary = str(Path(sys.executable).parent / "flower-superlink")
    args = [binary, *security, "--host", host, "--port", str(port),
            "--disable-runtime-dependency-installation"]  # fmt: skip
    return args, env


def node_args(options: dict[str, Any]) -> list[str]:
    """``fedmarket node``'s command line for ``options`` (``{"role": "owner", ...}``)."""
    args = [sys.executable, "-m", "fedmarket.cli", "node"]
    for key, value in options.items():
        if value is True:
            args.append(f"--{key}")
        elif value is not False and value is not None:
            args += [f"--{key}", str(value)]
    return args


@dataclass
class Tls:
    """``ca.crt``, ``server.pem``, ``server.key`` in ``folder`` (``make certs``)."""

    folder: Path

    def link_args(self) -> list[str]:
        f = self.folder
        return [
            "--ssl-ca-certfile", str(f / "ca.crt"),
            "--ssl-certfile", str(f / "server.pem"),
            "--ssl-keyfile", str(f / "server.key"),
        ]  # fmt: skip

    def node_args(self) -> list[str]:
        return ["--root-certificates", str(self.folder / "ca.crt")]


@dataclass
class Federation:
    """Processes under ``workdir``; ``tls=None`` runs insecure (tests, loopback only);
    ``gated=False`` lets the SuperLink run any app's ServerApp (Flower's default)."""

    workdir: Path
    tls: Tls | None = None
    gated: bool = True
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        home = self.workdir / "flwr" / name
        home.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            env=env or flower_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def start_superlink(self) -> None:
        security = self.tls.link_args() if self.tls else ["--insecure"]
        home = self.workdir / "flwr" / "superlink"
        args, env = superlink_command(self.port, security, home, gated=self.gated)
        self._spawn("superlink", args, env)

    def start_node(self, name: str, options: dict[str, Any]) -> None:
        """A ``fedmarket node`` with ``options`` (its command-line options, without dashes)."""
        self.configs[name] = options
        security = self.tls.node_args() if self.tls else ["--insecure"]
        self._spawn(name, [*node_args(options), "--superlink", self.address, *security])

    def stop(self, name: str, *, kill: bool = False) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        stop_group(proc, timeout=15, kill=kill)

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start_node(name, self.configs[name])

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def __enter__(self) -> Federation:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_superlink()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the SuperLink answers ``/health`` (it takes a few seconds to start)."""
        ca = str(self.tls.folder / "ca.crt") if self.tls else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get("superlink")
            if proc is not None and proc.poll() is not None:
                raise FedmarketError(
                    f"the SuperLink exited with code {proc.returncode}",
                    hint=f"see {self.workdir / 'superlink.log'}",
                )
            if health(self.address, ca, timeout=1.0) is None:
                return
            time.sleep(0.1)
        raise FedmarketError(f"the SuperLink did not start within {timeout:.0f} s")

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cli_config(self) -> Path:
        """The `flwr` CLI's config for this SuperLink (a federation called ``loop``)."""
        home = self.workdir / "flwr" / "cli"
        home.mkdir(parents=True, exist_ok=True)
        security = (
            f'root-certificates = "{self.tls.folder / "ca.crt"}"' if self.tls else "insecure = true"
        )
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "loop"\n\n[superlink.loop]\n'
            f'address = "{self.address}"\n{security}\n'
        )
        return home

    def request(self, run_config: dict[str, Any], *, timeout: float = 900) -> dict[str, Any]:
        """Submit the requester's run and wait for its ``result.json``."""
        self.submit(run_config)
        return self.wait(run_config, timeout=timeout)

    def submit(self, run_config: dict[str, Any]) -> None:
        """``flwr run`` the requester's ServerApp; returns once the SuperLink accepted it."""
        out = Path(str(run_config["out"]))
        (out / "result.json").unlink(missing_ok=True)
        run_config = {**run_config, "ticket": issue_ticket(out)}
        home = self.cli_config()
        config = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        args = ["flwr", "run", str(APP), "loop", "--run-config", config]
        with (self.workdir / "request.log").open("ab") as log:
            log.write(f"$ {shlex.join(args)}\n".encode())
            log.flush()
            subprocess.run(
                args,
                env=flower_env(home),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=True,
            )

    def wait(self, run_config: dict[str, Any], *, timeout: float = 900) -> dict[str, Any]:
        """The run's ``result.json`` (written when the requester finishes or fails)."""
        result_file = Path(str(run_config["out"])) / "result.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result_file.exists():
                try:
                    result: dict[str, Any] = json.loads(result_file.read_text())
                    return result
                except json.JSONDecodeError:
                    pass  # being written
            time.sleep(0.2)
        raise FedmarketError(
            f"the requester's run did not finish within {timeout:.0f} s",
            hint=f"see the logs in {self.workdir}",
        )
