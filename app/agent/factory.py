"""Which model implementation a process uses."""

from __future__ import annotations

import logging

from app.agent.llm import LLM
from app.agent.offline import OfflineModel
from app.core.config import Settings

log = logging.getLogger(__name__)


def build_llm(settings: Settings) -> LLM:
    """The offline model, until the Gemini implementation of the port lands."""
    if settings.gemini_api_key is not None:
        log.warning(
            "PILOTLIGHT_GEMINI_API_KEY is set, but this version has only the offline model; "
            "digests are written by it and labelled as such"
        )
    return OfflineModel()

