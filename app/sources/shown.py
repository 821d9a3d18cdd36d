"""What a reader of an HTML mail sees of each element's text, from its inline style (the
<style> blocks already inlined) and its HTML attributes, down the tree.

Text is unseen when it is not drawn (`hidden`, display:none, visibility:hidden,
content-visibility:hidden), too small or faint to read (a font under 4 px, also through a
transform's scale or zoom; opacity under 0.1, also through filter: opacity()), clipped
away (a box of no height or width, or whose lines have none, that clips its overflow;
`clip` or `clip-path` leaving nothing), moved out of view (an offset, margin, translation
or text-indent far off the page), or the colour of what is behind it (a white word on a
white page, `color:transparent`). Mail clients show mail on white unless it sets a
background, so the page is white.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from app.sources import colours, css
from app.sources.colours import BLACK, Colour, Rgb
from app.sources.css import BASE_FONT_PX, LENGTH, length_px

# Below this size (in CSS px) text is unreadable, the classic carrier of hidden words.
_UNREADABLE_PX = 4.0
# Below this opacity (multiplied down the tree) text is practically invisible.
_INVISIBLE_OPACITY = 0.1
_FONT_KEYWORDS = {"xx-small": 9.0, "x-small": 10.0, "small": 13.0, "medium": 16.0,
                  "large": 18.0, "x-large": 24.0, "xx-large": 32.0, "xxx-large": 48.0}
_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|$)", re.S)
_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-f]{1,6})[ \t\r\n\f]?|(.))", re.S | re.I)
_IMPORTANT = re.compile(r"!\s*important\s*$")
_CLIPPING = frozenset({"hidden", "clip"})
# Text less different from what is behind it than this (CIE76 ΔE, `colours.difference`) is
# taken as unseen: white on a white page, #fefefe on it, or black at 5% alpha. Black at
# the opacity rule's 10% on white is 8.9 from it; the lightest grey ordinary mail sets
# small print in, #ddd on white, is 11.9.
_INDISTINCT = 8.0
# Moved this far left or up (an offset, a negative margin, a translation, a negative
# text-indent), text is off the edge of the page, where no scrolling reaches: the classic
# `left:-9999px`. No layout of ordinary mail moves its text that far.
_OFF_EDGE_PX = 500.0
# Moved this far any way, text is beyond where anyone reading a mail scrolls.
_FAR_PX = 2000.0
# The same in % of the containing block (of the element itself, translated): all of it.
_OFF_EDGE_PERCENT = 100.0
_POSITIONED = frozenset({"relative", "absolute", "fixed"})
_IMAGES = ("url(", "gradient(", "image(", "image-set(", "element(", "cross-fade(", "paint(")
# The browser's own colours for these elements (text, background), over inherited ones.
_OWN_COLOURS = {"mark": (BLACK, colours.NAMED_COLOURS["mark"]),
                "button": (BLACK, colours.NAMED_COLOURS["buttonface"])}
_COLOUR_ATTRIBUTES = ("bgcolor", "background", "color", "text")
_COLOUR_PROPERTIES = ("color", "background", "background-color", "background-image",
                      "background-clip", "-webkit-background-clip", "-webkit-text-fill-color",
                      "text-shadow", "-webkit-text-stroke", "-webkit-text-stroke-width",
                      "-webkit-text-stroke-color")
_SHADOWS_READ = 8
_STROKE_WIDTHS = {"thin": 1.0, "medium": 3.0, "thick": 5.0}


def _unescape_css(match: re.Match[str]) -> str:
    if match.group(1):
        code = int(match.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF else "\ufffd"
    return match.group(2)


def declarations(style: str) -> dict[str, str]:
    """An inline style's declarations by lower-case name, as a browser reads them: the
    last one wins, unless an earlier one is `!important` and it is not."""
    if "/*" in style:
        style = _CSS_COMMENT.sub(" ", style)
    if "\\" in style:
        style = _CSS_ESCAPE.sub(_unescape_css, style)
    found: dict[str, str] = {}
    important: set[str] = set()
    for declaration in style.split(";"):
        name, colon, value = declaration.partition(":")
        if not colon:
            continue
        name = name.strip().lower()
        value = " ".join(value.lower().split())
        marked = _IMPORTANT.search(value)
        if marked:
            value = value[: marked.start()].rstrip()
        elif name in important:
            continue
        found.pop(name, None)  # in the order they hold: a shorthand after its longhand wins
        found[name] = value
        if marked:
            important.add(name)
    return found


def _font_px(value: str, parent_px: float) -> float:
    """The font size `value` sets inside an element whose parent's is `parent_px`."""
    if value in _FONT_KEYWORDS:
        return _FONT_KEYWORDS[value]
    if value == "smaller":
        return parent_px / 1.2
    if value == "larger":
        return parent_px * 1.2
    size = length_px(value, parent_px)
    if size is not None:
        return max(size, 0.0)
    # calc(), min(), clamp() and the like: unreadable if every length in it is.
    sizes = [length_px(m.group(0), parent_px) for m in LENGTH.finditer(value)]
    if sizes and all(s is not None and s < _UNREADABLE_PX for s in sizes):
        return 0.0
    return parent_px


