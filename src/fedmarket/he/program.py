"""The processor's program: encrypted gradient sums of one block at the encrypted model.

Per class group, with w~ = kappa*w (logistic) or w (linear) encrypted by the requester:

0. The model as the requester sent it is projected and expanded (``fedmarket.he.model``): its
   copies averaged, its Bz diagonals derived, once per epoch and class group.
1. z~ = <w~, x> for every sample: Bz*Gz ciphertext products summed lazily (size 3, one
   relinearisation per giant step) and Gz - 1 rotations; then rescale.
2. The residual at two primes: h = z~ (z~^2 + c1/kappa) - (y - 1/2) = p(z) - y for logistic,
   h = z - y for linear (labels are encrypted at exactly h's scale, so no rescale is needed
   before subtracting).
3. The D gradient sums: baby-step rotations of h at two primes (where its scale is ~2^60, so
   key-switching noise is negligible), a rescale of each to the last prime, Bs*Gs products with
   the sum layout, Gs - 1 giant rotations and log2(S'/D) all-reduce rotations. Every slot of the
   single result ciphertext then holds one lane's block total: nothing per sample survives.

It is deterministic (SEAL's evaluator has no randomness and nothing is encrypted here) and never
modifies its inputs: every operation on an input writes a new ciphertext. TenSEAL's polyval,
matmul and plaintext multiplications (which can re-encrypt zero) are not used.
"""

from __future__ import annotations

import tenseal.sealapi as sa

from fedmarket.errors import CryptoError, UntrustedInputError
from fedmarket.he import wire
from fedmarket.he._seal import OUT, SQUARE, H, Ops, dump
from fedmarket.he.keys import PublicContext
from fedmarket.he.model import EncryptedModel
from fedmarket.he.noise import add_noise_to, parse_noise
from fedmarket.he.packing import EncryptedBlock


def z_share(
    context: PublicContext, model: EncryptedModel, block: EncryptedBlock, group: int, part: int
) -> sa.Ciphertext:
    """Part ``part``'s share of z~ (all of it with one part), relinearised and in place: at
    three primes for logistic models (rescaled), at two for linear regression (dropped)."""
    spec = context.spec
    ops = Ops(context)
    columns = spec.part_model_columns(part)
    rows = tuple(tuple(block.z_data[g][c] for c in columns) for g in spec.part_giants(part))
    raw = ops.horner(model.pick(group, columns), rows, -spec.class_lanes * spec.model_baby)
    # Rescale before relinearising (SEAL rescales size-3 ciphertexts): the key switch then
    # runs one level lower.
    share = ops.relin(ops.rescale(raw) if spec.is_logistic else ops.drop_to(raw, H))
    shift = spec.part_z_shift(part)
    return ops.rotate(share, shift) if shift else share


def z_share_level(context: PublicContext) -> tuple[int, float]:
    """(level, scale) of a z share: what a worker checks the other part's share against."""
    scales = context.runtime.scales
    return (SQUARE, scales.z) if context.spec.is_logistic else (H, scales.h_pre)


def add(context: PublicContext, parts: list[sa.Ciphertext]) -> sa.Ciphertext:
    """The sum of the parts' ciphertexts, in part order (exact: addition mod q)."""
    total = parts[0]
    for ct in parts[1:]:
        out = sa.Ciphertext()
        context.runtime.evaluator.add(total, ct, out)
        total = out
    return total


def residual(
    context: PublicContext, z: sa.Ciphertext, block: EncryptedBlock, group: int
) -> sa.Ciphertext:
    """h = p(z) - y (logistic) or z - y (linear) from the whole z~, at two primes."""
    spec = context.spec
    runtime = context.runtime
    ops = Ops(context)
    if spec.is_logistic:
        const = runtime.encode_constant(spec.poly.linear_term, H, runtime.scales.square)
        square = ops.relin(ops.rescale(ops.mul(z, z)))  # H level
        ops.ev.add_plain_inplace(square, const)
        h = ops.relin(ops.mul(ops.drop_to(z, H), square))
    else:
        h = z
    out = sa.Ciphertext()
    ops.ev.sub(h, block.labels[group], out)
    return out


def gradient_sums(
    context: PublicContext, h: sa.Ciphertext, block: EncryptedBlock, part: int
) -> sa.Ciphertext:
    """Part ``part``'s gradient sums (all of them with one part), before the all-reduce."""
    spec = context.spec
    ops = Ops(context)
    r = spec.class_lanes
    babies = spec.part_babies(part)
    # Baby steps: rotations by r*b built from power-of-two keys, each used before rescaling.
    rotated = [h if babies.start == 0 else ops.rotate(h, r * babies.start)]
    for b in range(1, len(babies)):
        low = b & -b
        rotated.append(ops.rotate(rotated[b - low], r * low))
    residuals = [ops.rescale(ct) for ct in rotated]
    rows = tuple(tuple(row[b] for b in babies) for row in block.sum_data)
    return ops.relin(ops.horner(residuals, rows, r * spec.sum_baby))


