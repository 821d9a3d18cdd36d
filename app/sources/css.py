"""CSS values of a mail's styles, read as a browser reads them: lengths, numbers, and where
a transform, an offset or a clipping shape puts an element's text (colours: `colours`).

Values come lower-cased with their spaces collapsed (`shown.declarations`). What cannot be
read is None: the caller then takes nothing to be hidden by it. Every scan is linear in
the value: a mail's styles are the sender's.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

BASE_FONT_PX = 16.0
_ABSOLUTE_UNITS = {"px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54,
                   "mm": 96 / 25.4, "q": 96 / 101.6}
# Each digit is only one quantifier's: "\d+\.?\d*" split a run of digits between two, and
# a style's "font-size:111…1!" failed every way in turn, 15 s for 20,000 digits.
LENGTH = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)([a-z%]*)")
# A function and its arguments, with no function inside them. A name starts only where a
# word does: tried from inside a long word, each start would read the word to its end.
FUNCTION = re.compile(r"(?<![a-z0-9-])([a-z-][a-z0-9-]*)\(([^()]*)\)")
ARGUMENT_SEPARATOR = re.compile(r"\s*[,/]\s*|\s+")
# The page a reader sees behind a viewport length: a mail's column is some 600 px wide in
# a window of about 1000.
_VIEWPORT_PX = 1000.0


def length_px(value: str, font_px: float) -> float | None:
    """A CSS length in px (em and % of `font_px`, rem of the default size), or None."""
    match = LENGTH.fullmatch(value)
    if match is None:
        return None
    amount, unit = float(match.group(1)), match.group(2)
    if unit in _ABSOLUTE_UNITS or not unit:  # quirks mode reads a bare number as px
        return amount * _ABSOLUTE_UNITS.get(unit, 1.0)
    if unit in ("em", "ch", "ex"):
        return amount * font_px
    if unit == "%":
        return amount * font_px / 100
    if unit == "rem":
        return amount * BASE_FONT_PX
    return None  # viewport units and the like: the reader's screen decides


def number(token: str, *, percent: float = 1.0) -> float:
    """A number, or a percentage of `percent`; `none` is 0."""
    if token == "none":
        return 0.0
    match = LENGTH.fullmatch(token)
    if match is None or match.group(2) not in ("", "%"):
        raise ValueError(token)
    amount = float(match.group(1))
    return amount * percent / 100 if match.group(2) == "%" else amount


def hue(token: str) -> float:
    """An angle in degrees."""
    if token == "none":
        return 0.0
    match = LENGTH.fullmatch(token)
    if match is None:
        raise ValueError(token)
    amount, unit = float(match.group(1)), match.group(2)
    turns = {"": 360.0, "deg": 360.0, "grad": 400.0, "rad": 2 * math.pi, "turn": 1.0}
    if unit not in turns:
        raise ValueError(token)
    return amount * 360.0 / turns[unit]


def top_level(value: str, separator: str) -> list[str]:
    """`value` split at each `separator` outside parentheses."""
    parts, depth, start = [], 0, 0
    for n, char in enumerate(value):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif depth == 0 and (char == separator or (separator == " " and char.isspace())):
            parts.append(value[start:n])
            start = n + 1
    parts.append(value[start:])
    return [part.strip() for part in parts if part.strip()]


def filter_opacity(value: str) -> float:
    """How much of the element a `filter` list's opacity() functions leave (1 if none)."""
    left = 1.0
    for function in FUNCTION.finditer(value):
        if function.group(1) == "opacity":
            try:
                amount = number(function.group(2).strip() or "1", percent=1.0)
            except ValueError:
                continue
            left *= min(max(amount, 0.0), 1.0)
    return left


# --------------------------------------------------------------------------- geometry


def offset_px(value: str, font_px: float) -> float | None:
    """An offset (`left`, a margin, a translation) in px, viewport units taken on a
    window of `_VIEWPORT_PX`; None for percentages, `auto` and what cannot be read."""
    match = LENGTH.fullmatch(value)
    if match is not None and match.group(2) in ("vw", "vh", "vmin", "vmax", "svw", "svh",
                                                "lvw", "lvh", "dvw", "dvh"):
        return float(match.group(1)) * _VIEWPORT_PX / 100
    if match is not None and match.group(2) == "%":
        return None
    return length_px(value, font_px)


