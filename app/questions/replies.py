"""Answers by email: a reply to a question's email answers that question, once.

The email channel records each question's email (`watch`): its Message-ID, the Google
account whose Gmail will hold the user's reply, and the historyId to read from. The
reply poller (`app/questions/reply_poller.py`) finds replies that answer a recorded
Message-ID (`answered_ids`: In-Reply-To, else the last of References) and hands their
text to `answer_by_reply`; or, through the user's own earlier replies in the thread
(`own_reply_answers`), a reply to one of those. A message further down the conversation
(the user answering someone they forwarded the email to) names our Message-ID only among
its References and replies to someone else's message, and answers nothing.

Mail is untrusted data: the text only ever answers the question its headers point at
(through the same service the API uses), nothing is sent because of it, and each Gmail
message is handled at most once (`EmailReply`, unique per account and message, written
in the transaction that answers).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from sqlalchemy import CursorResult, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import insert_ignore, utcnow
from app.core.runtime import Wakeups
from app.questions import service
from app.questions.models import EmailReply, Question, QuestionEmail
from app.users.models import User

log = logging.getLogger(__name__)

ANSWER_CHARS = 2000
"""As the API's answers (`AnswerIn`)."""
_MESSAGE_IDS = re.compile(r"<[^<>\s]{1,400}>")
_ON_WROTE_START = re.compile(r"^\s*On\s.+", re.IGNORECASE)
_WROTE_END = re.compile(r"wrote:\s*$", re.IGNORECASE)
# An attribution with neither address nor time: "On/Le/El/Em/Il <date with a year>,
# <someone> wrote/a écrit/escribió/escreveu/ha scritto:" (Apple Mail, Thunderbird), and
# in German and Dutch, where the verb may come before the name: "Am <date> schrieb
# <someone>:", "Op <date> schreef <someone>:" or "… heeft <someone> het volgende
# geschreven:". Its parts are found one after the other (`_dated_attribution`), each
# search linear: one pattern "On\s.*YEAR.*\swrote…" tried every year in the line with
# every place after it, quadratic, minutes for a line of a few hundred thousand years.
_DATED_OPENING = re.compile(r"(On|Le|El|Em|Il|Am|Op)\s", re.IGNORECASE)
_DATED_YEAR = re.compile(r"(?<![\dA-Za-z_])(19|20)\d{2}(?![\dA-Za-z_])")
# By the opening word: the verb that ends the line, and the one that comes before a name.
_DATED_VERBS: dict[str, tuple[re.Pattern[str] | None, re.Pattern[str] | None]] = {
    "am": (None, re.compile(r"\sschrieb\s", re.IGNORECASE)),
    "op": (re.compile(r"\sgeschreven\Z", re.IGNORECASE),
           re.compile(r"\sschreef\s", re.IGNORECASE)),
}
_DATED_WROTE = re.compile(r"\s(wrote|a écrit|escribió|escreveu|ha scritto)\Z", re.IGNORECASE)
# What an attribution line ("On <date>, <someone> wrote:") has in every language: it ends
# in ":" and names the sender's address, or a date with a time.
_ADDRESS = re.compile(r"[^\s<>]@[^\s<>]")
# Not inside a word of Latin letters or digits; next to Chinese or Japanese ones, yes:
# "于2026年11月23日周一 09:00写道：".
_TIME = re.compile(r"(?<![\dA-Za-z_])\d{1,2}:\d{2}(?![\dA-Za-z_])")
# A year, or a numeric date with a two-digit one (Thunderbird: "Am 23.11.26 um 08:00").
_YEAR = re.compile(
    r"(?<![\dA-Za-z_])((19|20)\d{2}|\d{1,2}([./])\d{1,2}\3\d{2})(?![\dA-Za-z_])")
