"""The offline model: a deterministic, extractive planner behind the same `LLM` port.

It reads the same prompt Gemini would see, asks to read the items that look
worth it, and writes a digest from their text with fixed rules. Mail is data
to it as much as to Gemini: nothing in a message changes what it calls, and a
message that addresses an AI assistant is reported as such, quoted.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from app.agent.digest import DigestDraft, DraftActionItem, DraftItem, DraftSection
from app.agent.excerpt import CUT, logical_lines
from app.agent.llm import FunctionCall, FunctionResult, LLMError, TurnRequest, TurnResponse, Usage
from app.agent.prompt import ME, ParsedPrompt, parse_fences, parse_first_prompt

OFFLINE_MODEL_NAME = "pilotlight-offline"
OFFLINE_NOTE = "Written by Pilotlight's offline model: extractive, no LLM."
MAX_CONVERSATIONS = 512
DETAIL_CHARS = 160
MAX_SECTION_ITEMS = 8  # per section; the rest is grouped into one item
MAX_LOW_ITEMS = 3  # low-priority mail shown one by one (injections always are)
MAX_ASKS = 6  # requests to the user turned into action items
MAX_ACTIONS = 12
GROUP_TITLE_CHARS = 32
GROUP_TITLES = 8  # titles named in a grouped item

_LOW_SENDER = re.compile(r"newsletter|no-?reply|notifications?@|mailer|bounce|news@", re.I)
_LOW_TEXT = re.compile(r"unsubscribe|newsletter|view (it )?in (your )?browser", re.I)
# Its sentence is found around it (`_injected_sentence`): "[^.!?\n]*" before it read each
# sentence without one to its end from every character, 4 s for 10,000 characters.
_INJECTION = re.compile(
    r"ignore (all |any )?(previous|prior|above|earlier|your) instructions"
    r"|disregard (all |your )?(previous |prior )?instructions|note to the ai\b"
    r"|system prompt|forward all (mail|e-?mail|messages)",
    re.I,
)
_SENTENCE_MARKS = ".!?\n"
_SENTENCE_REST = re.compile(r"[^.!?\n]*[.!?]?")
_INVOICE_SUBJECT = re.compile(r"\b(invoice|receipt|payment|bill)\b", re.I)
_INVOICE_TEXT = re.compile(r"amount due|payment due|invoice (number|no\.?|#)|overdue", re.I)
# "^\s*" read on over blank lines from each, "(.+?)\s*$" over a run of spaces from each of
# them: 10 s for 20,000 blank lines. The value is the same: up to its last non-space.
_AMOUNT = re.compile(
    r"^[^\S\n]*(amount due|total due|due date)\s*:\s*(.*\S|.)\s*$", re.I | re.M
)
_ASK = re.compile(
    r"^(could|can|would|will) you\b|^please\b|\byour (sign-off|approval|review|decision|go)\b"
    r"|\blet me know\b",
    re.I,
)
_ACTION_WORDS = re.compile(
    r"\baction\b|\bplease\b|\bdeadline\b|\bdue\b|\basap\b|\bsign-off\b|\bapprove\b|\?", re.I
)
_DAY = r"(?:next |this )?(?:mon|tues|wednes|thurs|fri|satur|sun)day"
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*"
_DUE = re.compile(
    rf"\b(?:by|before|due|until)\s+({_DAY}(?: (?:noon|morning|afternoon|evening|eod))?"
    rf"|tomorrow|tonight|today|eod|end of (?:the )?(?:day|week|month)"
    rf"|\d{{1,2}} {_MONTH}|{_MONTH} \d{{1,2}}|\d{{4}}-\d{{2}}-\d{{2}})\b",
    re.I,
)
_ACTION_LINE = re.compile(r"^(?:[-*•]\s*)?(?:action(?: item)?|todo)\s*[:\-–]\s*(.+)$", re.I)
_ACTIONS_HEADING = re.compile(r"^(#+\s*)?actions?( items?)?:?$", re.I)
_NAMED_BULLET = re.compile(r"^[-*•]\s*\**([A-Z][\w.'-]*(?: [A-Z][\w.'-]*)?)\**\s*:\**\s*(.+)$")
_OWNER_FIRST = re.compile(r"^([A-Z][\w.'-]*(?: [A-Z][\w.'-]*)?) (?:to|will|should|must) ")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=[A-Z0-9\"(])")
_WORD = re.compile(r"[a-z][a-z'-]{3,}")
# Words of an instruction that say how to report, not what to look for.
_STOPWORDS = frozenset(
    "every each weekday weekdays morning evening daily weekly digest summary summarise summarize "
    "mail mails email emails message messages inbox team team's drive docs documents document "
    "files file changes changed change yesterday yesterday's today this that with from their "
    "what tell me about when whenever arrives arrive list please after before new anything "
    "everything some them they have been into also only".split()
)


def notes_its_model(digest: Mapping[str, Any]) -> bool:
    """Whether the digest's own notes say which model wrote it (the offline model's note
    does), so that a page or an email need not add "Written by pilotlight-offline." under
    it."""
    return (digest.get("model") == OFFLINE_MODEL_NAME
            and OFFLINE_NOTE in (digest.get("notes") or []))


@dataclass
class _Item:
    """One card, as the offline model understands it after reading what it could."""

    kind: str  # "message" or "file"
    id: str
    thread: str
    title: str
    who: str
    text: str  # the full text when read, else the snippet
    from_me: bool = False
    low: bool = False
    invoice: bool = False
    injection: str | None = None
    asks: list[str] = field(default_factory=list)
    cut: bool = False  # the card's text leaves out what a read would give


@dataclass
class _Conversation:
    prompt: ParsedPrompt
    me: str
    pending: dict[str, FunctionCall] = field(default_factory=dict)
    wanted: int = 0  # items worth reading, whether or not the budget allowed them
    final_text: str | None = None


def _address(person: str) -> str:
    return parseaddr(person)[1].lower()


def _name(person: str) -> str:
    if "@" not in person and "<" not in person:
        return person  # the cards give a bare name
    name, address = parseaddr(person)
    return name or address or person


def _keywords(instruction: str) -> set[str]:
    return {w for w in _WORD.findall(instruction.lower()) if w not in _STOPWORDS}


def _incomplete(text: str) -> bool:
    """Whether a card's text leaves out what a read would give: a request or an action
    that did not fit its excerpt, or a snippet cut off mid-text. An excerpt that only
    left out other text (it ends with " …") has what this model takes from a mail."""
    return text.endswith(CUT) or (text.endswith("…") and not text.endswith(" …"))


_GAP_MARK = re.compile(r"(^|\s)…(\s|$)")


def _plain(text: str) -> str:
    """A card's text without the excerpt's marks: each left-out gap ends a line."""
    text = text.removesuffix(CUT)
    # An excerpt's lines are lines of the body, not one hard-wrapped paragraph.
    return _GAP_MARK.sub("\n", text).strip().replace("\n", "\n\n")


def _sentences(text: str) -> list[str]:
    return [s for line in logical_lines(text) for s in _SENTENCE_END.split(line) if s]


def _excerpt(item: _Item, chars: int = 0) -> str:
    """The first sentences, about `chars` long (one by default), that say something."""
    picked: list[str] = []
    for sentence in _sentences(item.text):
        if len(sentence.split()) < 4 or sentence.endswith(",") or sentence.startswith("#"):
            continue
        picked.append(" ".join(sentence.replace("**", "").lstrip("#-*• ").split()))
        if sum(len(s) for s in picked) >= chars:
            break
    text = " ".join(picked) or item.text.strip()
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1].rstrip() + "…"


def _due(text: str) -> str | None:
    return match[1] if (match := _DUE.search(text)) else None


def _actions(item: _Item) -> list[DraftActionItem]:
    """Action lines ("Action: Priya to send … by Friday", "- Mei: share … by Friday")."""
    found: list[DraftActionItem] = []
    in_actions = False
    for line in logical_lines(item.text):
        if _ACTIONS_HEADING.match(line):
            in_actions = True
            continue
        in_actions = in_actions and not line.startswith("#")
        owner = None
        if match := _ACTION_LINE.match(line):
            text = match[1]
            if who := _OWNER_FIRST.match(text):
                owner = who[1]
        elif in_actions and (match := _NAMED_BULLET.match(line)):
            owner, text = match[1], f"{match[1]}: {match[2]}"
        else:
            continue
        text = text.strip().rstrip(".")
        ids = {"message_ids": [item.id]} if item.kind == "message" else {"file_ids": [item.id]}
        found.append(DraftActionItem(text=text, owner=owner, due=_due(text), **ids))
    return found


def _merge_actions(actions: list[DraftActionItem]) -> list[DraftActionItem]:
    """One action item per distinct text, citing every place it was found."""
    merged: dict[str, DraftActionItem] = {}
    for action in actions:
        key = re.sub(r"\W+", " ", action.text.lower()).strip()
        if key in merged:
            first = merged[key]
            first.message_ids += [i for i in action.message_ids if i not in first.message_ids]
            first.file_ids += [i for i in action.file_ids if i not in first.file_ids]
        else:
            merged[key] = action
    return list(merged.values())


def _injected_sentence(text: str) -> str | None:
    """The first sentence of `text` with an injected instruction in it, with its mark."""
    found = _INJECTION.search(text)
    if found is None:
        return None
    start = max(text.rfind(mark, 0, found.start()) for mark in _SENTENCE_MARKS) + 1
    end = _SENTENCE_REST.match(text, found.end())
    return text[start:end.end() if end else found.end()]


def _amounts(text: str) -> list[tuple[str, str]]:
    """The invoice's "Amount due: …" lines, each as (what, how much)."""
    return _AMOUNT.findall(text)


