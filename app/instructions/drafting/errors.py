"""What drafting refuses, and the helpers its messages share."""

from __future__ import annotations

import logging

from app.agent.offline import OFFLINE_MODEL_NAME
from app.core.errors import BadRequest

log = logging.getLogger(__name__)

PARSER_NAME = OFFLINE_MODEL_NAME
EXAMPLE = '"every weekday at 8 tell me what my team sent"'
MAX_INTERVAL_SECONDS = 366 * 86400


class DraftNotUnderstood(BadRequest):
    """No schedule could be read from the sentence, or it contradicts itself."""


class DraftIntervalTooShort(BadRequest):
    """The sentence asks for runs less than a minute apart."""


class DraftWatchNotAvailable(BadRequest):
    """The sentence asks for a run on an event that drafting cannot propose a watch trigger
    for: a Drive folder (a watch needs its id, from the folder's URL), or an event on nothing
    it can name. Mail events are proposed as a watch on a Gmail query."""


def _not_understood(what: str) -> DraftNotUnderstood:
    return DraftNotUnderstood(f"Could not read {what}. A sentence that works: {EXAMPLE}.")


def _quote(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return f'"{text if len(text) <= limit else text[: limit - 1].rstrip() + "…"}"'
