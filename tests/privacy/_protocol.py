"""What the whole-protocol privacy tests share: a private breast-cancer task and a run of it on
the plaintext twin (in-memory ledger, processors inline)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedmarket.protocol.plaintext import Plaintext
from fedmarket.run import RunResult, run_task
from fedmarket.spec import SpecFile, load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def private_spec(
    epochs: int,
    *,
    epsilon: float = 8.0,
    changes: Mapping[str, Mapping[str, Any]] | None = None,
) -> SpecFile:
    """The breast-cancer example with ``[privacy]`` enabled, ``epochs`` epochs and no plateau
    stop; ``changes`` updates whole sections (e.g. ``{"he": {"block_points": 128}}``)."""
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = epochs
    data["stopping"]["patience"] = 0
    data["privacy"].update(enabled=True, epsilon=epsilon)
    for section, values in (changes or {}).items():
        data[section].update(values)
    return SpecFile.model_validate(data)


def play(spec: SpecFile, transport: Any = None, **kw: Any) -> RunResult:
    """Run ``spec`` as users run it, with the twin's crypto unless ``crypto=`` says otherwise."""
    return run_task(
        spec,
        base=EXAMPLES,
        workers=0,
        crypto=kw.pop("crypto", Plaintext()),
        chain_url="memory",
        transport=transport,
        **kw,
    )


def used(result: RunResult) -> list[int]:
    """Blocks whose totals the requester decrypted and used, per epoch."""
    return [o.blocks_used for o in result.outcomes]