def _shorthand_font_px(value: str, parent_px: float) -> float:
    """The size in a `font` shorthand (`bold 12px/1.4 Arial`, `0/0 a`)."""
    for token in value.split():
        size = token.split("/", 1)[0]
        if size in _FONT_KEYWORDS or size in ("smaller", "larger"):
            return _font_px(size, parent_px)
        match = LENGTH.fullmatch(size)
        if match is not None and (match.group(2) or float(match.group(1)) == 0 or "/" in token):
            return _font_px(size, parent_px)  # a bare number is a weight, but no weight is 0
    return parent_px


def _opacity(value: str) -> float:
    match = LENGTH.fullmatch(value)
    if match is None or match.group(2) not in ("", "%"):
        return 1.0
    number = float(match.group(1)) / (100 if match.group(2) == "%" else 1)
    return min(max(number, 0.0), 1.0)


class Shown(NamedTuple):
    """What a reader sees inside an open element."""

    tag: str
    concealed: bool  # the element and all inside it are not drawn (display:none, ...)
    font_px: float  # inherited; a child may set a readable size again
    visible: bool  # `visibility`, inherited; a child may set it back to visible
    opacity: float  # multiplied down the tree
    shrink: float = 1.0  # a transform's or zoom's scale, multiplied down the tree
    shift: tuple[float, float] = (0.0, 0.0)  # px moved right and down, added down the tree
    indented: bool = False  # a `text-indent` (inherited) puts the text off the page
    squashed: bool = False  # in a box that clips and whose lines have no height
    line_px: float | None = None  # `line-height`, inherited; None: normal
    colour: Colour | None = BLACK  # `color`, inherited; None: cannot tell
    fill: Colour | None = None  # `-webkit-text-fill-color`, inherited, if `filled`
    filled: bool = False
    shadows: tuple[Colour | None, ...] = ()  # `text-shadow`'s colours, inherited
    stroke: tuple[Colour | None, ...] = ()  # `-webkit-text-stroke`'s colour, if any
    backdrop: Rgb | None = (1.0, 1.0, 1.0)  # what is drawn behind; None: an image
    faint: bool = False  # the text's colours are those of its backdrop

    @property
    def readable(self) -> bool:
        right, down = self.shift
        return (not self.concealed and self.visible and not self.faint
                and not self.indented and not self.squashed
                and self.font_px * self.shrink >= _UNREADABLE_PX
                and self.opacity >= _INVISIBLE_OPACITY
                and -_OFF_EDGE_PX < right < _FAR_PX and -_OFF_EDGE_PX < down < _FAR_PX)


ROOT = Shown("", concealed=False, font_px=BASE_FONT_PX, visible=True, opacity=1.0)