# A line introducing a quote ends in a colon; in Chinese and Japanese, often a full-width
# one ("写道：").
_COLONS = (":", "：")
_WORD = re.compile(r"\w+")
# How much of the question's text, word for word, shows that the original mail follows.
_ORIGINAL_WORDS = 8
# How many lines of the original may come before the question's text: the email's title
# ("<instruction title>: a question for you", up to 220 characters), which a plain-text
# client wrapping at 72 to 78 columns spreads over at most four.
_TITLE_LINES = 4
# Where a client puts the original mail below the reply without quoting it: Outlook's
# rule or "Original Message" line, or its header block ("From: …" then "Sent: …").
_ORIGINAL = re.compile(
    r"^\s*(_{10,}|-{3,}\s*(Original Message|Ursprüngliche Nachricht|Message d'origine"
    r"|Mensaje original|Mensagem original|Messaggio originale|Oorspronkelijk bericht)"
    r"\s*-{3,})\s*$", re.IGNORECASE)
_HEADER_FROM = re.compile(
    r"^\s*\*?(From|De|Von|Van|Da|Från|Fra|发件人|寄件者|差出人)\s*(:\*?\s+|：\*?\s*)\S",
    re.IGNORECASE)
# The line below "From:" in Outlook's block is when it was sent: "Sent:", in Spanish
# "Enviado el:", in Portuguese "Enviado:" or "Enviado em:" (Brazil), "Enviada:"
# (Portugal), in Italian "Inviato:". "To:" there is only taken in the languages that
# always had it: a "Para:" or "A:" line below "De:"/"Da:" is as likely the user's own.
_HEADER_NEXT = re.compile(
    r"^\s*\*?(Sent|Date|Envoyé|Gesendet|Verzonden|Inviato|Enviad[oa](\s+(el|em))?|Skickat"
    r"|Sendt|To|À|An|发送时间|寄件日期|送信日時)\s*[:：]", re.IGNORECASE)
# Outlook's block in languages whose "From:" and "Sent:"/"Date:" lines are taken only as
# their own pair: Korean "보낸 사람:"/"보낸 날짜:", Polish "Od:"/"Wysłane:" or "Data:",
# Czech "Od:"/"Odesláno:" or "Datum:", Russian "От:"/"Отправлено:" or "Дата:", Turkish
# "Kimden:"/"Gönderildi:" or "Tarih:". ("Data:" below Italian "Da:" is not one.) The
# second line, as Outlook writes it, has the time it was sent: the user's own "Od:
# poniedziałek" over "Data: 3 grudnia" is not a header block.
_HEADER_PAIRS = tuple(
    (re.compile(rf"^\s*\*?({sender})\s*(:\*?\s+|：\*?\s*)\S", re.IGNORECASE),
     re.compile(rf"^\s*\*?({sent})\s*[:：].*?{_TIME.pattern}", re.IGNORECASE))
    for sender, sent in ((r"보낸\s*사람", r"보낸\s*날짜"), ("Od", "Wysłane|Data|Odesláno|Datum"),
                         ("От", "Отправлено|Дата"), ("Kimden", "Gönderildi|Tarih")))
# The line a mail app adds under what the user wrote ("Sent from my iPhone"), in the
# languages the app uses; read without its link ("Get Outlook for iOS<https://…>").
_DEVICE = (r"(iPhone|iPad|iPod|Android( phone| device)?|smartphone|phone|mobile( phone"
           r"| device)?|(BlackBerry|Samsung|Huawei|Galaxy|Pixel)( \w+){0,3})")
_MOBILE_SIGNATURE = re.compile(
    r"^\s*(Sent from my DEVICE|Sent from (Mail|Outlook) for (Windows( \d+)?|iOS|Android|Mac)"
    r"|Sent from Yahoo Mail (for iPhone|for iPad|on Android)"
    r"|Get Outlook for (iOS|Android)|Obtener Outlook para (iOS|Android)"
    r"|Obter o Outlook para (iOS|Android)|Télécharger Outlook pour (iOS|Android)"
    r"|Enviado do meu DEVICE|Enviado desde mi DEVICE|Envoyé de mon DEVICE"
    r"|Von meinem DEVICE gesendet|Inviato da( il mio)? DEVICE"
    r"|Verstuurd vanaf mijn DEVICE|Skickat från min DEVICE)\s*\.?\s*$".replace(
        "DEVICE", _DEVICE), re.IGNORECASE)
