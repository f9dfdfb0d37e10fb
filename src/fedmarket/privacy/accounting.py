"""The privacy accountant: how much noise a task's (epsilon, delta) needs, and how much is spent.

Every record is in exactly one block, and its block's totals are released once per epoch with
the owner's Gaussian noise of standard deviation ``sigma * Delta`` (``Delta`` the kind's
replace-one sensitivity, ``fedmarket.models.kinds``; replicas and audits repeat the same
bytes). Training is full-batch, so a record sees T Gaussian mechanisms of noise multiplier
sigma: no amplification by sampling. We account them with the privacy-loss-distribution (PLD)
accountant of Google's ``dp-accounting``, which is tight here: T compositions of a Gaussian are
exactly mu-GDP with ``mu = sqrt(T) / sigma`` (Dong, Roth, Su 2022), and the tests check the
accountant against that closed form.

``sigma`` is in units of ``Delta``: one mechanism is a unit shift of a unit Gaussian, which is
``GaussianDpEvent(sigma)`` under the library's default neighbouring relation.
"""

from __future__ import annotations

import functools
import math

import dp_accounting
from dp_accounting import pld

from fedmarket.errors import ConfigError

# Discretisation of the loss values: 1e-3 keeps sigma within 1e-4 of the exact value (the
# PLD estimate is pessimistic, so sigma errs on the safe side) in ~0.1 s per evaluation.
_DISCRETIZATION = 1e-3
_TOLERANCE = 1e-5
MAX_EPOCHS = 100_000


def _check(epsilon: float, delta: float, epochs: int) -> None:
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError(f"epsilon must be a positive number, got {epsilon!r}")
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    if type(epochs) is not int or not 1 <= epochs <= MAX_EPOCHS:
        raise ConfigError(f"epochs must be an integer in 1..{MAX_EPOCHS}, got {epochs!r}")


def _accountant() -> pld.PLDAccountant:
    return pld.PLDAccountant(value_discretization_interval=_DISCRETIZATION)


def _event(sigma: float, epochs: int) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), epochs)


@functools.lru_cache(maxsize=256)
def noise_multiplier(epsilon: float, delta: float, epochs: int) -> float:
    """The smallest sigma (noise std / sensitivity) for which ``epochs`` full-batch Gaussian
    releases are (epsilon, delta)-DP, by the PLD accountant.

    E.g. (8, 1e-5, 30) -> 3.29, (3, 1e-5, 30) -> 7.62, (1, 1e-5, 30) -> 20.4.
    """
    _check(epsilon, delta, epochs)
    # mu-GDP needs mu = sqrt(T)/sigma with delta(eps; mu) = delta; mu lies in (eps/sqrt(2 log
    # 1.25/delta) / 4, 4 eps + 4) for every eps, delta here, which brackets sigma.
    low = math.sqrt(epochs) / (4.0 * epsilon + 4.0)
    high = math.sqrt(epochs) * 4.0 * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon
    sigma = dp_accounting.calibrate_dp_mechanism(
        _accountant,
        lambda s: _event(s, epochs),
        epsilon,
        delta,
        bracket_interval=dp_accounting.ExplicitBracketInterval(low, high),
        tol=_TOLERANCE,
    )
    return float(sigma)


def epsilon_spent(noise_multiplier: float, delta: float, epochs_released: int) -> float:
    """Epsilon at ``delta`` after ``epochs_released`` releases with noise multiplier sigma
    (0 before the first release): what the report shows per owner, what an owner's ledger adds."""
    if type(epochs_released) is not int or not 0 <= epochs_released <= MAX_EPOCHS:
        raise ConfigError(
            f"epochs_released must be an integer in 0..{MAX_EPOCHS}, got {epochs_released!r}"
        )
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"noise_multiplier must be a positive number, got {noise_multiplier!r}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    if epochs_released == 0:
        return 0.0
    accountant = _accountant()
    accountant.compose(_event(noise_multiplier, epochs_released))
    return float(accountant.get_epsilon(delta))
