"""Bearer tokens, and one user's data staying invisible to every other user."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from app.accounts.models import Account
from app.channels.models import PushSubscription, Webhook
from app.core.db import transaction, utcnow
from app.core.errors import BadRequest
from app.core.runtime import Runtime
from app.models import Base
from app.users import service as users
from app.users.models import ApiToken
from tests.factories import instruction, user_with_token
from tests.integration.api.helpers import (
    API,
    add_notification,
    add_question,
    add_run,
    app_routes,
    assert_error,
)

# The routes, read from the app itself so that a new route is covered (or fails) at once.
API_ROUTES = [(method, path) for method, path in app_routes() if path.startswith(API)]
ID_ROUTES = [(method, path) for method, path in API_ROUTES if "{" in path]

# Every route that takes an id: the body it is called with (None: no body).
CROSS_USER_BODIES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("GET", f"{API}/instructions/{{instruction_id}}"): None,
    ("PATCH", f"{API}/instructions/{{instruction_id}}"): {"title": "taken over"},
    ("DELETE", f"{API}/instructions/{{instruction_id}}"): None,
    ("POST", f"{API}/instructions/{{instruction_id}}/pause"): None,
    ("POST", f"{API}/instructions/{{instruction_id}}/resume"): None,
    ("POST", f"{API}/instructions/{{instruction_id}}/run"): None,
    ("POST", f"{API}/instructions/{{instruction_id}}/preview"): {"days": 7},
    ("GET", f"{API}/runs/{{run_id}}"): None,
    ("POST", f"{API}/runs/{{run_id}}/cancel"): None,
    ("GET", f"{API}/questions/{{question_id}}"): None,
    ("POST", f"{API}/questions/{{question_id}}/answer"): {"answer": "not yours to answer"},
    ("POST", f"{API}/notifications/{{notification_id}}/read"): None,
    ("GET", f"{API}/webhooks/{{webhook_id}}"): None,
    ("PATCH", f"{API}/webhooks/{{webhook_id}}"): {"enabled": False},
    ("POST", f"{API}/webhooks/{{webhook_id}}/secret"): None,
    ("DELETE", f"{API}/webhooks/{{webhook_id}}"): None,
    ("DELETE", f"{API}/push/subscriptions/{{subscription_id}}"): None,
    ("DELETE", f"{API}/accounts/{{account_id}}"): None,
}
NOT_FOUND = {
    "instruction_id": "InstructionNotFound",
    "run_id": "RunNotFound",
    "question_id": "QuestionNotFound",
    "notification_id": "NotificationNotFound",
    "webhook_id": "WebhookNotFound",
    "subscription_id": "PushSubscriptionNotFound",
    "account_id": "AccountNotFound",
}


# Routes that take another credential than a personal token, and their 401's error.
OTHER_CREDENTIALS = {("POST", f"{API}/google/pubsub"): "PushTokenMissing"}  # Pub/Sub's JWT


def _path_params(path: str) -> list[str]:
    return re.findall(r"{(\w+)(?::\w+)?}", path)


def _body_for(method: str, path: str) -> dict[str, Any] | None:
    if (method, path) in CROSS_USER_BODIES:
        return CROSS_USER_BODIES[(method, path)]
    return {"title": "x"} if method in ("POST", "PATCH", "PUT") else None


# --- tokens -------------------------------------------------------------------


async def test_no_token_is_401(client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.get(f"{API}/me")
    assert_error(response, 401, "InvalidToken", "missing bearer token")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("authorization", "fragment"),
    [
        pytest.param("Bearer not-a-token", "plt_", id="malformed"),
        pytest.param("Bearer ", "missing bearer token", id="empty"),
        pytest.param("Bearer", "missing bearer token", id="scheme-only"),
        pytest.param("Basic dXNlcjpwYXNz", "missing bearer token", id="basic-auth"),
        pytest.param("plt_abc", "missing bearer token", id="no-scheme"),
        pytest.param("Bearer plt_" + "A" * 43, "unknown or revoked", id="unknown"),
        pytest.param("Bearer plt_", "unknown or revoked", id="prefix-only"),
        pytest.param("Bearer plt_" + "x" * 5000, "unknown or revoked", id="very-long"),
        pytest.param("Bearer plt_' OR '1'='1", "unknown or revoked", id="sql-ish"),
    ],
)
async def test_bad_token_is_401(
    client: httpx.AsyncClient, runtime: Runtime, authorization: str, fragment: str
) -> None:
    await user_with_token(runtime)  # a user with a token exists, but not this token
    response = await client.get(f"{API}/me", headers={"Authorization": authorization})
    assert_error(response, 401, "InvalidToken", fragment)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    plaintext = headers["Authorization"].removeprefix("Bearer ")
    for scheme in ("bearer", "BEARER"):
        response = await client.get(f"{API}/me", headers={"Authorization": f"{scheme} {plaintext}"})
        assert response.status_code == 200, response.text
        assert response.json()["id"] == str(user.id)


async def test_revoked_token_is_401(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    async with transaction(runtime.sessionmaker) as session:
        _token, other_plaintext = await users.create_token(session=session, user=user)
    assert (await client.get(f"{API}/me", headers=headers)).status_code == 200

    plaintext = headers["Authorization"].removeprefix("Bearer ")
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == hashlib.sha256(plaintext.encode()).hexdigest())
            .values(revoked_at=utcnow())
        )
    response = await client.get(f"{API}/me", headers=headers)
    assert_error(response, 401, "InvalidToken", "unknown or revoked")
    assert response.headers["www-authenticate"] == "Bearer"
    response = await client.get(f"{API}/instructions", headers=headers)
    assert_error(response, 401, "InvalidToken")

    # the user's other token still works
    other = {"Authorization": f"Bearer {other_plaintext}"}
    assert (await client.get(f"{API}/me", headers=other)).json()["id"] == str(user.id)


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
async def test_every_api_route_needs_a_token(
    client: httpx.AsyncClient, runtime: Runtime, method: str, path: str
) -> None:
    url = path
    for name in _path_params(path):
        url = url.replace(f"{{{name}}}", str(uuid.uuid4()))
    response = await client.request(method, url, json=_body_for(method, path))
    assert_error(response, 401, OTHER_CREDENTIALS.get((method, path), "InvalidToken"))
    assert response.headers["www-authenticate"] == "Bearer"


async def test_me(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime, "Ada@Example.com")
    await user_with_token(runtime)
    response = await client.get(f"{API}/me", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == str(user.id)
    assert body["email"] == "ada@example.com"
    assert body["timezone"] == "Europe/Berlin"
    assert set(body) == {"id", "email", "name", "timezone", "daily_cost_cap_usd", "created_at"}

    async with runtime.sessionmaker() as session:
        token = (
            await session.execute(select(ApiToken).where(ApiToken.user_id == user.id))
        ).scalar_one()
    assert token.last_used_at is not None


async def test_patch_me_changes_the_time_zone_and_cap_and_moves_instructions(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)  # Europe/Berlin
    berlin = await instruction(runtime, user, title="Berlin")
    await instruction(runtime, user, title="Tokyo", trigger={
        "type": "cron", "cron": "0 8 * * *", "timezone": "Asia/Tokyo"})
    # Refused whole: nothing changes.
    for bad, field in (({"timezone": "Mars/Base"}, "timezone"),
                       ({"timezone": "UTC", "daily_cost_cap_usd": -1}, "daily_cost_cap_usd"),
                       ({"daily_cost_cap_usd": "lots"}, "daily_cost_cap_usd"),
                       ({"daily_cost_cap_usd": "5"}, "daily_cost_cap_usd"),
                       ({"daily_cost_cap_usd": True}, "daily_cost_cap_usd"),
                       ({"daily_cost_cap_usd": None}, "daily_cost_cap_usd"),
                       ({"timezone": None}, "timezone"),
                       ({"timezone": "UTC", "move_instructions": "no"}, "move_instructions"),
                       ({"timezone": "UTC", "move_instructions": 0}, "move_instructions"),
                       ({"email": "x@example.com"}, "email")):
        response = await client.patch(f"{API}/me", headers=headers, json=bad)
        body = assert_error(response, 422, "ValidationError")
        assert field in body["detail"], body
    me = (await client.get(f"{API}/me", headers=headers)).json()
    assert (me["timezone"], me["daily_cost_cap_usd"]) == ("Europe/Berlin", 1.0)

    response = await client.patch(f"{API}/me", headers=headers,
                                  json={"timezone": "America/New_York", "daily_cost_cap_usd": 3})
    assert response.status_code == 200, response.text
    assert (response.json()["timezone"], response.json()["daily_cost_cap_usd"]) == (
        "America/New_York", 3.0)
    moved = (await client.get(f"{API}/instructions/{berlin.id}", headers=headers)).json()
    assert moved["trigger"]["timezone"] == "America/New_York"
    assert moved["schedule"].endswith("(America/New_York)"), moved["schedule"]
    listed = (await client.get(f"{API}/instructions", headers=headers)).json()["items"]
    assert {i["title"]: i["trigger"]["timezone"] for i in listed} == {
        "Berlin": "America/New_York", "Tokyo": "Asia/Tokyo"}

    response = await client.patch(f"{API}/me", headers=headers,
                                   json={"timezone": "UTC", "move_instructions": False})
    assert response.json()["timezone"] == "UTC"
    kept = (await client.get(f"{API}/instructions/{berlin.id}", headers=headers)).json()
    assert kept["trigger"]["timezone"] == "America/New_York"


NOT_TIME_ZONES = ["Europe", "America", "localtime", "posixrules", "right/UTC", "posix/UTC",
                  "Factory", "Mars/Base", "Europe/", ""]


@pytest.mark.parametrize("zone", NOT_TIME_ZONES)
async def test_a_user_needs_an_iana_time_zone(runtime: Runtime, zone: str) -> None:
    async with transaction(runtime.sessionmaker) as session:
        with pytest.raises(BadRequest, match="unknown time zone"):
            await users.create_user(session=session, email="tz@example.com", timezone=zone)
        user = await users.create_user(session=session, email="tz@example.com", timezone="UTC")
        with pytest.raises(BadRequest, match="unknown time zone"):
            await users.update_profile(session=session, user=user, timezone=zone)
        assert user.timezone == "UTC"


async def test_only_a_hash_of_the_token_is_stored(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    plaintext = headers["Authorization"].removeprefix("Bearer ")
    secret = plaintext[len("plt_") + 6:]  # what the display prefix does not show
    assert (await client.get(f"{API}/me", headers=headers)).status_code == 200

    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM api_tokens"))).mappings().all()
        assert len(rows) == 1
        row = dict(rows[0])
        assert row["token_hash"] == hashlib.sha256(plaintext.encode()).hexdigest()
        assert plaintext.startswith(row["prefix"])
        for column, value in row.items():
            assert plaintext not in str(value), column
            assert secret not in str(value), column
        # nor anywhere else in the database
        for table in Base.metadata.sorted_tables:
            for found in (await conn.execute(text(f"SELECT * FROM {table.name}"))).all():
                assert all(secret not in str(value) for value in found), table.name
        assert row["user_id"] in (user.id, str(user.id), user.id.hex)


# --- one user's data is invisible to another ----------------------------------


@dataclass
class World:
    headers_a: dict[str, str]
    headers_b: dict[str, str]
    ids: dict[str, uuid.UUID]


@pytest.fixture
async def world(runtime: Runtime) -> World:
    """User A with an instruction, a run waiting on a question, a notification, a webhook, a
    push subscription and the sample account; user B."""
    user_a, headers_a = await user_with_token(runtime)
    user_b, headers_b = await user_with_token(runtime)
    mine = await instruction(runtime, user_a)
    run = await add_run(runtime, user_a, mine, status="waiting_for_user")
    question = await add_question(runtime, user_a, run)
    notification = await add_notification(runtime, user_a, run=run, channels=("email",))
    await instruction(runtime, user_b, title="B's own")  # B is not empty-handed
    webhook = Webhook(user_id=user_a.id, url_encrypted=b"sealed",
                      url_shown="https://hooks.example.com/\u2026",
                      secret_encrypted=b"encrypted", event_types={"types": ["digest.created"]})
    subscription = PushSubscription(user_id=user_a.id, endpoint="https://push.example.com/a",
                                    p256dh="B" * 87, auth_encrypted=b"sealed")
    async with transaction(runtime.sessionmaker) as session:
        session.add(webhook)
        session.add(subscription)
        account_id = (
            await session.execute(select(Account.id).where(Account.user_id == user_a.id))
        ).scalar_one()
    ids = {
        "instruction_id": mine.id, "run_id": run.id, "question_id": question.id,
        "notification_id": notification, "webhook_id": webhook.id,
        "subscription_id": subscription.id, "account_id": account_id,
    }
    return World(headers_a, headers_b, ids)


async def _snapshot(client: httpx.AsyncClient, world: World) -> dict[str, Any]:
    """Everything of A's, as A sees it."""
    headers = world.headers_a
    ids = world.ids
    return {
        "instruction": (await client.get(f"{API}/instructions/{ids['instruction_id']}",
                                         headers=headers)).json(),
        "run": (await client.get(f"{API}/runs/{ids['run_id']}", headers=headers)).json(),
        "runs": (await client.get(f"{API}/runs", headers=headers)).json(),
        "questions": (await client.get(f"{API}/questions", headers=headers)).json(),
        "notifications": (await client.get(f"{API}/notifications", headers=headers)).json(),
        "webhooks": (await client.get(f"{API}/webhooks", headers=headers)).json(),
        "push": (await client.get(f"{API}/push/subscriptions", headers=headers)).json(),
        "accounts": (await client.get(f"{API}/accounts", headers=headers)).json(),
    }


