"""The lower-bound arithmetic of ``fedmarket.he.bound`` and the ring-noise measurement it uses.

No timing is asserted here (timings live in ``make bench-he``); the costs below are made up so
that every term of the bound can be checked by hand.
"""

from __future__ import annotations

import math

import pytest

from fedmarket.he import HESpec
from fedmarket.he.bound import (
    LEVELS,
    OpCosts,
    critical_path,
    max_precision_bits,
    measure_op_costs,
    ring_noise,
)


def _costs(
    *, relin: float = 1.0, rotate: float = 1.0, mul: float = 1.0, rescale: float = 1.0
) -> OpCosts:
    every = dict.fromkeys(LEVELS, 1.0)
    return OpCosts(
        multiply={level: mul for level in every},
        relinearize={level: relin for level in every},
        rescale2={level: rescale for level in LEVELS if level > 1},
        rescale3={level: rescale for level in LEVELS if level > 1},
        rotate={level: rotate for level in every},
    )


def test_bound_adds_three_products_and_the_rotation_rounds() -> None:
    path = critical_path(_costs(), samples=9, workers=2)
    # Each of z, z^2, z^3: a product, a rescale and a relinearisation; the lazy order (8 ops
    # plus 5 key switches) costs more here, so the eager one is taken.
    assert path.residual_ms == pytest.approx(9.0)
    assert path.rotation_rounds == pytest.approx(2.0)  # 3^2 = 9 samples with two cores
    assert path.total_ms == pytest.approx(11.0)


def test_bound_takes_the_cheaper_order_of_rescale_and_relinearisation() -> None:
    costs = _costs()
    costs.relinearize[4], costs.relinearize[3] = 10.0, 2.0  # relinearising one level down pays
    path = critical_path(costs, samples=1, workers=1)
    assert path.residual_ms == pytest.approx(1 + 1 + 2 + 3 + 3)
    assert path.rotations_ms == 0.0


def test_lazy_relinearisation_counts_when_it_is_cheaper() -> None:
    costs = _costs()
    costs.relinearize[4] = costs.relinearize[3] = 50.0
    path = critical_path(costs, samples=1)
    # z and z^2 never relinearised: 4 products/rescales at 4 and 3 primes, three key switches
    # at two primes, the last product and rescale, two key switches at one prime.
    assert path.residual_ms == pytest.approx(4 + 3 + 2 + 2)


def test_more_cores_mean_fewer_rotation_rounds_never_none() -> None:
    one, two = (critical_path(_costs(), 1000, workers) for workers in (1, 2))
    assert one.rotation_rounds == pytest.approx(math.log2(1000))
    assert 6 < two.rotation_rounds < one.rotation_rounds
    with pytest.raises(ValueError):
        critical_path(_costs(), 0)


def test_measured_costs_cover_every_level() -> None:
    spec = HESpec.for_task(kind="logistic", n_features=3)
    costs = measure_op_costs(spec, repeat=1)
    for table in (costs.multiply, costs.relinearize, costs.rotate):
        assert set(table) == set(LEVELS) and all(ms > 0 for ms in table.values())
    assert set(costs.rescale3) == {4, 3, 2} and all(ms > 0 for ms in costs.rescale3.values())
    assert critical_path(costs, 1000).total_ms > 0
    assert set(costs.to_json()["rotate"]) == {"4", "3", "2", "1"}


def test_n4096_leaves_no_precision_where_n8192_leaves_plenty() -> None:
    small = ring_noise(4096, (28, 18, 18, 18, 27))
    # Key switching adds noise: the rotated ciphertext is noisier than the fresh one.
    assert small.rotated_bits > small.fresh_bits > 0
    assert max_precision_bits(small, math.log2(1000)) < 4
    large = ring_noise(8192, (60, 38, 30, 30, 60))
    assert max_precision_bits(large, math.log2(1000), min_prime_bits=20) >= 16


def test_a_chain_seal_rejects_is_reported() -> None:
    with pytest.raises((ValueError, RuntimeError)):
        ring_noise(4096, (60, 60, 60, 60, 60))