def _analyse(item: _Item) -> _Item:
    """Classify an item by fixed rules; the same rules whether or not it was read."""
    text = f"{item.title}\n{item.text}"
    if injection := _injected_sentence(" ".join(text.split())):
        item.injection = injection.strip()
    if item.kind == "message":
        item.low = bool(_LOW_SENDER.search(item.who) or _LOW_TEXT.search(text))
        item.invoice = bool(_INVOICE_SUBJECT.search(item.title) or _INVOICE_TEXT.search(text))
        if not item.from_me:
            item.asks = [s for s in _sentences(item.text) if _ASK.search(s)]
    return item


class OfflineModel:
    """Implements `LLM` without a model: plans reads, then writes an extractive digest."""

    name = OFFLINE_MODEL_NAME

    def __init__(self, max_conversations: int = MAX_CONVERSATIONS) -> None:
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        self._max_conversations = max_conversations

    async def turn(self, request: TurnRequest) -> TurnResponse:
        if request.previous_interaction_id is None:
            if not isinstance(request.input, str):
                raise LLMError("the first turn of an interaction must send text")
            prompt = parse_first_prompt(request.input)
            recipients = Counter(_address(a) for card in prompt.messages for a in card.to)
            conversation = _Conversation(
                prompt, me=recipients.most_common(1)[0][0] if recipients else ""
            )
            response = self._plan(conversation, {d.name for d in request.tools})
            return self._answer(conversation, response, request)
        previous = self._conversations.get(request.previous_interaction_id)
        if previous is None:
            raise LLMError(f"unknown previous_interaction_id {request.previous_interaction_id!r}")
        conversation = _Conversation(previous.prompt, previous.me, wanted=previous.wanted)
        if isinstance(request.input, str):  # a repair request: say the digest again
            text = previous.final_text or self._write(conversation, [])
        else:  # like Gemini, insist on exactly one result per call, with its id and name
            answered = sorted((r.call_id, r.name) for r in request.input)
            expected = sorted((c.call_id, c.name) for c in previous.pending.values())
            if answered != expected:
                raise LLMError(f"function results {answered} do not answer the calls {expected}")
            text = self._write(conversation, request.input)
        return self._answer(conversation, TurnResponse(interaction_id="", text=text), request)

    # --- turns ---

    def _answer(
        self, conversation: _Conversation, response: TurnResponse, request: TurnRequest
    ) -> TurnResponse:
        interaction_id = f"offline-{uuid.uuid4().hex}"
        conversation.final_text = response.text
        conversation.pending = {c.call_id: c for c in response.function_calls}
        self._conversations[interaction_id] = conversation
        while len(self._conversations) > self._max_conversations:
            self._conversations.popitem(last=False)
        sent = (
            request.input
            if isinstance(request.input, str)
            else "".join(r.result for r in request.input)
        )
        said = response.text or json.dumps([c.model_dump() for c in response.function_calls])
        usage = Usage(
            input_tokens=(len(request.system_instruction) + len(sent)) // 4,
            output_tokens=len(said) // 4,
        )
        return response.model_copy(update={"interaction_id": interaction_id, "usage": usage})

    def _items(self, conversation: _Conversation, read: Mapping[str, str]) -> list[_Item]:
        """The cards of the prompt, with the full text of those that were read."""
        me = conversation.me
        items = [
            _Item(
                "message",
                m.id,
                m.thread_id,
                m.subject,
                m.sender,
                read.get(m.id, _plain(m.snippet)),
                from_me=m.sender == ME or (bool(me) and _address(m.sender) == me),
                cut=m.id not in read and _incomplete(m.snippet),
            )
            for m in conversation.prompt.messages
        ] + [
            _Item(
                "file", f.id, f.id, f.name, f.modified_by or "", read.get(f.id, _plain(f.snippet)),
                cut=f.id not in read and _incomplete(f.snippet),
            )
            for f in conversation.prompt.files
        ]
        return [_analyse(item) for item in items]

    def _plan(self, conversation: _Conversation, tools: set[str]) -> TurnResponse:
        """Ask to read the items worth reading, best first, within the stated budget."""
        keywords = _keywords(conversation.prompt.instruction)
        scored: list[tuple[int, int, FunctionCall]] = []
        for order, item in enumerate(self._items(conversation, {})):
            tool = "read_message" if item.kind == "message" else "read_file"
            if item.low or item.injection or tool not in tools or not item.cut:
                continue
            text = f"{item.title} {item.text}"
            score = (
                2 * len(keywords & set(_WORD.findall(text.lower())))
                + (not item.from_me)
                + 2 * (item.kind == "file")
                + 6 * item.invoice
                + 4 * bool(item.asks)
                + 3 * bool(_ACTION_WORDS.search(text))
            )
            call_id = f"call-{uuid.uuid4().hex[:12]}"
            scored.append(
                (-score, order, FunctionCall(call_id=call_id, name=tool, arguments={"id": item.id}))
            )
        scored.sort(key=lambda entry: entry[:2])
        conversation.wanted = len(scored)
        calls = [call for _, _, call in scored[: conversation.prompt.max_tool_calls]]
        if not calls:
            return TurnResponse(interaction_id="", text=self._write(conversation, []))
        return TurnResponse(interaction_id="", function_calls=calls)

    # --- the digest ---

    def _write(self, conversation: _Conversation, results: list[FunctionResult]) -> str:
        read: dict[str, str] = {}
        for result in results:  # error and media results carry no text and leave the preview
            for fenced in parse_fences(result.result):
                for record in fenced.records:
                    if not isinstance(record, dict):
                        continue
                    text = record.get("body", record.get("text"))
                    if isinstance(text, str) and isinstance(record.get("id"), str):
                        read[record["id"]] = text
        items = self._items(conversation, read)
        attention: list[DraftItem] = []
        team: list[DraftItem] = []
        low = _low_entries([i for i in items if i.kind == "message" and (i.low or i.injection)])
        files = [item for item in items if item.kind == "file"]
        threads: dict[str, list[_Item]] = {}
        for item in items:
            if item.kind == "message" and not (item.low or item.injection):
                threads.setdefault(item.thread, []).append(item)
        actions = [a for item in files for a in _actions(item)]
        asked: list[DraftActionItem] = []
        for thread in threads.values():  # newest first, as the cards came
            invoice = any(m.invoice for m in thread)
            asks = [(m, s) for m in thread for s in m.asks]
            entry = _thread_entry(thread)
            if invoice:
                attention.insert(0, entry)
            else:
                (attention if asks else team).append(entry)
            actions += [a for message in thread for a in _actions(message)]
            asked += [
                DraftActionItem(
                    text=f"{_name(m.who)} asks ({m.title}): {s}",
                    owner="you",
                    due=_due(s),
                    message_ids=[m.id],
                )
                for m, s in _first_per_mail(asks)
            ]
        documents = [
            DraftItem(
                title=f.title,
                detail=(f"Changed by {_name(f.who)}. " if f.who else "") + _excerpt(f),
                file_ids=[f.id],
            )
            for f in files
        ]
        notes = [OFFLINE_NOTE]
        if conversation.wanted > len(read):
            notes.append(
                f"Read {len(read)} of {conversation.wanted} items worth reading (action budget "
                f"of {conversation.prompt.max_tool_calls} tool calls); the rest are summarised "
                "from their previews."
            )
        merged = _merge_actions(actions)
        actions = _merge_actions(merged[:MAX_ACTIONS] + asked[:MAX_ASKS])[:MAX_ACTIONS]
        if len(actions) < len(merged) + len(asked):
            notes.append(
                f"{len(merged) + len(asked) - len(actions)} more requests and action "
                "lines are in the cited mail."
            )
        attention = _capped(attention, "more that may need you")
        team = _capped(team, "more threads")
        documents = _capped(documents, "more documents")
        sections = [
            DraftSection(title=title, items=entries)
            for title, entries in (
                ("Needs your attention", attention),
                ("Team mail", team),
                ("Documents changed", documents),
                ("Low priority", low),
            )
            if entries
        ]
        return DigestDraft(
            summary=_summary(conversation.prompt, attention, actions),
            sections=sections,
            action_items=actions,
            notes=notes,
        ).model_dump_json(exclude_defaults=True)  # no empty lists: every token is paid for


