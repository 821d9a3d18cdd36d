"""`/_fake/...`: the Python handle over HTTP, for the standalone server."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import FakeGoogle


def _date(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def control(
    fake: FakeGoogle, method: str, action: str, query: list[tuple[str, str]], body: bytes
) -> tuple[int, Any]:
    """Run one control action; (status, JSON answer)."""
    try:
        data: dict[str, Any] = json.loads(body) if body.strip() else {}
    except ValueError:
        return 400, {"error": "the body must be JSON"}
    data = dict(query) | data
    try:
        return 200, _run(fake, method, action, data)
    except KeyError as exc:
        return 400, {"error": f"missing or unknown: {exc}"}
    except (TypeError, ValueError) as exc:
        return 400, {"error": str(exc)}


def _run(fake: FakeGoogle, method: str, action: str, data: dict[str, Any]) -> Any:
    if method == "GET" and action == "stats":
        emails = sorted({r.email for r in fake.requests if r.email})
        return {
            "quota_units": {e: fake.quota_units(e) for e in emails},
            "batch_sizes": fake.batch_sizes,
            "requests": [asdict(r) for r in fake.requests],
        }
    if method == "GET" and action == "watches":
        return fake.watches(data["email"])
    if method != "POST":
        raise ValueError(f"unknown control {method} /_fake/{action}")
    if action == "messages":
        attachments = [
            (a["filename"], a["mime_type"], base64.b64decode(a["data"]))
            for a in data.get("attachments", [])
        ]
        message_id = fake.add_message(
            data["email"], sender=data.get("sender", "Bob <bob@example.com>"),
            to=data.get("to"), subject=data.get("subject", ""), text=data.get("text", ""),
            html=data.get("html"), attachments=attachments,
            labels=tuple(data.get("labels", ("INBOX", "UNREAD"))),
            thread_id=data.get("thread_id"), date=_date(data.get("date")),
        )
        return {"id": message_id, "historyId": str(fake.history_id(data["email"]))}
    if action == "files":
        content: str | bytes = data.get("content", "")
        if "content_base64" in data:
            content = base64.b64decode(data["content_base64"])
        file_id = fake.add_file(
            data["email"], name=data["name"],
            mime_type=data.get("mime_type", "application/vnd.google-apps.document"),
            content=content, parents=tuple(data.get("parents", ("root",))),
            modified_by=data.get("modified_by"),
        )
        return {"id": file_id}
    if action == "update_file":
        fake.update_file(data["email"], data["file_id"], content=data.get("content"),
                         name=data.get("name"), trashed=data.get("trashed"),
                         modified_by=data.get("modified_by"))
        return {"ok": True}
    if action == "expire_history":
        fake.expire_history(data["email"])
    elif action == "revoke":
        fake.revoke(data["email"])
    elif action == "expire_access_tokens":
        fake.expire_access_tokens()
    elif action == "fail_next":
        fake.fail_next(data.get("path_contains", ""), int(data.get("status", 429)),
                       int(data.get("count", 1)), data.get("retry_after"))
    elif action == "latency":
        fake.latency_seconds = float(data["seconds"])
    elif action == "consent":
        fake.consent_email = data.get("email", fake.consent_email)
        scopes = data.get("granted_scopes")
        fake.granted_scopes = set(scopes) if scopes is not None else None
        fake.consent_denied = bool(data.get("denied", False))
        if "redirect_uris" in data:
            uris = data["redirect_uris"]
            fake.redirect_uris = set(uris) if uris is not None else None
    elif action == "refresh_token":
        return {"refresh_token": fake.issue_refresh_token(data["email"], data["scopes"])}
    elif action == "reset_counters":
        fake.reset_counters()
    else:
        raise ValueError(f"unknown control POST /_fake/{action}")
    return {"ok": True}
