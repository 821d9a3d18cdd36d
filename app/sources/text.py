"""Plain text from mail and documents: HTML to text, tidy line ends, snippets.

Shared by every source (the bundled sample, Gmail, Drive), so that the model sees
the same shape of text whichever source an item comes from.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from html.parser import HTMLParser
from urllib.parse import parse_qs

import css_inline

from app.sources.shown import ROOT, Shown, inside

log = logging.getLogger(__name__)

SNIPPET_CHARS = 200


# Elements without an end tag (the HTML serializer's list): nothing is inside them.
VOID = frozenset({"area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr",
                  "img", "input", "keygen", "link", "meta", "param", "source", "track", "wbr"})
# What a reader does not see, tags and all. Besides scripts, styles and the head: a
# template's content, fallbacks for what a browser shows instead (noscript with scripts on,
# iframe, noembed, noframes), and xmp and plaintext, whose raw text the HTML serializer
# writes unescaped, so a `</div>` in them would read as a tag.
_SKIPPED = frozenset({"script", "style", "title", "template", "noscript", "head", "iframe",
                   "noembed", "noframes", "xmp", "plaintext"})
_LINK_SCHEMES = ("http://", "https://", "mailto:")
# `data-css-inline="ignore"` on an element or a <style> makes css_inline skip it: a sender
# could keep a class that hides text from being inlined, so the attribute loses its name.
_INLINER_DIRECTIVE = re.compile(r"data-css-inline", re.I)
# Found one after the other (`_unwrap_styles`), each bounded: "(<style[^>]*>)(.*?)</style"
# scanned to the end of the body from every unclosed <style>, 23 s for 999 of them in 1 MB.
_STYLE_OPEN = re.compile(r"<style\b[^>]{0,2000}>", re.I)
_STYLE_CLOSE = re.compile(r"</style", re.I)
# Bounded, and never across another at-rule: unbounded, each of 20,000 "@media screen"
# without a "{" scanned to the end of the style, minutes of a worker's event loop.
_MEDIA = re.compile(r"@media\b([^{;@]{0,1000})\{", re.I)
# A list of media types every screen meets, or none. Each space is only one quantifier's:
# "(?:screen\s*,?\s*)*" backtracked exponentially on "screen screen ... x", so a mail's
# <style> could hold a worker's event loop for ever.
_EVERY_SCREEN = re.compile(
    r"(?:(?:only\s+)?(?:all|screen)(?:\s*,\s*(?:only\s+)?(?:all|screen))*)?", re.I
)
# css_inline (html5ever) recurses over the tree: a body nested some ten thousand elements
# deep crashes the process (a segfault, no exception). Nesting is estimated from the tags
# as written, leaving out those a browser closes by itself when the next one opens (and
# the tbody it adds): each level of the tree holds at least one counted element in four.
_MAX_NESTING = 1000
_SELF_CLOSING = frozenset({"p", "li", "dt", "dd", "tr", "td", "th", "tbody", "thead",
                           "tfoot", "option", "optgroup", "colgroup", "caption"})
_TAG = re.compile(r"<(/?)([a-zA-Z][^\s/>]*)")
_TOO_DEEP = "<p>(The HTML of this message is nested too deeply to be read.)</p>"
_INLINER = css_inline.CSSInliner(
    inline_style_tags=True, keep_style_tags=False, keep_link_tags=False,
    keep_at_rules=False, load_remote_stylesheets=False,
)


def _unwrap_styles(html: str) -> str:
    """`html` with each <style> element's every-screen media blocks unwrapped. Linear: a
    <style> with no end has none after it either, so the search stops there."""
    out, at = [], 0
    while (opened := _STYLE_OPEN.search(html, at)) is not None:
        closed = _STYLE_CLOSE.search(html, opened.end())
        if closed is None:
            break
        out += [html[at:opened.end()], _unwrap_every_screen(html[opened.end():closed.start()])]
        at = closed.start()
    return "".join(out) + html[at:]


def _unwrap_every_screen(css: str) -> str:
    """`css` with the blocks of media queries that hold on every screen (`@media screen`,
    `all`, `only screen`) taken out of their at-rule, so that they are inlined."""
    out, at = [], 0
    for match in _MEDIA.finditer(css):
        if match.start() < at or not _EVERY_SCREEN.fullmatch(match.group(1).strip()):
            continue
        depth, end = 1, match.end()
        while end < len(css) and depth:
            depth += {"{": 1, "}": -1}.get(css[end], 0)
            end += 1
        out += [css[at:match.start()], css[match.end():end - 1 if not depth else end]]
        at = end
    return "".join(out) + css[at:]


def nested_too_deeply(html: str) -> bool:
    """Whether `html` nests too deeply to be rebuilt safely (see _MAX_NESTING)."""
    return _nesting(html) > _MAX_NESTING


def _nesting(html: str) -> int:
    """How deep the tags as written nest (an estimate from above)."""
    depth = deepest = 0
    for match in _TAG.finditer(html):
        tag = match.group(2).lower()
        if tag in VOID or tag in _SELF_CLOSING:
            continue
        if match.group(1):
            depth = max(depth - 1, 0)
        else:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def visible_markup(html: str) -> str:
    """`html` as a browser builds it, with the styles of its <style> blocks inlined.

    The text extractor then reads a tree whose end tags match its start tags, as the
    reader's mail client built it (an unclosed or stray tag cannot end a hidden element
    early), and sees a class's `display:none` on the element. Rules inside media queries
    that depend on the reader's screen (`max-width`, ...) are not applied, nor those of
    other at-rules; those of a query every screen meets are. No stylesheet is loaded
    from anywhere. A body nested too deeply to rebuild safely becomes a note saying so.
    """
    if nested_too_deeply(html):
        # Read as written, a class hiding text would go unseen: the sender's text is lost
        # instead (no mail a person reads nests this deep).
        log.warning("an HTML body nests over %d elements deep; not read", _MAX_NESTING)
        return _TOO_DEEP
    html = _INLINER_DIRECTIVE.sub("data-pilotlight-ignored", html)
    html = _unwrap_styles(html)
    try:
        return _INLINER.inline(html)
    except css_inline.InlineError:
        log.warning("could not read an HTML body's styles; reading it as written",
                    exc_info=True)
        return html


class TextExtractor(HTMLParser):
    """Plain text from HTML: drops scripts and styles, keeps paragraphs and list items.

    Text a reader does not see is dropped too (`app.sources.shown`): not drawn, too small
    or faint, clipped away, moved out of view, or the colour of what is behind it. Feed it
    `visible_markup(html)`, whose end tags match.
    """

    _SKIP = _SKIPPED
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
        self._open: list[Shown] = []
        self._open_tags: Counter[str] = Counter()
        self._lost = False  # an end tag closed elements out of order: read no further

    def _shown(self) -> Shown:
        return self._open[-1] if self._open else ROOT

    def suppressed(self) -> bool:
        """Whether text here is left out: skipped, or not seen by a reader."""
        return bool(self._skip) or self._lost or not self._shown().readable

    def _push(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open.append(inside(self._shown(), tag, attrs))
        self._open_tags[tag] += 1

    def _pop(self, tag: str) -> None:
        if not self._open_tags[tag]:
            return  # a stray end tag: browsers ignore it too
        if self._open[-1].tag != tag:
            # Elements closed out of order: where the browser's tree goes on is unknown,
            # so nothing after this may be taken as shown (it could still be hidden).
            self._lost = True
        while self._open:
            shown = self._open.pop()
            self._open_tags[shown.tag] -= 1
            if shown.tag == tag:
                return

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
            return
        if self._skip:
            return
        if tag not in VOID:
            self._push(tag, attrs)
        elif not inside(self._shown(), tag, attrs).readable:
            return
        if self.suppressed():
            return
        if tag == "br":
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
        if self.suppressed() or not inside(self._shown(), tag, attrs).readable:
            return
        if tag == "br":
            self._emit("\n")
        elif tag == "hr":
            self._break(1)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        shown = not self.suppressed()
        self._pop(tag)
        if not shown:
            return
        if tag in self._PARAGRAPH:
            self._break(2)
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
        elif tag in self._LINE or tag == "li":
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self.suppressed():
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


class LinkKeepingExtractor(TextExtractor):
    """HTML to text that also writes each link's address after its text."""

    def __init__(self) -> None:
        super().__init__()
        self._links: list[str | None] = []
        self._link_text: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        if tag == "a" and not self.suppressed():
            href = (dict(attrs).get("href") or "").strip()
            self._links.append(href if href.lower().startswith(_LINK_SCHEMES) else None)
            self._link_text.append([])

    def handle_data(self, data: str) -> None:
        super().handle_data(data)
        if self._link_text and not self.suppressed():
            self._link_text[-1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._links and not self.suppressed():
            href = self._links.pop()
            text = " ".join("".join(self._link_text.pop()).split())
            if href:
                shown = href[len("mailto:"):] if href.lower().startswith("mailto:") else href
                if shown != text:
                    self._emit(f" ({shown})" if text else shown)
        super().handle_endtag(tag)


def html_to_text(html: str) -> str:
    """Turn an HTML body into readable plain text (no tags, entities decoded, nothing a
    reader does not see); links as `text (address)`."""
    return _extract(LinkKeepingExtractor(), html)


# Docs' HTML export sends every link through Google's redirector:
# `https://www.google.com/url?q=<the address>&sa=D&source=editors&ust=...&usg=...`.
_DOCS_REDIRECT = "https://www.google.com/url?"


def _docs_link(href: str) -> str:
    """The address a Docs export's redirect link leads to (the link as it is otherwise):
    the one the Doc's reader clicked on and sees when pointing at it."""
    if not href.startswith(_DOCS_REDIRECT):
        return href
    target = parse_qs(href[len(_DOCS_REDIRECT):]).get("q", [""])[0]
    return target if target.lower().startswith(_LINK_SCHEMES) else href


class _DocExtractor(LinkKeepingExtractor):
    """A Google Doc's HTML export as text: its <p> is a line of the document (an empty
    line is an empty <p>), not a paragraph with space around it as in mail."""

    _PARAGRAPH = LinkKeepingExtractor._PARAGRAPH - {"p"}
    _LINE = LinkKeepingExtractor._LINE | {"p"}

    def __init__(self) -> None:
        super().__init__()
        self._line_starts: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            attrs = [(k, _docs_link(v) if k == "href" and v else v) for k, v in attrs]
        super().handle_starttag(tag, attrs)
        if tag == "p":
            self._line_starts.append(len(self._out))

    def handle_endtag(self, tag: str) -> None:
        empty = tag == "p" and self._line_starts and self._line_starts.pop() == len(self._out)
        super().handle_endtag(tag)
        if empty and not self.suppressed():
            self._break(2)  # an empty line of the document: a blank line


def doc_html_to_text(html: str) -> str:
    """A Google Doc's exported HTML as text, as `html_to_text` reads mail (nothing a
    reader does not see), a line per line of the document."""
    return _extract(_DocExtractor(), html)


def _extract(parser: TextExtractor, html: str) -> str:
    try:
        parser.feed(visible_markup(html))
        parser.close()
    except Exception:  # html.parser is lenient; never let a bad body break a read
        # What was read so far, hidden text still left out (stripping the tags would
        # hand over the hidden text with the rest).
        log.warning("could not parse an HTML body; keeping the text read before the fault",
                    exc_info=True)
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