def inside(parent: Shown, tag: str, attrs: list[tuple[str, str | None]]) -> Shown:
    """What is shown inside an element with `attrs` opened in `parent`."""
    found = dict(attrs)
    coloured = (tag in _OWN_COLOURS or (tag == "a" and "href" in found)
                or any(name in found for name in _COLOUR_ATTRIBUTES))
    if not found.get("style") and "hidden" not in found and not coloured:
        return parent._replace(tag=tag)  # most elements: what their parent shows
    style = declarations(found.get("style") or "")
    # content-visibility:hidden skips drawing what is inside the element, like display:none.
    concealed = (parent.concealed or "hidden" in found or style.get("display") == "none"
                 or style.get("content-visibility") == "hidden")
    font_px = parent.font_px
    if "font" in style:
        font_px = _shorthand_font_px(style["font"], parent.font_px)
    if "font-size" in style:
        font_px = _font_px(style["font-size"], parent.font_px)
    visible = parent.visible
    if style.get("visibility") in ("hidden", "collapse"):
        visible = False
    elif style.get("visibility") == "visible":
        visible = True
    opacity = parent.opacity * _opacity(style.get("opacity", "1"))
    if "filter" in style:
        opacity *= css.filter_opacity(style["filter"])
    # A box of no height or width that clips what overflows it shows nothing of it.
    clips = any(token in _CLIPPING for name in ("overflow", "overflow-x", "overflow-y")
                for token in style.get(name, "").split())
    if clips:
        for name in ("height", "max-height", "width", "max-width"):
            size = length_px(style.get(name, ""), font_px)
            if size is not None and size < 1:
                concealed = True
    shown = parent._replace(tag=tag, concealed=concealed, font_px=font_px, visible=visible,
                            opacity=opacity)
    if style:
        shown = _placed(shown, style, clips, found.get("height") or "")
    if coloured or any(name in style for name in _COLOUR_PROPERTIES):
        shown = _coloured(shown, parent, found, style)
    return shown


def _move(value: str, font_px: float) -> tuple[float, float]:
    """An offset, margin or indent: (px, % of what it is measured against); 0 if unread."""
    if value.endswith("%"):
        match = LENGTH.fullmatch(value)
        return 0.0, float(match.group(1)) if match else 0.0
    return css.offset_px(value, font_px) or 0.0, 0.0


def _sides(shorthand: str) -> dict[str, str]:
    """The four sides a shorthand (`inset`, `margin`) sets: one to four values."""
    values = shorthand.split()
    if not 1 <= len(values) <= 4:
        return {}
    top = values[0]
    right = values[1] if len(values) > 1 else top
    bottom = values[2] if len(values) > 2 else top
    left = values[3] if len(values) > 3 else right
    return {"top": top, "right": right, "bottom": bottom, "left": left}


def _placed(shown: Shown, style: dict[str, str], clips: bool, height: str) -> Shown:
    """Where the element's offsets, margins, transforms, clipping and line height put
    its text."""
    font_px, concealed, shrink = shown.font_px, shown.concealed, shown.shrink
    shift = list(shown.shift)  # px moved right and down
    shares: list[float] = []  # moves in % (right or down)
    position = style.get("position", "")
    if position in _POSITIONED:
        sides = _sides(style.get("inset", ""))
        sides.update({side: style[side] for side in ("top", "right", "bottom", "left")
                      if side in style})
        for axis, (start, end) in enumerate((("left", "right"), ("top", "bottom"))):
            # The start side wins; set on the end side, a positive offset moves back.
            value, sign = sides.get(start, "auto"), 1.0
            if value == "auto":
                value, sign = sides.get(end, "auto"), -1.0
            if value == "auto":
                continue
            px, share = _move(value, font_px)
            shift[axis] += sign * px
            shares.append(sign * share)
        if position in ("absolute", "fixed") and css.clip_rect_empty(
                style.get("clip", ""), font_px):
            concealed = True
    margins = _sides(style.get("margin", ""))
    margins.update({side: style[f"margin-{side}"] for side in ("top", "left")
                    if f"margin-{side}" in style})
    for axis, side in enumerate(("left", "top")):
        # Only a negative margin moves text away: a positive one is space before it, which
        # the page's own scrolling shows.
        px, share = _move(margins.get(side, "0"), font_px)
        shift[axis] += min(px, 0.0)
        shares.append(share)
    moving = ("transform", "translate", "rotate", "scale")
    if any(name in style for name in moving):
        moved = css.transform(style.get("transform", ""), font_px,
                              translate=style.get("translate", ""),
                              rotate=style.get("rotate", ""), scale=style.get("scale", ""))
        shift = [shift[0] + moved.moved_px[0], shift[1] + moved.moved_px[1]]
        shares += moved.moved_percent
        shrink *= moved.shrink
    if "zoom" in style:
        shrink *= _zoom(style["zoom"])
    if any(share <= -_OFF_EDGE_PERCENT for share in shares):
        concealed = True
    if any(css.clip_path_empty(style.get(name, ""), font_px)
           for name in ("clip-path", "-webkit-clip-path")):
        concealed = True
    indented = shown.indented
    if "text-indent" in style:
        px, share = _move(style["text-indent"].split()[0] if style["text-indent"] else "0",
                          font_px)
        indented = px <= -_OFF_EDGE_PX or share <= -_OFF_EDGE_PERCENT
    line_px, squashed = shown.line_px, shown.squashed
    line = style.get("line-height")
    if line is None and "font" in style:
        sized = [t for t in style["font"].split() if "/" in t]
        line = sized[0].split("/", 1)[1] if sized else "normal"  # the shorthand resets it
    if line is not None:
        line_px = _line_px(line, font_px, line_px)
        if line_px is None or line_px >= 1:
            squashed = False
    if clips and line_px is not None and line_px < 1 and _box_px(style, height, font_px) < 1:
        squashed = True  # lines of no height, and nothing else to give the box any
    return shown._replace(concealed=concealed, shrink=shrink, shift=(shift[0], shift[1]),
                          indented=indented, squashed=squashed, line_px=line_px)


