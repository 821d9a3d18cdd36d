"""Search: Gmail's `q` (the search box syntax) and Drive's `q` (the files.list grammar)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import ApiError
from .mail import StoredMessage, addresses

SYSTEM_LABELS = ("INBOX", "SENT", "DRAFT", "SPAM", "TRASH", "UNREAD", "STARRED", "IMPORTANT",
                 "CHAT", "CATEGORY_PERSONAL", "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS",
                 "CATEGORY_UPDATES", "CATEGORY_FORUMS")


def words(text: str) -> list[str]:
    return re.findall(r"[\w@.'+-]+", text.lower())


def _tokens(text: str) -> list[str]:
    return [t.strip(".'-") for t in re.findall(r"\w[\w']*", text.lower())]


def _has_phrase(haystack: list[str], phrase: list[str]) -> bool:
    if not phrase:
        return True
    n = len(phrase)
    return any(haystack[i:i + n] == phrase for i in range(len(haystack) - n + 1))


# --- Gmail ----------------------------------------------------------------------------------

GmailTest = Callable[[StoredMessage], bool]


@dataclass
class GmailQuery:
    test: GmailTest
    anywhere: bool  # in:anywhere / in:spam / in:trash lift the spam-and-trash exclusion


def _gmail_lexer(text: str) -> list[str]:
    return re.findall(
        r'-?[\w.+-]+:(?:"[^"]*"|\([^)]*\)|\S+?)(?=\s|\)|$)|-?"[^"]*"|[(){}]|[^\s(){}]+', text
    )


def gmail_query(text: str, now: datetime, label_names: dict[str, str]) -> GmailQuery:
    """Parse a Gmail search; unknown operators are searched as words, as Gmail does."""
    tokens = _gmail_lexer(text)
    position = 0
    anywhere = False

    def parse_or(closing: str | None) -> GmailTest:
        nonlocal position
        alternatives = [parse_and(closing)]
        while position < len(tokens) and tokens[position] == "OR":
            position += 1
            alternatives.append(parse_and(closing))
        if len(alternatives) == 1:
            return alternatives[0]
        return lambda m: any(t(m) for t in alternatives)

    def parse_and(closing: str | None) -> GmailTest:
        nonlocal position
        terms: list[GmailTest] = []
        while position < len(tokens) and tokens[position] != "OR":
            token = tokens[position]
            if token in (")", "}"):
                if closing == token:
                    break
                position += 1  # an unmatched closer: Gmail ignores it
                continue
            position += 1
            negate = False
            if token == "-" and position < len(tokens):
                negate, token = True, tokens[position]
                position += 1
            elif token.startswith("-") and len(token) > 1:
                negate, token = True, token[1:]
            if token == "(":
                term = parse_or(")")
                position += 1
            elif token == "{":
                inner: list[GmailTest] = []
                while position < len(tokens) and tokens[position] != "}":
                    inner.append(atom(tokens[position]))
                    position += 1
                position += 1
                term = _any(inner)
            else:
                term = atom(token)
            terms.append(_not(term) if negate else term)
        return lambda m: all(t(m) for t in terms)

    def atom(token: str) -> GmailTest:
        nonlocal anywhere
        if token.startswith('"'):
            phrase = _tokens(token.strip('"'))
            return lambda m: _has_phrase(_everything(m), phrase)
        name, sep, value = token.partition(":")
        name = name.lower()
        value = value.strip('"')
        if value.startswith("(") and value.endswith(")"):
            value = value[1:-1]
        if not sep or not value:
            return _word(token)
        value_l = value.lower()
        if name == "from":
            return lambda m: value_l in m.header("From").lower()
        if name in ("to", "cc", "bcc", "deliveredto"):
            fields = {"to": ("To", "Cc", "Bcc"), "cc": ("Cc",), "bcc": ("Bcc",),
                      "deliveredto": ("Delivered-To", "To")}[name]
            return lambda m: any(value_l in m.header(f).lower() for f in fields)
        if name == "subject":
            phrase = _tokens(value)
            return lambda m: _has_phrase(_tokens(m.header("Subject")), phrase)
        if name == "has" and value_l == "attachment":
            return lambda m: bool(m.attachments)
        if name == "filename":
            return lambda m: any(value_l in f.lower() for f in m.filenames())
        if name in ("newer_than", "older_than"):
            match = re.fullmatch(r"(\d+)([dmy])", value_l)
            if match:
                days = int(match.group(1)) * {"d": 1, "m": 31, "y": 365}[match.group(2)]
                edge = now - timedelta(days=days)
                if name == "newer_than":
                    return lambda m: m.internal_date > edge
                return lambda m: m.internal_date < edge
        if name in ("after", "before", "newer", "older"):
            edge_at = _date(value)
            if edge_at is not None:
                if name in ("after", "newer"):
                    return lambda m: m.internal_date >= edge_at
                return lambda m: m.internal_date < edge_at
        if name in ("label", "in", "is"):
            wanted = _label_id(value, label_names)
            if name == "in" and value_l == "anywhere":
                anywhere = True
                return lambda m: True
            if name == "is" and value_l == "read":
                return lambda m: "UNREAD" not in m.label_ids
            if wanted in ("SPAM", "TRASH"):
                anywhere = True
            if wanted is not None:
                return lambda m: wanted in m.label_ids
            return lambda m: False
        if name == "category":
            wanted = _label_id(value, label_names)
            return lambda m: wanted is not None and wanted in m.label_ids
        if name in ("larger", "smaller", "size"):
            match = re.fullmatch(r"(\d+)([km]?)", value_l)
            if match:
                size = int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2)]
                if name == "smaller":
                    return lambda m: len(m.raw) < size
                return lambda m: len(m.raw) > size
        if name == "rfc822msgid":
            return lambda m: value_l in m.header("Message-ID").lower()
        return _word(token)

    test = parse_or(None)
    return GmailQuery(test, anywhere)


def _any(tests: list[GmailTest]) -> GmailTest:
    return lambda m: any(t(m) for t in tests)


def _not(test: GmailTest) -> GmailTest:
    return lambda m: not test(m)


def _everything(message: StoredMessage) -> list[str]:
    fields = " ".join(
        [message.header("From"), message.header("To"), message.header("Subject"), message.text(),
         " ".join(message.filenames())]
    )
    return _tokens(fields) + [a.lower() for a in addresses(message.header("From"))]


def _word(token: str) -> GmailTest:
    phrase = _tokens(token)
    if "@" in token:
        needle = token.lower()
        return lambda m: needle in " ".join(_everything(m)) or needle in m.header("From").lower()
    return lambda m: _has_phrase(_everything(m), phrase)


def _date(value: str) -> datetime | None:
    if value.isdigit():
        return datetime.fromtimestamp(int(value), UTC)
    for fmt in ("%Y/%m/%d", "%Y-%m-%d", "%m/%d/%Y"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _label_id(value: str, label_names: dict[str, str]) -> str | None:
    upper = value.upper().replace("-", "_")
    if upper in SYSTEM_LABELS:
        return upper
    if upper in {"PERSONAL", "SOCIAL", "PROMOTIONS", "UPDATES", "FORUMS"}:
        return f"CATEGORY_{upper}"
    normal = value.lower().replace("-", " ").replace("/", " ")
    for name, label_id in label_names.items():
        if name.lower().replace("-", " ").replace("/", " ") == normal or label_id == value:
            return label_id
    return None


# --- Drive ----------------------------------------------------------------------------------

DriveTest = Callable[[dict[str, Any]], bool]
_DRIVE_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<op>!=|<=|>=|=|<|>|\(|\))|(?P<word>[A-Za-z_.]+))"
)


def _invalid_q() -> ApiError:
    return ApiError(400, "invalid", "Invalid Value", location="q", location_type="parameter")


def _drive_tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _DRIVE_TOKEN.match(text, position)
        if not match:
            raise _invalid_q()
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def has_full_text(text: str) -> bool:
    """Whether a Drive query has a `fullText` term (a word, not inside a string)."""
    return ("word", "fullText") in _drive_tokens(text)


def drive_query(text: str, root_id: str) -> DriveTest:
    """Parse Drive's query grammar; anything it does not know is a 400 `Invalid Value`."""
    tokens = _drive_tokens(text)
    index = 0

    def peek() -> tuple[str, str] | None:
        return tokens[index] if index < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal index
        if index >= len(tokens):
            raise _invalid_q()
        index += 1
        return tokens[index - 1]

    def expr() -> DriveTest:
        left = conj()
        while (t := peek()) and t[0] == "word" and t[1].lower() == "or":
            take()
            right = conj()
            left = (lambda a, b: lambda f: a(f) or b(f))(left, right)
        return left

    def conj() -> DriveTest:
        left = unary()
        while (t := peek()) and t[0] == "word" and t[1].lower() == "and":
            take()
            right = unary()
            left = (lambda a, b: lambda f: a(f) and b(f))(left, right)
        return left

    def unary() -> DriveTest:
        t = take()
        if t[0] == "word" and t[1].lower() == "not":
            inner = unary()
            return lambda f: not inner(f)
        if t == ("op", "("):
            inner = expr()
            if take() != ("op", ")"):
                raise _invalid_q()
            return inner
        if t[0] == "string":
            value = _unquote(t[1])
            word = take()
            collection = take()
            if word[0] != "word" or word[1] != "in" or collection[0] != "word":
                raise _invalid_q()
            if collection[1] == "parents":
                wanted = root_id if value == "root" else value
                return lambda f: wanted in f.get("parents", ())
            if collection[1] in ("owners", "writers", "readers"):
                return lambda f: value in f.get("_people", ()) or (
                    value == "me" and f.get("ownedByMe", False)
                )
            raise _invalid_q()
        if t[0] != "word":
            raise _invalid_q()
        return comparison(t[1])

    def comparison(field: str) -> DriveTest:
        op = take()
        if op[0] == "word" and op[1] == "contains":
            value = _unquote(_expect_string(take()))
            if field == "name":
                needle = value.lower()
                return lambda f: f["name"].lower().startswith(needle) or any(
                    w.startswith(needle) for w in f["name"].lower().split()
                )
            if field == "mimeType":
                return lambda f: value in f["mimeType"]
            if field == "fullText":
                phrase = _tokens(value)
                return lambda f: _has_phrase(
                    _tokens(f"{f['name']} {f.get('description', '')} {f.get('_text', '')}"), phrase
                )
            raise _invalid_q()
        if op[0] != "op" or op[1] in ("(", ")"):
            raise _invalid_q()
        raw = take()
        compare = _COMPARE[op[1]]
        if field in ("trashed", "starred"):
            if raw[0] != "word" or raw[1] not in ("true", "false") or op[1] not in ("=", "!="):
                raise _invalid_q()
            flag = raw[1] == "true"
            return lambda f: compare(bool(f.get(field, False)), flag)
        if field == "sharedWithMe":  # files others shared with the user, by sharedWithMeTime
            if raw[0] != "word" or raw[1] not in ("true", "false") or op[1] not in ("=", "!="):
                raise _invalid_q()
            flag = raw[1] == "true"
            return lambda f: compare("sharedWithMeTime" in f, flag)
        if field in ("name", "mimeType", "visibility", "shortcutDetails.targetId"):
            if op[1] not in ("=", "!="):
                raise _invalid_q()
            value = _unquote(_expect_string(raw))
            if field == "visibility":  # the fake shares nothing by link or domain
                return lambda f: compare("limited", value)
            if field == "shortcutDetails.targetId":
                return lambda f: compare(f.get("shortcutDetails", {}).get("targetId", ""), value)
            return lambda f: compare(f.get(field, ""), value)
        if field in ("modifiedTime", "createdTime", "viewedByMeTime"):
            when = _rfc3339(_unquote(_expect_string(raw)))
            return lambda f: f.get(field) is not None and compare(_rfc3339(f[field]), when)
        raise _invalid_q()

    test = expr()
    if index != len(tokens):
        raise _invalid_q()
    return test


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _expect_string(token: tuple[str, str]) -> str:
    if token[0] != "string":
        raise _invalid_q()
    return token[1]


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


def _rfc3339(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid_q() from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