def _thread_entry(thread: list[_Item]) -> DraftItem:
    """One item per thread, told from its newest message that the user did not write."""
    newest = next((m for m in thread if not m.from_me), thread[0])
    detail = ("You wrote: " if newest.from_me else f"{_name(newest.who)}: ") + _excerpt(newest)
    if invoice := next((m for m in thread if m.invoice), None):
        amounts = ", ".join(f"{k.lower()} {v}" for k, v in _amounts(invoice.text))
        detail = f"Invoice from {_name(invoice.who)}" + (f": {amounts}. " if amounts else ". ")
        detail += _excerpt(invoice, chars=0)  # the amounts say it; one sentence of context
    if len(thread) > 1:
        detail += f" ({len(thread)} new messages in this thread.)"
    title = re.sub(r"^((re|fwd?):\s*)+", "", newest.title, flags=re.I)
    return DraftItem(title=title, detail=detail, message_ids=[m.id for m in thread])


def _first_per_mail(asks: list[tuple[_Item, str]]) -> list[tuple[_Item, str]]:
    """The first request of each mail, in order: one action item per mail is enough."""
    first: dict[str, tuple[_Item, str]] = {}
    for message, sentence in asks:
        first.setdefault(message.id, (message, sentence))
    return list(first.values())


def _short_title(title: str) -> str:
    title = re.sub(r"^((re|fwd?):\s*)+", "", title, flags=re.I)
    return title if len(title) <= GROUP_TITLE_CHARS else title[: GROUP_TITLE_CHARS - 1] + "…"


