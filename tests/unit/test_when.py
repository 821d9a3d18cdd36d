"""How the dashboard writes a moment (the page's script writes a live one the same way)."""

from __future__ import annotations

from datetime import UTC, datetime

from app.web.render import when

NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)


def test_a_moment_is_written_in_the_viewers_zone_without_the_year_this_year() -> None:
    assert when(datetime(2026, 11, 24, 19, 16, tzinfo=UTC), "Australia/Lord_Howe",
                now=NOW) == "Wed 25 Nov 06:16"


def test_a_moment_in_another_year_there_says_its_year() -> None:
    """An interval of a year showed "Next: Thu 25 Nov · Fri 24 Nov · Sat 24 Nov"."""
    assert when(datetime(2027, 6, 1, 7, 0, tzinfo=UTC), "Europe/Berlin",
                now=NOW) == "Tue 01 Jun 2027 09:00"
    # The year is the viewer's: already next year in Sydney, still this year in UTC.
    assert when(datetime(2026, 12, 31, 14, 0, tzinfo=UTC), "Australia/Sydney",
                now=NOW) == "Fri 01 Jan 2027 01:00"
    assert when(None) == "—"