# From the start of a run of spaces only: from each of them, a run not followed by a link
# was read to its end, 3 s for 20,000 spaces in the last line of a reply (quadratic).
_LINK = re.compile(r"(?<!\s)\s*(<https?://[^<>\s]*>|\(https?://[^()\s]*\))")
# A forward's body: Gmail's marker line, or Apple Mail's, in their languages.
_FORWARDED = re.compile(
    r"^\s*-{3,}\s*(Forwarded message|Weitergeleitete Nachricht|Message transféré"
    r"|Mensaje reenviado|Mensagem encaminhada|Messaggio inoltrato|Doorgestuurd bericht)"
    r"\s*-{3,}\s*$|^\s*(Begin forwarded message|Début du message réexpédié"
    r"|Anfang der weitergeleiteten Nachricht|Inicio del mensaje reenviado"
    r"|Início da mensagem (reencaminhada|encaminhada)|Inizio messaggio inoltrato)\s*:\s*$",
    re.IGNORECASE)
# A forward's subject: "Fwd:"/"Fw:", and Outlook's in other languages: "WG:" (German),
# "TR:" (French), "RV:" (Spanish), "ENC:" (Portuguese), "I:" (Italian).
_FORWARD_SUBJECT = re.compile(r"^\s*(Fwd?|WG|TR|RV|ENC|I)\s*:", re.IGNORECASE)


async def watch(
    *, session: AsyncSession, user_id: uuid.UUID, question_id: uuid.UUID,
    delivery_id: uuid.UUID, account_id: uuid.UUID, message_id: str, history_id: str | None,
) -> None:
    """Remember a question's email; a retried delivery (same Message-ID) keeps the first
    record, whose historyId is the earlier one."""
    await session.execute(
        insert_ignore(session, QuestionEmail, ["message_id"]).values(
            id=uuid.uuid4(), user_id=user_id, question_id=question_id, delivery_id=delivery_id,
            account_id=account_id, message_id=message_id[:200], history_id=history_id,
            created_at=utcnow(),
        )
    )


def answered_ids(in_reply_to: str, references: str) -> list[str]:
    """The Message-IDs of the mail a message replies to: its In-Reply-To (RFC 5322 3.6.4:
    the message, or messages, it answers), else the last of its References (the parent's,
    for a client that writes only References). The rest of References is the conversation
    further up, which a reply to someone else in it names too."""
    found = _MESSAGE_IDS.findall(in_reply_to or "")
    if not found:
        found = _MESSAGE_IDS.findall(references or "")[-1:]
    return list(dict.fromkeys(found))


def conversation_ids(in_reply_to: str, references: str) -> list[str]:
    """Every Message-ID a message names in In-Reply-To and References: the conversation
    it descends from."""
    return list(dict.fromkeys(_MESSAGE_IDS.findall(f"{references or ''} {in_reply_to or ''}")))


def own_reply_answers(
    parents: list[str], thread: dict[str, tuple[bool, str, str, str]], ours: set[str],
) -> str | None:
    """Which of our question emails a message answers through the user's own earlier
    reply: its parents (`answered_ids`) are messages of the thread the user sent
    (`thread`: Message-ID → (sent by the user, subject, In-Reply-To, References)), not
    forwards, that reply to one of `ours`, directly or through more such replies (Gmail's
    Reply on the last message of a thread answers the user's own last reply). A parent
    that someone else sent (a colleague the question was forwarded to) or a forward
    ends the search: None."""
    seen: set[str] = set()
    while parents:
        found = [p for p in parents if p in ours]
        if found:
            return found[0]
        step: list[str] = []
        for parent in parents:
            if parent in seen or parent not in thread:
                continue
            seen.add(parent)
            sent, subject, in_reply_to, references = thread[parent]
            if sent and not is_forward(subject, ""):
                step += answered_ids(in_reply_to, references)
        parents = step
    return None


