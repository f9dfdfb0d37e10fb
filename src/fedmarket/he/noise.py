"""The owners' noise under CKKS: one message per block and epoch, added by the program.

An owner encrypts, with the public key, its Gaussian noise for every total of one block
(``fedmarket.privacy.noise``), laid out exactly like a result (``fedmarket.he.results``): each
total's noise in every slot of its lane. On top it floods every slot with an independent real
value of std ``FLOOD_REAL_STD`` (~200 times the spread CKKS leaves between a lane's replicas, and
within ``decrypt_result``'s replica tolerance) and an imaginary value of std ``FLOOD_IMAG_STD``
(~170 times CKKS's imaginary noise): what the requester could read beyond the totals from the
raw decryption is then noise of the owner's making (docs/privacy.md; a margin, not a proof).

The processor adds the message to the block's result: one ciphertext addition per payload, at
the result's level and scale, so replicas, audits and the owner's own recomputation with the
same noise bytes give the same result bytes. A noise message is untrusted input (the requester
relays it): it is parsed with the limits, level, scale and parameter checks of every ciphertext,
and must name the block and epoch it is used for.
"""

from __future__ import annotations

import random

import tenseal.sealapi as sa

from fedmarket.errors import ConfigError, UntrustedInputError
from fedmarket.he import wire
from fedmarket.he._seal import OUT, dump
from fedmarket.he.keys import PublicContext
from fedmarket.he.model import weight_shape
from fedmarket.he.results import result_scales, totals_layout
from fedmarket.privacy.noise import draw_noise, flood

FLOOD_REAL_STD = 1e-6
FLOOD_IMAG_STD = 1.0
_NOISE_FIELDS = {"block_id": str, "epoch": int}


def encrypt_noise(
    context: PublicContext, *, block_id: str, epoch: int, std: float, rng: random.Random
) -> bytes:
    """An owner's noise message for ``block_id`` in ``epoch``: Gaussian noise of std ``std``
    on every total (drawn from ``rng``: ``secrets.SystemRandom()`` for real owners), floods on
    every slot, each payload a fresh public-key encryption."""
    spec = context.spec
    if not isinstance(block_id, str) or not 0 < len(block_id) <= 256:
        raise ConfigError("block_id must be 1..256 characters")
    if type(epoch) is not int or epoch < 0:
        raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
    totals, flood_seed = draw_noise(weight_shape(spec), std, rng)
    layouts = totals_layout(context, totals)
    floods = flood(flood_seed, 2 * spec.slots * len(layouts)).reshape(len(layouts), 2, spec.slots)
    runtime = context.runtime
    encryptor = sa.Encryptor(runtime.context, context.public_key)
    payloads = []
    for physical, (real, imag), scale in zip(layouts, floods, result_scales(context), strict=True):
        values = physical + FLOOD_REAL_STD * real + 1j * (FLOOD_IMAG_STD * imag)
        ct = sa.Ciphertext()
        encryptor.encrypt(runtime.encode_complex(values, OUT, scale), ct)
        payloads.append(dump(ct))
    meta = {"block_id": block_id, "epoch": epoch}
    return wire.pack(wire.Kind.NOISE, context.digest, meta, payloads)


def noise_bytes_limit(context: PublicContext) -> int:
    count = len(result_scales(context))
    bound = wire.ciphertext_bytes_bound(context.spec.preset.poly_modulus_degree, OUT)
    return count * (bound + 4) + wire.MAX_META_BYTES + 4096


def parse_noise(
    context: PublicContext, data: bytes, *, party: str, block_id: str, epoch: int
) -> list[sa.Ciphertext]:
    """A noise message's ciphertexts, checked like any ciphertext and refused unless it is for
    ``block_id`` in ``epoch`` under this task's keys."""
    scales = result_scales(context)
    envelope = wire.unpack(
        data,
        kind=wire.Kind.NOISE,
        party=party,
        max_bytes=noise_bytes_limit(context),
        digest=context.digest,
        count=len(scales),
        max_payload_bytes=wire.ciphertext_bytes_bound(context.spec.preset.poly_modulus_degree, OUT),
    )
    meta = wire.require_fields(envelope.meta, _NOISE_FIELDS, what="noise", party=party)
    if meta["block_id"] != block_id:
        raise UntrustedInputError(
            f"noise is for block {meta['block_id']!r}, not {block_id!r}", party=party
        )
    if meta["epoch"] != epoch:
        raise UntrustedInputError(
            f"noise is for epoch {meta['epoch']}, not the model's {epoch}", party=party
        )
    return [
        context.runtime.load_ciphertext(
            payload, level=OUT, scale=scale, what=f"noise[{i}]", party=party
        )
        for i, (payload, scale) in enumerate(zip(envelope.payloads, scales, strict=True))
    ]


def add_noise_to(
    context: PublicContext, results: list[sa.Ciphertext], noise: list[sa.Ciphertext]
) -> list[sa.Ciphertext]:
    """Each result payload plus its noise (fresh ciphertexts; the inputs are untouched)."""
    out = []
    for ct, extra in zip(results, noise, strict=True):
        total = sa.Ciphertext()
        context.runtime.evaluator.add(ct, extra, total)
        out.append(total)
    return out
