"""`fedmarket keys` and `fedmarket chain up`, and tools/mkcerts.sh."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import typer
from eth_account import Account
from typer.testing import CliRunner

from fedmarket import cli
from fedmarket.chain.backends import ANVIL_CHAIN_ID, dev_keys, rpc
from fedmarket.chain.client import TokenClient
from fedmarket.deploy_cli import (
    FUND_ETH_WEI,
    PASSWORD_ENV,
    chain_up,
    load_key,
    register,
    write_key,
)
from fedmarket.errors import ChainError, ConfigError

REPO = Path(__file__).resolve().parents[1]
MKCERTS = REPO / "tools" / "mkcerts.sh"
ANVIL = [pytest.mark.anvil, pytest.mark.xdist_group("anvil")]

# A stand-in for `fedmarket` with these commands mounted, run through cli.main's error handling.
CLI_SCRIPT = """
import typer
from fedmarket import cli
from fedmarket.deploy_cli import register
app = typer.Typer(pretty_exceptions_enable=False)
chain = typer.Typer()
app.add_typer(chain, name="chain")
register(app, chain)
cli.app = app
cli.main()
"""


def make_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    chain_app = typer.Typer()
    app.add_typer(chain_app, name="chain")
    register(app, chain_app)
    return app


@pytest.fixture(autouse=True)
def no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text("  correct horse  \nsecond line is ignored\n")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- keys


def test_keys_new_round_trips_through_load_key(tmp_path: Path, password_file: Path) -> None:
    out = tmp_path / "keys" / "key.json"
    result = CliRunner().invoke(
        make_app(), ["keys", "new", "--out", str(out), "--password-file", str(password_file)]
    )
    assert result.exit_code == 0, result.output
    address = result.stdout.strip().splitlines()[-1]
    assert address.startswith("0x") and len(address) == 42
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    keystore = json.loads(out.read_text())
    assert keystore["version"] == 3 and keystore["address"].lower() == address[2:].lower()
    # The password is the first line, stripped.
    assert load_key(out, password_file).address == address
    assert load_key(out, password="correct horse").address == address
    shown = CliRunner().invoke(
        make_app(), ["keys", "address", str(out), "--password-file", str(password_file)]
    )
    assert shown.exit_code == 0 and shown.stdout.strip() == address


def test_keys_new_dev_index_is_anvils_dev_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from the environment")
    out = tmp_path / "dev3.json"
    result = CliRunner().invoke(make_app(), ["keys", "new", "--out", str(out), "--dev", "3"])
    assert result.exit_code == 0, result.output
    expected = Account.from_key(dev_keys(4)[3]).address
    # anvil's fourth account for its default mnemonic.
    assert expected == "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
    assert result.stdout.strip().splitlines()[-1] == expected
    assert "public" in result.stderr
    assert load_key(out).address == expected


def test_keys_new_prompts_twice_without_a_password_source(tmp_path: Path) -> None:
    out = tmp_path / "key.json"
    result = CliRunner().invoke(make_app(), ["keys", "new", "--out", str(out)], input="pw\npw\n")
    assert result.exit_code == 0, result.output
    assert load_key(out, password="pw").address == result.stdout.strip().splitlines()[-1]


def test_keys_new_refuses_to_overwrite_without_force(tmp_path: Path, password_file: Path) -> None:
    out = tmp_path / "key.json"
    args = ["keys", "new", "--out", str(out), "--password-file", str(password_file)]
    first = CliRunner().invoke(make_app(), args)
    assert first.exit_code == 0
    before = out.read_text()
    again = CliRunner().invoke(make_app(), args)
    assert isinstance(again.exception, ConfigError)
    assert "already exists" in again.exception.message and "--force" in str(again.exception.hint)
    assert out.read_text() == before
    forced = CliRunner().invoke(make_app(), [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert out.read_text() != before
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_wrong_password_exits_2_with_a_message_and_no_traceback(
    tmp_path: Path,
    password_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = tmp_path / "key.json"
    write_key(key, dev_keys(1)[0], "the right one")
    with pytest.raises(ConfigError, match="wrong password"):
        load_key(key, password_file)
    monkeypatch.setattr(cli, "app", make_app())
    argv = ["fedmarket", "keys", "address", str(key), "--password-file", str(password_file)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "wrong password" in err and str(key) in err and "hint:" in err
    assert "Traceback" not in err


def test_load_key_explains_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no keystore at") as missing:
        load_key(tmp_path / "nope.json", password="x")
    assert "fedmarket keys new" in str(missing.value.hint)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match="not an Ethereum keystore"):
        load_key(other, password="x")
    with pytest.raises(ConfigError, match="empty"):
        write_key(tmp_path / "k.json", dev_keys(1)[0], "")


# ---------------------------------------------------------------- chain up


def test_chain_up_without_anvil_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDMARKET_ANVIL", str(tmp_path / "no-anvil"))
    with pytest.raises(ChainError) as info:
        chain_up()
    assert "make test" in str(info.value.hint) and "npm --prefix tools install" in str(
        info.value.hint
    )


def test_chain_up_rejects_a_bad_fund_address() -> None:
    with pytest.raises(ConfigError, match="not an address"):
        chain_up(fund=["0x1234"])


@pytest.mark.anvil
@pytest.mark.xdist_group("anvil")
def test_chain_up_deploys_and_funds_a_fresh_address(tmp_path: Path) -> None:
    fresh = Account.create().address
    port = free_port()
    out = tmp_path / "chain.json"
    tokens = 7 * 10**18
    with chain_up(port=port, fund=[fresh.lower()], tokens=tokens, out=out) as running:
        info = running.info
        assert info["chain"] == f"http://127.0.0.1:{port}"
        assert info["chain_id"] == ANVIL_CHAIN_ID
        assert json.loads(out.read_text()) == info
        node = rpc(info["chain"], chain_id=ANVIL_CHAIN_ID)
        deployer = Account.from_key(dev_keys(1)[0])
        token = TokenClient.at(node.w3, info["token"], deployer)
        assert token.balance_of(fresh) == tokens
        assert node.w3.eth.get_balance(fresh) == FUND_ETH_WEI
        for key in dev_keys(10):
            assert token.balance_of(Account.from_key(key).address) == tokens
        assert token.total_supply() == 11 * tokens
        assert node.w3.eth.get_code(info["market"]) != b""
        assert running.alive()
    assert not port_open(port)


@pytest.mark.anvil
@pytest.mark.xdist_group("anvil")
def test_chain_up_command_runs_until_sigterm_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "chain.json"
    fresh = Account.create().address
    fund_args = ["--fund", fresh, "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI_SCRIPT, "chain", "up", "--port", str(port), *fund_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert out.exists(), proc.communicate(timeout=10)
        time.sleep(0.5)  # past writing --out, into the wait loop
        assert port_open(port)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    info = json.loads(out.read_text())
    assert info["market"] in stdout and info["token"] in stdout and fresh in stdout
    assert "stopped" in stdout
    assert "Traceback" not in stderr
    assert not port_open(port)


def test_chain_up_command_on_a_taken_port_exits_2() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", CLI_SCRIPT, "chain", "up", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done
    assert f"127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- mkcerts.sh


def test_mkcerts_makes_a_ca_and_a_server_cert_it_verifies(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    made = subprocess.run([str(MKCERTS), str(certs)], capture_output=True, text=True, check=True)
    assert "made" in made.stdout
    files = {name: certs / name for name in ("ca.crt", "ca.key", "server.pem", "server.key")}
    assert all(path.is_file() for path in files.values())
    assert stat.S_IMODE(files["ca.key"].stat().st_mode) == 0o600
    assert stat.S_IMODE(files["server.key"].stat().st_mode) == 0o600
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(files["ca.crt"]), str(files["server.pem"])],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", str(files["server.pem"]), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert "TLS Web Server Authentication" in text

    # Idempotent: a second run keeps every file.
    before = {name: path.read_bytes() for name, path in files.items()}
    again = subprocess.run([str(MKCERTS), str(certs)], capture_output=True, text=True, check=True)
    assert "nothing made" in again.stdout
    assert {name: path.read_bytes() for name, path in files.items()} == before

    # A real TLS handshake to 127.0.0.1 succeeds with only ca.crt trusted.
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(files["server.pem"], files["server.key"])
    client_ctx = ssl.create_default_context(cafile=str(files["ca.crt"]))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(5) == b"hello"
        thread.join(timeout=10)
