"""Which model implementation a process uses."""

from __future__ import annotations

import logging

from app.agent.llm import LLM, TurnRequest
from app.agent.offline import OfflineModel
from app.core.config import Settings

log = logging.getLogger(__name__)


def build_llm(settings: Settings) -> LLM:
    """Gemini when an API key is set, else the offline model."""
    key = settings.gemini_api_key.get_secret_value() if settings.gemini_api_key else ""
    if not key:
        return OfflineModel()
    from app.agent.gemini import GeminiModel  # the SDK loads only when it is used

    log.info(
        "using Gemini model %s%s", settings.gemini_model,
        f" at {settings.gemini_base_url}" if settings.gemini_base_url else "",
    )
    return GeminiModel(
        key,
        model=settings.gemini_model,
        base_url=settings.gemini_base_url,
        max_retries=settings.gemini_max_retries,
        timeout_seconds=settings.gemini_timeout_seconds,
        max_output_tokens=settings.gemini_max_output_tokens,
    )


async def probe(llm: LLM) -> None:
    """Ask the model for one tiny answer; raises `LLMError` (`KeyRejected` for a bad key).

    At thinking level low: the one every Gemini 3 model takes (3.7 Flash and the 3.x Pro
    models refuse minimal with a 400), so the check fails only for the key or the service.
    """
    if isinstance(llm, OfflineModel):
        return
    await llm.turn(
        TurnRequest(
            model=llm.name, system_instruction="Answer with the single word OK.",
            input="Are you there?", thinking_level="low",
        )
    )
