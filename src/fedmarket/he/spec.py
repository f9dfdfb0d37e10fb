"""What every party must agree on about the encrypted computation, and the slot layouts it implies.

``HESpec`` fixes the parameter preset, the model kind and size, the sigmoid polynomial and the
packing. It travels inside the public context (so its hash covers it) and every layout below is
a pure function of it, so the data owner, the processors and the requester pack and unpack
identically.

Packing (``D`` lanes = the features plus the bias padded to a power of two; ``S'`` = samples
per block; ``B*G = D`` baby/giant split): a block is the (S', D) matrix ``F`` of features with
the bias/mask column (1 for a real sample, 0 for padding) at lane ``n_features``. It is sent in
two diagonal layouts, each one ciphertext per lane:

* for z = <w, x>:  X[g, b][k] = F[(k + g*Bz) mod S', (k - b) mod D]
* for the sums:    Z[g, b][k] = F[(k + b) mod S', (k - g*Bs) mod D]

and the model as ``Bz`` ciphertexts M[b][k] = w[(k - b) mod D]. With these, z and the D gradient
sums need ``Gz - 1`` and ``Bs - 1 + Gs - 1 + log2(S'/D)`` rotations per block (baby-step
giant-step) and no masks, so no multiplicative level is spent on data movement; the sums land
with lane j's total in every slot k = j (mod D). See docs/he.md for the derivation.

Class lanes: for one-vs-rest with few samples, ``r`` classes share each ciphertext. Physical
slot ``r*k + t`` holds virtual slot ``k`` of class ``t``; every rotation is by a multiple of
``r``, which moves each class's virtual vector cyclically and never mixes classes.

Z-copies: when a task has few samples, ``c`` copies share each z-layout ciphertext. The virtual
vector (length ``L = S/r``) is cut into ``c`` contiguous segments of ``S' = L/c`` slots, the
block holds at most ``S'`` samples, and segment ``t`` of z-ciphertext ``[g, j]`` holds the
diagonal ``b = j*c + t`` (the model likewise). After the baby-step giant-step products the
program adds the segments together with ``log2(c)`` rotations by ``S'``, ``2S'``, ...: a rotation
of the whole vector followed by that segment sum is a cyclic rotation of each segment, so every
segment ends up holding z for all ``S'`` samples. The owner sends ``D/c`` z-ciphertexts and the
requester ``Bz/c`` model ciphertexts instead of ``D`` and ``Bz``, and the processor does ``D/c``
products at the top level; the gradient sums are unchanged (their layout spans the whole vector,
with zero rows past the block's samples).

MLP (kind ``mlp``, ``hidden`` units): the class lanes hold the hidden units (``class_lanes`` =
the hidden width rounded up to a power of two, one group), z is the hidden layer's
pre-activations, and ``fedmarket.he.mlp`` runs the rest of the network on the same layouts; it
needs a preset with the deeper chain (``n16384-mlp``). See docs/he.md, "Neural networks".

Parts: a task that fits one block would leave a two-core processor's second core idle, so
``for_task`` may define the program in two parts (``parts = 2``). Part p computes z from half
of the work (half the giant steps, or half the model ciphertexts when there is one giant step),
rescales and relinearises it, and part 1 rotates its share into place; z is the sum of the two
shares. From z each part computes the residual and the gradient sums of half the baby steps
(with every giant step), and the result is the sum of the two, all-reduced. A processor with
two workers runs the parts side by side and exchanges the z shares once; a processor with one
core runs both. Either way the bytes are the same: the parts are the program's definition.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedmarket.errors import ConfigError
from fedmarket.he.params import DEFAULT_PRESET, Preset, get_preset
from fedmarket.models.kinds import KIND_NAMES, get_kind
from fedmarket.models.sigmoid import DEFAULT_SIGMOID, SigmoidPolynomial

SPEC_VERSION = 4  # 4: one name per model kind ('multiclass', was 'one_vs_rest')
MAX_OUTPUTS = 1024
# Bz above this shrinks the per-block work little but multiplies the model the requester
# encrypts and sends each epoch; 32 keeps both small (docs/he.md, "model size vs. rotations").
MAX_MODEL_BABY = 32
# Two parts pay from this many lanes. Below, the work both parts repeat (relinearising z, the
# segment sums, the cubic, the giant steps of the sums) is most of a block: at 32 lanes two
# workers gain 1.17x, while a processor that holds several blocks (one per owner) runs both
# parts of each in one worker and pays that extra work instead.
MIN_PARTS_LANES = 64
# The mlp: its preset, model baby steps, and limits on its size (each output is one result
# ciphertext and two model ciphertexts).
MLP_PRESET = "n16384-mlp"
MLP_MODEL_BABY = 8
MAX_HIDDEN = 1024
MAX_MLP_OUTPUTS = 64
DEFAULT_HIDDEN = 32


def _is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _next_pow2(value: int) -> int:
    return 1 << max(0, (value - 1).bit_length())


@dataclass(frozen=True)
class HESpec:
    """Parameters, model shape and packing of one task's encrypted training."""

    preset: Preset
    kind: str  # a registered model kind (fedmarket.models.kinds)
    n_features: int
    n_outputs: int
    lanes: int
    class_lanes: int
    model_baby: int
    sum_baby: int
    poly: SigmoidPolynomial = field(default_factory=SigmoidPolynomial)
    z_copies: int = 1
    parts: int = 1
    hidden: int = 0  # hidden units (kind mlp only)

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ConfigError("invalid HE spec: " + "; ".join(problems))

    @property
    def is_mlp(self) -> bool:
        return self.kind == "mlp"

    def _mlp_problems(self) -> list[str]:
        out = []
        if not 1 <= self.hidden <= MAX_HIDDEN:
            out.append(f"an mlp needs 1..{MAX_HIDDEN} hidden units, got {self.hidden}")
        if not _is_pow2(self.class_lanes) or self.class_lanes < self.hidden:
            out.append(f"class_lanes must be a power of two >= hidden, got {self.class_lanes}")
        elif self.lanes * self.class_lanes > self.preset.slots:
            out.append(
                f"{self.hidden} hidden units x {self.lanes} lanes exceed {self.preset.slots} "
                "slots (an mlp block must hold one sample per lane)"
            )
        if not self.preset.deep:
            out.append(
                f"an mlp needs a preset with the deep chain (n16384-mlp), not {self.preset.name}"
            )
        if self.z_copies != 1 or self.parts != 1:
            out.append("an mlp runs with one z-copy and one part")
        if not 2 <= self.n_outputs <= MAX_MLP_OUTPUTS:
            out.append(f"an mlp has 2..{MAX_MLP_OUTPUTS} outputs, got {self.n_outputs}")
        return out

    def _problems(self) -> list[str]:
        out = []
        if self.kind == "mlp":
            out += self._mlp_problems()
        elif self.hidden:
            out.append(f"hidden units are for kind mlp, not {self.kind}")
        elif self.preset.deep:
            out.append(f"preset {self.preset.name} is for kind mlp")
        if self.kind not in KIND_NAMES:
            out.append(f"kind {self.kind!r} is not one of {KIND_NAMES}")
        elif problem := get_kind(self.kind).outputs_problem(self.n_outputs):
            out.append(problem)
        if self.n_outputs > MAX_OUTPUTS:
            out.append(f"at most {MAX_OUTPUTS} outputs, got {self.n_outputs}")
        if not self.n_features >= 1:
            out.append("n_features must be >= 1")
        if not _is_pow2(self.lanes) or self.lanes < self.n_features + 1:
            out.append(f"lanes must be a power of two >= n_features + 1, got {self.lanes}")
        if self.is_mlp:
            pass
        elif not _is_pow2(self.class_lanes) or self.class_lanes > _next_pow2(self.n_outputs):
            out.append(f"class_lanes must be a power of two <= {_next_pow2(self.n_outputs)}")
        elif self.lanes > self.preset.slots // self.class_lanes:
            out.append(
                f"{self.lanes} lanes x {self.class_lanes} class lanes exceed "
                f"{self.preset.slots} slots"
            )
        for name, baby in (("model_baby", self.model_baby), ("sum_baby", self.sum_baby)):
            if not _is_pow2(baby) or baby > self.lanes:
                out.append(f"{name} must be a power of two dividing lanes, got {baby}")
        if not _is_pow2(self.z_copies) or self.z_copies > self.model_baby:
            out.append(f"z_copies must be a power of two dividing model_baby, got {self.z_copies}")
        elif _is_pow2(self.class_lanes) and self.lanes * self.z_copies > self.preset.slots // (
            self.class_lanes
        ):
            out.append(f"{self.z_copies} z-copies leave segments shorter than {self.lanes} lanes")
        if self.parts not in (1, 2):
            out.append(f"parts must be 1 or 2, got {self.parts}")
        elif self.parts == 2 and not out and (self.sum_baby < 2 or self.n_groups != 1):
            out.append("two parts need sum_baby >= 2 and a single class group")
        elif self.parts == 2 and not out and self.model_giant == 1 and self.model_ciphertexts < 2:
            out.append("two parts need two giant steps or two model ciphertexts to share")
        return out

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def for_task(
        cls,
        *,
        kind: str,
        n_features: int,
        n_outputs: int = 1,
        preset: str = DEFAULT_PRESET,
        expected_samples: int | None = None,
        poly: SigmoidPolynomial = DEFAULT_SIGMOID,
        hidden: int | None = None,
    ) -> HESpec:
        """Choose the packing for a task; ``expected_samples`` lets one-vs-rest share slots.

        ``hidden`` is the mlp's hidden width (default 32). An mlp takes the preset
        ``n16384-mlp`` when given the default linear one."""
        if kind == "mlp":
            return cls._for_mlp(n_features, n_outputs, preset, hidden or DEFAULT_HIDDEN, poly)
        if hidden:
            raise ConfigError(f"hidden units are for kind mlp, not {kind}")
        params = get_preset(preset)
        if n_features < 1:
            raise ConfigError("a model needs at least one feature")
        lanes = _next_pow2(n_features + 1)
        if lanes > params.slots:
            raise ConfigError(
                f"{n_features} features do not fit preset {preset} ({params.slots} slots)",
                hint="use a preset with a larger poly_modulus_degree or fewer features",
            )
        class_lanes = 1
        if n_outputs > 1 and expected_samples:
            # Cost = blocks x class groups; more class lanes mean fewer groups but smaller
            # blocks. Ties go to fewer lanes: the owner then sends less replicated data.
            best = None
            r = 1
            while r <= _next_pow2(n_outputs) and lanes <= params.slots // r:
                cost = math.ceil(expected_samples * r / params.slots) * math.ceil(n_outputs / r)
                if best is None or cost < best[0]:
                    best = (cost, r)
                r *= 2
            class_lanes = best[1] if best else 1
        log_lanes = lanes.bit_length() - 1
        model_baby = min(lanes, MAX_MODEL_BABY)
        # Z-copies while the task's samples still fit one segment: each halving of the segment
        # halves the z-ciphertexts, the model and the top-level products for one rotation more.
        # Tiny models (< 4 lanes) save less than that rotation costs.
        z_copies = 1
        length = params.slots // class_lanes
        needed = max(expected_samples or length, lanes)
        if lanes >= 4:
            while z_copies * 2 <= model_baby and length // (z_copies * 2) >= needed:
                z_copies *= 2
        # Two parts when the whole task is one block (so the second core would idle) and the
        # block is large enough that splitting it pays.
        one_block = expected_samples is not None and expected_samples <= length // z_copies
        parts = 2 if one_block and lanes >= MIN_PARTS_LANES and n_outputs <= class_lanes else 1
        return cls(
            preset=params,
            kind=kind,
            n_features=n_features,
            n_outputs=n_outputs,
            lanes=lanes,
            class_lanes=class_lanes,
            model_baby=model_baby,
            # Bs ~ sqrt(2D) balances the baby rotations (at two primes) against the giant
            # steps (a relinearisation and a rotation each, at one prime).
            sum_baby=1 << ((log_lanes + 1) // 2),
            poly=poly,
            z_copies=z_copies,
            parts=parts,
        )

    @classmethod
    def _for_mlp(
        cls, n_features: int, n_outputs: int, preset: str, hidden: int, poly: SigmoidPolynomial
    ) -> HESpec:
        params = get_preset(MLP_PRESET if preset == DEFAULT_PRESET else preset)
        if n_features < 1:
            raise ConfigError("a model needs at least one feature")
        lanes = _next_pow2(n_features + 1)
        class_lanes = _next_pow2(hidden)
        if lanes * class_lanes > params.slots:
            raise ConfigError(
                f"an mlp with {n_features} features and {hidden} hidden units does not fit "
                f"preset {params.name}: (features + 1) x hidden, each rounded up to a power of "
                f"two, must be <= {params.slots}",
                hint="use fewer features (e.g. a backbone's embedding) or hidden units",
            )
        log_lanes = lanes.bit_length() - 1
        return cls(
            preset=params,
            kind="mlp",
            n_features=n_features,
            n_outputs=n_outputs,
            lanes=lanes,
            class_lanes=class_lanes,
            # Bz = 8 keeps the model small (Bz ciphertexts at the top level each epoch) for
            # D/8 - 1 giant rotations per block (docs/he.md, "Neural networks")
            model_baby=min(lanes, MLP_MODEL_BABY),
            sum_baby=1 << ((log_lanes + 1) // 2),
            poly=poly,
            hidden=hidden,
        )

    # ---- derived sizes ----------------------------------------------------------------
    @property
    def slots(self) -> int:
        return self.preset.slots

    @property
    def length(self) -> int:
        """Slots of each class's virtual vector (L): the span of the gradient-sum layout."""
        return self.slots // self.class_lanes

    @property
    def block_size(self) -> int:
        """Samples per block (S'): one z-copy segment."""
        return self.length // self.z_copies

    @property
    def model_ciphertexts(self) -> int:
        """Model ciphertexts per class group (and z-ciphertexts per giant step): Bz / c."""
        return self.model_baby // self.z_copies

    @property
    def n_groups(self) -> int:
        """Class groups: how many times the program runs per block (an mlp: once)."""
        if self.is_mlp:
            return 1
        return math.ceil(self.n_outputs / self.class_lanes)

    @property
    def z_ciphertexts(self) -> int:
        """The block's z-layout ciphertexts: D / c."""
        return self.model_giant * self.model_ciphertexts

    @property
    def model_giant(self) -> int:
        return self.lanes // self.model_baby

    @property
    def sum_giant(self) -> int:
        return self.lanes // self.sum_baby

    @property
    def is_logistic(self) -> bool:
        return get_kind(self.kind).sigmoid

    # ---- the program's parts (see the module doc) ----------------------------------------
    def part_giants(self, part: int) -> range:
        """The z giant steps part ``part`` computes (all of them with one part or one step)."""
        if self.parts == 1 or self.model_giant == 1:
            return range(self.model_giant)
        half = self.model_giant // 2
        return range(part * half, (part + 1) * half)

    def part_model_columns(self, part: int) -> range:
        """The model ciphertexts (per class group) part ``part`` multiplies."""
        if self.parts == 1 or self.model_giant > 1:
            return range(self.model_ciphertexts)
        half = self.model_ciphertexts // 2
        return range(part * half, (part + 1) * half)

    def part_z_shift(self, part: int) -> int:
        """The rotation that moves part ``part``'s z share into place (0: none)."""
        giants = self.part_giants(part)
        return -self.class_lanes * giants.start * self.model_baby

    def part_babies(self, part: int) -> range:
        """The gradient-sum baby steps part ``part`` computes."""
        if self.parts == 1:
            return range(self.sum_baby)
        half = self.sum_baby // 2
        return range(part * half, (part + 1) * half)

    def rotation_steps(self) -> tuple[int, ...]:
        """Every rotation the processor's program performs: the Galois keys it needs."""
        r = self.class_lanes
        steps: set[int] = set()
        if self.is_mlp:
            # lane sums (left) and lane copies (right) inside a sample, sums over samples
            lane = 1
            while lane < r:
                steps.update((lane, -lane))
                lane *= 2
            stride = r
            while stride < self.slots:
                steps.add(stride)
                stride *= 2
        if self.model_giant > 1:
            steps.add(-r * self.model_baby)
        steps.update(shift for p in range(self.parts) if (shift := self.part_z_shift(p)))
        stride = self.block_size
        while stride < self.length:  # z-copy segment sums
            steps.add(r * stride)
            stride *= 2
        baby = 1
        while baby < self.sum_baby:
            steps.add(r * baby)
            baby *= 2
        if self.sum_giant > 1:
            steps.add(r * self.sum_baby)
        stride = self.lanes
        while stride < self.length:
            steps.add(r * stride)
            stride *= 2
        return tuple(sorted(steps))

    # ---- layouts (pure numpy; used by owner, requester and tests) ----------------------
    def block_matrix(self, X: np.ndarray) -> np.ndarray:
        """(L, D): features, the bias/mask lane, zero padding for absent samples and lanes."""
        n = X.shape[0]
        F = np.zeros((self.length, self.lanes))
        F[:n, : self.n_features] = X
        F[:n, self.n_features] = 1.0
        return F

    def _segments(self, j: int) -> tuple[np.ndarray, list[int]]:
        """Segment positions k < S' and the model diagonal b of each z-copy segment."""
        return np.arange(self.block_size), [j * self.z_copies + t for t in range(self.z_copies)]

    def z_layout(self, F: np.ndarray, g: int, j: int) -> np.ndarray:
        """(L,) z-ciphertext [g, j]: segment t is X[g, b][k] = F[(k + g*Bz) mod S', (k - b) mod D]
        with b = j*c + t."""
        k, diagonals = self._segments(j)
        rows = (k + g * self.model_baby) % self.block_size
        return np.concatenate([F[rows, (k - b) % self.lanes] for b in diagonals])

    def sum_layout(self, F: np.ndarray, g: int, b: int) -> np.ndarray:
        k = np.arange(self.length)
        return F[(k + b) % self.length, (k - g * self.sum_baby) % self.lanes]

    def model_layout(self, weights: np.ndarray, j: int) -> np.ndarray:
        """(class_lanes, L): row t is class t's weights, segment by segment in the diagonals
        of model ciphertext j (zero rows pad)."""
        k, diagonals = self._segments(j)
        lanes = np.zeros((weights.shape[0], self.lanes))
        lanes[:, : weights.shape[1]] = weights
        return np.concatenate([lanes[:, (k - b) % self.lanes] for b in diagonals], axis=1)

    def to_physical(self, per_class: np.ndarray) -> np.ndarray:
        """(class_lanes, L) or (L,) virtual vectors -> the S physical slots (r*k + t)."""
        per_class = np.asarray(per_class, dtype=np.float64)
        if per_class.ndim == 1:
            return np.repeat(per_class, self.class_lanes)
        full = np.zeros((self.class_lanes, self.length))
        full[: per_class.shape[0]] = per_class
        return full.T.reshape(-1)

    def result_lanes(self, physical: np.ndarray) -> np.ndarray:
        """Decrypted result slots -> (class_lanes, L/D replicas, D lanes)."""
        per_class = np.asarray(physical).reshape(self.length, self.class_lanes).T
        return per_class.reshape(self.class_lanes, self.length // self.lanes, self.lanes)

    # ---- serialisation -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION,
            "preset": self.preset.name,
            "poly_modulus_degree": self.preset.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.preset.coeff_mod_bit_sizes),
            "kind": self.kind,
            "n_features": self.n_features,
            "n_outputs": self.n_outputs,
            "lanes": self.lanes,
            "class_lanes": self.class_lanes,
            "model_baby": self.model_baby,
            "sum_baby": self.sum_baby,
            "z_copies": self.z_copies,
            "parts": self.parts,
            "poly": {"interval": self.poly.interval, "c1": self.poly.c1, "c3": self.poly.c3},
        } | ({"hidden": self.hidden} if self.is_mlp else {})

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: Any) -> HESpec:
        """Validate a decoded JSON object; raises ``ValueError`` with what is wrong."""
        ints: tuple[str, ...] = ("version", "poly_modulus_degree", "n_features", "n_outputs")
        ints += ("lanes", "class_lanes", "model_baby", "sum_baby", "z_copies", "parts")
        if isinstance(data, dict) and data.get("kind") == "mlp":
            ints += ("hidden",)
        keys = {*ints, "preset", "coeff_mod_bit_sizes", "kind", "poly"}
        if not isinstance(data, dict) or set(data) != keys:
            raise ValueError(f"spec must be an object with keys {sorted(keys)}")
        for key in ints:
            if type(data[key]) is not int or not 0 < data[key] < 1 << 31:
                raise ValueError(f"spec field {key!r} must be a positive integer")
        if data["version"] != SPEC_VERSION:
            raise ValueError(
                f"spec version {data['version']} (this fedmarket reads {SPEC_VERSION})"
            )
        if not isinstance(data["preset"], str) or not isinstance(data["kind"], str):
            raise ValueError("spec fields 'preset' and 'kind' must be strings")
        try:
            preset = get_preset(data["preset"])
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        if data["poly_modulus_degree"] != preset.poly_modulus_degree or data[
            "coeff_mod_bit_sizes"
        ] != list(preset.coeff_mod_bit_sizes):
            raise ValueError(f"spec parameters disagree with preset {preset.name}")
        poly = data["poly"]
        if not isinstance(poly, dict) or set(poly) != {"interval", "c1", "c3"}:
            raise ValueError("spec field 'poly' must have interval, c1 and c3")
        if not all(type(poly[key]) is float and math.isfinite(poly[key]) for key in poly):
            raise ValueError("polynomial coefficients must be finite numbers")
        if data["kind"] not in KIND_NAMES:
            raise ValueError(f"unknown model kind {data['kind']!r}")
        try:
            return cls(
                preset=preset,
                kind=data["kind"],
                n_features=data["n_features"],
                n_outputs=data["n_outputs"],
                lanes=data["lanes"],
                class_lanes=data["class_lanes"],
                model_baby=data["model_baby"],
                sum_baby=data["sum_baby"],
                poly=SigmoidPolynomial(poly["interval"], poly["c1"], poly["c3"]),
                z_copies=data["z_copies"],
                parts=data["parts"],
                hidden=data.get("hidden", 0),
            )
        except (ConfigError, ValueError) as exc:
            raise ValueError(str(exc)) from None
