"""Prometheus metrics of the Google clients in this process, and Gmail's quota unit costs."""

from __future__ import annotations

from prometheus_client import Counter

# Gmail's documented per-method quota units
# (https://developers.google.com/workspace/gmail/api/reference/quota). A batch charges
# each of its parts. Methods not listed here are not called by Pilotlight.
GMAIL_UNITS = {
    "gmail.users.getProfile": 1,
    "gmail.users.history.list": 2,
    "gmail.users.messages.list": 5,
    "gmail.users.messages.get": 5,
    "gmail.users.messages.attachments.get": 5,
    "gmail.users.messages.send": 100,
    "gmail.users.threads.list": 10,
    "gmail.users.threads.get": 10,
    "gmail.users.watch": 100,
    "gmail.users.stop": 50,
}
DEFAULT_GMAIL_UNITS = 5

QUOTA_UNITS = Counter(
    "pilotlight_google_quota_units",
    "Gmail quota units this process charged to each account (Drive: one per request)",
    ["account", "api"],
)
REQUESTS = Counter(
    "pilotlight_google_requests",
    "Calls to Google APIs sent by this process (a batch part counts as one), by outcome",
    ["api", "outcome"],
)
RETRIES = Counter(
    "pilotlight_google_retries",
    "Google API calls sent again after a 429, a 5xx or a transport error",
    ["api", "reason"],
)


def units_for(api: str, method_id: str | None) -> int:
    """What one call of `method_id` costs against the account's quota."""
    if api != "gmail":
        return 1
    return GMAIL_UNITS.get(method_id or "", DEFAULT_GMAIL_UNITS)


def charge(account: str, api: str, method_id: str | None) -> None:
    QUOTA_UNITS.labels(account, api).inc(units_for(api, method_id))
