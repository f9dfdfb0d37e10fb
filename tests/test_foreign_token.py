"""`fedmarket run --chain URL --market ADDR` on a deployment paid in a token fedmarket did not
write: OpenZeppelin's ERC-20, compiled here with solc-js (both from npm), on a real anvil."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from eth_account import Account
from typer.testing import CliRunner

from fedmarket.chain.backends import Anvil, dev_keys, rpc
from fedmarket.cli import app
from fedmarket.deploy_cli import write_key
from fedmarket.spec import SpecFile, dump_spec, load_spec

pytestmark = pytest.mark.anvil
ROOT = Path(__file__).resolve().parents[1]
MODULES = ROOT / "tools" / "node_modules"


def compile_erc20() -> dict[str, object]:
    done = subprocess.run(
        ["node", str(ROOT / "tests" / "chain" / "erc20" / "compile.js"), str(MODULES)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"NODE_PATH": str(MODULES), "PATH": "/usr/local/bin:/usr/bin:/bin"},
        check=True,
    )
    compiled: dict[str, object] = json.loads(done.stdout)
    return compiled


def spec_file(folder: Path) -> Path:
    data = load_spec(ROOT / "examples" / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = 2
    data["stopping"]["patience"] = 0
    data["run"]["dataset"] = "sklearn:breast_cancer"
    path = folder / "task.toml"
    path.write_text(dump_spec(SpecFile.model_validate(data)))
    return path


def test_a_task_on_an_existing_market_paid_in_an_openzeppelin_erc20(tmp_path: Path) -> None:
    compiled = compile_erc20()
    spec = spec_file(tmp_path)
    s = load_spec(spec)
    assert s.run is not None
    keys = dev_keys(6)
    runner = CliRunner()
    with Anvil() as node:
        chain = rpc(node.url, keys)
        w3, deployer = chain.w3, chain.accounts[0]
        erc20 = w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"])
        tx = erc20.constructor(10**30).build_transaction(
            {"from": deployer.address, "nonce": w3.eth.get_transaction_count(deployer.address)}
        )
        receipt = w3.eth.wait_for_transaction_receipt(
            w3.eth.send_raw_transaction(deployer.sign_transaction(tx).raw_transaction)
        )
        token = w3.eth.contract(address=receipt.contractAddress, abi=compiled["abi"])
        # the market, deployed by the CLI on that token
        key = tmp_path / "deployer.json"
        write_key(key, keys[0], "pw")
        (tmp_path / "pw").write_text("pw\n")
        done = runner.invoke(app, ["chain", "deploy", "--chain", node.url, "--key", str(key),
                                   "--password-file", str(tmp_path / "pw"),
                                   "--token", token.address])  # fmt: skip
        assert done.exit_code == 0, done.output
        market = json.loads(done.output)["market"]

        def transfer(to: str, amount: int) -> None:
            tx = token.functions.transfer(to, amount).build_transaction(
                {"from": deployer.address, "nonce": w3.eth.get_transaction_count(deployer.address)}
            )
            w3.eth.wait_for_transaction_receipt(
                w3.eth.send_raw_transaction(deployer.sign_transaction(tx).raw_transaction)
            )

        accounts = [Account.from_key(k).address for k in keys]
        requester, processors = accounts[1], accounts[4:6]
        budget = s.budget.data + s.budget.processing
        # an unfunded requester: refused before anything is escrowed, naming what is missing
        args = ["run", str(spec), "--chain", node.url, "--market", market,
                "--out", str(tmp_path / "out"), "--workers", "0"]  # fmt: skip
        refused = runner.invoke(app, args)
        assert refused.exit_code != 0
        assert "cannot be minted here" in str(refused.exception) + refused.output
        assert token.functions.balanceOf(market).call() == 0
        transfer(requester, budget)
        for p, cfg in zip(processors, s.run.processors, strict=True):
            transfer(p, cfg.capacity * cfg.price * s.task.max_epochs)
        before = {a: token.functions.balanceOf(a).call() for a in accounts[1:6]}
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        after = {a: token.functions.balanceOf(a).call() for a in accounts[1:6]}
        held = token.functions.balanceOf(market).call()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["market"] == market and report["epochs"][-1]["metric"] >= 0.9
    # the report's exact integers are the ERC-20's own balance changes
    nets = {t["party"]: t["net"] for t in report["tokens"]}
    assert nets["owner1"] == after[accounts[2]] - before[accounts[2]] == 227 * s.run.owners[0].price
    assert nets["requester"] == after[requester] - before[requester] < 0
    assert sum(after.values()) - sum(before.values()) + held == 0  # conserved, in that token
