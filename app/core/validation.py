"""Checks of user input that several schemas and services share.

Each raises ValueError with a readable reason: inside a pydantic validator that is a 422
naming the field; a service turns it into a `BadRequest`.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Any
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, field_validator

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
    """Something to read: not only spaces, nor only characters that show nothing (a
    zero-width space, a joiner, a byte order mark: Unicode's format characters)."""
    if not any(not c.isspace() and unicodedata.category(c) != "Cf" for c in value):
        raise ValueError("must not be blank")
    return value


def _without_null(schema: dict[str, Any]) -> None:
    """The document of a model whose None means "left out": no field takes null."""
    for field in schema.get("properties", {}).values():
        field.pop("default", None)
        options = [o for o in field.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            field.update(options[0])
        elif options:
            field["anyOf"] = options


class PartialUpdate(BaseModel):
    """A PATCH body: the fields to change; one left out keeps its value, and none takes
    null (a null sent would be read as left out and change nothing, silently)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_without_null)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("cannot be null: leave the field out to keep its value")
        return value
