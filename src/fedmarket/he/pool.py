"""Run the processor's program on several cores: worker processes that keep their blocks.

A processor receives each block once and runs the program on it every epoch, so blocks are
parsed once into the worker that owns them and only the model (and the result ciphertexts)
cross process boundaries per epoch. SEAL's evaluator holds the GIL, so threads would not help.
When there are fewer blocks than workers, small blocks are copied to every worker and their
class groups are split between them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tenseal.sealapi as sa

from fedmarket.errors import CryptoError, FedmarketError, UntrustedInputError
from fedmarket.he import mlp
from fedmarket.he._seal import OUT, dump
from fedmarket.he.keys import PublicContext
from fedmarket.he.packing import EncryptedBlock
from fedmarket.he.program import (
    EncryptedModel,
    add,
    all_reduce,
    gradient_sums,
    pack_result,
    process_block,
    residual,
    z_share,
    z_share_level,
)


def _error_payload(exc: BaseException) -> tuple[str, str, str | None, str | None]:
    if isinstance(exc, UntrustedInputError):
        return ("untrusted", exc.message, exc.party, exc.hint)
    if isinstance(exc, FedmarketError):
        return ("crypto", exc.message, None, exc.hint)
    return ("crypto", f"{type(exc).__name__}: {exc}", None, None)


def _raise(payload: tuple[str, str, str | None, str | None]) -> None:
    kind, message, party, hint = payload
    if kind == "untrusted":
        # The worker's message already starts with "party: "; rebuild without doubling it.
        prefix = f"{party}: "
        raise UntrustedInputError(
            message.removeprefix(prefix), party=party or "unknown party", hint=hint
        )
    raise CryptoError(f"processor worker failed: {message}", hint=hint)


class _State:
    """What a worker (or the inline processor) holds: the context and its parsed blocks."""

    def __init__(self, context_bytes: bytes) -> None:
        self.context = PublicContext.from_bytes(context_bytes, party="requester")
        self.blocks: dict[str, EncryptedBlock | mlp.MLPBlock] = {}
        self.shares: dict[tuple[str, int], sa.Ciphertext] = {}  # between the two rounds

    def add(self, data: bytes, party: str) -> tuple[str, int]:
        block: EncryptedBlock | mlp.MLPBlock
        if self.context.spec.is_mlp:
            block = mlp.MLPBlock.from_bytes(self.context, data, party=party)
        else:
            block = EncryptedBlock.from_bytes(self.context, data, party=party)
        if block.block_id in self.blocks:
            raise UntrustedInputError(f"block {block.block_id!r} was already received", party=party)
        self.blocks[block.block_id] = block
        return block.block_id, block.n_samples

    def run(self, model_bytes: bytes, party: str, units: list[tuple[str, int]]) -> list[Any]:
        if self.context.spec.is_mlp:
            return self._run_mlp(model_bytes, party, units)
        needed = sorted({group for _, group in units})
        model = EncryptedModel.from_bytes(self.context, model_bytes, party=party, groups=needed)
        by_block: dict[str, list[int]] = defaultdict(list)
        for block_id, group in units:
            by_block[block_id].append(group)
        out: dict[tuple[str, int], bytes] = {}
        for block_id, groups in by_block.items():
            block = self.blocks[block_id]
            assert isinstance(block, EncryptedBlock)
            for group, ct in zip(
                groups, process_block(self.context, model, block, groups), strict=True
            ):
                out[(block_id, group)] = dump(ct)
        return [out[unit] for unit in units]

    def _run_mlp(
        self, model_bytes: bytes, party: str, units: list[tuple[str, int]]
    ) -> list[list[bytes]]:
        """An mlp block is one unit: its whole result (every payload) per block."""
        model = mlp.MLPModel.from_bytes(self.context, model_bytes, party=party)
        out = []
        for block_id, _ in units:
            block = self.blocks[block_id]
            assert isinstance(block, mlp.MLPBlock)
            out.append([dump(ct) for ct in mlp.process_block(self.context, model, block)])
        return out

    def z_shares(self, model_bytes: bytes, party: str, units: list[tuple[str, int]]) -> list[bytes]:
        """Round 1 of blocks run in two parts: this worker's z share per (block, part)."""
        spec = self.context.spec
        columns = sorted({c for _, part in units for c in spec.part_model_columns(part)})
        model = EncryptedModel.from_bytes(
            self.context, model_bytes, party=party, groups=[0], columns=columns
        )
        self.shares.clear()
        out = []
        for block_id, part in units:
            block = self.blocks[block_id]
            assert isinstance(block, EncryptedBlock)
            share = z_share(self.context, model, block, 0, part)
            self.shares[(block_id, part)] = share
            out.append(dump(share))
        return out

    def finish(self, units: list[tuple[str, int, bytes]]) -> list[bytes]:
        """Round 2: z from both shares, then this part's gradient sums, per (block, part)."""
        level, scale = z_share_level(self.context)
        out = []
        for block_id, part, other_bytes in units:
            other = self.context.runtime.load_ciphertext(
                other_bytes, level=level, scale=scale, what="z share", party="processor worker"
            )
            own = self.shares.pop((block_id, part))
            block = self.blocks[block_id]
            assert isinstance(block, EncryptedBlock)
            z = add(self.context, [own, other] if part == 0 else [other, own])
            h = residual(self.context, z, block, 0)
            out.append(dump(gradient_sums(self.context, h, block, part)))
        return out