def test_every_id_route_is_in_the_cross_user_table() -> None:
    assert len(API_ROUTES) >= 15, API_ROUTES  # the walk found the routers
    missing = [route for route in ID_ROUTES if route not in CROSS_USER_BODIES]
    assert missing == [], f"add these routes to CROSS_USER_BODIES: {missing}"
    stale = [route for route in CROSS_USER_BODIES if route not in ID_ROUTES]
    assert stale == [], f"these routes no longer exist: {stale}"
    unknown = {name for _m, path in ID_ROUTES for name in _path_params(path)} - set(NOT_FOUND)
    assert unknown == set(), f"add these path parameters to NOT_FOUND: {unknown}"


@pytest.mark.parametrize(("method", "path"), ID_ROUTES)
async def test_other_users_ids_are_not_found(
    client: httpx.AsyncClient, world: World, method: str, path: str
) -> None:
    if (method, path) not in CROSS_USER_BODIES:
        pytest.fail(f"{method} {path} takes an id but is not in CROSS_USER_BODIES")
    before = await _snapshot(client, world)
    url = path
    names = _path_params(path)
    for name in names:
        url = url.replace(f"{{{name}}}", str(world.ids[name]))

    response = await client.request(
        method, url, json=CROSS_USER_BODIES[(method, path)], headers=world.headers_b
    )
    body = assert_error(response, 404, NOT_FOUND[names[-1]])
    assert "taken over" not in response.text
    assert set(body) == {"error", "detail"}
    # A's data is untouched, and the same route works for A
    assert await _snapshot(client, world) == before
    if method == "GET":
        assert (await client.get(url, headers=world.headers_a)).status_code == 200


