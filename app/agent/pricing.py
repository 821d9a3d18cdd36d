"""What a run's tokens cost: a pure function over a price table from settings.

Billing follows the Gemini API's rules:
- `Usage.input_tokens` is the whole prompt the service read, cached part included
  (a turn chained with `previous_interaction_id` is billed for the conversation so
  far). The cached part (`Usage.cached_tokens`) is billed at the model's `cached`
  rate when the table has one, else at the input rate (never more than the prompt).
- Thought tokens are billed as output, on top of `Usage.output_tokens`.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from app.agent.llm import Usage

PER_TOKENS = 1_000_000


def usd(value: float | None) -> str:
    """An amount as people read it: "$0", "$0.0042" below a cent, else "$1.25"."""
    if not value:
        return "$0"
    return f"${value:.4f}" if abs(value) < 0.01 else f"${value:.2f}"


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input: float = Field(ge=0, le=1000)
    output: float = Field(ge=0, le=1000)
    # Cached input tokens; None bills them as plain input.
    cached: float | None = Field(None, ge=0, le=1000)


def price_for(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The model's row: an exact name, else the longest name it starts with
    (`gemini-3.5-flash-001` is priced as `gemini-3.5-flash`), else None."""
    if model in prices:
        return prices[model]
    prefixes = [name for name in prices if model.startswith(name)]
    return prices[max(prefixes, key=len)] if prefixes else None


def cost_usd(model: str, usage: Usage, prices: Mapping[str, ModelPrice]) -> float:
    """The cost of `usage` on `model`; 0.0 for a model the table does not price
    (the offline model is free)."""
    price = price_for(model, prices)
    return 0.0 if price is None else cost_at(price, usage)


def cost_at(price: ModelPrice, usage: Usage) -> float:
    """The cost of `usage` at `price`."""
    cached = min(max(usage.cached_tokens, 0), max(usage.input_tokens, 0))
    fresh = max(usage.input_tokens, 0) - cached
    cached_rate = price.input if price.cached is None else price.cached
    output = max(usage.output_tokens, 0) + max(usage.thought_tokens, 0)
    return (fresh * price.input + cached * cached_rate + output * price.output) / PER_TOKENS
