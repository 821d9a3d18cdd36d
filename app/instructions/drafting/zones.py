"""Time zones a sentence names: "in UTC", "Europe/London time", "New York time", and a
place beside the schedule, "every day at 8 in London"."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from app.core.validation import check_timezone, timezones
from app.instructions.drafting.errors import _not_understood, _quote

if TYPE_CHECKING:
    from app.instructions.drafting.reading import _Reading, _Schedule

_ZONE_AREAS = frozenset(
    "Africa America Antarctica Asia Atlantic Australia Europe Indian Pacific".split()
)


@functools.cache
def _zone_by_lower_name() -> dict[str, str]:
    return {name.lower(): name for name in timezones()}


# Cities people schedule by that name no zone of the tz database, each with the zone it
# keeps: only places one city is known by ("Portland", "Birmingham", "San Jose" and
# "Hyderabad" are two cities in two zones, and are left out).
_CITIES_NOT_IN_TZ = {
    **dict.fromkeys(("san francisco", "seattle", "san diego", "las vegas", "palo alto",
                     "sacramento"), "America/Los_Angeles"),
    **dict.fromkeys(("boston", "washington dc", "philadelphia", "atlanta", "miami",
                     "pittsburgh", "baltimore", "orlando", "ottawa"), "America/New_York"),
    **dict.fromkeys(("dallas", "houston", "austin", "minneapolis", "nashville", "new orleans"),
                    "America/Chicago"),
    "salt lake city": "America/Denver",
    "calgary": "America/Edmonton",
    **dict.fromkeys(("munich", "frankfurt", "hamburg", "cologne"), "Europe/Berlin"),
    "milan": "Europe/Rome",
    "barcelona": "Europe/Madrid",
    **dict.fromkeys(("edinburgh", "glasgow"), "Europe/London"),
    **dict.fromkeys(("geneva", "bern"), "Europe/Zurich"),
    "rotterdam": "Europe/Amsterdam",
    "krakow": "Europe/Warsaw",
    **dict.fromkeys(("lyon", "marseille"), "Europe/Paris"),
    **dict.fromkeys(("mumbai", "delhi", "new delhi", "bangalore", "bengaluru", "chennai"),
                    "Asia/Kolkata"),
    **dict.fromkeys(("beijing", "shenzhen", "guangzhou"), "Asia/Shanghai"),
    **dict.fromkeys(("osaka", "kyoto"), "Asia/Tokyo"),
    "hanoi": "Asia/Ho_Chi_Minh",
    "abu dhabi": "Asia/Dubai",
    "doha": "Asia/Qatar",
    "lahore": "Asia/Karachi",
    "tel aviv": "Asia/Jerusalem",
    "wellington": "Pacific/Auckland",
    "cape town": "Africa/Johannesburg",
}


@functools.cache
def _zone_by_city() -> dict[str, str]:
    """"new york" -> "America/New_York": the last part of each zone of a place, and the
    cities of `_CITIES_NOT_IN_TZ`. The few names two zones share ("Istanbul": Europe/ and
    Asia/) are links to one zone."""
    cities: dict[str, str] = dict(_CITIES_NOT_IN_TZ)
    for name in sorted(timezones(), reverse=True):  # "Europe/Istanbul" over "Asia/Istanbul"
        parts = name.split("/")
        if len(parts) > 1 and parts[0] in _ZONE_AREAS:
            cities[parts[-1].replace("_", " ").lower()] = name
    return cities


@functools.cache
def _zone_city_pattern() -> re.Pattern[str]:
    names = sorted(_zone_by_city(), key=len, reverse=True)
    alternatives = "|".join(re.escape(n).replace(r"\ ", r"[\s_-]+") for n in names)
    return re.compile(
        rf"\b(?:(?:in|on)\s+)?(?:the\s+)?(?P<city>{alternatives})(?:'s)?\s+time(?:\s*zone)?\b"
    )


# Places read as a zone after "in" alone ("at 8 in London"), without "time": not the
# stations of Antarctica ("in Davis" is California's), nor words that are words first.
_NOT_A_PLACE = frozenset(
    "act center christmas easter north south west oral wake midway virgin resolute reunion "
    "canary knox in lower princes".split(" ")
)


@functools.cache
def _zone_place_pattern() -> re.Pattern[str]:
    names = sorted((city for city, zone in _zone_by_city().items()
                    if city not in _NOT_A_PLACE and not zone.startswith("Antarctica/")),
                   key=len, reverse=True)
    alternatives = "|".join(re.escape(n).replace(r"\ ", r"[\s_-]+") for n in names)
    return re.compile(rf"\bin\s+(?:the\s+)?(?P<city>{alternatives})\b(?!['\w-])")


_ZONE_PATH = re.compile(
    r"\b(?:(?:in|on)\s+)?(?:the\s+)?(?P<zone>[a-z][\w+-]*(?:/[\w+-]+)+)(?P<time>\s+time(?:\s*zone)?)?"
    r"(?![\w/])"
)
# States and provinces said as a time zone: most hold one zone, some two, none is a name
# of the tz database (a city of it is: "Los Angeles time").
_REGIONS = [
    re.escape(name).replace(r"\ ", r"\s+") for name in (
        "alabama", "arizona", "arkansas", "california", "colorado", "connecticut", "delaware",
        "florida", "georgia", "idaho", "illinois", "indiana", "iowa", "kansas", "kentucky",
        "louisiana", "maine", "maryland", "massachusetts", "michigan", "minnesota",
        "mississippi", "missouri", "montana", "nebraska", "nevada", "new hampshire",
        "new jersey", "new mexico", "north carolina", "north dakota", "ohio", "oklahoma",
        "oregon", "pennsylvania", "rhode island", "south carolina", "south dakota",
        "tennessee", "texas", "utah", "vermont", "virginia", "washington", "west virginia",
        "wisconsin", "wyoming", "ontario", "quebec", "british columbia", "alberta",
        "manitoba", "saskatchewan", "nova scotia", "new brunswick", "newfoundland",
        "new zealand", "new south wales", "western australia", "south australia",
    )
]
_ZONE_UTC = re.compile(r"\b(?:(?:in|on)\s+)?(?P<zone>utc|gmt)(?:\s+time)?\b(?!\s*[+-]\s*\d)")
# Said, but not a zone this can tell: refused rather than replaced by the user's zone.
_ZONE_UNCLEAR = re.compile(
    r"\b(?:utc|gmt)\s*[+-]\s*\d+(?::\d{2})?"
    r"|\b(?:est|edt|cst|cdt|mst|mdt|pst|pdt|akst|akdt|hst|bst|cet|cest|eet|eest|jst|kst|aest|"
    r"aedt|acst|acdt|awst|nzst|nzdt|msk|sgt|hkt)\b"
    # words as well as zones: only next to a time, or before "time"
    r"|(?:(?<=\d)|(?<=[ap]m))\s*(?:wet|west|ist)\b|\b(?:wet|west|ist)\s+time\b"
    # Each word of the name once in its alternation: a word two alternatives match (it was
    # "european" twice) doubles the ways to read each repeat of it, exponential in them.
    r"|\b(?:eastern|pacific|central|mountain|atlantic|alaska|hawaii)(?:\s+(?:standard|daylight|"
    r"european|us))*\s+time\b"
    # A state or province is no zone of the tz database ("New Jersey time" read as
    # Europe/Jersey, "California time" dropped for the user's zone): a city of it is.
    rf"|\b(?:{'|'.join(_REGIONS)})(?:'s)?\s+time\b"
)


def _set_zone(schedule: _Schedule, zone: str, words: str) -> None:
    if schedule.timezone not in (None, zone):
        raise _not_understood(f"two different time zones ({schedule.timezone} and {zone})")
    schedule.timezone = check_timezone(zone)
    schedule.timezone_words = words


def _read_zone(reading: _Reading, schedule: _Schedule) -> None:
    if match := _ZONE_UNCLEAR.search(reading.rest):
        raise _not_understood(
            f"the time zone {_quote(match[0])}: name a city of it or a zone of the tz "
            'database, e.g. "in New York time", "in America/New_York time" or "in UTC"'
        )
    names = _zone_by_lower_name()
    for match in list(_ZONE_PATH.finditer(reading.rest)):
        zone = names.get(match["zone"])
        if zone is None:
            if match["time"]:
                raise _not_understood(f"the time zone {_quote(match['zone'])} (no such zone)")
            continue  # "and/or", not a zone
        start, end = match.span()
        reading.rest = reading.rest[:start] + "\0" * (end - start) + reading.rest[end:]
        _set_zone(schedule, zone, match[0])
    for match in reading.take(_ZONE_UTC):
        _set_zone(schedule, match["zone"].upper(), match[0])
    for match in reading.take(_zone_city_pattern()):
        city = " ".join(re.split(r"[\s_-]+", match["city"]))
        _set_zone(schedule, _zone_by_city()[city], match[0])


def _read_place(reading: _Reading, schedule: _Schedule) -> None:
    """ "in London" said beside the schedule ("every day at 8 in London", "in Tokyo, at 9"),
    as "in London time" is; a place inside the task ("mail from people in Paris") is the
    task's. A name said as a zone beside the schedule that is none this knows ("at 9
    Springfield time") is refused, never dropped for the user's zone."""
    found = [match for match in _zone_place_pattern().finditer(reading.rest)
             if _beside_schedule(reading.rest, match)]
    for match in found:
        start, end = match.span()
        reading.rest = reading.rest[:start] + "\0" * (end - start) + reading.rest[end:]
        city = " ".join(re.split(r"[\s_-]+", match["city"]))
        _set_zone(schedule, _zone_by_city()[city], match[0])
    for match in _UNKNOWN_ZONE.finditer(reading.rest):
        words = reading.text[match.start("place"):match.end("place")].split()
        if (_beside_schedule(reading.rest, match) and all(w[0].isupper() for w in words)
                and match["place"].split()[0] not in _NOT_A_ZONE_WORD):
            raise _not_understood(
                f"the time zone {_quote(' '.join(words))}: it is no city this knows a zone "
                'of; name the zone of the tz database, e.g. "in America/Los_Angeles time", '
                'or a city of it, e.g. "in Los Angeles"'
            )


    for match in _UNKNOWN_PLACE.finditer(reading.rest):
        first = reading.text[match.start("place"):match.end("place")]
        if not first[0].isupper() or match["place"] in _NOT_A_PLACE_WORD:
            continue
        # the place as said: its first word and the capitalized words after it
        more = _CAPITALIZED.match(reading.text, match.end("place"))
        end = more.end() if more else match.end("place")
        place = reading.text[match.start("place"):end].rstrip(".,;:!?")
        if (_beside_schedule(reading.rest, match)
                or re.match(r"(?:[\s,]|\band\b)*\0", reading.rest[end:])):
            raise _not_understood(
                f'"in {place}" as a place: it is no city this knows a time zone of; name a '
                'city of the zone, e.g. "in Los Angeles", or the zone of the tz database, '
                'e.g. "in America/Los_Angeles time"; to run in your own time zone, leave the '
                "place out"
            )


