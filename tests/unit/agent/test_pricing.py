"""cost_usd: thought tokens as output, cached input at the cached rate, names by prefix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.agent.llm import Usage
from app.agent.pricing import ModelPrice, cost_usd, price_for
from app.core.config import Settings

PRICES = {
    "gemini-3.5-flash": ModelPrice(input=1.50, output=9.00, cached=0.15),
    "gemini-3.1-pro": ModelPrice(input=2.00, output=12.00),
}


def test_input_output_and_thoughts_per_million():
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, thought_tokens=100_000)
    assert cost_usd("gemini-3.5-flash", usage, PRICES) == pytest.approx(1.50 + 0.2 * 9.00)


def test_cached_input_at_the_cached_rate_or_as_input_without_one():
    usage = Usage(input_tokens=1_000_000, cached_tokens=400_000)
    assert cost_usd("gemini-3.5-flash", usage, PRICES) == pytest.approx(0.6 * 1.50 + 0.4 * 0.15)
    assert cost_usd("gemini-3.1-pro", usage, PRICES) == pytest.approx(2.00)


def test_versioned_names_take_the_longest_prefix_and_unknown_models_are_free():
    assert price_for("gemini-3.1-pro-preview", PRICES) is PRICES["gemini-3.1-pro"]
    assert cost_usd("pilotlight-offline", Usage(input_tokens=10**6), PRICES) == 0.0


def test_the_default_table_and_its_bounds():
    prices = Settings(_env_file=None).gemini_prices  # type: ignore[call-arg]
    assert prices["gemini-3.5-flash"] == ModelPrice(input=1.50, output=9.00, cached=0.15)
    assert {"gemini-3.1-flash-lite", "gemini-3.1-pro"} <= set(prices)
    with pytest.raises(ValidationError):
        ModelPrice(input=-1, output=1)


def test_the_table_is_read_as_json_from_the_environment(monkeypatch):
    monkeypatch.setenv("PILOTLIGHT_GEMINI_PRICES", '{"gemini-x": {"input": 1, "output": 2}}')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.gemini_prices == {"gemini-x": ModelPrice(input=1, output=2)}
