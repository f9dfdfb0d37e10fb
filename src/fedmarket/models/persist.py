"""Save and load models as small versioned ``.npz`` files (no pickle), validated on load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fedmarket.errors import ConfigError

FORMAT_NAME = "fedmarket.model"
FORMAT_VERSION = 1
# A linear model over thousands of features and classes is far below this; anything larger is
# not a file we wrote, and np.load would otherwise read it all into memory.
MAX_MODEL_FILE_BYTES = 64 * 1024 * 1024
MAX_DIM = 1_000_000


class ModelFormatError(ConfigError):
    """A model file is missing, too large, or not a fedmarket model of a supported version."""


def save_arrays(path: str | os.PathLike[str], kind: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` plus the format name, version and model kind to ``path``."""
    payload = {
        "format": np.array(FORMAT_NAME),
        "version": np.array(FORMAT_VERSION, dtype=np.int64),
        "kind": np.array(kind),
        **arrays,
    }
    target = Path(path)
    # np.savez appends ".npz" to names without it; write to an open file so the name is exact.
    with target.open("wb") as handle:
        np.savez(handle, **payload)  # type: ignore[arg-type]


def peek_kind(path: str | os.PathLike[str]) -> str | None:
    """The model kind a file declares, or None if it is not a readable model file (``load_arrays``
    then says why)."""
    try:
        if Path(path).stat().st_size > MAX_MODEL_FILE_BYTES:
            return None
        with np.load(Path(path), allow_pickle=False) as npz:
            kind = npz["kind"] if "kind" in npz.files else None
            return str(kind) if kind is not None and kind.shape == () else None
    except (OSError, ValueError, EOFError):
        return None


def load_arrays(
    path: str | os.PathLike[str], expected: dict[str, str]
) -> tuple[str, dict[str, np.ndarray]]:
    """Read a model file; ``expected`` maps array names to dtype kinds ('f' float, 'U' text).

    Returns the model kind and the arrays; anything unexpected raises ``ModelFormatError``.
    """
    target = Path(path)
    hint = "save models with Model.save(); load them with fedmarket.models.load_model()"
    try:
        size = target.stat().st_size
    except OSError as exc:
        raise ModelFormatError(f"cannot read model file {target}: {exc.strerror}") from exc
    if size > MAX_MODEL_FILE_BYTES:
        raise ModelFormatError(
            f"model file {target} is {size} bytes, over the {MAX_MODEL_FILE_BYTES}-byte limit",
            hint=hint,
        )
    try:
        with np.load(target, allow_pickle=False) as npz:
            names = set(npz.files)
            header = {"format", "version", "kind"}
            if names != header | set(expected):
                raise ModelFormatError(
                    f"model file {target} has arrays {sorted(names)}, "
                    f"expected {sorted(header | set(expected))}",
                    hint=hint,
                )
            fmt = npz["format"]
            version = npz["version"]
            kind = npz["kind"]
            arrays = {name: npz[name] for name in expected}
    except ModelFormatError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise ModelFormatError(f"{target} is not a readable .npz model file: {exc}") from exc
    if fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != FORMAT_NAME:
        raise ModelFormatError(f"{target} is not a fedmarket model file", hint=hint)
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise ModelFormatError(
            f"{target} has model format version {version!r}; this fedmarket reads "
            f"version {FORMAT_VERSION}",
            hint="re-save the model with this fedmarket version",
        )
    if kind.shape != () or kind.dtype.kind != "U":
        raise ModelFormatError(f"{target} has no valid model kind", hint=hint)
    for name, dtype_kind in expected.items():
        array = arrays[name]
        if array.dtype.kind != dtype_kind and not (dtype_kind == "f" and array.dtype.kind in "iu"):
            raise ModelFormatError(f"{target}: array {name!r} has dtype {array.dtype}", hint=hint)
        if array.ndim > 2 or any(dim > MAX_DIM for dim in array.shape):
            raise ModelFormatError(f"{target}: array {name!r} has shape {array.shape}", hint=hint)
        if dtype_kind == "f":
            arrays[name] = array.astype(np.float64)
            if not np.all(np.isfinite(arrays[name])):
                raise ModelFormatError(f"{target}: array {name!r} has non-finite values")
    return str(kind), arrays