@pytest.mark.parametrize(
    ("url", "key"),
    [
        (f"{API}/instructions", "items"),
        (f"{API}/runs", "items"),
        (f"{API}/runs?instruction_id={{instruction_id}}", "items"),
        (f"{API}/runs?status=waiting_for_user", "items"),
        (f"{API}/questions", None),
        (f"{API}/notifications", "items"),
        (f"{API}/notifications?unread=true", "items"),
        (f"{API}/webhooks", None),
        (f"{API}/accounts", None),
    ],
)
async def test_other_users_data_is_not_listed(
    client: httpx.AsyncClient, world: World, url: str, key: str | None
) -> None:
    url = url.format(**world.ids)
    as_a = (await client.get(url, headers=world.headers_a)).json()
    response = await client.get(url, headers=world.headers_b)
    assert response.status_code == 200, response.text
    items = response.json() if key is None else response.json()[key]
    mine = as_a if key is None else as_a[key]
    assert mine, "A should see their own rows here"
    leaked = {item["id"] for item in items} & {item["id"] for item in mine}
    assert leaked == set()
    assert not any(str(value) in response.text for value in world.ids.values())


async def test_marking_all_read_touches_only_ones_own(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(f"{API}/notifications/read", headers=world.headers_b)
    assert response.status_code == 200
    assert response.json() == {"marked": 0}
    unread = await client.get(f"{API}/notifications", params={"unread": "true"},
                              headers=world.headers_a)
    assert [n["id"] for n in unread.json()["items"]] == [str(world.ids["notification_id"])]


async def test_users_are_told_apart_by_token(client: httpx.AsyncClient, world: World) -> None:
    a = (await client.get(f"{API}/me", headers=world.headers_a)).json()
    b = (await client.get(f"{API}/me", headers=world.headers_b)).json()
    assert a["id"] != b["id"]
