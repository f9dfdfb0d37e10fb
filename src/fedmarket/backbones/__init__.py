"""Backbones that ship inside fedmarket, for specs to name as ``file = "builtin:NAME"``.

A built-in backbone is the exact bytes of an ONNX file, kept as base64 text in a module of this
package (so it travels wherever the package's Python files go), with their sha256. A spec names
it as it names a file: ``file = "builtin:digits-cnn"`` and the file's ``sha256``; owners load
it through ``fedmarket.backbone`` under that hash, exactly as they would the file.

* ``digits-cnn``: the CNN of ``examples/digits_cnn_head.toml`` (8x8 digits, pixel / 16, to a
  31-dimensional embedding), trained and exported by ``examples/backbone/train_cnn.py``.

To get the file itself: ``Path("digits_cnn.onnx").write_bytes(onnx_bytes("digits-cnn"))``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib

from fedmarket.errors import ConfigError

PREFIX = "builtin:"
# name -> the module of this package that holds its bytes (ONNX, base64) and SHA256
BUILTIN = {"digits-cnn": "digits_cnn"}


def onnx_bytes(name: str) -> bytes:
    """The ONNX bytes of the built-in backbone ``name`` (checked against their sha256)."""
    if name not in BUILTIN:
        raise ConfigError(
            f"unknown built-in backbone {name!r}",
            hint=f"built-in backbones: {', '.join(PREFIX + n for n in BUILTIN)}; "
            "or name an ONNX file beside the spec",
        )
    module = importlib.import_module(f"{__name__}.{BUILTIN[name]}")
    data = base64.b64decode(module.ONNX)
    if hashlib.sha256(data).hexdigest() != module.SHA256:
        raise ConfigError(
            f"built-in backbone {name!r} is damaged (its bytes do not match its sha256)",
            hint="reinstall fedmarket",
        )
    return data
