"""The attack catalogue: dishonest owners and processors a local run or a benchmark simulates.

A spec's ``[[run.owners]]`` and ``[[run.processors]]`` tables select an attack per party with
``attack = "..."``; ``parse_owner_attack`` and ``parse_processor_attack`` turn that string into
an attack object (``None`` for an honest party) or raise ``ConfigError`` naming the valid forms.

Processor attacks (``fedmarket.attacks.processor``)::

    random[:SCALE]          every total uniform in [-SCALE, SCALE] * n_samples (SCALE 0.5)
    zero                    free rider: all totals 0
    stale[:SIGMA]           honest once, then that result replayed + N(0, SIGMA * n_samples)
    partial:S               skips each block with probability S (0 < S <= 1) per epoch
    scale:F                 honest totals times the integer F (F != 0, 1; |F| <= 100)
    sign-flip               scale:-1
    late                    honest, submitted after the deadline
    crash@N                 stops answering from epoch N
    collude:GROUP:random[:SCALE]   colluders of GROUP return identical forged totals

Owner attacks (``fedmarket.attacks.owner``)::

    label-flip              binary swapped, multiclass to the next class, regression negated
    artificial              made-up data over the announced feature ranges
    backdoor[:FRACTION][:TARGET]   FRACTION (0.5) of samples triggered and labelled TARGET
    no-delivery             wins its bid, never delivers
"""

from __future__ import annotations

import math
import re

from fedmarket.attacks.owner import (
    Artificial,
    Backdoor,
    FeatureRanges,
    LabelFlip,
    NoDelivery,
    OwnerAttack,
    apply_trigger,
)
from fedmarket.attacks.processor import (
    MAX_SCALE_FACTOR,
    Collude,
    Corrupt,
    Crash,
    Late,
    Partial,
    ProcessorAttack,
    RandomTotals,
    Scale,
    Stale,
    ZeroTotals,
    clear_side_channel,
)
from fedmarket.errors import ConfigError

PROCESSOR_FORMS = (
    "random[:SCALE]",
    "zero",
    "stale[:SIGMA]",
    "partial:S",
    "scale:F",
    "sign-flip",
    "late",
    "corrupt",
    "crash@N",
    "collude:GROUP:random[:SCALE]",
)
OWNER_FORMS = ("label-flip", "artificial", "backdoor[:FRACTION][:TARGET]", "no-delivery")
_GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_INT = re.compile(r"^[+-]?[0-9]{1,6}$")


class _Bad(Exception):
    """One argument is out of range: the message says which and why."""


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Bad(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _Bad(f"{what} must be finite, got {text!r}")
    return value


def _integer(text: str, what: str) -> int:
    if not _INT.match(text):
        raise _Bad(f"{what} must be an integer, got {text!r}")
    return int(text)


def _text(text: object, role: str) -> str:
    if not isinstance(text, str):
        raise ConfigError(
            f"{role} attack must be a string, got {type(text).__name__}",
            hint=_hint(role),
        )
    return text.strip()


def _hint(role: str) -> str:
    forms = PROCESSOR_FORMS if role == "processor" else OWNER_FORMS
    return f"valid {role} attacks: {', '.join(forms)}"


def _processor(text: str) -> ProcessorAttack:
    head, *args = text.split(":")
    if head.startswith("crash@") and not args:
        epoch = _integer(head.removeprefix("crash@"), "crash epoch N")
        if epoch < 0:
            raise _Bad("crash epoch N must be >= 0")
        return Crash(epoch)
    if head in ("zero", "sign-flip", "late", "corrupt") and not args:
        return {
            "zero": ZeroTotals(),
            "sign-flip": Scale(-1),
            "late": Late(),
            "corrupt": Corrupt(),
        }[head]
    if head == "random" and len(args) <= 1:
        scale = _number(args[0], "SCALE") if args else RandomTotals.scale
        if scale <= 0:
            raise _Bad("SCALE must be > 0")
        return RandomTotals(scale)
    if head == "stale" and len(args) <= 1:
        sigma = _number(args[0], "SIGMA") if args else Stale.sigma
        if sigma < 0:
            raise _Bad("SIGMA must be >= 0")
        return Stale(sigma)
    if head == "partial" and len(args) == 1:
        fraction = _number(args[0], "S")
        if not 0 < fraction <= 1:
            raise _Bad("S must be in (0, 1]")
        return Partial(fraction)
    if head == "scale" and len(args) == 1:
        factor = _integer(args[0], "F")
        if factor in (0, 1) or abs(factor) > MAX_SCALE_FACTOR:
            raise _Bad(f"F must be an integer with |F| <= {MAX_SCALE_FACTOR}, not 0 or 1")
        return Scale(factor)
    if head == "collude" and len(args) in (2, 3) and args[1] == "random":
        if not _GROUP.match(args[0]):
            raise _Bad("GROUP must be 1-64 letters, digits, '_', '.' or '-'")
        scale = _number(args[2], "SCALE") if len(args) == 3 else Collude.scale
        if scale <= 0:
            raise _Bad("SCALE must be > 0")
        return Collude(args[0], scale)
    raise _Bad("unknown form")


def _owner(text: str) -> OwnerAttack:
    head, *args = text.split(":")
    if head in ("label-flip", "artificial", "no-delivery") and not args:
        return {"label-flip": LabelFlip(), "artificial": Artificial(), "no-delivery": NoDelivery()}[
            head
        ]
    if head == "backdoor" and len(args) <= 2:
        fraction = _number(args[0], "FRACTION") if args else Backdoor.fraction
        if not 0 < fraction <= 1:
            raise _Bad("FRACTION must be in (0, 1]")
        target = _number(args[1], "TARGET") if len(args) == 2 else None
        return Backdoor(fraction, target)
    raise _Bad("unknown form")


def parse_processor_attack(text: str | None) -> ProcessorAttack | None:
    """The processor attack a spec names, ``None`` for an honest processor."""
    if text is None:
        return None
    clean = _text(text, "processor")
    try:
        return _processor(clean)
    except _Bad as exc:
        raise ConfigError(
            f"bad processor attack {text!r}: {exc}", hint=_hint("processor")
        ) from None


def parse_owner_attack(text: str | None) -> OwnerAttack | None:
    """The owner attack a spec names, ``None`` for an honest owner."""
    if text is None:
        return None
    clean = _text(text, "owner")
    try:
        return _owner(clean)
    except _Bad as exc:
        raise ConfigError(f"bad owner attack {text!r}: {exc}", hint=_hint("owner")) from None


__all__ = [
    "OWNER_FORMS",
    "PROCESSOR_FORMS",
    "Artificial",
    "Backdoor",
    "Collude",
    "Corrupt",
    "Crash",
    "FeatureRanges",
    "LabelFlip",
    "Late",
    "NoDelivery",
    "OwnerAttack",
    "Partial",
    "ProcessorAttack",
    "RandomTotals",
    "Scale",
    "Stale",
    "ZeroTotals",
    "apply_trigger",
    "clear_side_channel",
    "parse_owner_attack",
    "parse_processor_attack",
]
