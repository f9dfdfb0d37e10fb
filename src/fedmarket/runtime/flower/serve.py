"""``fedmarket node``'s loop: one long-lived process per node, speaking the SuperLink's Fleet API.

The node pulls its messages itself (``compat.FleetLink``), checks each run's app against its pin
(``pin.AppPin``: nothing a run ships is ever downloaded or executed), hands every action to its
warm party (``node.NodeWorker``, whose state is saved after every message) and replies. It polls
adaptively instead of sleeping 3 s: every few milliseconds right after traffic, then less
often (``PollPolicy``). Beside the messages it watches the chain for a requester that vanished
and claims the timeout. If the SuperLink goes away it keeps watching the chain and reconnects
(under a new node id; the requester's next ``hello`` re-identifies it).

Nothing here knows a protocol step: a message of type ``query.<action>`` goes to
``NodeWorker.handle`` for any action in ``fedmarket.protocol.party.ACTIONS`` (``hello`` is the
identity step), and the reply is the envelope the party returned.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx

from fedmarket.errors import ConfigError, FedmarketError, UntrustedInputError
from fedmarket.protocol.party import ACTIONS
from fedmarket.protocol.transport import Envelope
from fedmarket.runtime.flower import compat, records
from fedmarket.runtime.flower.node import NodeWorker
from fedmarket.runtime.flower.pin import REFUSAL, AppPin

log = logging.getLogger("fedmarket.node")
HELLO = "hello"


@dataclass(frozen=True)
class PollPolicy:
    """How long an idle node waits between polls: from ``first`` growing x1.5 to ``hot`` for
    ``hot_seconds`` after its last message, to ``warm`` while it has won a task (it may be
    asked for an audit at any epoch), else to ``idle``. Every poll costs the SuperLink a few
    milliseconds of CPU, so a node that has just replied first sleeps through ``expect`` of
    the usual wait after that kind of reply (the rest of an epoch after a model, say; at most
    ``hot_seconds`` / 4)."""

    first: float = 0.01
    hot: float = 0.05
    warm: float = 0.25
    idle: float = 1.0
    hot_seconds: float = 2.0
    expect: float = 0.7


class Poller:
    def __init__(self, policy: PollPolicy) -> None:
        self.policy = policy
        self.delay = policy.first
        self.last = -1e9
        self.replied = -1e9
        self.skip = 0.0
        self.after: str | None = None  # the action last answered
        # action answered -> the last few waits from that reply to the next message
        self.gaps: dict[str, list[float]] = {}

    def received(self) -> None:
        now = time.monotonic()
        if self.after is not None and now - self.replied < self.policy.hot_seconds:
            gaps = self.gaps.setdefault(self.after, [])
            self.gaps[self.after] = [*gaps[-2:], now - self.replied]
        self.last, self.delay, self.skip = now, self.policy.first, 0.0

    def answered(self, action: str) -> None:
        self.last = self.replied = time.monotonic()
        self.after = action
        self.delay = self.policy.first
        gaps = self.gaps.get(action, [])
        if len(gaps) >= 2:
            usual = sorted(gaps)[len(gaps) // 2]
            self.skip = min(self.policy.expect * usual, self.policy.hot_seconds / 4)

    def wait(self, busy: bool, stop: threading.Event) -> None:
        p = self.policy
        if self.skip > 0:
            stop.wait(self.skip)
            self.skip = 0.0
            return
        hot = time.monotonic() - self.last < p.hot_seconds
        cap = p.hot if hot else p.warm if busy else p.idle
        stop.wait(min(self.delay, cap))
        self.delay = min(cap, self.delay * 1.5)


def health(address: str, root_certificates: str | None, *, timeout: float = 5.0) -> str | None:
    """None if the SuperLink at ``address`` answers ``/health``; else what went wrong."""
    scheme = "http" if root_certificates is None else "https"
    verify: ssl.SSLContext | bool = False
    if root_certificates is not None:
        verify = ssl.create_default_context(cafile=root_certificates)
    try:
        response = httpx.get(f"{scheme}://{address}/health", verify=verify, timeout=timeout)
    except httpx.HTTPError as exc:
        text = str(exc) or type(exc).__name__
        if "ssl" in text.lower() or "certificate" in text.lower():
            return f"TLS failed ({text}): check --root-certificates / --insecure"
        return text
    if response.status_code != 200:
        return f"/health answered {response.status_code}"
    return None


def wait_for_superlink(
    address: str, root_certificates: str | None, timeout: float, stop: threading.Event
) -> None:
    """Until the SuperLink answers; a ConfigError naming the problem after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        problem = health(address, root_certificates)
        if problem is None:
            return
        if "TLS" in problem or time.monotonic() >= deadline or stop.is_set():
            raise ConfigError(
                f"no SuperLink at {address} ({problem}): start it first, or check "
                "--superlink and the TLS options"
            )
        stop.wait(0.5)


