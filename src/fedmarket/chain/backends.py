"""Where the market runs: an in-process EVM (eth-tester + py-evm) or any JSON-RPC node.

Both give a :class:`Chain`: a web3 connection plus funded accounts whose private keys are
known, so every transaction is signed locally by eth-account on every backend. :class:`Anvil`
starts and stops a local anvil node for tests and demos.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from eth_account import Account
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.exceptions import Web3Exception

from fedmarket.errors import ChainError, ConfigError
from fedmarket.processes import stop_group

__all__ = [
    "ANVIL_CHAIN_ID",
    "DEV_MNEMONIC",
    "Anvil",
    "Chain",
    "dev_keys",
    "embedded",
    "find_anvil",
    "rpc",
]

# anvil's (and hardhat's) well-known development mnemonic. The embedded chain derives its
# accounts from it too, so a party has the same address on every development chain.
# Never hold real funds with these keys.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
_DEV_PATH = "m/44'/60'/0'/0"
ANVIL_CHAIN_ID = 31337
# The fork vyper 0.4.3 targets by default and eth-tester's py-evm runs; pinned on anvil too so
# gas is the same on both chains.
EVM_HARDFORK = "prague"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_ANVIL_HINT = (
    "run `make test` (it installs anvil under tools/), or `npm --prefix tools install`, "
    "or set FEDMARKET_ANVIL to an anvil binary"
)


@functools.lru_cache(maxsize=8)
def dev_keys(count: int, mnemonic: str = DEV_MNEMONIC) -> tuple[str, ...]:
    """The first ``count`` private keys (0x hex) of ``mnemonic`` on the standard path
    m/44'/60'/0'/0/i, the accounts anvil creates for the same mnemonic."""
    seed = seed_from_mnemonic(mnemonic, "")
    return tuple("0x" + key_from_seed(seed, f"{_DEV_PATH}/{i}").hex() for i in range(count))


@dataclass(frozen=True)
class Chain:
    """A connection to one chain and the accounts that sign on it.

    ``accounts[0]`` is the conventional deployer. ``name`` is ``"embedded"`` or the node's URL,
    and appears in every error about this chain.
    """

    w3: Web3
    accounts: tuple[LocalAccount, ...]
    name: str
    kind: Literal["embedded", "rpc"]
    # The in-process tester, for time travel without JSON-RPC test methods.
    _tester: Any = field(default=None, repr=False, compare=False)

    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def timestamp(self) -> int:
        """The latest block's timestamp (what ``block.timestamp`` was in the last transaction)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def time_travel(self, seconds: int) -> int:
        """Move chain time forward by ``seconds`` and mine a block there; the next transaction
        runs no earlier than that. Returns the new latest timestamp."""
        if seconds < 0:
            raise ValueError(f"chain time only moves forward, got {seconds} seconds")
        if self._tester is not None:
            # eth-tester has no evm_increaseTime; it jumps to an absolute time and mines the
            # block one second before it, so aim one second further. Its pending block follows
            # the wall clock, which may already be past the target after an idle spell.
            target = self.timestamp() + seconds + 1
            pending = int(self._tester.get_block_by_number("pending")["timestamp"])
            if target > pending:
                self._tester.time_travel(target)
            else:
                self._tester.mine_blocks(1)
        else:
            self._dev_rpc("evm_increaseTime", [seconds])
            self._dev_rpc("evm_mine", [])
        return self.timestamp()

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks."""
        if self._tester is not None:
            self._tester.mine_blocks(blocks)
        else:
            for _ in range(blocks):
                self._dev_rpc("evm_mine", [])

    def _dev_rpc(self, method: str, params: list[Any]) -> Any:
        try:
            response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        except (OSError, Web3Exception) as exc:
            raise ChainError(f"the chain at {self.name} did not answer {method}: {exc}") from exc
        if "error" in response:
            raise ChainError(
                f"the chain at {self.name} does not support {method}: {response['error']}",
                hint="time travel needs a development node such as anvil",
            )
        return response.get("result")


