"""Keys and a local chain for running fedmarket across machines.

``fedmarket keys new`` writes an encrypted Ethereum keystore (v3 JSON); :func:`load_key` opens
one. ``fedmarket chain up`` starts anvil, deploys a Market and a DevToken, funds accounts and
keeps the node running until Ctrl-C; :func:`chain_up` does the same for tests and scripts.

The CLI mounts these with :func:`register`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypedDict

import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from fedmarket.chain.backends import (
    ANVIL_CHAIN_ID,
    Anvil,
    dev_keys,
    find_anvil,
    rpc,
)
from fedmarket.errors import ChainError, ConfigError

__all__ = [
    "DEFAULT_TOKENS",
    "PASSWORD_ENV",
    "ChainInfo",
    "RunningChain",
    "chain_up",
    "keys_app",
    "load_key",
    "register",
    "write_key",
]

PASSWORD_ENV = "FEDMARKET_KEY_PASSWORD"
DEFAULT_TOKENS = 10**24  # one million tokens of 18 decimals
FUNDED_DEV_ACCOUNTS = 10
FUND_ETH_WEI = 100 * 10**18
GRACE_SECONDS = 3_600  # what `fedmarket run` deploys with
_MAX_DEV_INDEX = 999
_ANVIL_ACCOUNTS = 20
_RECEIPT_TIMEOUT = 60.0


# ---------------------------------------------------------------- keys


def _read_password_file(path: Path) -> str:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"the password file {path} does not exist",
            hint="write the password on its first line, or leave out --password-file",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the password file {path}: {exc}") from None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def _password_from(password_file: Path | None) -> str | None:
    """The password from ``password_file``, else from $FEDMARKET_KEY_PASSWORD, else None."""
    if password_file is not None:
        return _read_password_file(password_file)
    env = os.environ.get(PASSWORD_ENV)
    return env if env else None


def write_key(
    path: str | Path, private_key_hex: str, password: str, *, overwrite: bool = False
) -> str:
    """Encrypt ``private_key_hex`` with ``password`` into a keystore v3 JSON file at ``path``
    (mode 0600, written atomically) and return the account's checksum address.

    Refuses to replace an existing file unless ``overwrite``; refuses an empty password.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder", hint="pass a file name such as key.json")
    if not password:
        raise ConfigError(
            "the keystore password is empty",
            hint=f"put a password in --password-file or ${PASSWORD_ENV}, or type one",
        )
    try:
        account = Account.from_key(private_key_hex)
    except (ValueError, TypeError) as exc:
        # Never echo the key itself.
        raise ConfigError(f"the private key is malformed: {type(exc).__name__}") from None
    keystore = Account.encrypt(account.key, password)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 from the start: the key is never readable by others.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(keystore, handle)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return str(account.address)


