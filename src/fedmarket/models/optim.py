"""Nesterov's accelerated gradient descent with L2, as in the iDASH 2017 winning solution.

The requester runs this on decrypted gradient sums; plaintext training runs it on plaintext
sums. Kim et al. (BMC Med Genomics 2018, §"Nesterov's accelerated gradient") update

    w[t+1] = v[t] - lr * (grad(v[t]) + l2 * v[t])
    v[t+1] = (1 - eta[t]) * w[t+1] + eta[t] * w[t],   eta[t] = (1 - lam[t]) / lam[t+1],
    lam[t+1] = (1 + sqrt(1 + 4 lam[t]**2)) / 2,       lam[0] = 1,

so the gradient is always taken at the look-ahead point ``v``: that is the model the requester
encrypts and sends to the processors each epoch. The bias (last column) is not regularised,
unless an ``l2_mask`` says which entries are (a network's weight matrix has its biases
elsewhere); a network starts from ``initial`` weights rather than zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NesterovConfig:
    """Step size and L2 penalty; the gradient passed to ``step`` is a per-sample mean."""

    learning_rate: float = 4.0
    l2: float = 1e-3

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise ValueError(f"l2 must be >= 0, got {self.l2}")


class NesterovGD:
    """Optimiser state for a (n_outputs, n_features + 1) weight matrix, bias in the last column."""

    def __init__(
        self,
        n_outputs: int,
        n_features: int,
        config: NesterovConfig,
        *,
        initial: np.ndarray | None = None,
        l2_mask: np.ndarray | None = None,
    ) -> None:
        self.config = config
        if initial is None:
            self.weights = np.zeros((n_outputs, n_features + 1))
        else:
            self.weights = np.array(initial, dtype=np.float64)
            if self.weights.ndim != 2 or not np.all(np.isfinite(self.weights)):
                raise ValueError("initial weights must be a finite 2-D array")
        if l2_mask is None:
            l2_mask = np.ones(self.weights.shape)
            l2_mask[:, -1] = 0.0
        self.l2_mask = np.asarray(l2_mask, dtype=np.float64)
        if self.l2_mask.shape != self.weights.shape:
            raise ValueError(f"l2_mask shape {self.l2_mask.shape} != weights {self.weights.shape}")
        self.lookahead = self.weights.copy()
        self._lam = 1.0
        self.steps = 0

    def step(
        self,
        mean_gradient: np.ndarray,
        project: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """Apply one update; ``mean_gradient`` is the loss gradient at ``self.lookahead``.

        ``project`` maps the new weights back into the region the encrypted program can handle
        (the interval guard); it runs before the momentum step so both w and v respect it.
        """
        grad = np.asarray(mean_gradient, dtype=np.float64)
        if grad.shape != self.weights.shape:
            raise ValueError(f"gradient shape {grad.shape} != weights shape {self.weights.shape}")
        if not np.all(np.isfinite(grad)):
            raise ValueError("gradient has non-finite entries")
        penalty = self.config.l2 * self.lookahead * self.l2_mask
        new_weights = self.lookahead - self.config.learning_rate * (grad + penalty)
        if project is not None:
            new_weights = project(new_weights)
        lam_next = (1.0 + math.sqrt(1.0 + 4.0 * self._lam * self._lam)) / 2.0
        eta = (1.0 - self._lam) / lam_next
        self.lookahead = (1.0 - eta) * new_weights + eta * self.weights
        self.weights = new_weights
        self._lam = lam_next
        self.steps += 1