class Transform(NamedTuple):
    """What a `transform` does to an element's text, drawn in 2D: how far it moves it
    (px, and % of the element's own size), and how much it shrinks it at the least (the
    2x2 matrix's smaller singular value: 0 when it is flattened to a line)."""

    moved_px: tuple[float, float]
    moved_percent: tuple[float, float]
    shrink: float


_Matrix = tuple[float, float, float, float]  # a b c d: x' = a x + c y, y' = b x + d y


def _angle_radians(token: str) -> float:
    if token in ("0", "none"):
        return 0.0
    match = LENGTH.fullmatch(token)
    if match is None or match.group(2) not in ("deg", "grad", "rad", "turn"):
        raise ValueError(token)
    return math.radians(hue(token))


def _translation(token: str, font_px: float) -> tuple[float, float]:
    """A translation's length: (px, %)."""
    match = LENGTH.fullmatch(token)
    if match is not None and match.group(2) == "%":
        return 0.0, float(match.group(1))
    px = offset_px(token, font_px)
    if px is None:
        raise ValueError(token)
    return px, 0.0


def _step(name: str, args: list[str], font_px: float) -> tuple[_Matrix, list[str]]:
    """One transform function: its linear part, and its translation's two lengths."""
    def scale(token: str) -> float:
        return number(token, percent=1.0)

    if name in ("translate", "translate3d"):
        return (1, 0, 0, 1), [args[0], args[1] if len(args) > 1 else "0"]
    if name == "translatex":
        return (1, 0, 0, 1), [args[0], "0"]
    if name == "translatey":
        return (1, 0, 0, 1), ["0", args[0]]
    if name in ("scale", "scale3d"):
        x = scale(args[0])
        y = scale(args[1]) if len(args) > 1 else x
        return (x, 0, 0, y), []
    if name == "scalex":
        return (scale(args[0]), 0, 0, 1), []
    if name == "scaley":
        return (1, 0, 0, scale(args[0])), []
    if name in ("rotate", "rotatez"):
        t = _angle_radians(args[0])
        return (math.cos(t), math.sin(t), -math.sin(t), math.cos(t)), []
    if name == "rotatex":  # seen from the front: its height shrinks to cos
        return (1, 0, 0, math.cos(_angle_radians(args[0]))), []
    if name == "rotatey":
        return (math.cos(_angle_radians(args[0])), 0, 0, 1), []
    if name == "skewx":
        return (1, 0, math.tan(_angle_radians(args[0])), 1), []
    if name == "skewy":
        return (1, math.tan(_angle_radians(args[0])), 0, 1), []
    if name == "skew":
        x = math.tan(_angle_radians(args[0]))
        y = math.tan(_angle_radians(args[1])) if len(args) > 1 else 0.0
        return (1, y, x, 1), []
    if name == "matrix" and len(args) == 6:
        a, b, c, d = (float(v) for v in args[:4])
        return (a, b, c, d), [args[4], args[5]]
    if name == "matrix3d" and len(args) == 16:
        a, b, c, d = (float(args[n]) for n in (0, 1, 4, 5))
        return (a, b, c, d), [args[12], args[13]]
    raise ValueError(name)  # perspective(), rotate3d(), …: left as they are