def load_key(
    path: str | Path, password_file: str | Path | None = None, *, password: str | None = None
) -> LocalAccount:
    """Decrypt the keystore at ``path``.

    The password is ``password`` if given, else the first line of ``password_file``, else
    $FEDMARKET_KEY_PASSWORD, else typed at a prompt (only on a terminal). A missing file, a
    file that is not a keystore, or a wrong password raise :class:`ConfigError`.
    """
    path = Path(path)
    try:
        keystore = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no keystore at {path}", hint=f"create one with `fedmarket keys new --out {path}`"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not an Ethereum keystore (v3 JSON): {type(exc).__name__}",
            hint="pass the file `fedmarket keys new` wrote",
        ) from None
    if not isinstance(keystore, dict) or "crypto" not in {str(k).lower() for k in keystore}:
        raise ConfigError(
            f"{path} is not an Ethereum keystore (v3 JSON): it has no crypto section",
            hint="pass the file `fedmarket keys new` wrote",
        )
    if password is None:
        password = _password_from(Path(password_file) if password_file is not None else None)
    if password is None:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"no password for the keystore {path}",
                hint=f"pass --password-file or set ${PASSWORD_ENV}",
            )
        password = str(typer.prompt(f"Password for {path}", hide_input=True, err=True))
    try:
        private_key = Account.decrypt(keystore, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise ConfigError(
                f"wrong password for the keystore {path}",
                hint=f"check the password file or ${PASSWORD_ENV}; a lost password cannot be "
                "recovered: make a new key with `fedmarket keys new`",
            ) from None
        raise ConfigError(
            f"cannot decrypt the keystore {path}: {exc}",
            hint="pass the file `fedmarket keys new` wrote",
        ) from None
    except (KeyError, TypeError, NotImplementedError) as exc:
        raise ConfigError(
            f"{path} is not a usable keystore: {type(exc).__name__} {exc}",
            hint="pass the file `fedmarket keys new` wrote",
        ) from None
    account: LocalAccount = Account.from_key(private_key)
    return account


keys_app = typer.Typer(
    help="Encrypted account keys (Ethereum keystore files).", no_args_is_help=True
)


@keys_app.command("new")
def keys_new(
    out: Path = typer.Option(..., "--out", help="Where to write the keystore (JSON, mode 0600)."),
    password_file: Path | None = typer.Option(
        None,
        "--password-file",
        help=f"Read the password from this file's first line (else ${PASSWORD_ENV}, else ask).",
    ),
    dev: int | None = typer.Option(
        None,
        "--dev",
        min=0,
        max=_MAX_DEV_INDEX,
        help="Store anvil's INDEX-th development key instead of a fresh one (tests only: "
        "these keys are public).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a keystore for a fresh random key (or an anvil dev key) and print its address."""
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists", hint="pass --force to overwrite it")
    password = _password_from(password_file)
    if password is None:
        password = str(
            typer.prompt("Keystore password", hide_input=True, confirmation_prompt=True, err=True)
        )
    if dev is not None:
        private_key = dev_keys(dev + 1)[dev]
        typer.secho(
            f"warning: dev key {dev} is public (anvil's well-known mnemonic); use it on local "
            "test chains only, never with real funds",
            fg=typer.colors.YELLOW,
            err=True,
        )
    else:
        private_key = "0x" + bytes(Account.create().key).hex()
    address = write_key(out, private_key, password, overwrite=force)
    typer.echo(f"wrote {out}", err=True)
    typer.echo(address)


@keys_app.command("address")
def keys_address(
    keystore: Path = typer.Argument(..., help="A keystore written by `fedmarket keys new`."),
    password_file: Path | None = typer.Option(
        None,
        "--password-file",
        help=f"Read the password from this file's first line (else ${PASSWORD_ENV}, else ask).",
    ),
) -> None:
    """Decrypt a keystore (checking its password) and print its address."""
    typer.echo(load_key(keystore, password_file).address)


# ---------------------------------------------------------------- chain up


class ChainInfo(TypedDict):
    """What `fedmarket chain up` prints and writes to --out."""

    chain: str
    market: str
    token: str
    chain_id: int


def _dial_host(host: str) -> str:
    """The address to connect to for a node listening on ``host``, bracketed for IPv6."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.is_unspecified:
        return "127.0.0.1" if ip.version == 4 else "[::1]"
    return f"[{ip}]" if ip.version == 6 else str(ip)


class _ServedAnvil(Anvil):
    """:class:`Anvil` on a chosen host and port (for other machines or a fixed URL).

    With host 127.0.0.1 and no port it is exactly :class:`Anvil` (a free loopback port).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | Path | None = None,
        accounts: int = _ANVIL_ACCOUNTS,
    ) -> None:
        super().__init__(binary=binary, accounts=accounts)
        self.host = host
        self.requested_port = port

    @property
    def url(self) -> str:
        if self.port is None:
            return super().url  # raises "anvil is not running"
        return f"http://{_dial_host(self.host)}:{self.port}"

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> _ServedAnvil:
        if self.requested_port is None and self.host == "127.0.0.1":
            super().start()
            return self
        port = self._claimable_port(self.requested_port or 0)
        binary = self.binary if self.binary is not None else find_anvil()
        try:
            self._spawn(binary, self.host, port)
        except ChainError:
            self.stop()
            raise
        if self._wait_ready():
            return self
        output = self._output()
        self.stop()
        raise ChainError(
            f"anvil at {binary} did not start on {self.host}:{port}: {output or 'no output'}",
            hint="check that the host is an address of this machine and the port is free",
        )

    def _claimable_port(self, port: int) -> int:
        # Fail with a clear message before anvil does with a cryptic one; port 0 picks one.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((self.host, port))
                return int(sock.getsockname()[1])
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {self.host}:{port}: {exc.strerror or exc}",
                hint="another node (an earlier `fedmarket chain up`?) may hold the port: stop "
                "it or pass another --port; --host must be an address of this machine",
            ) from None


@dataclass
class RunningChain:
    """A node started by :func:`chain_up`; ``stop()`` (or leaving ``with``) ends it."""

    info: ChainInfo
    node: _ServedAnvil
    funded: tuple[str, ...]

    @property
    def url(self) -> str:
        return self.info["chain"]

    def alive(self) -> bool:
        """Whether the anvil process is still running."""
        return self.node.alive()

    def stop(self) -> None:
        self.node.stop()

    def __enter__(self) -> RunningChain:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _fund_addresses(fund: Sequence[str]) -> list[str]:
    addresses: list[str] = []
    for value in fund:
        if not is_address(value):
            raise ConfigError(
                f"--fund {value!r} is not an address", hint="pass a 0x address of 40 hex digits"
            )
        checksum = str(to_checksum_address(value))
        if checksum not in addresses:
            addresses.append(checksum)
    return addresses


def _send_eth(w3: Any, sender: LocalAccount, to: str, value: int) -> None:
    tx: dict[str, Any] = {
        "from": sender.address,
        "to": to,
        "value": value,
        "chainId": int(w3.eth.chain_id),
        "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
    }
    tx["gas"] = int(w3.eth.estimate_gas(tx))
    base = int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)
    tx["maxPriorityFeePerGas"] = 10**9
    tx["maxFeePerGas"] = 2 * base + 10**9
    signed = sender.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=_RECEIPT_TIMEOUT)
    if int(receipt["status"]) != 1:
        raise ChainError(f"sending {value} wei to {to} failed (transaction {tx_hash.hex()})")