class _Worker:
    """One worker process and the connection to it.

    On POSIX a worker is ``python -m fedmarket.he._worker FD``: a fresh interpreter that
    imports only this package (~0.2 s), with one end of a socket pair as its connection.
    multiprocessing's spawn and forkserver would import the caller's main module again in
    every worker (over a second for a script that imports web3 and scikit-learn), and need
    the caller to guard its entry point; plain fork would copy the caller's SEAL memory pools
    and threads. Elsewhere (Windows) multiprocessing's spawn is the fallback.
    """

    def __init__(self) -> None:
        self._popen: subprocess.Popen[bytes] | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        if os.name == "posix":
            ours, theirs = socket.socketpair()
            package_root = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                [package_root, *filter(None, [env.get("PYTHONPATH")])]
            )
            with theirs:
                self._popen = subprocess.Popen(
                    [sys.executable, "-m", "fedmarket.he._worker", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    env=env,
                    # out of the terminal's process group: Ctrl-C goes to the parent only
                    start_new_session=True,
                )
            self.conn = multiprocessing.connection.Connection(ours.detach())
        else:  # pragma: no cover - exercised on platforms without fd passing only
            ctx = multiprocessing.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self._process = ctx.Process(target=worker_main, args=(child,), daemon=True)
            self._process.start()
            child.close()

    @property
    def pid(self) -> int | None:
        if self._popen is not None:
            return self._popen.pid
        assert self._process is not None
        return self._process.pid

    def is_alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        assert self._process is not None
        return self._process.is_alive()

    @property
    def exitcode(self) -> int | None:
        if self._popen is not None:
            return self._popen.poll()
        assert self._process is not None
        return self._process.exitcode

    def join(self, timeout: float) -> None:
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout)
        else:
            assert self._process is not None
            self._process.join(timeout)

    def terminate(self) -> None:
        if self._popen is not None:
            self._popen.terminate()
            self._popen.wait()
        else:
            assert self._process is not None
            self._process.terminate()


def worker_main(conn: multiprocessing.connection.Connection) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the pool's owner decides what an
    # interrupt means (back off at the epoch boundary, settle), so a worker never dies of one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _serve(conn)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return  # the pool's owner left (it stopped mid-epoch): nobody is waiting for us