def reply_text(body: str, *, original: str = "") -> str:
    """What the user wrote: the text of the reply without the quoted mail. `original` is
    the question's text, which the mail replied to holds.

    - Lines quoted with ">" are dropped, with the line that introduces them when it ends
      in ":" ("On <date>, <someone> wrote:" in any language, also when the client wrapped
      it over two lines), wherever they are: above the reply (bottom posting), below it,
      or between its lines.
    - The reply ends at a signature ("-- "), at an attribution line not followed by
      quoted lines ("On … wrote:", one in another language: see `_attribution`, or one
      naming only a date: "Le 23 nov. 2026, Pilotlight a écrit :") when the original
      starts right below it, unquoted (`_original_right_below`: as an HTML reply's text
      has it), and where a client puts the original unquoted: Outlook's rule or
      "Original Message" line, or its header block ("From: …" followed by "Sent:",
      "Date:" or "To:"). A line of the user's own that merely ends in ":" and names an
      address or a time ("Send it to jane@acme.com:") is kept, with what follows it,
      also when the original is further down, and so is "On Friday the vendor wrote:"
      with their own text below it.
    - A mail app's line under the text ("Sent from my iPhone", "Get Outlook for iOS") is
      dropped when it is the text's last line."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    n = 0
    while n < len(lines):
        line = lines[n]
        if line.rstrip() == "--" or _ORIGINAL.match(line) or _header_block(lines, n):
            break
        if _quoted(line):
            n += 1
            continue
        intro = _introduction(lines, n)
        if intro:
            if _quote_follows(lines, n + intro):
                n += intro
                continue
            said = lines[n:n + intro]
            # Not knowing the question's text, an address or a date with a time is taken
            # for an attribution; a date alone is not.
            named = _attribution(said)
            if (named or _dated_attribution(said)) and _original_right_below(
                lines, n + intro, original, unknown=named
            ):
                break  # the attribution and the original below it, unquoted
        kept.append(line.rstrip())
        n += 1
    while kept and (not kept[-1].strip() or _mobile_signature(kept[-1])):
        kept.pop()
    return "\n".join(kept).strip().replace("\x00", "")[:ANSWER_CHARS]


def _mobile_signature(line: str) -> bool:
    """Whether the line is what a mail app adds under the user's text ("Sent from my
    iPhone", "Get Outlook for iOS"), whole: not a sentence of the user's that has it."""
    return bool(_MOBILE_SIGNATURE.match(_LINK.sub("", line)))


def is_forward(subject: str, body: str) -> bool:
    """A forward of the question's email (to someone else), not an answer to it."""
    if _FORWARD_SUBJECT.match(subject or ""):
        return True
    return any(_FORWARDED.match(line) for line in body.splitlines())


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _introduction(lines: list[str], n: int) -> int:
    """How many lines (1 or 2) from `n` make a line introducing a quote: one that ends in
    ":", or an attribution that the client wrapped over two lines; 0 if none.

    Gmail wraps a long attribution wherever the width runs out: "… <addr>\nwrote:",
    "… <addr> a\nécrit :", "… schrieb Pilotlight <\naddr>:". The first line then holds
    the attribution's start (its date and time, or "On …"), the second only its end."""
    line = lines[n].rstrip()
    if line.endswith(_COLONS):
        return 1
    following = lines[n + 1].strip() if n + 1 < len(lines) else ""
    if not following.endswith(_COLONS) or _attribution_start(following):
        return 0  # the following line is an attribution of its own
    if _ON_WROTE_START.match(line) and _WROTE_END.search(following):
        return 2
    if (_TIME.search(line) or _YEAR.search(line)) and _attribution([line, following]):
        return 2
    return 0


def _attribution_start(line: str) -> bool:
    """Whether the line could begin an attribution: "On …", or a date with a time."""
    return bool(_ON_WROTE_START.match(line) or (_TIME.search(line) and _YEAR.search(line)))