def chain_up(
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    fund: Sequence[str] = (),
    tokens: int = DEFAULT_TOKENS,
    out: str | Path | None = None,
    grace_seconds: int = GRACE_SECONDS,
    binary: str | Path | None = None,
) -> RunningChain:
    """Start anvil, deploy a DevToken and a Market (deployer: dev account 0), mint ``tokens``
    base units to each of the first 10 dev accounts and to every ``fund`` address, send those
    100 ETH each, and write the :class:`ChainInfo` as JSON to ``out`` if given.

    ``port=None`` picks a free port. The node runs until the returned handle's ``stop()``.
    Raises :class:`ChainError` (with how to install it) when anvil is missing.
    """
    from fedmarket.chain.client import deploy

    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ConfigError(f"--tokens must be a non-negative integer, got {tokens!r}")
    addresses = _fund_addresses(fund)
    node = _ServedAnvil(host=host, port=port, binary=binary).start()
    try:
        chain = rpc(node.url, dev_keys(FUNDED_DEV_ACCOUNTS), chain_id=ANVIL_CHAIN_ID)
        deployer = chain.accounts[0]
        market, token = deploy(chain.w3, deployer, grace_seconds)
        receivers = [str(a.address) for a in chain.accounts]
        receivers += [a for a in addresses if a not in receivers]
        if tokens:
            for receiver in receivers:
                token.mint(receiver, tokens)
        for address in addresses:
            _send_eth(chain.w3, deployer, address, FUND_ETH_WEI)
        info = ChainInfo(
            chain=node.url,
            market=str(market.address),
            token=str(token.address),
            chain_id=chain.chain_id,
        )
        if out is not None:
            out_path = Path(out)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(info, indent=2) + "\n")
    except BaseException:
        node.stop()
        raise
    return RunningChain(info=info, node=node, funded=tuple(addresses))


class _Terminated(Exception):
    """SIGTERM arrived: shut down like Ctrl-C."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def chain_up_command(
    port: int = typer.Option(8545, min=0, max=65535, help="The JSON-RPC port (0: any free one)."),
    host: str = typer.Option(
        "127.0.0.1", help="The address to listen on; 0.0.0.0 lets other machines connect."
    ),
    fund: list[str] = typer.Option(
        [], "--fund", help="An address to give tokens and 100 ETH (repeat for more)."
    ),
    tokens: int = typer.Option(
        DEFAULT_TOKENS, min=0, help="Token base units minted to each funded account."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write {chain, market, token, chain_id} as JSON here."
    ),
    grace: int = typer.Option(GRACE_SECONDS, min=0, help="The market's grace period, seconds."),
) -> None:
    """Start a local anvil with a deployed Market and DevToken; runs until Ctrl-C."""
    from fedmarket.units import format_units

    echo = typer.echo
    with _sigterm_raises():
        try:
            running = chain_up(
                port=port, host=host, fund=fund, tokens=tokens, out=out, grace_seconds=grace
            )
        except (KeyboardInterrupt, _Terminated):
            echo("interrupted before the chain was up; anvil stopped")
            return
        try:
            info = running.info
            echo(f"chain    {info['chain']}  (chain id {info['chain_id']})")
            echo(f"market   {info['market']}")
            echo(f"token    {info['token']}")
            amount = f"{format_units(tokens, 18)} tokens ({tokens} base units)"
            echo(f"funded   dev accounts 0-{FUNDED_DEV_ACCOUNTS - 1}: {amount} each")
            for address in running.funded:
                echo(f"funded   {address}: {amount}, 100 ETH")
            if host != "127.0.0.1" and not host.startswith("127."):
                typer.secho(
                    f"warning: listening on {host}: anyone who reaches this port can use the "
                    "node, and its dev accounts' keys are public",
                    fg=typer.colors.YELLOW,
                    err=True,
                )
            if out is not None:
                echo(f"wrote    {out}")
            echo("running; press Ctrl-C to stop")
            while running.alive():
                time.sleep(0.25)
            raise ChainError(
                f"anvil at {info['chain']} exited unexpectedly",
                hint="run `fedmarket chain up` again",
            )
        except (KeyboardInterrupt, _Terminated):
            echo("stopping anvil")
        finally:
            running.stop()
    echo("stopped")


# ---------------------------------------------------------------- mounting


def register(app: typer.Typer, chain_app: typer.Typer) -> None:
    """Mount ``fedmarket keys ...`` on ``app`` and ``fedmarket chain up`` on ``chain_app``."""
    app.add_typer(keys_app, name="keys")
    chain_app.command("up")(chain_up_command)