def _serve(conn: multiprocessing.connection.Connection) -> None:
    try:
        # The context (~13 MB) comes as the first message, not as a start argument: that
        # keeps Process.start from blocking until the child reads it.
        state = _State(conn.recv())
        conn.send(("ok", None))
    except BaseException as exc:
        conn.send(("error", _error_payload(exc)))
        return
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        op = message[0]
        if op == "stop":
            return
        try:
            if op == "add":
                reply: Any = state.add(message[1], message[2])
            elif op == "run":
                reply = state.run(message[1], message[2], message[3])
            elif op == "shares":
                reply = state.z_shares(message[1], message[2], message[3])
            elif op == "finish":
                reply = state.finish(message[1])
            else:
                raise CryptoError(f"unknown pool operation {op!r}")
            conn.send(("ok", reply))
        except BaseException as exc:
            conn.send(("error", _error_payload(exc)))


@dataclass(frozen=True)
class _Placed:
    n_samples: int
    workers: tuple[int, ...]


class ProcessorPool:
    """A processor's blocks spread over ``workers`` processes (0 = run inline, one core).

    ``add_block`` takes an owner's block message; ``run_epoch`` takes the requester's model
    message and returns one result message per block, exactly what ``run_program`` returns.
    """

    def __init__(self, context_bytes: bytes, workers: int = 2) -> None:
        self._context = PublicContext.from_bytes(context_bytes, party="requester")
        self._inline = _State(context_bytes) if workers == 0 else None
        self._conns: list[multiprocessing.connection.Connection] = []
        self._procs: list[_Worker] = []
        self._blocks: dict[str, _Placed] = {}
        self._pending: list[tuple[bytes, str]] = []
        if workers:
            for _ in range(workers):
                worker = _Worker()
                self._conns.append(worker.conn)
                self._procs.append(worker)
            # The workers start and parse the context at the same time.
            for index in range(workers):
                self._send(index, context_bytes)
            for conn in self._conns:
                self._receive(conn)

    @property
    def workers(self) -> int:
        return len(self._conns)

    def __enter__(self) -> ProcessorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("stop",))
                conn.close()
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self._conns.clear()
        self._procs.clear()

    def _gather(self, workers: list[int]) -> dict[int, Any]:
        """Replies of several workers. Every reply is read before any error is raised, so no
        stale reply is left in a pipe to be mistaken for the answer to the next request."""
        replies: dict[int, Any] = {}
        failure: BaseException | None = None
        for worker in workers:
            try:
                replies[worker] = self._receive(self._conns[worker])
            except FedmarketError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return replies

    def _dead(self, index: int) -> CryptoError:
        proc = self._procs[index]
        proc.join(timeout=1.0)  # it may still be closing
        return CryptoError(
            f"a processor worker exited with code {proc.exitcode}",
            hint="its error output says why (killed, out of memory, or fedmarket not "
            f"importable by {sys.executable}); on Windows a script using "
            "ProcessorPool must guard its entry point with if __name__ == '__main__'",
        )

    def _send(self, index: int, message: Any) -> None:
        try:
            self._conns[index].send(message)
        except OSError:  # the worker is gone: a broken pipe or a reset connection
            raise self._dead(index) from None

    def _receive(self, conn: multiprocessing.connection.Connection) -> Any:
        index = self._conns.index(conn)
        proc = self._procs[index]
        # Poll so a worker that died without closing its pipe cannot hang the caller.
        while not conn.poll(1.0):
            if not proc.is_alive():
                raise self._dead(index)
        try:
            status, payload = conn.recv()
        except (EOFError, OSError):
            raise self._dead(index) from None
        if status == "error":
            _raise(payload)
        return payload

    def add_block(self, data: bytes, *, party: str = "data owner") -> None:
        """Queue a block; blocks are placed on workers when the first epoch runs."""
        self._pending.append((data, party))

    def _place_pending(self) -> None:
        # Blocks are placed one at a time; a bad block raises (naming its owner) and is
        # dropped, and the blocks queued after it stay queued for the next call.
        total = len(self._blocks) + len(self._pending)
        spec = self._context.spec
        # With fewer blocks than workers, every worker holds every block: class groups, or
        # the program's two parts, are then shared out.
        replicate = total < max(1, self.workers) and (spec.n_groups > 1 or spec.parts > 1)
        while self._pending:
            data, party = self._pending.pop(0)
            if self._inline is not None:
                block_id, n = self._inline.add(data, party)
                self._blocks[block_id] = _Placed(n, (0,))
                continue
            index = len(self._blocks)
            targets = tuple(range(self.workers)) if replicate else (index % self.workers,)
            for worker in targets:
                self._send(worker, ("add", data, party))
            block_id, n = self._gather(list(targets))[targets[0]]
            self._blocks[block_id] = _Placed(n, targets)

    def block_ids(self) -> list[str]:
        self._place_pending()
        return list(self._blocks)

    def run_epoch(self, model_bytes: bytes, *, party: str = "requester") -> dict[str, bytes]:
        """All blocks' result messages for one model, keyed by block id."""
        self._place_pending()
        spec = self._context.spec
        if spec.is_mlp:
            model_epoch, _ = mlp.MLPModel.envelope(self._context, model_bytes, party=party)
        else:
            model_epoch, _ = EncryptedModel.envelope(self._context, model_bytes, party=party)
        if (
            spec.parts > 1
            and self._blocks
            and all(len(placed.workers) > 1 for placed in self._blocks.values())
        ):
            return self._run_in_parts(model_bytes, party, model_epoch)
        units: dict[int, list[tuple[str, int]]] = defaultdict(list)
        load = [0] * max(1, self.workers)
        for block_id, placed in self._blocks.items():
            for group in range(spec.n_groups):
                worker = min(placed.workers, key=lambda w: load[w])
                load[worker] += 1
                units[worker].append((block_id, group))
        if self._inline is not None:
            collected = {0: self._inline.run(model_bytes, party, units[0])}
        else:
            for worker, todo in units.items():
                self._send(worker, ("run", model_bytes, party, todo))
            collected = self._gather(list(units))
        per_block: dict[str, dict[int, Any]] = defaultdict(dict)
        for worker, todo in units.items():
            for (block_id, group), ct_bytes in zip(todo, collected[worker], strict=True):
                per_block[block_id][group] = ct_bytes
        return {
            block_id: pack_result(
                self._context,
                block_id=block_id,
                epoch=model_epoch,
                n_samples=self._blocks[block_id].n_samples,
                payloads=groups[0] if spec.is_mlp else [groups[g] for g in range(spec.n_groups)],
            )
            for block_id, groups in per_block.items()
        }

    def _run_in_parts(self, model_bytes: bytes, party: str, epoch: int) -> dict[str, bytes]:
        """Each block's two parts on two workers: z shares out, swapped, then the sums, which
        this process adds and all-reduces (it is idle meanwhile, and holds the keys)."""
        rounds: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for i, (block_id, placed) in enumerate(self._blocks.items()):
            for part in (0, 1):
                rounds[placed.workers[(2 * i + part) % len(placed.workers)]].append(
                    (block_id, part)
                )
        workers = list(rounds)
        for worker in workers:
            self._send(worker, ("shares", model_bytes, party, rounds[worker]))
        replies = self._gather(workers)
        share = {
            unit: data
            for worker in workers
            for unit, data in zip(rounds[worker], replies[worker], strict=True)
        }
        for worker in workers:
            todo = [
                (block_id, part, share[(block_id, 1 - part)]) for block_id, part in rounds[worker]
            ]
            self._send(worker, ("finish", todo))
        replies = self._gather(workers)
        sums = {
            unit: data
            for worker in workers
            for unit, data in zip(rounds[worker], replies[worker], strict=True)
        }
        runtime = self._context.runtime
        out = {}
        for block_id, placed in self._blocks.items():
            parts = [
                runtime.load_ciphertext(
                    sums[(block_id, part)],
                    level=OUT,
                    scale=runtime.scales.out,
                    what=f"block {block_id} part {part}",
                    party="processor worker",
                )
                for part in (0, 1)
            ]
            payload = dump(all_reduce(self._context, add(self._context, parts)))
            out[block_id] = pack_result(
                self._context,
                block_id=block_id,
                epoch=epoch,
                n_samples=placed.n_samples,
                payloads=[payload],
            )
        return out
