"""`fedmarket node` and `fedmarket request`: a user's mistake is one line and exit status 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedmarket import cli
from fedmarket.chain.backends import dev_keys
from fedmarket.deploy_cli import PASSWORD_ENV, write_key
from fedmarket.runtime.flower.loopback import free_port


@pytest.fixture
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    path = tmp_path / "key.json"
    write_key(path, dev_keys(3)[2], "right")
    (tmp_path / "password").write_text("right\n")
    (tmp_path / "wrong").write_text("wrong\n")
    return path


def run(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    monkeypatch.setattr(sys, "argv", ["fedmarket", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), err
    return err


def node_args(key: Path, **extra: str) -> list[str]:
    args = {
        "role": "processor", "key": str(key), "password-file": str(key.parent / "password"),
        "superlink": f"127.0.0.1:{free_port()}", "chain": "http://127.0.0.1:1",
        "market": "0x" + "11" * 20, "capacity": "10", "insecure": "", "connect-timeout": "0",
        "state": str(key.parent / "state.sqlite"),
    }  # fmt: skip
    args.update(extra)
    out = ["node"]
    for k, v in args.items():
        out += [f"--{k}"] + ([v] if v else [])
    return out


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({}, "no SuperLink at 127.0.0.1:"),
        ({"password-file": "wrong"}, "wrong password"),
        ({"role": "miner"}, "--role must be owner, processor or owner+processor"),
        ({"capacity": "0"}, "a processor needs --capacity > 0"),
        ({"port": "9101"}, "--port is gone"),
        ({"allow-app": "abc"}, "--allow-app takes a FAB's SHA-256"),
        ({"workers": "0"}, "--workers must be 1..64"),
    ],
)
def test_node_mistakes(
    key: Path,
    extra: dict[str, str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if extra.get("password-file") == "wrong":
        extra = {"password-file": str(key.parent / "wrong")}
    err = run(node_args(key, **extra), monkeypatch, capsys)
    assert says in err


def test_node_without_tls_options_says_what_to_pass(
    key: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a for a in node_args(key) if a != "--insecure"]
    err = run(args, monkeypatch, capsys)
    assert "no TLS certificate given: pass --root-certificates" in err


def request_args(key: Path, tmp_path: Path, superlink: str) -> list[str]:
    spec = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer.toml"
    return [
        "request", str(spec), "--chain", "http://127.0.0.1:1", "--market", "0x" + "11" * 20,
        "--key", str(key), "--password-file", str(key.parent / "password"),
        "--superlink", superlink, "--insecure", "--out", str(tmp_path / "out"),
    ]  # fmt: skip


def test_request_mistakes(
    key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the requester runs where the SuperLink runs: another machine's SuperLink is refused
    err = run(request_args(key, tmp_path, "192.0.2.1:8000"), monkeypatch, capsys)
    assert "is not on this machine" in err and "run `fedmarket request` there" in err
    err = run(request_args(key, tmp_path, f"127.0.0.1:{free_port()}"), monkeypatch, capsys)
    assert "no SuperLink at 127.0.0.1:" in err and "start it first" in err
    args = request_args(key, tmp_path, "127.0.0.1:8000")
    args[1] = str(tmp_path / "missing.toml")
    assert "does not exist" in run(args, monkeypatch, capsys)


def test_superlink_mistakes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run(["superlink", "--port", str(free_port())], monkeypatch, capsys)
    assert "pass --ssl-ca-certfile, --ssl-certfile and --ssl-keyfile" in err
    err = run(["superlink", "--insecure", "--allow-app", "xyz"], monkeypatch, capsys)
    assert "--allow-app takes a FAB's SHA-256" in err
