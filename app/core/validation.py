"""Checks of user input that several schemas and services share.

Each raises ValueError with a readable reason: inside a pydantic validator that is a 422
naming the field; a service turns it into a `BadRequest`.
"""

from __future__ import annotations

import functools
from zoneinfo import available_timezones

# Names the time zone search path holds that are not the zone of a place: "localtime" (on
# Debian a link to whatever /etc/localtime is) and tzdata's "Factory" ("-00", zone
# unknown). available_timezones() already leaves out posixrules and the posix/ and right/
# copies; directories ("Europe") are never in it.
_NOT_PLACES = frozenset({"Factory", "localtime"})


@functools.cache
def timezones() -> frozenset[str]:
    """The IANA time zone names a user or a trigger may name."""
    return frozenset(available_timezones() - _NOT_PLACES | {"UTC"})


def check_timezone(name: str) -> str:
    """The name, if it is one of `timezones()`: ZoneInfo(name) then always loads."""
    if name not in timezones():
        raise ValueError(f"unknown time zone '{name}'")
    return name


def check_no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here rather than fail on write (SQLite
    # would store it, so the two databases would answer differently).
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


def check_not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value
