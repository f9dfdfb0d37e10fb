"""Every Flower internal fedmarket relies on, in one module, for the pinned flwr versions only.

fedmarket's node speaks the SuperLink's Fleet API through flwr's own client module instead of
running ``flower-supernode`` (which would execute whatever app a requester ships), and the
requester pulls replies with a short back-off instead of ``Grid.send_and_receive``'s 3 s sleep.
Both need names flwr does not promise to keep. They are all here: ``INTERNALS`` records the
SHA-256 of each one's source as of the pinned version, and ``tests/deploy/test_flower_pins.py``
fails the day any of them changes, so an upgrade is a decision, not an accident.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from fedmarket.errors import ConfigError

PINNED = ("1.42.0",)

# module:qualified name -> sha256 of its source (inspect.getsource) in the pinned flwr
INTERNALS = {
    "flwr.supernode.fleet_http_connection:http_request_response": (
        "b80ca36779c2657f161509c5f94c8524c89d3b1a0d0245a4b9eec10876f09ea1"
    ),
    "flwr.supercore.inflatable.inflatable_utils:pull_objects": (
        "31bb2de46b450e6acfadb7a8bb15e3f2074bb112199826a40a5eaa648bad5b2b"
    ),
    "flwr.supercore.inflatable.inflatable_utils:push_objects": (
        "5893dafc584a46c8f743cad77554f3366cc03074f7807238bd3dd07ec2be39d0"
    ),
    "flwr.supercore.inflatable.inflatable_utils:inflate_object_from_contents": (
        "93b98a2ea3f35c4f75da5e199c16a202bc5be07d608afa35ef77770453e5727b"
    ),
    "flwr.supercore.inflatable.inflatable_utils:ObjectPullError": (
        "58868c9b8beea08fe813e01a0f59394dfeeda33761450be17af1ec61d85e4c35"
    ),
    "flwr.supercore.inflatable.inflatable_object:get_object_tree": (
        "d247ce6d76fd2e691e65595c5d39c56e73d650ff5550503dbe472e6687f37f26"
    ),
    "flwr.supercore.inflatable.inflatable_object:get_all_nested_objects": (
        "409d9822fd87e1eb6aed98ea62130473fd80f3d4a8d5ed5d373b628d1c19bc70"
    ),
    "flwr.supercore.inflatable.inflatable_object:iterate_object_tree": (
        "34c0fe845619356afb33f6f13edcf4a724ccf387ffa9e9ab69b14aeab33cf0fc"
    ),
    "flwr.supercore.inflatable.inflatable_object:no_object_id_recompute": (
        "1374cc3f64f13fe8146edc8321c8b57029da9c5c418623f722b0c84bc5d4c30d"
    ),
    "flwr.app.metadata:Metadata.message_id": (
        "9e0e1b5a50c5ff097e7938c56c4a7b32d6946c2e7885457af87223825a4bf3eb"
    ),
    "flwr.supercore.run:Run": ("2f1566491e6beccfc19530ce57bb5dcd5d610d6566acd43a1d97d5d0e5cb2030"),
    "flwr.supercore.run:RunNotRunningException": (
        "c6cd25f48f7dab64ab40faf5b63c2c6f09bcf48ef43532907556b38fbe5259e9"
    ),
    "flwr.superlink.grid.http_grid:HttpGrid.pull_messages": (
        "67a5266a5a2ed51557437a15ef4c8844f46576bc5bb6b0753d2a2f6230a3aa83"
    ),
    "flwr.superlink.runtime.run_serverapp:run_serverapp": (
        "2cf00cc3bc7ef87c52d78be204a566aec13007e7a17625ea48c31f2dff6fe8ea"
    ),
    "flwr.superlink.cli.flwr_serverapp:flwr_serverapp": (
        "b274501e3b1ebaf9d5a548331057904cb75216779a9094b5a446f214bccb86d2"
    ),
    "flwr.superlink.grid.http_grid:HttpGrid.push_messages": (
        "9aa5938ad18d36f91fc788748303da90b37905fe20b8cb89448d86a05d3c53fa"
    ),
}

# what a node and the requester pass to pull_objects instead of flwr's 1 s -> 10 s back-off:
# a message is visible before all its objects are uploaded, so a fast reader often waits a bit
PULL_BACKOFF = {"initial_backoff": 0.002, "backoff_cap": 0.05}


def installed_version() -> str:
    try:
        return importlib.metadata.version("flwr")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def check_version() -> None:
    """Refuse to run against a flwr whose internals were never checked."""
    found = installed_version()
    if found not in PINNED:
        raise ConfigError(
            f"fedmarket's Flower runtime needs flwr {' or '.join(PINNED)}, found {found}: "
            f"pip install flwr=={PINNED[-1]}"
        )


def resolve(name: str) -> Any:
    """The object ``module:qualified.name`` names."""
    module, _, attr = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, property) and obj.fget is not None:
        obj = obj.fget
    return obj


def source_digest(name: str) -> str:
    return hashlib.sha256(inspect.getsource(resolve(name)).encode()).hexdigest()


# ------------------------------------------------------------------ the node's side


class PullLimitExceeded(Exception):
    """A message could not be pulled: too many objects, too many bytes, or gone."""


def bounded_pull_objects(
    object_ids: list[str],
    pull_object_fn: Callable[[str], bytes],
    *,
    max_bytes: int,
    max_objects: int,
    **backoff: float,
) -> dict[str, bytes]:
    """flwr's parallel object pull with a short back-off, stopped (``ObjectPullError``) as
    soon as the objects exceed ``max_objects`` or their bytes ``max_bytes``: the object tree
    carries no sizes, so the pull is where the bound goes."""
    from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, pull_objects

    if len(object_ids) > max_objects:
        raise ObjectPullError(object_ids[0], f"{len(object_ids)} objects (limit {max_objects})")
    lock = threading.Lock()
    total = [0]

    def pull_one(object_id: str) -> bytes:
        data = pull_object_fn(object_id)
        with lock:
            total[0] += len(data)
            if total[0] > max_bytes:
                raise ObjectPullError(object_id, f"over {max_bytes} bytes in total")
        return data

    return pull_objects(object_ids, pull_one, **{**PULL_BACKOFF, **backoff})  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunInfo:
    """What the SuperLink says about a run: which app it is (never fetched, never run)."""

    run_id: int
    fab_id: str
    fab_version: str
    fab_hash: str


@dataclass
class Incoming:
    """One message for this node: its content-less metadata and, once pulled, the message."""

    run_id: int
    message_id: str
    message_type: str
    object_ids: list[str]
    head: Any  # flwr Message without content (what a refusal replies to)


class FleetLink:
    """A node's connection to the SuperLink's Fleet API (flwr's own HTTP client module)."""

    def __init__(self, node_id: int, calls: tuple[Callable[..., Any], ...]) -> None:
        self.node_id = node_id
        self.requests: Counter[str] = Counter()  # SuperLink requests made, by kind

        def counted(kind: str, call: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any) -> Any:
                self.requests[kind] += 1
                return call(*args)

            return wrapper

        names = ("poll", "push", "run", "fab", "pull_object", "push_object", "confirm")
        wrapped = [counted(n, c) for n, c in zip(names, calls, strict=True)]
        (self._receive, self._send, self._get_run, _get_fab, self._pull_object,
         self._push_object, self._confirm) = wrapped  # fmt: skip
        # _get_fab is never called: a node never downloads an app

    def poll(self) -> Incoming | None:
        """One PullMessages call: the next message for this node, if any (no objects yet)."""
        from flwr.supercore.inflatable.inflatable_object import iterate_object_tree

        got = self._receive()
        if got is None:
            return None
        message, tree = got
        md = message.metadata
        ids = [node.object_id for node in iterate_object_tree(tree)]
        return Incoming(md.run_id, md.message_id, md.message_type, ids, message)

    def run(self, run_id: int) -> RunInfo:
        run = self._get_run(run_id)
        return RunInfo(run.run_id, run.fab_id, run.fab_version, run.fab_hash)

    def pull(self, incoming: Incoming, *, max_bytes: int, max_objects: int) -> Any:
        """The whole message, its objects pulled with a short back-off; more than
        ``max_objects`` objects or ``max_bytes`` in total raise ``PullLimitExceeded`` before
        anything is inflated."""
        from flwr.supercore.inflatable.inflatable_utils import (
            ObjectPullError,
            inflate_object_from_contents,
        )

        try:
            contents = bounded_pull_objects(
                incoming.object_ids,
                functools.partial(self._pull_object, incoming.run_id),
                max_bytes=max_bytes,
                max_objects=max_objects,
            )
        except ObjectPullError as exc:
            raise PullLimitExceeded(str(exc)) from None
        self._confirm(incoming.run_id, incoming.message_id)
        message = inflate_object_from_contents(incoming.message_id, contents)
        _set_message_id(message, incoming.message_id)
        return message

    def reply(self, to: Any, content: Any, seconds: float) -> None:
        """Send ``content`` (a RecordDict, or an ``flwr.app.Error``) as the reply to ``to``."""
        from flwr.app import Message
        from flwr.supercore.inflatable.inflatable_object import (
            get_all_nested_objects,
            get_object_tree,
            no_object_id_recompute,
        )
        from flwr.supercore.inflatable.inflatable_utils import push_objects

        reply = Message(content, reply_to=to)
        with no_object_id_recompute():
            _set_message_id(reply, reply.object_id)
            ids, session = self._send(reply, get_object_tree(reply), seconds)
            if ids:
                push = functools.partial(self._push_object, to.metadata.run_id, session)
                push_objects(get_all_nested_objects(reply), push, object_ids_to_push=set(ids))


def _set_message_id(message: Any, message_id: str) -> None:
    # flwr's own idiom (Grid.push_messages, the SuperNode): the id is the content hash
    message.metadata.__dict__["_message_id"] = message_id


def run_not_running() -> type[BaseException]:
    """What flwr raises (a BaseException) when the run a call belongs to has ended."""
    from flwr.supercore.run import RunNotRunningException

    return RunNotRunningException


@contextmanager
def fleet_link(
    address: str,
    *,
    root_certificates: str | None,
    max_wait_time: float,
) -> Iterator[FleetLink]:
    """Register and activate a node (heartbeats run in flwr's thread); ``root_certificates``
    None means insecure. A call that cannot reach the SuperLink gives up after
    ``max_wait_time`` seconds with an exception. flwr exits the process if the first
    connection fails, so callers check ``/health`` first.

    flwr's context manager logs and swallows an ``Exception`` raised in the ``with`` body;
    callers catch their own errors inside it.
    """
    from flwr.supernode.fleet_http_connection import http_request_response

    with http_request_response(
        address,
        root_certificates is None,
        root_certificates,
        max_wait_time=max_wait_time,
    ) as calls:
        yield FleetLink(int(calls[0]), cast(tuple[Callable[..., Any], ...], calls[1:]))


# ------------------------------------------------------------------ the requester's side


def fast_object_pulls(*, max_bytes: int, max_objects: int) -> None:
    """Make ``HttpGrid.pull_messages`` pull each reply's objects with a short back-off and
    within bounds: flwr's first retry waits 1 s, and a reply is visible before its objects
    are (a fast poller hits that in most rounds); a reply over the bounds becomes flwr's own
    error reply ("objects unavailable"), which the transport treats as no answer. Rebinds one
    module-level name, after checking it is what we expect."""
    check_version()
    from flwr.supercore.inflatable import inflatable_utils
    from flwr.superlink.grid import http_grid

    current = http_grid.pull_objects
    if current is not inflatable_utils.pull_objects and not getattr(current, "fedmarket", False):
        raise ConfigError("flwr's HttpGrid no longer pulls objects through pull_objects")
    params = inspect.signature(inflatable_utils.pull_objects).parameters
    if not all(k in params for k in PULL_BACKOFF):
        raise ConfigError("flwr's pull_objects no longer takes a back-off")

    def pull(object_ids: list[str], pull_object_fn: Callable[[str], bytes], **_: Any) -> Any:
        return bounded_pull_objects(
            object_ids, pull_object_fn, max_bytes=max_bytes, max_objects=max_objects
        )

    pull.fedmarket = True  # type: ignore[attr-defined]
    http_grid.pull_objects = pull


# ------------------------------------------------------------------ the SuperLink's side


class RefusedApp(Exception):
    """A run of an app this SuperLink does not run (raised before anything is installed)."""


def serverapp_command() -> str:
    """The name the SuperLink's SuperExec starts a ServerApp process by (found on PATH)."""
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND, TaskType

    return TASK_TYPE_TO_COMMAND[TaskType.SERVER_APP]


def run_gated_serverapp(allowed: frozenset[str]) -> None:
    """Be ``flwr-serverapp``, except that a FAB whose SHA-256 is not in ``allowed`` is never
    installed, imported or run: the run fails with the refusal as its reason. Rebinds the one
    name ``run_serverapp`` installs FABs through, after checking it is there."""
    check_version()
    module = importlib.import_module("flwr.superlink.runtime.run_serverapp")
    original = getattr(module, "install_from_fab", None)
    if original is None:
        raise ConfigError("flwr's run_serverapp no longer installs FABs through install_from_fab")

    def install(fab_content: bytes, *args: Any, **kwargs: Any) -> Any:
        digest = hashlib.sha256(fab_content).hexdigest()
        if digest not in allowed:
            raise RefusedApp(f"this SuperLink runs only fedmarket's app, not the FAB {digest[:12]}")
        return original(fab_content, *args, **kwargs)

    module.install_from_fab = install  # type: ignore[attr-defined]
    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp

    flwr_serverapp()
