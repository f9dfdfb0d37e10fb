"""Train the small CNN the digits-head example publishes, and export it as ONNX.

The requester trains it on its own validation split of scikit-learn's digits (8x8 images;
the same split as ``benchmarks/deep.py``: 15% of the set, stratified, seed 0), so no owner's
data is used. The exported network maps one image, scaled to [0, 1] (pixel / 16), to a
31-dimensional embedding (31 + the bias = 32 lanes). Owners run the ONNX file with
onnxruntime (``fedmarket.backbone``); this script alone needs PyTorch (``pip install
torch==2.13.0``, the project's ``torch`` extra).

The example names the network as the built-in backbone ``builtin:digits-cnn``: its ONNX bytes
ship inside the package as base64 text (``src/fedmarket/backbones/digits_cnn.py``, with their
sha256), so the example needs neither this script, nor PyTorch, nor a binary file beside the
spec. Run from the repository root, ``.venv/bin/python examples/backbone/train_cnn.py
[--onnx FILE]`` trains the network, exports it and rewrites that module from the exported
bytes (and writes them to FILE too); it prints their sha256, which the task spec must name
(``examples/generate.py`` reads it from the module). ONNX export is not byte-for-byte stable
across PyTorch versions, so a rerun may give another hash. The built-in copy holds the bytes
this script exported with torch 2.13.0 (sha256 cda0e604...9027, 36993 bytes), turned into the
module by ``train_cnn.py --from-onnx digits_cnn.onnx`` (no training, no PyTorch needed).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

MODULE = Path(__file__).resolve().parents[2] / "src" / "fedmarket" / "backbones" / "digits_cnn.py"
EMBEDDING = 31


def builtin_module(data: bytes) -> str:
    """The text of ``fedmarket/backbones/digits_cnn.py`` holding ``data`` (ONNX bytes)."""
    lines = textwrap.wrap(base64.b64encode(data).decode("ascii"), 88)
    return (
        '"""The digits CNN (``builtin:digits-cnn``): the exact ONNX bytes, as base64, that\n'
        "``examples/backbone/train_cnn.py`` exported (written by that script; do not edit).\n"
        '"""\n\n'
        f'SHA256 = "{hashlib.sha256(data).hexdigest()}"\n'
        f"SIZE = {len(data)}\n"
        'ONNX = """\n' + "\n".join(lines) + '\n"""\n'
    )


def write_builtin(data: bytes) -> None:
    MODULE.write_text(builtin_module(data))
    digest = hashlib.sha256(data).hexdigest()
    print(f"wrote {MODULE} ({len(data)} bytes of ONNX), sha256 {digest}")


def network() -> Any:
    """The backbone as it was trained (torch is imported here: only training needs it)."""
    import torch
    from torch import nn

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),  # 4x4
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),  # 2x2
                nn.Flatten(),
                nn.Linear(128, EMBEDDING),
                nn.Tanh(),  # bounded embeddings: the owners' feature scaling stays stable
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.features(x)
            return out

    return Backbone()


def requester_images() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    X_rest, _, y_rest, _ = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    _, X_val, _, y_val = train_test_split(
        X_rest, y_rest, test_size=0.2, random_state=0, stratify=y_rest
    )
    return (X_val / 16.0).reshape(-1, 1, 8, 8).astype(np.float32), y_val


def train() -> bytes:
    """Train the backbone (with a throwaway linear head) and return its ONNX bytes."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    images, labels = requester_images()
    backbone = network()
    head = nn.Linear(EMBEDDING, 10)
    model = nn.Sequential(backbone, head)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    x, y = torch.from_numpy(images), torch.from_numpy(labels).long()
    generator = torch.Generator().manual_seed(0)
    for epoch in range(150):
        # light augmentation: shifts by one pixel, so 270 images train a usable extractor
        shift = torch.randint(-1, 2, (2,), generator=generator)
        batch = torch.roll(x, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(batch), y)
        loss.backward()
        optimizer.step()
        if epoch % 50 == 49:
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}")
    backbone.eval()
    out = io.BytesIO()
    torch.onnx.export(
        backbone,
        (torch.zeros(1, 1, 8, 8),),
        out,
        input_names=["image"],
        output_names=["embedding"],
        dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
        dynamo=False,
    )
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, help="also write the exported ONNX file here")
    parser.add_argument(
        "--from-onnx", type=Path, help="no training: make the built-in module from this file"
    )
    args = parser.parse_args()
    data = args.from_onnx.read_bytes() if args.from_onnx else train()
    if args.onnx:
        args.onnx.write_bytes(data)
    write_builtin(data)


if __name__ == "__main__":
    main()
