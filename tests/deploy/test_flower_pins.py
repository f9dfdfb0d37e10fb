"""The Flower internals fedmarket relies on are the ones it was written against.

If one of these fails after a flwr upgrade: read the changed code (``compat.resolve(name)``),
adapt ``fedmarket/runtime/flower/compat.py`` if needed, then record the new digest (and the
version in ``compat.PINNED``). Nothing here starts a process.
"""

from __future__ import annotations

import hashlib
import tomllib

import pytest

from fedmarket.runtime.flower import compat, records
from fedmarket.runtime.flower.pin import APP_DIR, APP_FAB_SHA256, AppPin


def test_the_installed_flwr_is_a_pinned_version() -> None:
    assert compat.installed_version() in compat.PINNED


@pytest.mark.parametrize("name", sorted(compat.INTERNALS))
def test_an_internal_we_rely_on_has_not_changed(name: str) -> None:
    assert compat.source_digest(name) == compat.INTERNALS[name], (
        f"flwr changed {name}: re-read it and adapt compat.py before updating its digest"
    )


def test_the_requester_pulls_replies_fast_and_bounded() -> None:
    from flwr.supercore.inflatable import inflatable_utils
    from flwr.superlink.grid import http_grid

    original = http_grid.pull_objects
    try:
        compat.fast_object_pulls(max_bytes=10, max_objects=3)
        compat.fast_object_pulls(max_bytes=10, max_objects=3)  # twice is fine
        pull = http_grid.pull_objects
        assert pull is not inflatable_utils.pull_objects
        store = {"a": b"12345", "b": b"67890", "c": b"x"}
        assert pull(["a", "b"], store.__getitem__) == {"a": b"12345", "b": b"67890"}
        with pytest.raises(inflatable_utils.ObjectPullError, match="over 10 bytes"):
            pull(["a", "b", "c"], store.__getitem__)
        with pytest.raises(inflatable_utils.ObjectPullError, match="4 objects"):
            pull(["a", "b", "c", "d"], store.__getitem__)
    finally:
        http_grid.pull_objects = original


def test_a_message_the_node_may_pull_fits_the_largest_envelope() -> None:
    # a processor's sealed blocks: up to MAX_MESSAGE_BYTES in MAX_FRAMES frames
    assert records.MAX_OBJECTS >= 4 + 2 * records.MAX_FRAMES + records.MAX_MESSAGE_BYTES // (
        5 << 20
    )


def test_the_pinned_app_is_the_one_fedmarket_request_submits() -> None:
    from flwr.cli.build import build_fab_from_disk

    assert sorted(p.name for p in APP_DIR.iterdir() if p.name != "__pycache__") == [
        "pyproject.toml"
    ]
    fab = build_fab_from_disk(APP_DIR)
    assert hashlib.sha256(fab).hexdigest() == APP_FAB_SHA256
    project = tomllib.loads((APP_DIR / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == [f"flwr=={compat.PINNED[-1]}"]
    pin = AppPin.with_extra(["AB" * 32])
    assert pin.allowed == {APP_FAB_SHA256, "ab" * 32}


def test_the_app_folder_ships_inside_the_package() -> None:
    from importlib.resources import files

    assert (files("fedmarket.runtime.flower") / "fab" / "pyproject.toml").is_file()