def _box_px(style: dict[str, str], height: str, font_px: float) -> float:
    """The height a box has besides its lines: its height (style, or `height` attribute)
    or min-height, and its padding above and below, where it may show what overflows."""
    padding = _sides(style.get("padding", ""))
    padding.update({side: style[f"padding-{side}"] for side in ("top", "bottom")
                    if f"padding-{side}" in style})
    heights = [style.get("height", height), style.get("min-height", "")]
    return max((length_px(h, font_px) or 0.0 for h in heights), default=0.0) + sum(
        max(length_px(padding.get(side, "0"), font_px) or 0.0, 0.0)
        for side in ("top", "bottom"))


def _zoom(value: str) -> float:
    """How much `zoom` shrinks the element (1 if it does not)."""
    match = LENGTH.fullmatch(value)
    if match is None or match.group(2) not in ("", "%"):
        return 1.0  # normal, reset
    zoom = float(match.group(1)) / (100 if match.group(2) == "%" else 1)
    return min(max(zoom, 0.0), 1.0)


def _line_px(value: str, font_px: float, inherited: float | None) -> float | None:
    if value == "normal":
        return None
    if value in ("inherit", "unset"):
        return inherited
    match = LENGTH.fullmatch(value)
    if match is not None and not match.group(2):
        return float(match.group(1)) * font_px  # a number: of the font size
    size = length_px(value, font_px)
    return size if size is not None else inherited


def _coloured(shown: Shown, parent: Shown, found: dict[str, str | None],
              style: dict[str, str]) -> Shown:
    """The element's text colour, what is drawn behind it, and whether they differ."""
    tag = shown.tag
    own_text, own_background = _OWN_COLOURS.get(tag, (None, None))
    if tag == "a" and "href" in found:
        own_text = colours.LINK_BLUE  # a link is blue unless its own style says otherwise
    colour = parent.colour
    attribute = found.get("color") if tag == "font" else found.get("text") if tag == "body" \
        else None
    if attribute and (read := colours.legacy_colour(attribute)) is not None:
        colour = read
    if own_text is not None:
        colour = own_text
    if "color" in style:
        colour = _colour_value(style["color"], parent.colour, own_text or parent.colour)
    filled, fill = parent.filled, parent.fill
    if "-webkit-text-fill-color" in style:
        value = style["-webkit-text-fill-color"]
        if value in ("currentcolor", "initial"):
            filled, fill = False, None
        elif value not in ("inherit", "unset"):
            filled, fill = True, colours.colour(value)
    shadows = parent.shadows
    if "text-shadow" in style:
        shadows = _shadows(style["text-shadow"], colour, shown.font_px, parent.shadows)
    stroke = _stroke(style, colour, shown.font_px, parent.stroke)
    backdrop = parent.backdrop
    paint = _background(found, style, colour, own_background)
    clipped = any("text" in style.get(name, "").split()
                  for name in ("background-clip", "-webkit-background-clip"))
    if clipped and (paint is None or paint.alpha > 0):
        filled, fill = True, None  # the background is drawn in the letters: of unknown colour
    elif paint is None:
        backdrop = None  # an image, or a colour that cannot be read
    elif paint.alpha >= 1:
        backdrop = (paint.red, paint.green, paint.blue)
    elif paint.alpha > 0 and backdrop is not None:
        backdrop = colours.over(paint, backdrop)
    inks = (fill if filled else colour, *shadows, *stroke)
    faint = backdrop is not None and all(
        ink is not None and colours.difference(colours.over(ink, backdrop), backdrop) < _INDISTINCT
        for ink in inks)
    return shown._replace(colour=colour, fill=fill, filled=filled, shadows=shadows,
                          stroke=stroke, backdrop=backdrop, faint=faint)


