"""Robust aggregation of decrypted block gradients, chosen by name in the task spec.

Names: ``mean``, ``median``, ``trimmed-mean`` or ``trimmed-mean:BETA`` (fraction trimmed from
each side, default 0.2), ``krum`` or ``krum:F`` (assumed byzantine fraction, default 0.3),
``fltrust`` (needs the requester's validation gradient as ``reference``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fedmarket.errors import ConfigError
from fedmarket.integrity.aggregators.base import Aggregate, Aggregator
from fedmarket.integrity.aggregators.fltrust import FLTrust
from fedmarket.integrity.aggregators.krum import Krum
from fedmarket.integrity.aggregators.mean import Mean
from fedmarket.integrity.aggregators.median import Median
from fedmarket.integrity.aggregators.trimmed_mean import TrimmedMean

# name -> factory; a factory takes the optional ":PARAM" as a float (None: its default).
AGGREGATORS: dict[str, Callable[[float | None], Aggregator]] = {
    "mean": lambda _: Mean(),
    "median": lambda _: Median(),
    "trimmed-mean": lambda p: TrimmedMean() if p is None else TrimmedMean(p),
    "krum": lambda p: Krum() if p is None else Krum(p),
    "fltrust": lambda _: FLTrust(),
}
# Names that take a ":PARAM", and what it means.
PARAMETERS: dict[str, str] = {
    "trimmed-mean": "the fraction trimmed from each side, in [0, 0.5)",
    "krum": "the assumed fraction of byzantine blocks, in [0, 0.5)",
}
_CHOICES = "mean, median, trimmed-mean[:BETA], krum[:F], fltrust"


def _parse_parameter(base: str, text: str, name: str) -> float:
    if base not in PARAMETERS:
        raise ConfigError(
            f"aggregator {base!r} takes no parameter, got {name!r}",
            hint=f"write just {base!r}; parameters apply to trimmed-mean and krum",
        )
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value < 0.5):
        raise ConfigError(
            f"bad parameter {text!r} in aggregator {name!r}",
            hint=f"for {base} it is {PARAMETERS[base]}, e.g. {base}:0.2",
        )
    return value


def get_aggregator(name: str) -> Aggregator:
    """The aggregator called ``name`` (case and surrounding spaces ignored).

    Raises ``ConfigError`` naming the valid choices on an unknown name, a parameter given to
    an aggregator without one, or a parameter that is not a number in [0, 0.5).
    """
    text = str(name).strip().lower()
    base, sep, param = text.partition(":")
    base = base.strip()
    if base not in AGGREGATORS:
        raise ConfigError(f"unknown aggregator {name!r}", hint=f"choose one of: {_CHOICES}")
    value = _parse_parameter(base, param.strip(), str(name)) if sep else None
    return AGGREGATORS[base](value)


__all__ = [
    "AGGREGATORS",
    "PARAMETERS",
    "Aggregate",
    "Aggregator",
    "FLTrust",
    "Krum",
    "Mean",
    "Median",
    "TrimmedMean",
    "get_aggregator",
]