def embedded(num_accounts: int = 20, *, mnemonic: str = DEV_MNEMONIC) -> Chain:
    """A fresh in-process chain (eth-tester + py-evm, Prague rules) with ``num_accounts``
    accounts of 1,000,000 ETH each, derived from ``mnemonic`` like anvil's."""
    from eth_keys import keys
    from eth_tester import EthereumTester, PyEVMBackend
    from eth_tester.backends.pyevm.main import generate_genesis_state_for_keys

    if num_accounts < 1:
        raise ConfigError(f"an embedded chain needs at least one account, got {num_accounts}")
    private_keys = dev_keys(num_accounts, mnemonic)
    key_objects = [keys.PrivateKey(bytes.fromhex(k[2:])) for k in private_keys]
    backend = PyEVMBackend(genesis_state=generate_genesis_state_for_keys(key_objects))
    # eth-tester lists its own default keys otherwise; keep eth_accounts truthful.
    backend.account_keys = tuple(key_objects)
    backend.chain.gas_estimator = _fast_gas_estimate
    tester = EthereumTester(backend)
    w3 = Web3(EthereumTesterProvider(tester))
    accounts = tuple(Account.from_key(k) for k in private_keys)
    return Chain(w3=w3, accounts=accounts, name="embedded", kind="embedded", _tester=tester)


def _fast_gas_estimate(state: Any, transaction: Any) -> int:
    """py-evm's default estimator runs a transaction about 13 times (a binary search), which
    dominates the embedded chain's speed. This one runs it once at the block gas limit, checks
    one limit just above what that used (calls forward only 63/64 of their gas), and falls back
    to the search only if the check fails. Reverts raise exactly as py-evm's own estimator."""
    from eth.estimators.gas import binary_gas_search_1000_tolerance
    from eth.vm.spoof import SpoofTransaction

    def run(gas: int) -> Any:
        snapshot = state.snapshot()
        try:
            return state.apply_transaction(SpoofTransaction(transaction, gas=gas, gas_price=0))
        finally:
            state.revert(snapshot)

    computation = run(state.gas_limit)
    if computation.is_error:
        raise computation.error
    used = transaction.intrinsic_gas + computation.get_gas_used()
    candidate = min(state.gas_limit, used * 64 // 63 + 3_000)
    if not run(candidate).is_error:
        return int(candidate)
    return int(binary_gas_search_1000_tolerance(state, transaction))


def rpc(
    url: str,
    private_keys: Sequence[str] = (),
    *,
    chain_id: int | None = None,
    timeout: float = 10.0,
) -> Chain:
    """Connect to the JSON-RPC node at ``url`` (http or https); transactions are signed locally
    with ``private_keys``. Raises :class:`ChainError` naming ``url`` when the node does not
    answer, or answers with a chain id other than ``chain_id``."""
    if not url.startswith(("http://", "https://")):
        raise ChainError(
            f"cannot use the chain URL {url!r}: only http:// and https:// JSON-RPC are supported",
            hint="pass 'embedded' or a URL such as http://127.0.0.1:8545",
        )
    # Probe with retries off so a dead URL fails at once (web3 otherwise retries a refused
    # connection for seconds); the connection used afterwards keeps web3's retries.
    probe = Web3(
        HTTPProvider(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
    )
    try:
        found = int(probe.eth.chain_id)
    except (OSError, Web3Exception, ValueError) as exc:
        raise ChainError(
            f"cannot reach the chain at {url}: {_short(exc)}",
            hint="start the node (for example `anvil`), check the URL, or use --chain embedded",
        ) from exc
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))
    if chain_id is not None and found != chain_id:
        raise ChainError(
            f"the chain at {url} has chain id {found}, expected {chain_id}",
            hint="check the URL: it points at a different network",
        )
    try:
        accounts = tuple(Account.from_key(k) for k in private_keys)
    except (ValueError, TypeError) as exc:
        # Never echo the key itself.
        raise ConfigError(f"a private key for {url} is malformed: {type(exc).__name__}") from None
    return Chain(w3=w3, accounts=accounts, name=url, kind="rpc")


def _short(exc: BaseException) -> str:
    # requests' connection errors nest three levels of reprs; the OS's reason is what matters.
    text = str(exc).strip() or type(exc).__name__
    errno_reason = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno_reason:
        return errno_reason.group(1).strip().rstrip(".")
    if "timed out" in text.lower():
        return "no answer before the timeout"
    return text if len(text) <= 200 else text[:197] + "..."


