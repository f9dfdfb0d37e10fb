"""Named CKKS parameter presets and their security level by the HE-standard tables SEAL enforces.

Every preset has the same modulus chain shape, chosen for the processor's program (see
``fedmarket.he.program``); the roles of the primes, first to last:

    output  the prime the results are decrypted at; <= 60 bits (SEAL's maximum), it bounds
            the gradient sums: |sum| * sum_scale < output / 2
    h       dropped when the residual h is rescaled for the gradient products
    square  dropped when z~^2 is rescaled (unused by linear regression)
    model   dropped when z = <w, x> is rescaled; the model is encoded at exactly this prime,
            so z comes out at exactly the data scale
    special SEAL's key-switching prime, never part of a ciphertext

Security comes from ``security_bits``: the largest level in the Homomorphic Encryption
Standard (Albrecht et al. 2018, the table in SEAL's ``util/hestdparms.h``: classical attacks,
ternary secret) whose modulus budget for N covers the whole chain, special prime included.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedmarket.errors import ConfigError

# Maximum total coefficient-modulus bits for each security level (classical, ternary secret),
# from the HE standard as SEAL encodes it in util/hestdparms.h.
HE_STANDARD_MAX_BITS: dict[int, dict[int, int]] = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
MAX_PRIME_BITS = 60


def security_level(poly_modulus_degree: int, total_bits: int) -> int:
    """Bits of security (256, 192 or 128) of a chain, or 0 if below 128-bit security."""
    for level in (256, 192, 128):
        bound = HE_STANDARD_MAX_BITS[level].get(poly_modulus_degree)
        if bound is not None and total_bits <= bound:
            return level
    return 0


@dataclass(frozen=True)
class Preset:
    """One named parameter set. All bit sizes are of primes SEAL's CoeffModulus.Create picks."""

    name: str
    poly_modulus_degree: int
    output_bits: int
    h_bits: int
    square_bits: int
    model_bits: int
    special_bits: int
    data_scale_bits: int  # scale of the features x for z = <w, x>
    sum_scale_bits: int  # target scale of the gradient sums (residual scale * data scale)
    description: str = ""
    # A deeper chain for the MLP program (fedmarket.he.mlp): its rescale primes between the
    # output prime and the special prime, output side first. Empty: the linear chain above
    # (then h_bits, square_bits and model_bits are its primes; with a deep chain they are unused).
    deep: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in HE_STANDARD_MAX_BITS[128]:
            raise ConfigError(f"preset {self.name}: poly_modulus_degree {n} is not supported")
        if any(not 20 <= bits <= MAX_PRIME_BITS for bits in self.coeff_mod_bit_sizes):
            raise ConfigError(f"preset {self.name}: every prime must have 20..60 bits")
        if self.security_bits < 128:
            raise ConfigError(
                f"preset {self.name}: {self.total_bits} modulus bits at N={n} is below "
                "128-bit security",
                hint=f"at N={n} the chain may use at most {HE_STANDARD_MAX_BITS[128][n]} bits",
            )

    @property
    def coeff_mod_bit_sizes(self) -> tuple[int, ...]:
        """In SEAL's order: the first prime stays to the end, the last is the special prime."""
        if self.deep:
            return (self.output_bits, *self.deep, self.special_bits)
        return (
            self.output_bits,
            self.h_bits,
            self.square_bits,
            self.model_bits,
            self.special_bits,
        )

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def security_bits(self) -> int:
        return security_level(self.poly_modulus_degree, self.total_bits)

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="n8192",
            poly_modulus_degree=8192,
            output_bits=60,
            h_bits=38,
            square_bits=30,
            model_bits=30,
            special_bits=60,
            data_scale_bits=30,
            sum_scale_bits=44,
            description="default: 4096 samples per block, 218 bits = 128-bit security",
        ),
        Preset(
            name="n16384",
            poly_modulus_degree=16384,
            output_bits=60,
            h_bits=58,
            square_bits=40,
            model_bits=40,
            special_bits=60,
            data_scale_bits=40,
            sum_scale_bits=43,
            description="8192 samples per block, 258 bits = 192-bit security; about 2x "
            "the time per sample",
        ),
        Preset(
            name="n16384-mlp",
            poly_modulus_degree=16384,
            output_bits=60,
            h_bits=45,
            square_bits=45,
            model_bits=45,
            special_bits=60,
            data_scale_bits=45,
            sum_scale_bits=40,
            description="the MLP program's depth-6 chain: 60 + 60 + 5 x 45 + 60 = 405 bits = "
            "128-bit security (docs/he.md, 'Neural networks')",
            deep=(60, 45, 45, 45, 45, 45),
        ),
    )
}
DEFAULT_PRESET = "n8192"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown HE parameter preset {name!r}", hint=f"choose one of {sorted(PRESETS)}"
        ) from None
