"""The sigmoid cubic: the frozen constants are the least-squares fit, and the kappa rewrite."""

from __future__ import annotations

import numpy as np
import pytest

from fedmarket.models import DEFAULT_SIGMOID, SigmoidPolynomial


def test_frozen_constants_are_the_least_squares_fit_on_minus_8_to_8() -> None:
    # (the frozen values came from a finer grid; a 200k-point fit agrees to ~1e-5)
    fitted = SigmoidPolynomial.least_squares(8.0)
    assert fitted.c1 == pytest.approx(DEFAULT_SIGMOID.c1, rel=1e-4)
    assert fitted.c3 == pytest.approx(DEFAULT_SIGMOID.c3, rel=1e-4)
    # ... and match the iDASH 2017 polynomial 0.5 + 1.20096 (x/8) - 0.81562 (x/8)^3.
    assert DEFAULT_SIGMOID.c1 == pytest.approx(1.20096 / 8, rel=1e-4)
    assert DEFAULT_SIGMOID.c3 == pytest.approx(-0.81562 / 8**3, rel=1e-4)


def test_cubic_tracks_the_sigmoid_on_its_interval() -> None:
    x = np.linspace(-8, 8, 1001)
    error = np.abs(DEFAULT_SIGMOID(x) - 1 / (1 + np.exp(-x)))
    assert error.max() < 0.12  # the price of degree 3 on a wide interval
    assert DEFAULT_SIGMOID(0.0) == 0.5 and np.all(np.diff(DEFAULT_SIGMOID(x[np.abs(x) < 5])) > 0)


def test_kappa_rewrite_is_the_same_polynomial() -> None:
    """What the processor computes from kappa*z equals p(z) - 1/2."""
    poly = DEFAULT_SIGMOID
    z = np.linspace(-10, 10, 101)
    zt = poly.kappa * z
    assert poly.kappa**3 == pytest.approx(poly.c3)
    np.testing.assert_allclose(zt * (zt * zt + poly.linear_term) + 0.5, poly(z), atol=1e-12)


def test_max_abs_covers_the_turning_point() -> None:
    peak = np.sqrt(DEFAULT_SIGMOID.c1 / (3 * -DEFAULT_SIGMOID.c3))
    assert DEFAULT_SIGMOID.max_abs_on(8.0) == pytest.approx(float(DEFAULT_SIGMOID(peak)))


@pytest.mark.parametrize(
    ("interval", "c1", "c3"), [(0, 0.1, -0.001), (8, -0.1, -0.001), (8, 0.1, 0.001)]
)
def test_invalid_polynomials_are_refused(interval: float, c1: float, c3: float) -> None:
    with pytest.raises(ValueError):
        SigmoidPolynomial(interval, c1, c3)
