"""Train the small CNN the digits-head example publishes, and export it as ONNX.

The requester trains it on its own validation split of scikit-learn's digits (8x8 images;
the same split as ``benchmarks/deep.py``: 15% of the set, stratified, seed 0), so no owner's
data is used. The exported network maps one image, scaled to [0, 1] (pixel / 16), to a
31-dimensional embedding (31 + the bias = 32 lanes). Owners run the ONNX file with
onnxruntime (``fedmarket.backbone``); this script alone needs PyTorch (``pip install
torch==2.13.0``, the project's ``torch`` extra).

Run from the repository root: ``.venv/bin/python examples/backbone/train_cnn.py``; it writes
``examples/backbone/digits_cnn.onnx`` and prints its sha256 for the task spec.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

OUT = Path(__file__).resolve().parent / "digits_cnn.onnx"
EMBEDDING = 31


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


def requester_images() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    X_rest, _, y_rest, _ = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    _, X_val, _, y_val = train_test_split(
        X_rest, y_rest, test_size=0.2, random_state=0, stratify=y_rest
    )
    return (X_val / 16.0).reshape(-1, 1, 8, 8).astype(np.float32), y_val


def main() -> None:
    torch.manual_seed(0)
    images, labels = requester_images()
    backbone = Backbone()
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
    torch.onnx.export(
        backbone,
        (torch.zeros(1, 1, 8, 8),),
        str(OUT),
        input_names=["image"],
        output_names=["embedding"],
        dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
        dynamo=False,
    )
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes), sha256 {digest}")


if __name__ == "__main__":
    main()