def find_anvil() -> Path:
    """The anvil binary: ``$FEDMARKET_ANVIL``, else ``tools/node_modules/.bin/anvil`` in the
    repository (or the working directory), else ``anvil`` on PATH."""
    env = os.environ.get("FEDMARKET_ANVIL")
    if env:
        path = Path(env).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ChainError(f"FEDMARKET_ANVIL={env} is not an executable file", hint=_ANVIL_HINT)
    for root in (_REPO_ROOT, Path.cwd()):
        candidate = root / "tools" / "node_modules" / ".bin" / "anvil"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise ChainError(
        "anvil was not found (looked at $FEDMARKET_ANVIL, "
        f"{_REPO_ROOT / 'tools/node_modules/.bin/anvil'} and PATH)",
        hint=_ANVIL_HINT,
    )


def _free_port() -> int:
    # The kernel picks a port no one holds; parallel test workers each get their own.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Anvil:
    """A local anvil node on a free loopback port, with ``accounts`` funded dev accounts.

    Use as a context manager (``with Anvil() as node: chain = node.chain()``); the node and
    its process group are stopped on exit.
    """

    def __init__(
        self,
        *,
        binary: str | Path | None = None,
        accounts: int = 20,
        mnemonic: str = DEV_MNEMONIC,
        chain_id: int = ANVIL_CHAIN_ID,
        startup_timeout: float = 20.0,
    ) -> None:
        self.binary = Path(binary) if binary is not None else None
        self.num_accounts = accounts
        self.mnemonic = mnemonic
        self.chain_id = chain_id
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise ChainError("anvil is not running", hint="call start() or use `with Anvil()`")
        return f"http://127.0.0.1:{self.port}"

    @property
    def private_keys(self) -> tuple[str, ...]:
        return dev_keys(self.num_accounts, self.mnemonic)

    def chain(self) -> Chain:
        """A :class:`Chain` on this node, signing with its funded accounts."""
        return rpc(self.url, self.private_keys, chain_id=self.chain_id)

    def _spawn(self, binary: Path, host: str, port: int) -> None:
        """Launch anvil on ``host:port``; its output goes to a temporary file for errors."""
        self.port = port
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        command = [
            str(binary),
            "--host",
            host,
            "--port",
            str(port),
            "--accounts",
            str(self.num_accounts),
            "--mnemonic",
            self.mnemonic,
            "--chain-id",
            str(self.chain_id),
            "--hardfork",
            EVM_HARDFORK,
            "--silent",
        ]
        try:
            # Own process group: the npm package's anvil is a Node wrapper that spawns
            # the real binary, and both must go on stop().
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ChainError(f"cannot run anvil at {binary}: {exc}", hint=_ANVIL_HINT) from exc

    def start(self) -> Anvil:
        binary = self.binary if self.binary is not None else find_anvil()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise ChainError(f"anvil binary {binary} does not exist", hint=_ANVIL_HINT)
        last_error = ""
        # A port found free can be taken before anvil binds it; try a few.
        for _attempt in range(3):
            self._spawn(binary, "127.0.0.1", _free_port())
            if self._wait_ready():
                return self
            last_error = self._output()
            self.stop()
        raise ChainError(
            f"anvil at {binary} did not start: {last_error or 'no output'}", hint=_ANVIL_HINT
        )

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            request = urllib.request.Request(
                self.url, data=body.encode(), headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=1.0) as response:
                    answered = "result" in json.loads(response.read())
                # Whoever answered, it is not ours if our process has already died (another
                # node took the port first).
                if answered:
                    return self._proc.poll() is None
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        return False

    def _output(self) -> str:
        if self._log is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._log.seek(0)
            return str(self._log.read().decode(errors="replace").strip()[-2000:])
        return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            # start_new_session made the wrapper the leader of its own group: signal that group
            # (and nothing else), and return only when all of it is gone, so the port is free
            # again (a restart on it then works).
            stop_group(proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"on port {self.port}" if self.port is not None else "stopped"
        return f"Anvil({state}, {self.num_accounts} accounts)"