def all_reduce(context: PublicContext, sums: sa.Ciphertext) -> sa.Ciphertext:
    """Every slot k gets the total of the slots k (mod D): lane k mod D's block total."""
    spec = context.spec
    r = spec.class_lanes
    return check_result(context, Ops(context).doubling(sums, r * spec.lanes, r * spec.length, +1))


def check_result(context: PublicContext, ct: sa.Ciphertext) -> sa.Ciphertext:
    runtime = context.runtime
    if ct.parms_id() != runtime.parms_id[OUT] or ct.scale != runtime.scales.out:
        raise CryptoError("internal error: the program's result is not at the expected level/scale")
    return ct


def process_block(
    context: PublicContext,
    model: EncryptedModel,
    block: EncryptedBlock,
    groups: list[int] | None = None,
) -> list[sa.Ciphertext]:
    """One result ciphertext per class group: slot r*k + t holds lane k mod D of class t.

    ``groups`` restricts the work to some class groups (a pool can split one block's groups
    across processes); by default all of them, in order. With two parts (``HESpec.parts``)
    this runs both, one after the other: the bytes are those of two workers running one each.
    """
    spec = context.spec
    parts = range(spec.parts)
    results = []
    for group in range(spec.n_groups) if groups is None else groups:
        z = add(context, [z_share(context, model, block, group, p) for p in parts])
        h = residual(context, z, block, group)
        sums = add(context, [gradient_sums(context, h, block, p) for p in parts])
        results.append(all_reduce(context, sums))
    return results


def pack_result(
    context: PublicContext, *, block_id: str, epoch: int, n_samples: int, payloads: list[bytes]
) -> bytes:
    """The result message: serialised result ciphertexts, one per class group, in order (an
    mlp's: G1 then one G2 row per output, ``fedmarket.he.mlp``)."""
    meta = {"block_id": block_id, "epoch": epoch, "n_samples": n_samples}
    return wire.pack(wire.Kind.RESULT, context.digest, meta, payloads)


def result_bytes(
    context: PublicContext, block_id: str, n_samples: int, epoch: int, results: list[sa.Ciphertext]
) -> bytes:
    return pack_result(
        context,
        block_id=block_id,
        epoch=epoch,
        n_samples=n_samples,
        payloads=[dump(ct) for ct in results],
    )


def require_noise(context: PublicContext, noise: object, *, party: str, block_id: str) -> None:
    """The task's policy: a block of a private task is computed only with its owner's noise."""
    if context.spec.noise and noise is None:
        raise UntrustedInputError(
            f"block {block_id!r} came without its owner's noise, which this task requires",
            party=party,
            hint="a private task's results carry each block owner's noise (docs/privacy.md)",
        )


def run_program(
    context: PublicContext,
    model_bytes: bytes,
    block_bytes: bytes,
    *,
    noise: bytes | None = None,
    model_party: str = "requester",
    block_party: str = "data owner",
) -> bytes:
    """Bytes in, bytes out: the whole processor step for one block (parses and checks the
    model, the block and the owner's noise, relayed with the model by ``model_party``)."""
    if context.spec.is_mlp:
        from fedmarket.he import mlp

        model: EncryptedModel | mlp.MLPModel = mlp.MLPModel.from_bytes(
            context, model_bytes, party=model_party
        )
        block: EncryptedBlock | mlp.MLPBlock = mlp.MLPBlock.from_bytes(
            context, block_bytes, party=block_party
        )
    else:
        model = EncryptedModel.from_bytes(context, model_bytes, party=model_party)
        block = EncryptedBlock.from_bytes(context, block_bytes, party=block_party)
    require_noise(context, noise, party=model_party, block_id=block.block_id)
    extra = None
    if noise is not None:
        extra = parse_noise(
            context, noise, party=model_party, block_id=block.block_id, epoch=model.epoch
        )
    if isinstance(model, EncryptedModel):
        assert isinstance(block, EncryptedBlock)
        results = process_block(context, model, block)
    else:
        from fedmarket.he import mlp

        assert isinstance(block, mlp.MLPBlock)
        results = mlp.process_block(context, model, block)
    if extra is not None:
        results = add_noise_to(context, results, extra)
    return result_bytes(context, block.block_id, block.n_samples, model.epoch, results)