def transform(value: str, font_px: float, *, translate: str = "", rotate: str = "",
              scale: str = "") -> Transform:
    """What `transform` and the `translate`, `rotate` and `scale` properties do together
    (each applied in that order; functions it cannot read count as none)."""
    functions = []
    if translate not in ("", "none"):
        functions.append(f"translate({','.join(translate.split()[:2])})")
    words = rotate.split()
    if len(words) == 1 and words[0] != "none":
        functions.append(f"rotate({words[0]})")
    elif len(words) == 2 and words[0] in ("x", "y", "z"):
        functions.append(f"rotate{words[0].replace('z', '')}({words[1]})")
    if scale not in ("", "none"):
        functions.append(f"scale({','.join(scale.split()[:2])})")
    if value not in ("", "none"):
        functions.append(value)
    matrix: _Matrix = (1.0, 0.0, 0.0, 1.0)
    moved, percent = [0.0, 0.0], [0.0, 0.0]
    for function in FUNCTION.finditer(" ".join(functions)):
        name = function.group(1)
        args = [p for p in ARGUMENT_SEPARATOR.split(function.group(2).strip()) if p]
        try:
            step, lengths = _step(name, args, font_px)
            shifts = [_translation(token, font_px) for token in lengths]
        except (ValueError, IndexError, OverflowError):
            continue
        a, b, c, d = matrix
        if shifts:  # moved through what the functions before it did
            (x, px), (y, py) = shifts
            moved[0] += a * x + c * y
            moved[1] += b * x + d * y
            percent[0] += a * px + c * py
            percent[1] += b * px + d * py
        e, f, g, h = step
        matrix = (a * e + c * f, b * e + d * f, a * g + c * h, b * g + d * h)
    return Transform((moved[0], moved[1]), (percent[0], percent[1]), _shrink(matrix))


def _shrink(matrix: _Matrix) -> float:
    a, b, c, d = matrix
    squares = a * a + b * b + c * c + d * d
    determinant = a * d - b * c
    inner = max(squares * squares - 4 * determinant * determinant, 0.0)
    smallest = math.sqrt(max((squares - math.sqrt(inner)) / 2, 0.0))
    return smallest if math.isfinite(smallest) else 1.0


def clip_rect_empty(value: str, font_px: float) -> bool:
    """Whether `clip: rect(top, right, bottom, left)` leaves nothing of the element."""
    match = FUNCTION.fullmatch(value)
    if match is None or match.group(1) != "rect":
        return False
    edges = [p for p in ARGUMENT_SEPARATOR.split(match.group(2).strip()) if p]
    if len(edges) != 4:
        return False
    top, right, bottom, left = (length_px(e, font_px) for e in edges)
    return bool((top is not None and bottom is not None and bottom <= top)
                or (left is not None and right is not None and right <= left))


def clip_path_empty(value: str, font_px: float) -> bool:
    """Whether a `clip-path` shape leaves nothing of the element: `inset()` that meets
    itself (`inset(50%)`), a `circle()` or `ellipse()` of no radius, or a `polygon()`
    whose points all lie on one line across or down."""
    match = FUNCTION.match(value)
    if match is None:
        return False
    name = match.group(1)
    args = [p for p in ARGUMENT_SEPARATOR.split(match.group(2).strip()) if p]
    if name == "inset":
        sides = args[:args.index("round")] if "round" in args else args
        if not 1 <= len(sides) <= 4:
            return False
        top = sides[0]
        right = sides[1] if len(sides) > 1 else top
        bottom = sides[2] if len(sides) > 2 else top
        left = sides[3] if len(sides) > 3 else right
        return _meets(top, bottom, font_px) or _meets(left, right, font_px)
    if name in ("circle", "ellipse"):
        radii = args[:args.index("at")] if "at" in args else args
        sizes = [number(r) if r.endswith("%") else length_px(r, font_px) for r in radii]
        return bool(sizes) and any(s is not None and s <= 0.0 for s in sizes)
    if name == "polygon":
        points = top_level(match.group(2), ",")
        if points and points[0] in ("nonzero", "evenodd"):
            points = points[1:]
        pairs = [tuple(point.split()) for point in points]
        if len(pairs) < 3 or any(len(pair) != 2 for pair in pairs):
            return False
        return len({x for x, _y in pairs}) == 1 or len({y for _x, y in pairs}) == 1
    return False


def _meets(one: str, other: str, font_px: float) -> bool:
    """Whether two opposite insets leave nothing between them (in %, or both px and so
    large that no element of a mail is that big)."""
    sizes = [length_px(v, font_px) if not v.endswith("%") else None for v in (one, other)]
    share = [number(v, percent=100.0) if v.endswith("%") else 0.0 if sizes[n] == 0 else None
             for n, v in enumerate((one, other))]  # a zero length is 0% too
    if share[0] is not None and share[1] is not None:
        return share[0] + share[1] >= 100
    if sizes[0] is not None and sizes[1] is not None:
        return sizes[0] + sizes[1] >= 2000
    return False
