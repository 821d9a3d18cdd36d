"""CSS colours, read as a browser reads them, and how far apart two of them look.

Values come lower-cased with their spaces collapsed (`shown.declarations`). What cannot be
read is None: the caller then takes nothing to be hidden by it. Every scan is linear in
the value.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from app.sources.css import ARGUMENT_SEPARATOR, FUNCTION, hue, number, top_level

Rgb = tuple[float, float, float]  # sRGB, each 0 to 1


class Colour(NamedTuple):
    """An sRGB colour (each channel 0 to 1) with its alpha."""

    red: float
    green: float
    blue: float
    alpha: float = 1.0


WHITE = Colour(1.0, 1.0, 1.0)
BLACK = Colour(0.0, 0.0, 0.0)
TRANSPARENT = Colour(0.0, 0.0, 0.0, 0.0)
LINK_BLUE = Colour(0.0, 0.0, 0xEE / 255)
_NAMED = (
    "aliceblue f0f8ff antiquewhite faebd7 aqua 00ffff aquamarine 7fffd4 azure f0ffff beige "
    "f5f5dc bisque ffe4c4 black 000000 blanchedalmond ffebcd blue 0000ff blueviolet 8a2be2 "
    "brown a52a2a burlywood deb887 cadetblue 5f9ea0 chartreuse 7fff00 chocolate d2691e "
    "coral ff7f50 cornflowerblue 6495ed cornsilk fff8dc crimson dc143c cyan 00ffff darkblue "
    "00008b darkcyan 008b8b darkgoldenrod b8860b darkgray a9a9a9 darkgreen 006400 darkgrey "
    "a9a9a9 darkkhaki bdb76b darkmagenta 8b008b darkolivegreen 556b2f darkorange ff8c00 "
    "darkorchid 9932cc darkred 8b0000 darksalmon e9967a darkseagreen 8fbc8f darkslateblue "
    "483d8b darkslategray 2f4f4f darkslategrey 2f4f4f darkturquoise 00ced1 darkviolet "
    "9400d3 deeppink ff1493 deepskyblue 00bfff dimgray 696969 dimgrey 696969 dodgerblue "
    "1e90ff firebrick b22222 floralwhite fffaf0 forestgreen 228b22 fuchsia ff00ff gainsboro "
    "dcdcdc ghostwhite f8f8ff gold ffd700 goldenrod daa520 gray 808080 green 008000 "
    "greenyellow adff2f grey 808080 honeydew f0fff0 hotpink ff69b4 indianred cd5c5c indigo "
    "4b0082 ivory fffff0 khaki f0e68c lavender e6e6fa lavenderblush fff0f5 lawngreen 7cfc00 "
    "lemonchiffon fffacd lightblue add8e6 lightcoral f08080 lightcyan e0ffff "
    "lightgoldenrodyellow fafad2 lightgray d3d3d3 lightgreen 90ee90 lightgrey d3d3d3 "
    "lightpink ffb6c1 lightsalmon ffa07a lightseagreen 20b2aa lightskyblue 87cefa "
    "lightslategray 778899 lightslategrey 778899 lightsteelblue b0c4de lightyellow ffffe0 "
    "lime 00ff00 limegreen 32cd32 linen faf0e6 magenta ff00ff maroon 800000 "
    "mediumaquamarine 66cdaa mediumblue 0000cd mediumorchid ba55d3 mediumpurple 9370db "
    "mediumseagreen 3cb371 mediumslateblue 7b68ee mediumspringgreen 00fa9a mediumturquoise "
    "48d1cc mediumvioletred c71585 midnightblue 191970 mintcream f5fffa mistyrose ffe4e1 "
    "moccasin ffe4b5 navajowhite ffdead navy 000080 oldlace fdf5e6 olive 808000 olivedrab "
    "6b8e23 orange ffa500 orangered ff4500 orchid da70d6 palegoldenrod eee8aa palegreen "
    "98fb98 paleturquoise afeeee palevioletred db7093 papayawhip ffefd5 peachpuff ffdab9 "
    "peru cd853f pink ffc0cb plum dda0dd powderblue b0e0e6 purple 800080 rebeccapurple "
    "663399 red ff0000 rosybrown bc8f8f royalblue 4169e1 saddlebrown 8b4513 salmon fa8072 "
    "sandybrown f4a460 seagreen 2e8b57 seashell fff5ee sienna a0522d silver c0c0c0 skyblue "
    "87ceeb slateblue 6a5acd slategray 708090 slategrey 708090 snow fffafa springgreen "
    "00ff7f steelblue 4682b4 tan d2b48c teal 008080 thistle d8bfd8 tomato ff6347 turquoise "
    "40e0d0 violet ee82ee wheat f5deb3 white ffffff whitesmoke f5f5f5 yellow ffff00 "
    "yellowgreen 9acd32 "
    # System colours, as a browser in light mode draws them.
    "canvas ffffff canvastext 000000 field ffffff fieldtext 000000 buttonface efefef "
    "buttontext 000000 buttonborder 767676 linktext 0000ee visitedtext 551a8b activetext "
    "ff0000 graytext 6d6d6d mark ffff00 marktext 000000 highlight 3399ff highlighttext "
    "000000 selecteditem 3399ff selecteditemtext ffffff accentcolor 0075ff "
    "accentcolortext ffffff window ffffff windowtext 000000 menu ffffff menutext 000000 "
    "infobackground ffffe1 infotext 000000 background ffffff"
).split()
NAMED_COLOURS = {
    name: Colour(*(int(code[n:n + 2], 16) / 255 for n in (0, 2, 4)))
    for name, code in zip(_NAMED[::2], _NAMED[1::2], strict=True)
}
NAMED_COLOURS["transparent"] = TRANSPARENT
_HEX = re.compile(r"#([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})")


def colour(value: str) -> Colour | None:
    """The colour a CSS colour value names: a name, a system colour, #hex, or rgb(),
    hsl(), hwb(), lab(), lch(), oklab(), oklch(), color(srgb …), light-dark() (the light
    one); None for anything else (currentcolor, var(), …)."""
    value = value.strip()
    if value in NAMED_COLOURS:
        return NAMED_COLOURS[value]
    if value.startswith("#"):
        return _hex(value)
    if value.startswith("light-dark(") and value.endswith(")"):
        options = top_level(value[len("light-dark("):-1], ",")
        if len(options) != 2 or options[0].startswith("light-dark("):
            return None
        return colour(options[0])
    match = FUNCTION.fullmatch(value)
    if match is None:
        return None
    name, arguments = match.groups()
    parts = [p for p in ARGUMENT_SEPARATOR.split(arguments.strip()) if p]
    try:
        return _colour_function(name, parts)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def legacy_colour(value: str) -> Colour | None:
    """A colour in an HTML attribute (`bgcolor`, `<font color>`): as CSS, or hex digits
    without their "#", as browsers read them too."""
    value = " ".join(value.lower().split())
    found = colour(value)
    if found is None and re.fullmatch(r"[0-9a-f]{3}|[0-9a-f]{6}", value):
        found = _hex("#" + value)
    return found


def _hex(value: str) -> Colour | None:
    if _HEX.fullmatch(value) is None:
        return None
    digits = value[1:]
    if len(digits) <= 4:
        digits = "".join(d * 2 for d in digits)
    channels = [int(digits[n:n + 2], 16) / 255 for n in range(0, len(digits), 2)]
    return Colour(*channels)


def _alpha(parts: list[str], count: int) -> float:
    if len(parts) == count:
        return 1.0
    if len(parts) != count + 1:
        raise ValueError(parts)
    return number(parts[count], percent=1.0)


def _clamped(red: float, green: float, blue: float, alpha: float) -> Colour:
    def unit(x: float) -> float:
        return min(max(x, 0.0), 1.0) if math.isfinite(x) else 0.0

    return Colour(unit(red), unit(green), unit(blue), unit(alpha))


def _colour_function(name: str, parts: list[str]) -> Colour | None:
    if name in ("rgb", "rgba"):
        r, g, b = (number(p, percent=255.0) / 255 for p in parts[:3])
        return _clamped(r, g, b, _alpha(parts, 3))
    if name in ("hsl", "hsla"):
        h = hue(parts[0])
        s, lightness = (number(p, percent=100.0) / 100 for p in parts[1:3])
        return _clamped(*_hsl(h, s, lightness), _alpha(parts, 3))
    if name == "hwb":
        h = hue(parts[0])
        white, black = (number(p, percent=100.0) / 100 for p in parts[1:3])
        if white + black >= 1:
            grey = white / (white + black)
            return _clamped(grey, grey, grey, _alpha(parts, 3))
        pure = _hsl(h, 1.0, 0.5)
        r, g, b = (c * (1 - white - black) + white for c in pure)
        return _clamped(r, g, b, _alpha(parts, 3))
    if name in ("lab", "lch"):
        lightness = number(parts[0], percent=100.0)
        if name == "lab":
            a, b = (number(p, percent=125.0) for p in parts[1:3])
        else:
            chroma, h = number(parts[1], percent=150.0), math.radians(hue(parts[2]))
            a, b = chroma * math.cos(h), chroma * math.sin(h)
        return _clamped(*_lab_d50_to_srgb(lightness, a, b), _alpha(parts, 3))
    if name in ("oklab", "oklch"):
        lightness = number(parts[0], percent=1.0)
        if name == "oklab":
            a, b = (number(p, percent=0.4) for p in parts[1:3])
        else:
            chroma, h = number(parts[1], percent=0.4), math.radians(hue(parts[2]))
            a, b = chroma * math.cos(h), chroma * math.sin(h)
        return _clamped(*_oklab_to_srgb(lightness, a, b), _alpha(parts, 3))
    if name == "color" and parts and parts[0] == "srgb":
        r, g, b = (number(p, percent=1.0) for p in parts[1:4])
        return _clamped(r, g, b, _alpha(parts[1:], 3))
    return None


def _hsl(hue: float, saturation: float, lightness: float) -> Rgb:
    saturation = min(max(saturation, 0.0), 1.0)

    def channel(n: float) -> float:
        k = (n + hue / 30) % 12
        a = saturation * min(lightness, 1 - lightness)
        return lightness - a * max(-1.0, min(k - 3, 9 - k, 1.0))

    return channel(0), channel(8), channel(4)


def _gamma(linear: float) -> float:
    if linear <= 0.0031308:
        return 12.92 * linear
    return 1.055 * linear ** (1 / 2.4) - 0.055


def _linear(channel: float) -> float:
    return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4


def _lab_d50_to_srgb(lightness: float, a: float, b: float) -> Rgb:
    fy = (lightness + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def inverse(t: float) -> float:
        return t ** 3 if t > 6 / 29 else 3 * (6 / 29) ** 2 * (t - 4 / 29)

    x, y, z = 0.96422 * inverse(fx), inverse(fy), 0.82521 * inverse(fz)
    # XYZ (D50) to linear sRGB, adapted to D65 (Bradford).
    r = 3.1338561 * x - 1.6168667 * y - 0.4906146 * z
    g = -0.9787684 * x + 1.9161415 * y + 0.0334540 * z
    b_ = 0.0719453 * x - 0.2289914 * y + 1.4052427 * z
    return _gamma(max(r, 0.0)), _gamma(max(g, 0.0)), _gamma(max(b_, 0.0))


def _oklab_to_srgb(lightness: float, a: float, b: float) -> Rgb:
    long = (lightness + 0.3963377774 * a + 0.2158037573 * b) ** 3
    medium = (lightness - 0.1055613458 * a - 0.0638541728 * b) ** 3
    short = (lightness - 0.0894841775 * a - 1.2914855480 * b) ** 3
    r = 4.0767416621 * long - 3.3077115913 * medium + 0.2309699292 * short
    g = -1.2684380046 * long + 2.6097574011 * medium - 0.3413193965 * short
    b_ = -0.0041960863 * long - 0.7034186147 * medium + 1.7076147010 * short
    return _gamma(max(r, 0.0)), _gamma(max(g, 0.0)), _gamma(max(b_, 0.0))


def over(top: Colour, below: Rgb) -> Rgb:
    """`top` painted over `below`."""
    a = top.alpha
    return (top.red * a + below[0] * (1 - a), top.green * a + below[1] * (1 - a),
            top.blue * a + below[2] * (1 - a))


def _lab(rgb: Rgb) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of an sRGB colour."""
    r, g, b = (_linear(c) for c in rgb)
    x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def difference(one: Rgb, other: Rgb) -> float:
    """How far apart two colours look: CIE76 ΔE (about 2 is the least a trained eye
    tells apart; black at 10% opacity on white is 8.9 from it)."""
    return math.dist(_lab(one), _lab(other))
