"""What a reader of an HTML mail sees of each element's text, from its inline style (the
<style> blocks already inlined), down the tree."""

from __future__ import annotations

import re
from typing import NamedTuple

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

    @property
    def readable(self) -> bool:
        return (not self.concealed and self.visible and self.font_px >= _UNREADABLE_PX
                and self.opacity >= _INVISIBLE_OPACITY)


ROOT = Shown("", concealed=False, font_px=BASE_FONT_PX, visible=True, opacity=1.0)


def inside(parent: Shown, tag: str, attrs: list[tuple[str, str | None]]) -> Shown:
    """What is shown inside an element with `attrs` opened in `parent`."""
    found = dict(attrs)
    if not found.get("style") and "hidden" not in found:
        return parent._replace(tag=tag)  # most elements: what their parent shows
    style = declarations(found.get("style") or "")
    concealed = parent.concealed or "hidden" in found or style.get("display") == "none"
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
    # A box of no height or width that clips what overflows it shows nothing of it.
    clips = any(token in _CLIPPING for name in ("overflow", "overflow-x", "overflow-y")
                for token in style.get(name, "").split())
    if clips:
        for name in ("height", "max-height", "width", "max-width"):
            size = length_px(style.get(name, ""), font_px)
            if size is not None and size < 1:
                concealed = True
    return Shown(tag, concealed, font_px, visible, opacity)
