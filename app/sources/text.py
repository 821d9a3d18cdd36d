"""Plain text from mail and documents: HTML to text, tidy line ends, snippets.

Shared by every source (the bundled sample, Gmail, Drive), so that the model sees
the same shape of text whichever source an item comes from.
"""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

log = logging.getLogger(__name__)

SNIPPET_CHARS = 200


class TextExtractor(HTMLParser):
    """Plain text from HTML: drops scripts and styles, keeps paragraphs and list items."""

    _SKIP = frozenset({"script", "style", "title", "template", "noscript", "head"})
    _PARAGRAPH = frozenset(
        {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote", "pre"}
    )
    _LINE = frozenset(
        {"div", "tr", "section", "article", "header", "footer", "dt", "dd", "hr", "address",
         "center", "form", "fieldset", "figure", "figcaption", "main", "nav", "aside"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._skip = 0
        self._pre = 0
        self._pending = 0  # line breaks owed before the next text

    def _break(self, lines: int) -> None:
        self._pending = max(self._pending, lines)

    def _emit(self, text: str) -> None:
        if self._pending:
            if self._out:
                self._out.append("\n" * self._pending)
            self._pending = 0
        self._out.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._skip = 0  # a missing </head> must not hide the whole body
        if tag in self._SKIP:
            self._skip += 1
        elif self._skip:
            return
        elif tag == "br":
            self._emit("\n")
        elif tag == "li":
            self._break(1)
            self._emit("- ")
        elif tag in ("td", "th"):
            self._emit("\t")
        elif tag in self._PARAGRAPH:
            self._break(2)
            if tag == "pre":
                self._pre += 1
        elif tag in self._LINE:
            self._break(1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            return
        if tag == "br":
            self._emit("\n")
        elif tag == "hr":
            self._break(1)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif self._skip:
            return
        elif tag in self._PARAGRAPH:
            self._break(2)
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
        elif tag in self._LINE or tag == "li":
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._pre:
            self._emit(data)
        elif data.strip():
            self._emit(re.sub(r"[ \t\r\n\f\v]+", " ", data))
        elif not self._pending:
            self._out.append(" ")

    def text(self) -> str:
        lines = []
        for line in "".join(self._out).split("\n"):
            cells = [" ".join(cell.split()) for cell in line.split("\t")]
            lines.append(" | ".join(cell for cell in cells if cell))
        return tidy("\n".join(lines))


def html_to_text(html: str) -> str:
    """Turn an HTML body into readable plain text (no tags, entities decoded)."""
    parser = TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # html.parser is lenient; never let a bad body break a read
        log.warning("could not parse an HTML body; stripping tags instead", exc_info=True)
        return tidy(re.sub(r"<[^>]*>", " ", html))
    return parser.text()


def tidy(text: str) -> str:
    """Normalise line ends, trim trailing spaces, squeeze runs of blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    return "\n".join(out).strip()


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The first ~`limit` characters of `text`, whitespace collapsed."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    space = cut.rfind(" ")
    if space > limit * 3 // 4:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"
