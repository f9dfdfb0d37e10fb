"""What every crypto holds an owner's data and a model's seed to (the same refusals in CKKS and
in the plaintext twin): the floor on samples per block, the L2 clip, the seed's size; and the
owner's check of a revealed model before it releases its noise."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from typing import TYPE_CHECKING

import numpy as np

from fedmarket.errors import ConfigError, UntrustedInputError

if TYPE_CHECKING:
    from fedmarket.protocol.crypto import PublicKeys

# A model seed is a secret of at least 128 bits; at most what one Blake2b key takes.
MIN_SEED_BYTES, MAX_SEED_BYTES = 16, 64
# Float slack on the clip: an owner's clipped rows land on it up to rounding.
CLIP_SLACK = 1e-9


def clip_rows(X: np.ndarray, clip_norm: float) -> np.ndarray:
    """Each sample's scaled features scaled down (never up) to L2 norm ``clip_norm``: what an
    owner does before encrypting, so that one sample's effect on a total is bounded."""
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"clip_norm must be a positive number, got {clip_norm!r}")
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    # a little inside the clip, so that rounding never puts a row over it
    target = clip_norm * (1.0 - 1e-12)
    return X * np.where(norms > target, target / np.maximum(norms, 1e-300), 1.0)


def check_rows(X: np.ndarray, *, floor: int, block_size: int, clip: float) -> None:
    """An owner's block against the task: ``floor``..``block_size`` samples, features finite
    and in [-1, 1], each sample's L2 norm within ``clip``. ``ConfigError`` says which."""
    n = X.shape[0]
    if not floor <= n <= block_size:
        raise ConfigError(
            f"a block holds {floor}..{block_size} samples, got {n}",
            hint=f"the task's floor is {floor} samples per block (privacy.min_block_points): "
            "no decrypted total may sum fewer",
        )
    if not np.all(np.isfinite(X)) or np.max(np.abs(X)) > 1.0:
        raise ConfigError(
            "features must be finite and scaled into [-1, 1]",
            hint="apply the task's feature scaling (fedmarket.models.FeatureScaler) first",
        )
    norms = np.linalg.norm(X, axis=1)
    worst = int(np.argmax(norms))
    if norms[worst] > clip * (1.0 + CLIP_SLACK):
        raise ConfigError(
            f"sample {worst} has scaled features of L2 norm {norms[worst]:.4g}, over the "
            f"task's clip {clip:g}",
            hint="owners clip every sample to privacy.clip_norm before encrypting "
            "(fedmarket.privacy.owner.clip_rows)",
        )


def check_seed(seed: bytes | None) -> bytes:
    """The seed a model is encrypted with: 16..64 bytes, or a fresh secret one for None (then
    nobody can re-encrypt the model: for tasks whose owners do not check models)."""
    if seed is None:
        return secrets.token_bytes(32)
    if not isinstance(seed, bytes) or not MIN_SEED_BYTES <= len(seed) <= MAX_SEED_BYTES:
        raise ConfigError(
            f"a model seed is {MIN_SEED_BYTES}..{MAX_SEED_BYTES} secret bytes",
            hint="draw it with secrets.token_bytes(32) and reveal it to owners only",
        )
    return seed


def check_revealed_model(
    public: PublicKeys,
    model_digest: bytes,
    weights: np.ndarray,
    *,
    epoch: int,
    seed: bytes,
    party: str = "requester",
) -> None:
    """An owner's check of the model the requester revealed for ``epoch``, before it releases
    its noise: the weights lie in the kind's certified region for the task's clip
    (``ModelKind.certify_problem``), and re-encrypting (weights, epoch, seed) gives the very
    message whose sha256 is ``model_digest`` (what processors received, as recorded). Raises
    ``UntrustedInputError`` naming ``party`` otherwise: a crafted ciphertext (per-slot values,
    another model) is no honest encryption of these weights and fails the digest."""
    layout = public.layout
    W = np.asarray(weights, dtype=np.float64)
    if W.shape != layout.totals_shape or not np.all(np.isfinite(W)):
        raise UntrustedInputError(
            f"revealed model: weights must be finite with shape {layout.totals_shape}",
            party=party,
        )
    problem = layout.kind.certify_problem(W, layout.n_features, layout.clip)
    if problem is not None:
        raise UntrustedInputError(f"revealed model for epoch {epoch}: {problem}", party=party)
    if not isinstance(seed, bytes) or not MIN_SEED_BYTES <= len(seed) <= MAX_SEED_BYTES:
        raise UntrustedInputError(
            f"revealed model: a seed of {MIN_SEED_BYTES}..{MAX_SEED_BYTES} bytes", party=party
        )
    if not isinstance(model_digest, bytes) or len(model_digest) != 32:
        raise ConfigError("model_digest must be a 32-byte sha256")
    again = hashlib.sha256(public.encrypt_model(W, epoch=epoch, seed=seed)).digest()
    if not hmac.compare_digest(again, model_digest):
        raise UntrustedInputError(
            f"revealed model for epoch {epoch} does not re-encrypt to the model processors "
            "received (another model, another seed, or a crafted ciphertext)",
            party=party,
        )