def _title_list(titles: list[str]) -> str:
    """Distinct titles, shortened, at most GROUP_TITLES of them, as one sentence."""
    distinct = list(dict.fromkeys(_short_title(title) for title in titles))
    listed = "; ".join(distinct[:GROUP_TITLES])
    more = len(distinct) - GROUP_TITLES
    return f"{listed}; and {more} more subjects." if more > 0 else f"{listed}."


def _capped(entries: list[DraftItem], what: str) -> list[DraftItem]:
    """At most MAX_SECTION_ITEMS items: the rest grouped into one that names and cites them."""
    if len(entries) <= MAX_SECTION_ITEMS:
        return entries
    keep, rest = entries[: MAX_SECTION_ITEMS - 1], entries[MAX_SECTION_ITEMS - 1 :]
    grouped = DraftItem(
        title=f"{len(rest)} {what}",
        detail=_title_list([e.title for e in rest]),
        message_ids=[i for e in rest for i in e.message_ids],
        file_ids=[i for e in rest for i in e.file_ids],
    )
    return [*keep, grouped]


def _low_entries(items: list[_Item]) -> list[DraftItem]:
    """Injections one by one; other low-priority mail one by one when few, else one item."""
    entries = [_low_entry(item) for item in items if item.injection]
    rest = [item for item in items if not item.injection]
    if len(rest) <= MAX_LOW_ITEMS:
        return entries + [_low_entry(item) for item in rest]
    senders = Counter(_name(item.who) for item in rest)
    detail = (
        "From "
        + ", ".join(f"{who} ({n})" if n > 1 else who for who, n in senders.most_common())
        + "."
    )
    grouped = DraftItem(
        title=f"{len(rest)} notifications and newsletters",
        detail=detail,
        message_ids=[item.id for item in rest],
    )
    return [*entries, grouped]


