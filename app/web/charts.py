"""Usage over the last days as an SVG bar chart, laid out on the server (no script)."""

from __future__ import annotations

from dataclasses import dataclass

from app.runs.costs import Usage

WIDTH = 600
HEIGHT = 160
TOP = 12
BOTTOM = 22


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: str
    cost_usd: float
    runs: int
    tokens: int


@dataclass
class Chart:
    bars: list[Bar]
    max_cost: float
    width: int = WIDTH
    height: int = HEIGHT
    baseline: float = HEIGHT - BOTTOM


def usage_chart(usage: Usage) -> Chart:
    """One bar per day, scaled to the most expensive day (runs when nothing cost money)."""
    days = usage.days
    by_cost = max((d.cost_usd for d in days), default=0.0) > 0
    peak = max((d.cost_usd if by_cost else d.runs for d in days), default=0) or 1
    slot = WIDTH / max(len(days), 1)
    room = HEIGHT - TOP - BOTTOM
    bars = []
    for i, day in enumerate(days):
        value = day.cost_usd if by_cost else day.runs
        height = room * value / peak
        if value and height < 2:
            height = 2.0  # a day with any use is visible
        bars.append(Bar(
            x=round(i * slot + slot * 0.15, 2), y=round(HEIGHT - BOTTOM - height, 2),
            width=round(slot * 0.7, 2), height=round(height, 2), day=day.day,
            cost_usd=day.cost_usd, runs=day.runs,
            tokens=day.input_tokens + day.output_tokens + day.thought_tokens,
        ))
    return Chart(bars=bars, max_cost=max((d.cost_usd for d in days), default=0.0))