class NodeProcess:
    """Serve ``worker`` over the SuperLink at ``address`` until ``stop`` is set."""

    def __init__(
        self,
        worker: NodeWorker,
        address: str,
        *,
        root_certificates: str | None,
        pin: AppPin | None = None,
        policy: PollPolicy | None = None,
        watch_seconds: float = 30.0,
        link_timeout: float = 15.0,
    ) -> None:
        self.worker = worker
        self.address = address
        self.root_certificates = root_certificates
        self.pin = pin or AppPin()
        self.poller = Poller(policy or PollPolicy())
        self.watch_seconds = watch_seconds
        self.link_timeout = link_timeout
        self._runs: OrderedDict[int, compat.RunInfo] = OrderedDict()
        # the party handles one thing at a time: a message, or a look at the chain
        self._lock = threading.Lock()
        self._empty_polls = 0  # since the last message (logged with it)

    # ------------------------------------------------------------ the loop

    def serve(self, stop: threading.Event) -> None:
        watcher = threading.Thread(target=self._watch, args=(stop,), daemon=True)
        watcher.start()
        try:
            self._connect_and_serve(stop)
        finally:
            stop.set()
            watcher.join(timeout=60)

    def _connect_and_serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if health(self.address, self.root_certificates) is not None:
                stop.wait(1.0)
                continue
            with compat.fleet_link(
                self.address,
                root_certificates=self.root_certificates,
                max_wait_time=self.link_timeout,
            ) as link:
                log.info("connected to %s as node %s", self.address, link.node_id)
                try:
                    self._serve_link(link, stop)
                finally:
                    log.info("SuperLink requests: %s", dict(link.requests))
            if not stop.is_set():
                log.warning("lost the SuperLink at %s; reconnecting when it is back", self.address)

    def _serve_link(self, link: compat.FleetLink, stop: threading.Event) -> None:
        """Until ``stop`` or the connection fails; never raises (flwr's connection context
        would log and swallow an exception, and we want our own log line)."""
        ended = compat.run_not_running()
        while not stop.is_set():
            try:
                incoming = link.poll()
            except Exception as exc:
                log.warning("polling the SuperLink failed: %s", exc)
                return
            if incoming is None:
                self._empty_polls += 1
                self.poller.wait(self.worker.busy(), stop)
                continue
            self.poller.received()
            try:
                with self._lock:
                    self._answer(link, incoming)
            except ended:
                log.info("run %s ended before this node answered", incoming.run_id)
            except Exception as exc:
                log.warning("answering %s failed: %s", _name(incoming.message_type), exc)
                if isinstance(exc, httpx.TransportError):
                    return
            self.poller.answered(incoming.message_type)

    def _watch(self, stop: threading.Event) -> None:
        """Every ``watch_seconds``, whether or not the SuperLink is there: a requester that
        vanished takes its SuperLink with it."""
        while not stop.wait(self.watch_seconds):
            self.watch_once()

    def watch_once(self) -> None:
        try:
            with self._lock:
                done = self.worker.watch()
        except FedmarketError as exc:
            log.warning("watching the chain: %s", exc)
            return
        except Exception as exc:  # the chain unreachable, say: try again next time
            log.warning("watching the chain failed: %s", exc)
            return
        if done:
            log.warning("%s", done)

    # ------------------------------------------------------------ one message

    def _run(self, link: compat.FleetLink, run_id: int) -> compat.RunInfo:
        run = self._runs.get(run_id)
        if run is None:
            run = link.run(run_id)
            self._runs[run_id] = run
            while len(self._runs) > 64:
                self._runs.popitem(last=False)
        return run

    def _answer(self, link: compat.FleetLink, incoming: compat.Incoming) -> None:
        from flwr.app import Error

        start = time.monotonic()
        run = self._run(link, incoming.run_id)
        if not self.pin.allows(run):  # logs the refusal
            link.reply(incoming.head, Error(code=0, reason=REFUSAL), time.monotonic() - start)
            return
        kind = incoming.message_type
        action = kind.removeprefix("query.") if kind.startswith("query.") else ""
        if action != HELLO and action not in ACTIONS:
            log.warning("refused %s from run %s: no such fedmarket action", _name(kind), run.run_id)
            reason = f"unknown action {_name(kind)}"
            link.reply(incoming.head, Error(code=0, reason=reason), time.monotonic() - start)
            return
        try:
            message = link.pull(
                incoming,
                max_bytes=records.MAX_MESSAGE_BYTES + (1 << 20),
                max_objects=records.MAX_OBJECTS,
            )
        except compat.PullLimitExceeded as exc:
            log.warning("%s from run %s refused: %s", action, run.run_id, exc)
            reason = f"requester: message refused ({exc})"
            link.reply(incoming.head, Error(code=0, reason=reason), time.monotonic() - start)
            return
        pulled = time.monotonic()
        self.worker.save_seconds = 0.0
        reply = self._handle(action, message, run.run_id, link.node_id)
        handled = time.monotonic()
        link.reply(message, records.pack(reply), handled - start)
        done = time.monotonic()
        log.info(
            "%s answered in %.3f s (pull %.3f, handle %.3f of which saving %.3f, reply %.3f; "
            "%d empty polls before it)",
            action, done - start, pulled - start, handled - pulled, self.worker.save_seconds,
            done - handled, self._empty_polls,
        )  # fmt: skip
        self._empty_polls = 0

    def _handle(self, action: str, message: Any, run_id: int, node_id: int) -> Envelope:
        try:
            if message.has_error():
                raise UntrustedInputError("sent an error instead of a request", party="requester")
            request = records.unpack(message.content, party="requester")
            if action == HELLO:
                return self.worker.hello(request.fields, run_id, node_id)
            reply = self.worker.handle(action, request)
        except FedmarketError as exc:
            log.warning("%s: %s", action, exc)
            return Envelope.error(str(exc))
        except Exception as exc:  # a bug: say so, keep serving
            log.exception("%s failed", action)
            return Envelope.error(f"the node failed on {action}: {type(exc).__name__}")
        return Envelope({records.SILENT: True}) if reply is None else reply


def _name(message_type: str) -> str:
    """A message type from the requester, safe to log."""
    return repr(message_type[:64])