def _attribution(lines: list[str]) -> bool:
    """Whether the lines (one, or one wrapped over two) say who wrote the mail below them:
    "On … wrote:", or in any language a line ending in ":" that names an address, or a
    date with a time."""
    text = " ".join(line.strip() for line in lines)
    if not text.endswith(_COLONS):
        return False
    if _ON_WROTE_START.match(text) and _WROTE_END.search(text):
        return True
    return bool(_ADDRESS.search(text) or (_TIME.search(text) and _YEAR.search(text)))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _dated_attribution(lines: list[str]) -> bool:
    """Whether the lines (one, or one wrapped over two) are an attribution that names
    only a date: "Le 23 nov. 2026, Pilotlight a écrit :"."""
    text = " ".join(line.strip() for line in lines).strip()
    if not text.endswith(":"):
        return False
    said = text[:-1]
    opening = _DATED_OPENING.match(said)
    if opening is None:
        return False
    year = _DATED_YEAR.search(said, opening.end())  # the first year leaves the most after it
    if year is None:
        return False
    last, first = _DATED_VERBS.get(opening.group(1).lower(), (_DATED_WROTE, None))
    if last is not None and last.search(said.rstrip(), year.end()):
        return True
    # "schrieb <someone>": the verb, then at least one character of the name.
    verb = first.search(said, year.end()) if first is not None else None
    return verb is not None and verb.end() < len(said)


def _original_right_below(
    lines: list[str], n: int, original: str, *, unknown: bool,
) -> bool:
    """Whether the original mail starts right at `n`, unquoted, for sure: nothing follows
    (the quote itself was left out, as from an HTML reply), or the original's rule or
    header block, or the question's text (`original`) at the start of one of the next
    lines with text, below at most the email's title (`_TITLE_LINES`, none ending an
    attribution), and no quote further down (our question emails hold no quoted mail, only
    lines of the question's own that may start with ">": a quote means the original is
    there, and these lines are still the user's). A line of the user's own, further up,
    is never this: their text or another attribution lies between it and the original.
    `unknown`: what to conclude, with no quote below, when the question's text is not
    known."""
    rest = [line for line in lines[n:] if line.strip()]
    if not rest:
        return True
    if _ORIGINAL.match(rest[0]) or _header_block(rest, 0):
        return True
    if _quote_among(rest, original):
        return False
    asked = _words(original)
    if not asked:
        return unknown
    for k in range(min(len(rest), _TITLE_LINES + 1)):
        if k and _attribution_ends(rest, k):
            return False
        if _opens_with(rest[k:], asked):
            return True
    return False


def _attribution_ends(lines: list[str], k: int) -> bool:
    """Whether an attribution (one line, or one wrapped over two) ends just above line `k`:
    then what is below it is another mail's. A line of the title that a client wrapped
    after a colon ("Invoices:", "… needs money now:" over "a question for you") is not."""
    return any(
        _attribution(said) or _dated_attribution(said)
        for said in (lines[k - 1:k], lines[max(k - 2, 0):k]))


def _quote_among(lines: list[str], original: str) -> bool:
    """Whether one of the lines is quoted mail: it starts with ">" and is not a piece of
    the question's own text (`original`: the model's, which may have such lines; the
    original below an attribution holds them as they are, or as a client wrapped them)."""
    own = " ".join(original.split())
    return any(_quoted(line) and " ".join(line.split()) not in own for line in lines)


def _opens_with(lines: list[str], asked: list[str]) -> bool:
    """Whether the lines start with the question's first `_ORIGINAL_WORDS` words; a
    shorter question whole, up to the end of a line (as the email has it, with nothing
    after it on its line), which the user's own line repeating its few words seldom is."""
    whole = len(asked) <= _ORIGINAL_WORDS
    asked = asked[:_ORIGINAL_WORDS]
    said: list[str] = []
    for line in lines:
        said += _words(line)
        if said[:len(asked)] != asked[:len(said)]:
            return False
        if len(said) >= len(asked):
            return len(said) == len(asked) or not whole
    return False


def _quote_follows(lines: list[str], n: int) -> bool:
    """Whether the next line with text from `n` on is quoted."""
    for line in lines[n:]:
        if line.strip():
            return _quoted(line)
    return False


