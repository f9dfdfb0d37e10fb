"""The accountant against the closed form: T Gaussian releases are mu-GDP, mu = sqrt(T)/sigma."""

from __future__ import annotations

import itertools
import math

import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from fedmarket.errors import ConfigError
from fedmarket.privacy.accounting import epsilon_spent, noise_multiplier


def gdp_delta(epsilon: float, mu: float) -> float:
    """delta(epsilon) of mu-GDP (Dong, Roth, Su 2022, Corollary 2.13)."""
    return norm.cdf(-epsilon / mu + mu / 2) - math.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2)


def exact_sigma(epsilon: float, delta: float, epochs: int) -> float:
    mu = brentq(lambda m: gdp_delta(epsilon, m) - delta, 1e-4, 50.0)
    return math.sqrt(epochs) / mu


def exact_epsilon(sigma: float, delta: float, epochs: int) -> float:
    mu = math.sqrt(epochs) / sigma
    return brentq(lambda e: gdp_delta(e, mu) - delta, 0.0, 200.0)


@pytest.mark.parametrize("epsilon", [1.0, 3.0, 8.0])
@pytest.mark.parametrize("epochs", [10, 30, 100])
def test_noise_multiplier_is_the_exact_gaussian_one(epsilon: float, epochs: int) -> None:
    sigma = noise_multiplier(epsilon, 1e-5, epochs)
    assert sigma == pytest.approx(exact_sigma(epsilon, 1e-5, epochs), abs=5e-4)
    # and it meets the target: the accountant never gives less noise than needed
    assert exact_epsilon(sigma, 1e-5, epochs) <= epsilon + 1e-6


def test_the_design_table() -> None:
    """The numbers docs/privacy.md quotes (T = 30, delta = 1e-5)."""
    assert round(noise_multiplier(8.0, 1e-5, 30), 2) == 3.29
    assert round(noise_multiplier(3.0, 1e-5, 30), 2) == 7.62
    assert round(noise_multiplier(1.0, 1e-5, 30), 2) == 20.43


@pytest.mark.parametrize("released", [1, 5, 10, 30])
def test_epsilon_spent_is_the_exact_gaussian_one(released: int) -> None:
    sigma = noise_multiplier(3.0, 1e-5, 30)
    spent = epsilon_spent(sigma, 1e-5, released)
    assert spent == pytest.approx(exact_epsilon(sigma, 1e-5, released), abs=5e-3)


def test_spending_grows_to_the_budget() -> None:
    sigma = noise_multiplier(8.0, 1e-5, 20)
    spent = [epsilon_spent(sigma, 1e-5, t) for t in range(0, 21, 5)]
    assert spent[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(spent))
    assert spent[-1] == pytest.approx(8.0, abs=1e-2)


@pytest.mark.parametrize(
    ("epsilon", "delta", "epochs"),
    [(0.0, 1e-5, 10), (-1.0, 1e-5, 10), (math.inf, 1e-5, 10), (1.0, 0.0, 10), (1.0, 1.0, 10),
     (1.0, 1e-5, 0), (1.0, 1e-5, 2.5)],
)  # fmt: skip
def test_bad_parameters_are_refused(epsilon: float, delta: float, epochs: int) -> None:
    with pytest.raises(ConfigError):
        noise_multiplier(epsilon, delta, epochs)  # type: ignore[arg-type]