def _beside_schedule(rest: str, match: re.Match[str]) -> bool:
    """Beside a phrase read ("\0"), or a zone said before it ("in UTC and in Tokyo")."""
    return bool(re.search(r"\0(?:[\s,]|\band\b)*$", rest[:match.start()])
                or re.match(r"(?:[\s,]|\band\b)*\0", rest[match.end():]))


# Up to three words said before "time" as a zone is ("San Francisco time"), capitalized.
_UNKNOWN_ZONE = re.compile(
    r"(?:\bin\s+(?:the\s+)?)?\b(?P<place>[a-z][\w.'-]*(?:\s+[a-z][\w.'-]*){0,2}?)(?:'s)?"
    r"\s+time(?:\s*zone)?\b"
)
# Words said before "time" that are no place: "Local time", "Lunch time".
_NOT_A_ZONE_WORD = frozenset(
    "a an the my our your their this that same any some local lunch lunchtime dinner tea bed "
    "closing opening office work working business free spare summer winter standard daylight "
    "real prime quiet focus family break coffee meeting".split()
)
# A capitalized word after "in" beside the schedule ("every day at 9 in Springfieldia") is a
# place, unless it is one of these: where things are read or written, a language, a month
# or a day (refused for what they are, see reading._UNREAD_MONTH).
_UNKNOWN_PLACE = re.compile(r"\bin\s+(?:the\s+)?(?P<place>[^\W\d_][\w.'-]*)")
_CAPITALIZED = re.compile(r"(?:\s+[^\W\d_a-z][\w.'-]*){1,2}")
_NOT_A_PLACE_WORD = _NOT_A_ZONE_WORD | frozenset(
    "drive gmail mail email e-mail inbox docs doc documents sheets sheet slides calendar "
    "google outlook slack teams notion jira confluence github trello asana pilotlight app "
    "dashboard markdown pdf english french german spanish italian portuguese dutch polish "
    "japanese chinese korean russian arabic hindi swedish danish norwegian finnish greek "
    "turkish hebrew summary brief detail short full bullet bullets points order "
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec "
    "monday tuesday wednesday thursday friday saturday sunday".split()
)