def _header_block(lines: list[str], n: int) -> bool:
    """Outlook's header block of the original mail: "From: …" and, within the next two
    lines, "Sent:", "Date:" or "To:" (or their pair in `_HEADER_PAIRS`' languages)."""
    pairs = ((_HEADER_FROM, _HEADER_NEXT), *_HEADER_PAIRS)
    return any(
        sender.match(lines[n]) and any(sent.match(line) for line in lines[n + 1:n + 3])
        for sender, sent in pairs)


def _plain(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".!")


def as_answer(question: Question, text: str) -> str:
    """The answer the text gives: the question's choice it names (any case), else the
    text itself (a question with choices takes free text too, as the API does)."""
    choices = [str(c) for c in (question.choices or {}).get("choices", [])]
    said = _plain(text)
    for choice in choices:
        if _plain(choice) == said:
            return choice
    return text


async def question_texts(
    *, session: AsyncSession, question_ids: set[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The text of each question: what its email, the original below a reply, says."""
    if not question_ids:
        return {}
    rows = await session.execute(
        select(Question.id, Question.text).where(Question.id.in_(question_ids)))
    return {row.id: row.text for row in rows}


async def handled(
    *, session: AsyncSession, account_id: uuid.UUID, gmail_ids: list[str]
) -> set[str]:
    """The Gmail messages among `gmail_ids` already handled for this account."""
    if not gmail_ids:
        return set()
    rows = await session.execute(
        select(EmailReply.gmail_message_id).where(
            EmailReply.account_id == account_id, EmailReply.gmail_message_id.in_(gmail_ids)
        )
    )
    return set(rows.scalars())


async def emails_named(
    *, session: AsyncSession, account_id: uuid.UUID, message_ids: list[str]
) -> dict[str, QuestionEmail]:
    """Our question emails among `message_ids`, sent to this account's Gmail."""
    if not message_ids:
        return {}
    rows = await session.execute(
        select(QuestionEmail).where(
            QuestionEmail.account_id == account_id, QuestionEmail.message_id.in_(message_ids)
        )
    )
    return {row.message_id: row for row in rows.scalars()}


async def answer_by_reply(
    *, session: AsyncSession, email: QuestionEmail, gmail_message_id: str, text: str,
    wakeups: Wakeups, forward: bool = False,
) -> str:
    """Answer `email`'s question with a reply's text, unless this reply was handled already
    (another poller, an earlier pass) or the question is closed. Returns the outcome:
    "answered", "ignored" or "duplicate"."""
    claimed: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        insert_ignore(session, EmailReply, ["account_id", "gmail_message_id"]).values(
            id=uuid.uuid4(), account_id=email.account_id, gmail_message_id=gmail_message_id,
            question_id=email.question_id, outcome="answered", detail="",
            created_at=utcnow(),
        )
    )
    if claimed.rowcount != 1:
        return "duplicate"
    reply = (
        await session.execute(
            select(EmailReply).where(EmailReply.account_id == email.account_id,
                                     EmailReply.gmail_message_id == gmail_message_id)
        )
    ).scalar_one()
    question = await session.get(Question, email.question_id)
    user = await session.get(User, email.user_id)
    why = ""
    if question is None or user is None:
        why = "the question is gone"
    elif forward:
        why = "a forward of the question's email, not a reply to it"
    elif not text:
        why = "the reply has no text above the quoted mail"
    elif question.status != "open":
        why = f"the question is already {question.status}"
    else:
        try:
            await service.answer(session=session, user=user, question_id=question.id,
                                 text=as_answer(question, text), wakeups=wakeups)
        except service.QuestionClosed as exc:
            why = str(exc)
    if why:
        reply.outcome, reply.detail = "ignored", why
        log.info("email reply %s to question %s ignored: %s", gmail_message_id,
                 email.question_id, why)
    else:
        log.info("email reply %s answered question %s", gmail_message_id, email.question_id)
    await session.flush()
    return reply.outcome
