"""What a task's ``[privacy]`` section asks of the crypto layer, in one place for every role.

``crypto_privacy`` is what the requester passes to ``Crypto.keygen`` (the published keys then
hold owners, processors and the requester's own decryption to it); ``noise_std`` is the standard
deviation of each owner's noise per total: the accountant's noise multiplier for (epsilon,
delta, ``task.max_epochs``) times the kind's replace-one sensitivity at the task's clip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedmarket.protocol.crypto import Layout, Privacy

if TYPE_CHECKING:
    from fedmarket.spec import TaskSpec


def crypto_privacy(spec: TaskSpec) -> Privacy:
    """The task's floor, clip and noise requirement (``Privacy()``, no requirement, when the
    spec's ``[privacy]`` is not enabled)."""
    section = spec.privacy
    if not section.enabled:
        return Privacy()
    return Privacy(
        min_block_points=section.floor(len(spec.features.names)),
        clip_norm=float(section.clip_norm),
        noise=True,
    )


def noise_std(spec: TaskSpec, layout: Layout) -> float:
    """Each owner's noise std per total and epoch for this task (0 when privacy is off)."""
    if not spec.privacy.enabled:
        return 0.0
    return spec.privacy.noise_multiplier(spec.task.max_epochs) * layout.sensitivity
