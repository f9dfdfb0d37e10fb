"""What a task's ``[privacy]`` section asks of the crypto layer, in one place for every role.

``crypto_privacy`` is what the requester passes to ``Crypto.keygen`` (the published keys then
hold owners, processors and the requester's own decryption to it); ``noise_std`` is the standard
deviation of each owner's noise per total: the accountant's noise multiplier for (epsilon,
delta, ``task.max_epochs``) times the kind's replace-one sensitivity at the task's clip.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fedmarket.protocol.crypto import Layout, Privacy

if TYPE_CHECKING:
    from fedmarket.spec import TaskSpec

# An honest result's totals lie within the kind's bound plus this many noise standard deviations:
# the chance that any of 1e4 totals exceeds it is below 1e4 * 2 * Phi(-9) ~ 2e-15 (the discrete
# Gaussian's tails are no heavier than the continuous one's at this std).
NOISE_BOUND_SIGMAS = 9.0


def crypto_privacy(spec: TaskSpec) -> Privacy:
    """The task's floor (always), clip and noise requirement (only when the spec's
    ``[privacy]`` is enabled)."""
    section = spec.privacy
    floor = section.floor(len(spec.features.names))
    if not section.enabled:
        return Privacy(min_block_points=floor)
    return Privacy(
        min_block_points=floor,
        clip_norm=float(section.clip_norm),
        noise=True,
    )


def noise_std(spec: TaskSpec, layout: Layout) -> float:
    """Each owner's noise std per total and epoch for this task (0 when privacy is off)."""
    if not spec.privacy.enabled:
        return 0.0
    return spec.privacy.noise_multiplier(spec.task.max_epochs) * layout.sensitivity


def noise_allowance(std: float) -> float:
    """How far the owners' noise may move an honest total: what the requester adds to the bound
    it passes ``decrypt_result`` (``NOISE_BOUND_SIGMAS`` standard deviations)."""
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"std must be a non-negative number, got {std!r}")
    return NOISE_BOUND_SIGMAS * std