def _low_entry(item: _Item) -> DraftItem:
    if item.injection:
        detail = (
            f"From {_name(item.who)}. It contains text addressed to an AI assistant "
            f"(\u201c{item.injection[:200]}\u201d); it was treated as data and nothing was done."
        )
    else:
        detail = f"From {_name(item.who)}: {_excerpt(item)}"
    return DraftItem(title=item.title, detail=detail, message_ids=[item.id])


def _summary(
    prompt: ParsedPrompt, attention: list[DraftItem], actions: list[DraftActionItem]
) -> str:
    messages, files = _count(len(prompt.messages), "message"), _count(len(prompt.files), "document")
    counts = f"{messages} and {files}"
    if prompt.window.startswith("since "):
        if not prompt.messages and not prompt.files:
            return f"Nothing new {prompt.window}."
        parts = [f"New {prompt.window}: {counts}."]
    else:  # a first run looks at the most recent items, not at what is new
        parts = [f"First look at the most recent items: {counts}."]
    if attention:
        titles = "; ".join(item.title for item in attention[:3])
        if len(attention) > 3:  # the count says all of them: say that some are not named
            titles += f"; and {len(attention) - 3} more"
        needs = "needs" if len(attention) == 1 else "need"
        parts.append(f"{len(attention)} {needs} your attention: {titles}.")
    if actions:
        parts.append(f"{_count(len(actions), 'action item')}.")
    return " ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
