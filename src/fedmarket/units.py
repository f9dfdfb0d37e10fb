"""Token amounts for people: exact decimal strings from integer base units (never floats)."""

from __future__ import annotations


def format_units(amount: int, decimals: int, *, places: int = 6, sign: bool = False) -> str:
    """``1234500000000000000, 18`` -> ``"1.2345"``; past ``places`` it truncates and marks ``~``."""
    if decimals < 0 or places < 0:
        raise ValueError("decimals and places must be non-negative")
    negative = amount < 0
    whole, frac = divmod(abs(amount), 10**decimals)
    digits = str(frac).rjust(decimals, "0") if decimals else ""
    shown = digits[:places].rstrip("0")
    cut = digits[places:].strip("0") != ""
    text = f"{whole:,}" + (f".{shown}" if shown else "")
    if cut:
        text = "~" + text
    if negative:
        return "-" + text
    return ("+" + text) if sign and amount > 0 else text
