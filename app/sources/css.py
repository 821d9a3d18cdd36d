"""CSS values of a mail's styles, read as a browser reads them.

Values come lower-cased with their spaces collapsed (`shown.declarations`). Every scan is
linear in the value: a mail's styles are the sender's.
"""

from __future__ import annotations

import re

BASE_FONT_PX = 16.0
_ABSOLUTE_UNITS = {"px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54,
                   "mm": 96 / 25.4, "q": 96 / 101.6}
# Each digit is only one quantifier's: "\d+\.?\d*" split a run of digits between two, and
# a style's "font-size:111…1!" failed every way in turn, 15 s for 20,000 digits.
LENGTH = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)([a-z%]*)")


def length_px(value: str, font_px: float) -> float | None:
    """A CSS length in px (em and % of `font_px`, rem of the default size), or None."""
    match = LENGTH.fullmatch(value)
    if match is None:
        return None
    number, unit = float(match.group(1)), match.group(2)
    if unit in _ABSOLUTE_UNITS or not unit:  # quirks mode reads a bare number as px
        return number * _ABSOLUTE_UNITS.get(unit, 1.0)
    if unit in ("em", "ch", "ex"):
        return number * font_px
    if unit == "%":
        return number * font_px / 100
    if unit == "rem":
        return number * BASE_FONT_PX
    return None  # viewport units and the like: the reader's screen decides