def _colour_value(value: str, inherited: Colour | None, reverted: Colour | None
                  ) -> Colour | None:
    if value in ("inherit", "unset", "currentcolor"):
        return inherited
    if value == "initial":
        return BLACK
    if value in ("revert", "revert-layer"):
        return reverted
    return colours.colour(value)


def _shadows(value: str, colour: Colour | None, font_px: float,
             inherited: tuple[Colour | None, ...]) -> tuple[Colour | None, ...]:
    """The colours of a `text-shadow`'s shadows within view."""
    if value in ("none", "initial"):
        return ()
    if value in ("inherit", "unset"):
        return inherited
    found: list[Colour | None] = []
    # A few at most: each element below with a colour of its own weighs them all again.
    for shadow in css.top_level(value, ",")[:_SHADOWS_READ]:
        tokens = css.top_level(shadow, " ")
        offsets = [length_px(t, font_px) for t in tokens if LENGTH.fullmatch(t)][:2]
        if any(o is not None and abs(o) >= _OFF_EDGE_PX for o in offsets):
            continue  # cast out of view
        named = [t for t in tokens if not LENGTH.fullmatch(t)]
        found.append(colour if not named or named[0] == "currentcolor"
                     else colours.colour(named[0]))
    return tuple(found)


def _stroke(style: dict[str, str], colour: Colour | None, font_px: float,
            inherited: tuple[Colour | None, ...]) -> tuple[Colour | None, ...]:
    """The colour of the outline `-webkit-text-stroke` draws around the letters, if any."""
    names = ("-webkit-text-stroke", "-webkit-text-stroke-width", "-webkit-text-stroke-color")
    if not any(name in style for name in names):
        return inherited
    stroked, ink = bool(inherited), inherited[0] if inherited else colour
    if "-webkit-text-stroke" in style:
        tokens = css.top_level(style["-webkit-text-stroke"], " ")
        widths = [t for t in tokens if LENGTH.fullmatch(t) or t in _STROKE_WIDTHS]
        named = [t for t in tokens if t not in widths]
        stroked = bool(widths) and _stroke_px(widths[0], font_px) > 0
        ink = colour if not named or named[0] == "currentcolor" else colours.colour(named[0])
    if "-webkit-text-stroke-width" in style:
        stroked = _stroke_px(style["-webkit-text-stroke-width"], font_px) > 0
    if "-webkit-text-stroke-color" in style:
        value = style["-webkit-text-stroke-color"]
        ink = colour if value == "currentcolor" else colours.colour(value)
    return (ink,) if stroked else ()


def _stroke_px(value: str, font_px: float) -> float:
    return _STROKE_WIDTHS.get(value) or length_px(value, font_px) or 0.0


def _background(found: dict[str, str | None], style: dict[str, str], colour: Colour | None,
                own: Colour | None) -> Colour | None:
    """What the element draws behind its text: a colour (transparent if none), or None
    for an image or what cannot be read. Its style's declarations in their order, over
    its `bgcolor` or `background` attribute, over the browser's own."""
    paint: Colour | None = own or colours.TRANSPARENT
    image = bool((found.get("background") or "").strip())
    if found.get("bgcolor"):
        paint = colours.legacy_colour(found["bgcolor"] or "") or paint
    for name, value in style.items():
        if name == "background":
            image = any(marker in value for marker in _IMAGES)
            layers = css.top_level(value, ",")
            paint = _layer_colour(layers[-1] if layers else "", colour)
        elif name == "background-color":
            paint = colours.TRANSPARENT if value in ("inherit", "initial", "unset") \
                else colour if value == "currentcolor" else colours.colour(value)
        elif name == "background-image":
            image = value not in ("none", "initial", "unset", "inherit")
    return None if image else paint


def _layer_colour(layer: str, colour: Colour | None) -> Colour | None:
    """The colour a `background` shorthand's last layer sets: transparent if none."""
    for token in css.top_level(layer, " "):
        if token == "currentcolor":
            return colour
        if "var(" in token:
            return None
        read = colours.colour(token)
        if read is not None:
            return read
    return colours.TRANSPARENT
