"""A Google Doc's `text/html` export, shaped as Docs writes it.

Docs exports a whole document (no fragment): a <head> with one <style type="text/css">
block and a <body class="cN doc-content"> of paragraphs, each `<p class="..">` holding
`<span class="..">` runs. Formatting is never inline: every distinct paragraph or text
style becomes a class `.c0`, `.c1`, ... in the <style> block (text: colour, weight,
size in pt, font; the page: white, 468pt wide), followed by the element defaults
(`p{margin:0;...}`, `h1{...}`, `.title`, `.subtitle`). An empty paragraph is
`<p class=".."><span class=".."></span></p>` with a line's height. Public Docs exports
(pasted into repositories and issue threads) look like this; the class numbers differ
from document to document.

A run's style here is CSS declarations as the caller writes them (`color:#ffffff`,
`font-size:1pt`, `display:none`): what the Docs editor offers (white text, a 1 pt font)
or what a document converted from elsewhere carries.
"""

from __future__ import annotations

import html

Paragraph = list[tuple[str, str]]
"""A paragraph's runs: (text, CSS declarations over the document's default text style)."""

_TEXT = {
    "color": "#000000", "font-weight": "400", "text-decoration": "none",
    "vertical-align": "baseline", "font-size": "11pt", "font-family": '"Arial"',
    "font-style": "normal",
}
_PARAGRAPH = ("padding-top:0pt;padding-bottom:0pt;line-height:1.15;orphans:2;widows:2;"
              "text-align:left")
_PAGE = "background-color:#ffffff;max-width:468pt;padding:72pt 72pt 72pt 72pt"
_DEFAULTS = (
    '.title{padding-top:0pt;color:#000000;font-size:26pt;padding-bottom:3pt;'
    'font-family:"Arial";line-height:1.15;page-break-after:avoid;orphans:2;widows:2;'
    'text-align:left}'
    '.subtitle{padding-top:0pt;color:#666666;font-size:15pt;padding-bottom:16pt;'
    'font-family:"Arial";line-height:1.15;page-break-after:avoid;orphans:2;widows:2;'
    'text-align:left}'
    'li{color:#000000;font-size:11pt;font-family:"Arial"}'
    'p{margin:0;color:#000000;font-size:11pt;font-family:"Arial"}'
    'h1{padding-top:20pt;color:#000000;font-size:20pt;padding-bottom:6pt;'
    'font-family:"Arial";line-height:1.15;page-break-after:avoid;orphans:2;widows:2;'
    'text-align:left}'
)


def _declarations(style: str) -> dict[str, str]:
    out = {}
    for declaration in style.split(";"):
        name, colon, value = declaration.partition(":")
        if colon and name.strip():
            out[name.strip().lower()] = value.strip()
    return out


def paragraphs_of(text: str) -> list[Paragraph]:
    """Plain text as a Doc in the default style: a paragraph per line."""
    return [[(line, "")] for line in text.splitlines()]


def plain_text(paragraphs: list[Paragraph]) -> str:
    """What the `text/plain` export holds: every run's text, formatting ignored."""
    return "\n".join("".join(text for text, _ in runs) for runs in paragraphs)


def export_html(paragraphs: list[Paragraph]) -> str:
    classes: dict[str, str] = {}

    def class_of(rule: str) -> str:
        return classes.setdefault(rule, f"c{len(classes)}")

    page = class_of(_PAGE)
    filled = class_of(_PARAGRAPH)
    empty = class_of(_PARAGRAPH + ";height:11pt")
    body = []
    for runs in paragraphs:
        spans = []
        for text, style in runs or [("", "")]:
            rule = ";".join(f"{k}:{v}" for k, v in {**_TEXT, **_declarations(style)}.items())
            escaped = html.escape(text, quote=False).replace("  ", " &nbsp;")
            spans.append(f'<span class="{class_of(rule)}">{escaped}</span>')
        shown = any(text for text, _ in runs)
        body.append(f'<p class="{filled if shown else empty}">{"".join(spans)}</p>')
    rules = "".join(f".{name}{{{rule}}}" for rule, name in classes.items())
    return (
        '<html><head><meta content="text/html; charset=UTF-8" http-equiv="content-type">'
        '<style type="text/css">ol{margin:0;padding:0}table td,table th{padding:0}'
        f'{rules}{_DEFAULTS}</style></head><body class="{page} doc-content">'
        f'{"".join(body)}</body></html>'
    )
