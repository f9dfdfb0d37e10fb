"""CKKS-encrypted training (TenSEAL/SEAL): keys, packing, the processor's program, the optimiser.

This package is the only one that imports TenSEAL. The pieces, by party, all bytes in / bytes
out so they can travel between machines:

* requester: ``HESpec.for_task`` -> ``KeyPair.generate`` -> publish ``keypair.public.data``
  (its ``sha256`` goes on chain); each epoch ``encrypt_model`` (compact, seeded: owners can
  re-encrypt it), then ``decrypt_result`` per block result and ``RequesterOptimizer.update``.
* data owner: ``PublicContext.from_bytes`` -> ``encrypt_block`` per block of samples; each epoch
  ``encrypt_model`` from the revealed (weights, seed) to check the model, ``encrypt_noise`` per
  block.
* processor: ``PublicContext.from_bytes``; ``run_program(context, model, block, noise=...)`` per
  block, or a ``ProcessorPool`` that keeps the blocks and uses every core.

``train_encrypted`` wires them together in one process for tests and benchmarks.
"""

from fedmarket.he.baseline import TutorialTiming, time_tutorial_layout
from fedmarket.he.forge import add_noise, forge_result, max_forgeable_total, restamp, scale_result
from fedmarket.he.keys import KeyPair, PublicContext
from fedmarket.he.model import EncryptedModel, encrypt_model
from fedmarket.he.noise import encrypt_noise
from fedmarket.he.optimizer import (
    BlockSums,
    RequesterOptimizer,
    combine,
    decrypt_result,
    max_abs_sum,
)
from fedmarket.he.packing import EncryptedBlock, encrypt_block, split_into_blocks
from fedmarket.he.params import DEFAULT_PRESET, PRESETS, Preset, get_preset, security_level
from fedmarket.he.pool import ProcessorPool
from fedmarket.he.program import process_block, run_program
from fedmarket.he.spec import HESpec
from fedmarket.he.trainer import EncryptedEpoch, EncryptedTrainResult, train_encrypted

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "BlockSums",
    "EncryptedBlock",
    "EncryptedEpoch",
    "EncryptedModel",
    "EncryptedTrainResult",
    "HESpec",
    "KeyPair",
    "Preset",
    "ProcessorPool",
    "PublicContext",
    "RequesterOptimizer",
    "TutorialTiming",
    "add_noise",
    "combine",
    "decrypt_result",
    "encrypt_block",
    "encrypt_model",
    "encrypt_noise",
    "forge_result",
    "get_preset",
    "max_abs_sum",
    "max_forgeable_total",
    "process_block",
    "restamp",
    "run_program",
    "scale_result",
    "security_level",
    "split_into_blocks",
    "time_tutorial_layout",
    "train_encrypted",
]
