"""What a handler gets: the matched method, the typed query, the caller's account."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .discovery import Method, apis, parse_fields, select
from .errors import Reply, invalid_argument
from .oauth import AccessToken
from .store import Account, Ids


@dataclass
class Call:
    method: Method
    path: dict[str, str]
    query: dict[str, Any]
    body: bytes
    headers: dict[str, str]  # lower-case names
    account: Account
    token: AccessToken
    ids: Ids
    now: datetime
    accounts: dict[str, Account]

    def json_body(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        try:
            data = json.loads(self.body)
        except ValueError:
            raise invalid_argument("Invalid JSON payload received.") from None
        if not isinstance(data, dict):
            raise invalid_argument("Invalid JSON payload received. Expected an object.")
        return data

    def respond(self, payload: dict[str, Any], schema: str | None = None) -> Reply:
        """JSON, cut down to the `fields` the caller asked for."""
        fields = self.query.get("fields")
        if fields:
            api = apis()[self.method.api]
            payload = select(payload, parse_fields(fields), schema or self.method.response_ref,
                             api.schemas)
        return Reply.json(payload)
