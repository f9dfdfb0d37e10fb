"""fedmarket: buy data and processing power from strangers to train a model on encrypted data."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fedmarket.errors import FedmarketError

if TYPE_CHECKING:
    from fedmarket.models.linear import Model
    from fedmarket.models.scaled import ScaledModel

__all__ = ["FedmarketError", "__version__", "load_model"]
__version__ = "0.1.0"


def load_model(path: str | os.PathLike[str]) -> Model | ScaledModel:
    """Load a trained model: a run's ``--out`` folder or a ``model.npz``.

    A model saved by ``fedmarket run`` takes raw features (it applies the task's scaling).
    """
    from fedmarket.models.scaled import load_any

    return load_any(path)
