"""The dashboard's pages over HTTP: CSRF, one user never sees another's data, escaping."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import timedelta
from html import unescape
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from starlette.routing import Route

from app.accounts.models import Account
from app.agent.offline import OFFLINE_MODEL_NAME, OFFLINE_NOTE
from app.channels import push as push_service
from app.channels import service as webhooks
from app.channels.schemas import PushSubscriptionCreate, WebhookCreate
from app.core.crypto import secret_box
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY, GMAIL_SEND
from app.instructions import service as instructions
from app.instructions.models import Instruction
from app.main import create_app
from app.notifications import service as notifications
from app.notifications.models import Notification
from app.runs.models import Run
from app.users import service as users
from app.users.models import User
from app.web.app import DashboardMount
from app.web.render import when
from tests import factories
from tests.integration.web.helpers import browser, question_for, sign_in

# A P-256 public key (the curve's base point: private key 1) and a 16-byte secret.
P256DH = "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"
AUTH = "c" * 21 + "w"


async def _owned_by(runtime: Runtime, user: User, marker: str) -> dict[str, uuid.UUID]:
    """One of everything the dashboard shows, for `user`: ids by path parameter name."""
    instruction = await factories.instruction(runtime, user, title=f"{marker} instruction")
    run_id, question_id = await question_for(runtime, user, instruction.id,
                                             text=f"{marker} question?")
    async with transaction(runtime.sessionmaker) as session:
        token, _plain = await users.create_token(session=session, user=user, name=marker)
        webhook, _secret = await webhooks.create(
            session=session, user=user, settings=runtime.settings,
            data=WebhookCreate(url=f"http://127.0.0.1:9/{marker}"),
        )
        subscription = await push_service.subscribe(
            session=session, user=user, settings=runtime.settings,
            data=PushSubscriptionCreate.model_validate(
                {"endpoint": f"http://127.0.0.1:9/push/{marker}",
                 "keys": {"p256dh": P256DH, "auth": AUTH}}),
        )
        notification_id = await notifications.notify(
            session=session, user_id=user.id, key=f"{marker}-note", kind="alert",
            title=f"{marker} alert", body=f"{marker} body", channels=[],
        )
    return {"instruction_id": instruction.id, "run_id": run_id, "question_id": question_id,
            "token_id": token.id, "webhook_id": webhook.id, "subscription_id": subscription.id,
            "notification_id": notification_id}


def _routes(routes: list[Any]) -> list[Route]:
    found: list[Route] = []
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            found += _routes(included.routes)
        elif isinstance(route, Route):
            found.append(route)
    return found


def _dashboard_routes(runtime: Runtime) -> list[tuple[str, str]]:
    """(method, path template) of every dashboard route that takes an id."""
    app = create_app(runtime)
    (mount,) = [r for r in app.routes if isinstance(r, DashboardMount)]
    return [(method, route.path) for route in _routes(mount.routes) if "{" in route.path
            for method in sorted(route.methods or ()) if method != "HEAD"]


async def test_one_user_never_sees_another_users_data(runtime: Runtime) -> None:
    alice, _ = await factories.user_with_token(runtime)
    bob, _ = await factories.user_with_token(runtime)
    await _owned_by(runtime, alice, "ALICE")
    bobs = await _owned_by(runtime, bob, "BOBSECRET")
    routes = _dashboard_routes(runtime)
    # Every id-taking route is here: a new one without an owner check fails this test.
    assert {path for _m, path in routes} >= {
        "/instructions/{instruction_id}", "/runs/{run_id}", "/questions/{question_id}",
        "/settings/tokens/{token_id}/revoke", "/settings/webhooks/{webhook_id}/delete",
        "/settings/push/{subscription_id}/delete", "/feed/{notification_id}/read",
    }
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, alice)
        for method, template in routes:
            path = re.sub(r"\{(\w+)\}", lambda m: str(bobs[m[1]]), template)
            data = {"csrf_token": csrf, "answer": "Apollo", "days": "7", "title": "x",
                    "text": "x", "cron": "0 8 * * *", "confirm": "on"}
            response = await client.request(method, path, data=data if method == "POST" else None)
            assert response.status_code == 404, (method, path, response.status_code)
            assert "BOBSECRET" not in response.text
        for page in ("/", "/runs", "/questions", "/feed", "/settings",
                     f"/runs?instruction_id={bobs['instruction_id']}"):
            response = await client.get(page)
            assert response.status_code == 200, page
            assert "BOBSECRET" not in response.text, page
            assert str(bobs["run_id"]) not in response.text, page
        assert "ALICE instruction" in (await client.get("/")).text
    # Bob's things are all still there and unchanged.
    async with transaction(runtime.sessionmaker) as session:
        run = await session.get(Run, bobs["run_id"])
        assert run is not None
        assert run.status == "waiting_for_user"
        note = await session.get(Notification, bobs["notification_id"])
        assert note is not None
        assert note.read_at is None
        assert [t.revoked_at for t in await users.list_tokens(session=session, user=bob)] == [
            None, None]


async def test_deleting_an_instruction_takes_a_ticked_box_and_says_it_was_done(
    runtime: Runtime,
) -> None:
    """One stray click on "Delete this instruction" deleted it, cancelling its queued
    runs, and the list it led back to said nothing of it."""
    user, _ = await factories.user_with_token(runtime)
    made = await factories.instruction(runtime, user, title="Weekly <b>review</b>")
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        editor = (await client.get(f"/instructions/{made.id}")).text
        assert re.search(r'<input id="confirm-delete" name="confirm" type="checkbox" required>',
                         editor)
        refused = await client.post(f"/instructions/{made.id}/delete",
                                    data={"csrf_token": csrf})
        assert refused.status_code == 422
        assert "tick the box" in refused.text
        async with runtime.sessionmaker() as session:  # still there
            await instructions.get(session=session, user=user, instruction_id=made.id)
        deleted = await client.post(f"/instructions/{made.id}/delete",
                                    data={"csrf_token": csrf, "confirm": "on"})
        assert deleted.status_code == 303
        assert deleted.headers["location"] == f"/?deleted={made.id}"
        listed = (await client.get(deleted.headers["location"])).text
        assert "Deleted “Weekly &lt;b&gt;review&lt;/b&gt;”" in listed
        # Only the user's own deleted instruction is named; anything else says nothing.
        for other in (uuid.uuid4(), "not-an-id"):
            assert "Deleted “" not in (await client.get(f"/?deleted={other}")).text


async def test_settings_say_where_email_goes(runtime: Runtime) -> None:
    """Nothing said whether email was set up, nor to which address it went: with neither
    Gmail sending nor SMTP, every email delivery failed, and only then did the feed say."""
    user, _ = await factories.user_with_token(runtime, "ada@example.com")

    async def email_section(client: httpx.AsyncClient) -> str:
        page = (await client.get("/settings")).text
        found = re.search(r'<section class="card" id="email".*?</section>', page, re.S)
        assert found is not None
        return " ".join(found[0].split())

    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        assert "Email is not set up" in await email_section(client)
        runtime.settings.smtp_host = "mail.example.com"
        shown = await email_section(client)
        assert "to ada@example.com through this server's mail server" in shown
        assert "mail.example.com" not in shown
        async with transaction(runtime.sessionmaker) as session:
            session.add(Account(
                id=uuid.uuid4(), user_id=user.id, kind="google", email="ada.g@example.com",
                scopes={"granted": [GMAIL_READONLY, DRIVE_READONLY, GMAIL_SEND]},
                refresh_token_encrypted=b"sealed", sync_cursor={}, status="active",
            ))
        assert "from your Google account ada.g@example.com to itself, through Gmail" in (
            await email_section(client))


async def test_forms_without_the_csrf_token_are_refused(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        path = f"/instructions/{instruction.id}/pause"
        for data in ({}, {"csrf_token": "forged"}, {"csrf_token": "é"}):
            refused = await client.post(path, data=data)
            assert refused.status_code == 403
            assert "CSRF" in refused.text
        refused = await client.post(path, headers={"X-CSRF-Token": "é".encode()})
        assert refused.status_code == 403
        ok = await client.post(path, data={"csrf_token": csrf})
        assert ok.status_code == 303
        page = await client.get("/")
        assert "status-paused" in page.text
        resumed = await client.post(f"/instructions/{instruction.id}/resume",
                                    data={"csrf_token": csrf})
        assert resumed.status_code == 303
        assert "status-paused" not in (await client.get("/")).text


async def test_the_api_needs_the_csrf_header_when_signed_in_by_cookie(runtime: Runtime) -> None:
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        me = await client.get("/api/v1/me")
        assert me.status_code == 200
        assert me.json()["email"] == user.email
        path = f"/api/v1/instructions/{instruction.id}/pause"
        refused = await client.post(path)
        assert refused.status_code == 403
        assert refused.json()["error"] == "CsrfRefused"
        assert "X-CSRF-Token" in refused.json()["detail"]
        for forged in (b"forged", "é".encode()):
            refused = await client.post(path, headers={"X-CSRF-Token": forged})
            assert refused.status_code == 403
            assert refused.json()["error"] == "CsrfRefused"
        assert (await client.post(path, headers={"X-CSRF-Token": csrf})).status_code == 200
    # A bearer token needs no CSRF token: nothing sends it on its own.
    async with browser(runtime) as api:
        resumed = await api.post(f"/api/v1/instructions/{instruction.id}/resume",
                                 headers=headers)
        assert resumed.status_code == 200


async def test_model_and_mail_text_is_escaped_and_links_come_only_from_refs(
    runtime: Runtime,
) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, title="<b>bold</b> title")
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    run_id, _question = await question_for(runtime, user, instruction.id, text=evil)
    digest: dict[str, Any] = {
        "summary": evil, "model": "pilotlight-offline", "notes": [],
        "covers": {"start": None, "end": utcnow().isoformat()},
        "sections": [{"title": evil, "items": [{
            "title": "Invoice", "detail": evil,
            "refs": [
                {"kind": "message", "id": "m1", "account": "a", "title": "Good link",
                 "link": "https://mail.example/m1"},
                {"kind": "message", "id": "m2", "account": "a", "title": "Bad link",
                 "link": "javascript:alert(3)"},
            ]}]}],
        "action_items": [],
    }
    async with transaction(runtime.sessionmaker) as session:
        run = await session.get(Run, run_id)
        assert run is not None
        run.status, run.result, run.finished_at = "succeeded", digest, utcnow()
        await notifications.notify(session=session, user_id=user.id, key="evil", kind="digest",
                                   title=evil, body=evil, channels=[], run_id=run_id)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        for page in ("/", f"/runs/{run_id}", "/questions", "/feed"):
            html = (await client.get(page)).text
            assert "<script>alert" not in html, page
            assert "<img src=x" not in html, page
            assert "<b>bold</b>" not in html, page
        run_page = (await client.get(f"/runs/{run_id}")).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in run_page
        assert 'href="https://mail.example/m1"' in run_page
        assert "javascript:" not in run_page
        assert "Bad link" in run_page  # shown, as text without a link


@pytest.mark.parametrize(("model", "notes", "written"), [
    # The offline model's note names it: the page said "Written by" twice, one under the
    # other ("… offline model: extractive, no LLM." then "Written by pilotlight-offline.").
    (OFFLINE_MODEL_NAME, [OFFLINE_NOTE, "Read 3 of 5 items."], [OFFLINE_NOTE]),
    ("gemini-3.5-flash", ["Read 3 of 5 items."], ["Written by gemini-3.5-flash."]),
])
async def test_a_digest_names_the_model_that_wrote_it_once(
    runtime: Runtime, model: str, notes: list[str], written: list[str],
) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    digest: dict[str, Any] = {"summary": "Nothing urgent.", "model": model, "notes": notes,
                              "sections": [], "action_items": []}
    async with transaction(runtime.sessionmaker) as session:
        run = Run(user_id=user.id, instruction_id=instruction.id, reason="manual",
                  scheduled_for=utcnow(), status="succeeded", result=digest,
                  finished_at=utcnow(), model=model)
        session.add(run)
        await session.flush()
        run_id = run.id
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        page = (await client.get(f"/runs/{run_id}")).text
    digest_html = page.split('id="digest"', 1)[1].split("</section>", 1)[0]
    lines = [unescape(line) for line in re.findall(r'<p class="muted">([^<]*)</p>',
                                                        digest_html)]
    assert [line for line in lines if line.startswith("Written by")] == written
    assert "Read 3 of 5 items." in lines


@pytest.mark.parametrize("calls", ["²", "ten", "-1"])
async def test_an_action_budget_that_is_not_a_number_is_the_forms_error(
    runtime: Runtime, calls: str
) -> None:
    """"²" is a digit to str.isdigit() but not to int(): the page crashed with a 500."""
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        response = await client.post("/instructions", data={
            "csrf_token": csrf, "title": "Mail", "text": "Tell me what came.",
            "trigger_type": "interval", "interval_minutes": "60", "sources": "gmail",
            "channels": "in_app", "thinking_level": "medium", "max_tool_calls": calls})
    assert response.status_code == 422
    assert "max_tool_calls" in response.text


async def test_the_schedule_reads_as_you_type(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        ok = await client.get("/instructions/schedule", params={
            "trigger_type": "cron", "cron": "30 9 * * 1-5", "timezone": "Europe/Berlin"})
        assert ok.status_code == 200
        body = ok.json()
        assert "09:30" in body["schedule"]
        assert "Europe/Berlin" in body["schedule"]
        assert len(body["next"]) == 3
        every = await client.get("/instructions/schedule", params={
            "trigger_type": "interval", "interval_minutes": "90"})
        assert every.json()["schedule"] == "Every 90 minutes"
        bad = await client.get("/instructions/schedule", params={
            "trigger_type": "cron", "cron": "99 * * *", "timezone": "UTC"})
        assert bad.status_code == 422
        assert bad.json()["error"] == "InvalidSchedule"
        assert "cron" in bad.json()["detail"]
        # A kind of trigger there is not is refused, not read as a cron.
        unknown = await client.get("/instructions/schedule", params={
            "trigger_type": "hourly", "cron": "0 8 * * *", "timezone": "UTC"})
        assert unknown.status_code == 422
        assert "'hourly'" in unknown.json()["detail"]
        assert "'interval'" in unknown.json()["detail"]


async def test_form_errors_name_the_fields_as_the_forms_label_them(runtime: Runtime) -> None:
    """They said "trigger.cron: …", "cron.timezone: …" (the same field, named otherwise as
    you type), "title: String should have at least 1 character" and "event_types: List
    should have at least 1 item after validation, not 0": the schemas' words, not the form's."""
    user, _ = await factories.user_with_token(runtime)
    stored = await factories.instruction(runtime, user)
    form = {"title": "  ", "text": "", "trigger_type": "cron", "cron": "61 8 * * *",
            "timezone": "Europe/Berlin", "sources": "gmail", "channels": "in_app"}
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        for path in ("/instructions", f"/instructions/{stored.id}"):
            refused = await client.post(path, data={"csrf_token": csrf, **form})
            assert refused.status_code == 422, refused.text
            errors = re.search(r'<ul><li>(.*?)</li></ul>', refused.text, re.S)
            assert errors, refused.text
            assert errors[1].split("</li><li>") == [
                "Title: must not be empty", "Instruction: must not be empty",
                "Cron expression: invalid cron expression &#39;61 8 * * *&#39;: 61 is no minute"
                " (they go from 0 to 59)"], (path, errors[1])
        nowhere = await client.post("/instructions", data={
            "csrf_token": csrf, **form, "title": "Mail", "text": "What came.",
            "cron": "0 8 * * *", "timezone": "Mars/Base", "sources": [], "channels": []})
        assert nowhere.status_code == 422
        for said in ("Time zone: unknown time zone", "Reads: tick at least one",
                     "Tells you: tick at least one"):
            assert said in nowhere.text, said
        live = await client.get("/instructions/schedule", params={
            "trigger_type": "cron", "cron": "0 8 * * *", "timezone": "Mars/Base"})
        assert live.json()["detail"] == "Time zone: unknown time zone 'Mars/Base'"
        live = await client.get("/instructions/schedule", params={
            "trigger_type": "cron", "cron": "61 8 * * *", "timezone": "UTC"})
        assert live.json()["detail"].startswith("Cron expression: invalid cron expression")
        hook = await client.post("/settings/webhooks", data={
            "csrf_token": csrf, "url": "http://127.0.0.1:9/hooks"})
        assert hook.status_code == 422
        assert "Events: tick at least one" in hook.text


async def test_saving_the_editor_unchanged_keeps_an_interval_of_seconds(
    runtime: Runtime,
) -> None:
    """A 90 s interval (set through the API) was shown as 1 minute and saved as 60 s when
    only the title was changed, and rescheduled."""
    user, _ = await factories.user_with_token(runtime)
    made = await factories.instruction(runtime, user,
                                       trigger={"type": "interval", "seconds": 90})
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        page = (await client.get(f"/instructions/{made.id}")).text
        shown = re.search(r'name="interval_minutes"[^>]*value="([^"]*)"', page)
        assert shown is not None
        assert shown[1] == "1.5"
        saved = await client.post(f"/instructions/{made.id}", data={
            "csrf_token": csrf, "title": "Renamed", "text": made.text,
            "trigger_type": "interval", "interval_minutes": shown[1], "sources": "gmail",
            "channels": "in_app", "thinking_level": "medium", "only_new": "on"})
        assert saved.status_code == 303, saved.text
    async with runtime.sessionmaker() as session:
        after = await instructions.get(session=session, user=user, instruction_id=made.id)
    assert after.title == "Renamed"
    assert after.trigger == {"type": "interval", "seconds": 90}
    assert after.next_run_at == made.next_run_at  # not rescheduled


async def test_the_editor_says_no_account_reads_the_sources_and_changes_nothing(
    runtime: Runtime,
) -> None:
    """With only a Google account without Gmail, saving an instruction to read only mail
    is said in the form with what was typed, and the instruction stays as it was."""
    user, _ = await factories.user_with_token(runtime, sample=False)
    async with transaction(runtime.sessionmaker) as session:
        session.add(Account(
            id=uuid.uuid4(), user_id=user.id, kind="google", email="a@example.com",
            scopes={"granted": [GMAIL_READONLY, DRIVE_READONLY], "mailbox": False},
            refresh_token_encrypted=b"sealed", sync_cursor={}, status="active",
        ))
    made = await factories.instruction(runtime, user)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        saved = await client.post(f"/instructions/{made.id}", data={
            "csrf_token": csrf, "title": "Renamed", "text": made.text,
            "trigger_type": "cron", "cron": "0 8 * * 1-5", "timezone": "Europe/Berlin",
            "sources": "gmail", "channels": "in_app", "thinking_level": "medium"})
        assert saved.status_code == 422, saved.text
        assert "reads mail only" in saved.text
        assert 'value="Renamed"' in saved.text
    async with runtime.sessionmaker() as session:
        after = await instructions.get(session=session, user=user, instruction_id=made.id)
    assert (after.title, after.sources) == (made.title, made.sources)


async def test_an_instructions_editor_shows_the_fire_times_it_will_have(
    runtime: Runtime,
) -> None:
    """An interval counts from the instruction's creation: its editor's preview counted
    from now, and showed times the saved instruction would not have."""
    user, _ = await factories.user_with_token(runtime)
    made = await factories.instruction(runtime, user,
                                       trigger={"type": "interval", "seconds": 3600})
    async with transaction(runtime.sessionmaker) as session:
        found = await instructions.get(session=session, user=user, instruction_id=made.id)
        found.created_at = utcnow() - timedelta(minutes=30)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        editor = (await client.get(f"/instructions/{made.id}")).text
        assert f'data-instruction="{made.id}"' in editor
        params = {"trigger_type": "interval", "interval_minutes": "120",
                  "instruction_id": str(made.id)}
        shown = (await client.get("/instructions/schedule", params=params)).json()["next"]
        saved = await client.post(f"/instructions/{made.id}", data={
            "csrf_token": csrf, "title": made.title, "text": made.text,
            "trigger_type": "interval", "interval_minutes": "120", "sources": "gmail",
            "channels": "in_app", "thinking_level": "medium", "only_new": "on"})
        assert saved.status_code == 303, saved.text
        params["instruction_id"] = str(uuid.uuid4())
        assert (await client.get("/instructions/schedule", params=params)).status_code == 404
    async with runtime.sessionmaker() as session:
        after = await instructions.get(session=session, user=user, instruction_id=made.id)
    assert after.next_run_at is not None
    assert shown[0] == when(after.next_run_at, user.timezone)


@pytest.mark.parametrize("zone", ["Europe", "localtime", "right/UTC", "Factory"])
async def test_the_editor_and_the_profile_refuse_what_is_not_a_time_zone(
    runtime: Runtime, zone: str
) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        preview = await client.get("/instructions/schedule", params={
            "trigger_type": "cron", "cron": "0 8 * * *", "timezone": zone})
        assert preview.status_code == 422, preview.text
        assert preview.json()["error"] == "InvalidSchedule"
        assert "unknown time zone" in preview.json()["detail"]
        saved = await client.post("/instructions", data={
            "csrf_token": csrf, "title": "Mail", "text": "Tell me what came.",
            "trigger_type": "cron", "cron": "0 8 * * *", "timezone": zone, "sources": "gmail",
            "channels": "in_app"})
        assert saved.status_code == 422, saved.text
        assert "unknown time zone" in saved.text
        profile = await client.post("/settings/profile", data={
            "csrf_token": csrf, "timezone": zone})
        assert profile.status_code == 422, profile.text
        assert "unknown time zone" in profile.text
        offered = re.findall(r'<option value="([^"]+)"></option>', profile.text)
        assert "UTC" in offered
        assert "Europe/Berlin" in offered
        assert zone not in offered
    async with transaction(runtime.sessionmaker) as session:
        assert (await users.get(session=session, user_id=user.id)).timezone == "Europe/Berlin"
        rows, _more = await instructions.list_page(session=session, user=user, status=None,
                                                   cursor=None, limit=10)
        assert rows == []


def _zone_field(page: str, field_id: str) -> tuple[str, list[str]]:
    """The time zone field's value and the zones its list offers."""
    field = re.search(rf'<input id="{field_id}" name="timezone" value="([^"]*)" '
                      r'list="([\w-]+)"', page)
    assert field, f"no time zone field with a list of zones: {field_id}"
    offered = re.search(rf'<datalist id="{field[2]}">(.*?)</datalist>', page, re.S)
    assert offered, "the field's list is not on the page"
    return unescape(field[1]), re.findall(r'<option value="([^"]+)"></option>', offered[1])


async def test_a_time_zone_is_chosen_from_the_zones_and_kept_as_typed_when_refused(
    runtime: Runtime,
) -> None:
    """The editor's time zone was free text (Settings offered the list), and Settings
    refused with the form put back as saved: the zone and cap just typed were gone."""
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        for path, field_id in (("/instructions/new", "timezone"),
                               ("/settings", "profile-timezone")):
            value, offered = _zone_field((await client.get(path)).text, field_id)
            assert value == "Europe/Berlin", path
            assert {"UTC", "Europe/Berlin", "America/New_York"} <= set(offered), path
            assert "Mars/Base" not in offered, path
            assert len(offered) > 300, path
        refused = await client.post("/settings/profile", data={
            "csrf_token": csrf, "timezone": "Mars/Base", "daily_cost_cap_usd": "7.5"})
        assert refused.status_code == 422
        assert ('<p class="problem" role="alert" id="profile-error">Time zone: unknown time '
                "zone &#39;Mars/Base&#39;</p>") in refused.text
        assert _zone_field(refused.text, "profile-timezone")[0] == "Mars/Base"
        assert re.search(r'id="profile-timezone"[^>]* aria-describedby="profile-timezone-hint '
                         r'profile-error" aria-invalid="true"', refused.text)
        assert re.search(r'name="daily_cost_cap_usd"[^>]* value="7.5"', refused.text)
        refused = await client.post("/settings/profile", data={
            "csrf_token": csrf, "timezone": "Asia/Tokyo", "daily_cost_cap_usd": "lots"})
        assert refused.status_code == 422
        assert "Daily cost cap: must be a number of US dollars" in refused.text
        assert _zone_field(refused.text, "profile-timezone")[0] == "Asia/Tokyo"
        assert re.search(r'name="daily_cost_cap_usd"[^>]* value="lots"', refused.text)
        editor = await client.post("/instructions", data={
            "csrf_token": csrf, "title": "Mail", "text": "Tell me what came.",
            "trigger_type": "cron", "cron": "0 8 * * *", "timezone": "Mars/Base",
            "sources": "gmail", "channels": "in_app"})
        assert editor.status_code == 422
        assert "Time zone: unknown time zone &#39;Mars/Base&#39;" in editor.text
        assert _zone_field(editor.text, "timezone")[0] == "Mars/Base"
    async with transaction(runtime.sessionmaker) as session:
        kept = await users.get(session=session, user_id=user.id)
        assert (kept.timezone, kept.daily_cost_cap_usd) == ("Europe/Berlin", 1.0)


@pytest.mark.parametrize("cron", ["0 8 * * 07", "0 8 * * 0007", "0 8 * * \u0667"])
async def test_the_editor_refuses_a_cron_it_cannot_put_in_words(
    runtime: Runtime, cron: str
) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        preview = await client.get("/instructions/schedule", params={
            "trigger_type": "cron", "cron": cron, "timezone": "UTC"})
        assert preview.status_code == 422, preview.text
        assert "invalid cron expression" in preview.json()["detail"]
        saved = await client.post("/instructions", data={
            "csrf_token": csrf, "title": "Mail", "text": "Tell me what came.",
            "trigger_type": "cron", "cron": cron, "timezone": "UTC", "sources": "gmail",
            "channels": "in_app"})
        assert saved.status_code == 422, saved.text
        assert "invalid cron expression" in saved.text
        assert (await client.get("/")).status_code == 200
    async with transaction(runtime.sessionmaker) as session:
        rows, _more = await instructions.list_page(session=session, user=user, status=None,
                                                   cursor=None, limit=10)
        assert rows == []


async def test_the_list_shows_a_stored_cron_it_cannot_put_in_words(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    stored = await factories.instruction(runtime, user)
    async with transaction(runtime.sessionmaker) as session:
        row = await instructions.get(session=session, user=user, instruction_id=stored.id)
        row.trigger = {"type": "cron", "cron": "0 8 * * 07", "timezone": "UTC"}
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        listing = await client.get("/")
        assert listing.status_code == 200, listing.text
        assert "0 8 * * 07" in listing.text
        editor = await client.get(f"/instructions/{stored.id}")
        assert editor.status_code == 200, editor.text


@pytest.mark.parametrize("path", ["/runs", "/", "/feed"])
@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+05:00"])
async def test_the_paged_lists_refuse_a_cursor_out_of_range(
    runtime: Runtime, stamp: str, path: str
) -> None:
    user, _ = await factories.user_with_token(runtime)
    cursor = base64.urlsafe_b64encode(f"{stamp}|{uuid.uuid4()}".encode()).decode().rstrip("=")
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        response = await client.get(path, params={"cursor": cursor},
                                    headers={"Accept": "text/html"})
        assert response.status_code == 422, response.text
        assert "invalid page cursor" in response.text


NOT_MINUTES = "interval must be a number of minutes"


@pytest.mark.parametrize(("minutes", "said"), [
    *((m, NOT_MINUTES) for m in ["inf", "1e999", "-inf", "nan", "soon"]),
    # Said in seconds, the API's unit: "seconds: Input should be greater than or equal to 60".
    ("0.5", "Minutes between runs: must be at least 1 minute"),
    ("600000", "Minutes between runs: must be at most 527040 minutes"),
])
async def test_the_editor_needs_an_interval_in_minutes(
    runtime: Runtime, minutes: str, said: str
) -> None:
    user, _ = await factories.user_with_token(runtime)
    stored = await factories.instruction(runtime, user)
    form = {"title": "Mail", "text": "Tell me what came.", "trigger_type": "interval",
            "interval_minutes": minutes, "sources": "gmail", "channels": "in_app"}
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        preview = await client.get("/instructions/schedule", params={
            "trigger_type": "interval", "interval_minutes": minutes})
        assert preview.status_code == 422, preview.text
        assert preview.json()["error"] == "InvalidSchedule"
        assert said in preview.json()["detail"]
        for path in ("/instructions", f"/instructions/{stored.id}"):
            refused = await client.post(path, data={"csrf_token": csrf, **form})
            assert refused.status_code == 422, (path, refused.text)
            assert said in refused.text
            assert "seconds" not in refused.text
    async with transaction(runtime.sessionmaker) as session:
        rows, _more = await instructions.list_page(session=session, user=user, status=None,
                                                   cursor=None, limit=10)
        assert [(r.id, r.title, r.trigger) for r in rows] == [
            (stored.id, stored.title, stored.trigger)]


async def test_draft_then_save_through_the_forms(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        drafted = await client.post("/instructions/draft", data={
            "csrf_token": csrf, "sentence": "every weekday at 8 tell me what my team sent"})
        assert drafted.status_code == 200
        assert "Proposed:" in drafted.text
        assert 'value="0 8 * * 1-5"' in drafted.text
        refused = await client.post("/instructions/draft", data={
            "csrf_token": csrf, "sentence": "hello there"})
        assert refused.status_code == 422
        assert "Could not read" in refused.text
        invalid = await client.post("/instructions", data={
            "csrf_token": csrf, "title": "", "text": "x", "trigger_type": "cron",
            "cron": "0 8 * * *", "timezone": "Europe/Berlin", "sources": "gmail",
            "channels": "in_app"})
        assert invalid.status_code == 422
        assert "title" in invalid.text
        saved = await client.post("/instructions", data={
            "csrf_token": csrf, "title": "Team mail", "text": "Tell me what my team sent.",
            "trigger_type": "interval", "interval_minutes": "120", "sources": "gmail",
            "channels": "in_app", "thinking_level": "low", "only_new": "on"})
        assert saved.status_code == 303
        listing = (await client.get("/")).text
        assert "Team mail" in listing
        assert "Every 2 hours" in listing


async def test_saving_an_instruction_or_the_profile_says_it_was_saved(runtime: Runtime) -> None:
    """Both led back to a page that looked as before: nothing said the save had worked."""
    user, _ = await factories.user_with_token(runtime)
    other, _ = await factories.user_with_token(runtime)
    theirs = await factories.instruction(runtime, other, title="Their digest")
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        form = {"csrf_token": csrf, "title": "Team <b>mail</b>", "text": "What my team sent.",
                "trigger_type": "interval", "interval_minutes": "120", "sources": "gmail",
                "channels": "in_app"}
        created = await client.post("/instructions", data=form)
        assert created.status_code == 303
        listing = await client.get(created.headers["location"])
        assert '<p class="notice" role="status">Saved “Team &lt;b&gt;mail&lt;/b&gt;”.</p>' \
            in listing.text
        edited = await client.post(created.headers["location"].replace("/?saved=",
                                                                       "/instructions/"),
                                   data=form | {"title": "Team mail"})
        assert edited.status_code == 303
        assert "Saved “Team mail”." in (await client.get(edited.headers["location"])).text
        for quiet in ("/", f"/?saved={theirs.id}", "/?saved=nonsense"):
            listing = await client.get(quiet)
            assert listing.status_code == 200, quiet
            assert "Saved" not in listing.text, quiet
        saved = await client.post("/settings/profile", data={
            "csrf_token": csrf, "timezone": "Asia/Tokyo", "daily_cost_cap_usd": "2.5",
            "move_instructions": "on"})
        assert saved.status_code == 303
        profile = await client.get(saved.headers["location"])
        assert "Saved: your time zone is Asia/Tokyo, your daily cost cap $2.50." in profile.text
        assert "Saved:" not in (await client.get("/settings")).text


async def test_pausing_or_resuming_an_instruction_says_so(runtime: Runtime) -> None:
    """Pause and Resume came back to the list with no word of what happened, where saving
    and deleting say "Saved …" and "Deleted …". The notice holds only while it is true."""
    user, _ = await factories.user_with_token(runtime)
    made = await factories.instruction(runtime, user, title="Team <b>mail</b>")
    other, _ = await factories.user_with_token(runtime)
    theirs = await factories.instruction(runtime, other, title="Their mail")
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        paused = await client.post(f"/instructions/{made.id}/pause", data={"csrf_token": csrf})
        assert paused.status_code == 303
        after_pause = paused.headers["location"]
        listing = await client.get(after_pause)
        assert ('<p class="notice" role="status">Paused “Team &lt;b&gt;mail&lt;/b&gt;”: its '
                "schedule and watches start no run until you resume it") in listing.text
        assert "Resumed" not in listing.text
        resumed = await client.post(f"/instructions/{made.id}/resume",
                                    data={"csrf_token": csrf})
        assert resumed.status_code == 303
        listing = await client.get(resumed.headers["location"])
        assert ('<p class="notice" role="status">Resumed “Team &lt;b&gt;mail&lt;/b&gt;”: its '
                "schedule and watches start runs again.</p>") in listing.text
        assert "Paused “" not in listing.text
        # The address after the pause, reloaded or bookmarked now that it runs again, another
        # user's instruction or a mangled id: nothing said.
        for quiet in (after_pause, f"/?paused={theirs.id}", f"/?resumed={theirs.id}",
                      "/?paused=nonsense", "/"):
            listing = await client.get(quiet)
            assert listing.status_code == 200, quiet
            assert "Paused “" not in listing.text, quiet
            assert "Resumed “" not in listing.text, quiet


async def test_a_drafted_day_of_the_task_is_not_in_the_schedule_shown_or_saved(
    runtime: Runtime,
) -> None:
    """"every morning at 8 list Friday's meetings" was drafted, shown and saved as Fridays
    only: the task's day was read as the schedule's."""
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        drafted = await client.post("/instructions/draft", data={
            "csrf_token": csrf, "sentence": "every morning at 8 list Friday's meetings"})
        assert drafted.status_code == 200, drafted.text
        fields = dict(re.findall(r'name="(cron|timezone|title)" value="([^"]*)"', drafted.text))
        assert fields["cron"] == "0 8 * * *"
        assert '<output id="schedule-readable"' in drafted.text
        assert "At 08:00 (Europe/Berlin)</output>" in drafted.text
        shown = (await client.get("/instructions/schedule", params={
            "trigger_type": "cron", "cron": fields["cron"], "timezone": fields["timezone"],
        })).json()["next"]
        assert len({day.split()[0] for day in shown}) == 3  # three days in a row, not Fridays
        assert all(day.endswith(" 08:00") for day in shown)
        saved = await client.post("/instructions", data={
            "csrf_token": csrf, "title": fields["title"],
            "text": "Every morning at 8 list Friday's meetings.", "trigger_type": "cron",
            "cron": fields["cron"], "timezone": fields["timezone"], "sources": "gmail",
            "channels": "in_app", "thinking_level": "medium", "only_new": "on"})
        assert saved.status_code == 303, saved.text
    async with runtime.sessionmaker() as session:
        rows, _more = await instructions.list_page(session=session, user=user, status=None,
                                                   cursor=None, limit=10)
    (row,) = rows
    assert row.trigger == {"type": "cron", "cron": "0 8 * * *", "timezone": "Europe/Berlin"}
    assert when(row.next_run_at, user.timezone) in shown


@pytest.mark.parametrize(("sentence", "reason"), [
    pytest.param("every 1" + "0" * 320 + " minutes summarize my mail", "up to a year",
                 id="interval-overflows"),
    pytest.param("when mail from " + "a" * 600 + "@x.com arrives tell me",
                 "the mail to watch for", id="query-too-long"),
    pytest.param("every day at 8 tell me\u0000 my mail", "must not contain NUL", id="nul"),
    pytest.param("   ", "must not be blank", id="blank"),
])
async def test_the_editor_says_what_a_draft_could_not_read(
    runtime: Runtime, sentence: str, reason: str
) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        refused = await client.post("/instructions/draft", data={
            "csrf_token": csrf, "sentence": sentence})
        assert refused.status_code == 422, refused.text
        assert reason in refused.text
        assert "Proposed:" not in refused.text


async def test_a_drafted_watch_fills_the_editors_watch_fields(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)  # no connected Google account
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        drafted = await client.post("/instructions/draft", data={
            "csrf_token": csrf, "sentence": "whenever an invoice arrives tell me at once"})
        assert drafted.status_code == 200, drafted.text
        assert "Proposed:" in drafted.text
        assert "one run for each new message" in drafted.text
        assert 'value="watch" checked' in drafted.text
        assert 'value="subject:invoice OR invoice"' in drafted.text
        assert 'value="New invoices"' in drafted.text
        assert "When new mail matches &#39;subject:invoice OR invoice&#39;" in drafted.text
        folder = await client.post("/instructions/draft", data={
            "csrf_token": csrf, "sentence": "whenever a document in folder Contracts changes"})
        assert folder.status_code == 422
        assert "drive_folder_id" in folder.text
        # Saved as drafted, without a Google account: the form says what to connect.
        saved = await client.post("/instructions", data={
            "csrf_token": csrf, "title": "New invoices",
            "text": "Whenever an invoice arrives tell me at once.", "trigger_type": "watch",
            "gmail_query": "subject:invoice OR invoice", "sources": "gmail",
            "channels": "in_app", "thinking_level": "medium", "only_new": "on"})
        assert saved.status_code == 422
        assert "needs a connected Google account" in saved.text


async def test_the_editor_says_to_connect_google_when_there_is_nothing_to_read(
    runtime: Runtime,
) -> None:
    """Saved by a user with no account a run could read: the form comes back with what was
    typed and what to do, and nothing is created."""
    user, _ = await factories.user_with_token(runtime, sample=False)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        saved = await client.post("/instructions", data={
            "csrf_token": csrf, "title": "Team digest", "text": "Digest my team's mail.",
            "trigger_type": "cron", "cron": "0 8 * * 1-5", "timezone": "Europe/Berlin",
            "sources": "gmail", "channels": "in_app", "thinking_level": "medium"})
        assert saved.status_code == 422
        assert "nothing to read" in saved.text
        assert "Connect Google" in saved.text
        assert 'value="Team digest"' in saved.text
    async with transaction(runtime.sessionmaker) as session:
        assert (await session.execute(select(Instruction))).scalars().all() == []


@pytest.mark.parametrize("page", ["/", "/runs", "/questions", "/feed", "/settings",
                                  "/instructions/new", "/login"])
async def test_every_page_renders(runtime: Runtime, page: str) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    await question_for(runtime, user, instruction.id)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        response = await client.get(page)
        assert response.status_code == 200, response.text
        assert '<main id="main"' in response.text
        assert isinstance(response, httpx.Response)


async def test_instructions_typed_as_an_address_lead_to_the_list(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    await factories.instruction(runtime, user, title="Morning mail")
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        moved = await client.get("/instructions?cursor=abc")
        assert moved.status_code == 303
        assert moved.headers["location"] == "/?cursor=abc"
        listed = await client.get("/instructions", follow_redirects=True)
        assert listed.status_code == 200
        assert "Morning mail" in listed.text


async def _triggers(runtime: Runtime, user: User) -> dict[str, tuple[dict[str, Any], Any]]:
    async with transaction(runtime.sessionmaker) as session:
        rows, _more = await instructions.list_page(session=session, user=user, status=None,
                                                   cursor=None, limit=10)
        return {i.title: (i.trigger, i.next_run_at) for i in rows}


async def test_a_new_time_zone_moves_the_instructions_that_ran_in_the_old_one(
    runtime: Runtime,
) -> None:
    """Moving from Berlin to Tokyo: "every day at 8" runs at 08:00 in Tokyo from now on
    (paused or not); one named for New York stays in New York; unticked, nothing moves.
    A form with a bad cap changes nothing at all."""
    user, _ = await factories.user_with_token(runtime)  # Europe/Berlin
    for title, zone in (("Berlin", "Europe/Berlin"), ("New York", "America/New_York"),
                        ("Paused", "Europe/Berlin")):
        made = await factories.instruction(runtime, user, title=title, trigger={
            "type": "cron", "cron": "0 8 * * *", "timezone": zone})
        if title == "Paused":
            async with transaction(runtime.sessionmaker) as session:
                await instructions.set_paused(session=session, user=user,
                                              instruction_id=made.id, paused=True)
    await factories.instruction(runtime, user, title="Hourly",
                                trigger={"type": "interval", "seconds": 3600})
    before = await _triggers(runtime, user)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        page = await client.get("/settings")
        assert re.search(r'name="move_instructions" value="on" checked> Scheduled '
                         r'instructions in Europe/Berlin move with it', page.text)
        refused = await client.post("/settings/profile", data={
            "csrf_token": csrf, "timezone": "Asia/Tokyo", "daily_cost_cap_usd": "-1",
            "move_instructions": "on"})
        assert refused.status_code == 422
        assert await _triggers(runtime, user) == before
        saved = await client.post("/settings/profile", data={
            "csrf_token": csrf, "timezone": "Asia/Tokyo", "move_instructions": "on"})
        assert saved.status_code == 303
    after = await _triggers(runtime, user)
    assert after["Berlin"][0]["timezone"] == after["Paused"][0]["timezone"] == "Asia/Tokyo"
    assert after["Berlin"][1] is not None
    assert after["Berlin"][1].astimezone(ZoneInfo("Asia/Tokyo")).hour == 8
    assert after["Paused"][1] is None
    assert after["New York"] == before["New York"]
    assert after["Hourly"] == before["Hourly"]

    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        saved = await client.post("/settings/profile", data={
            "csrf_token": csrf, "timezone": "UTC"})  # the box unticked
        assert saved.status_code == 303
    assert await _triggers(runtime, user) == after
    async with transaction(runtime.sessionmaker) as session:
        assert (await users.get(session=session, user_id=user.id)).timezone == "UTC"


async def test_settings_forms_change_the_profile_and_show_a_webhook_secret_once(
    runtime: Runtime,
) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        saved = await client.post("/settings/profile", data={
            "csrf_token": csrf, "timezone": "Asia/Tokyo", "daily_cost_cap_usd": "2.5"})
        assert saved.status_code == 303
        for bad in ({"timezone": "Mars/Base"}, {"daily_cost_cap_usd": "-1"},
                    {"daily_cost_cap_usd": "lots"}):
            refused = await client.post("/settings/profile", data={"csrf_token": csrf, **bad})
            assert refused.status_code == 422, bad
        created = await client.post("/settings/webhooks", data={
            "csrf_token": csrf, "url": "http://127.0.0.1:9/hooks", "event_types": "digest.created"})
        assert created.status_code == 303
        shown = await client.get(created.headers["location"])
        secret = re.search(r'<code id="new-webhook-secret">(whsec_[^<]+)</code>', shown.text)
        assert secret
        later = await client.get("/settings")
        # Its URL masked: an incoming webhook's path is its credential.
        assert "http://127.0.0.1:9/\u2026" in later.text
        assert "127.0.0.1:9/hooks" not in later.text
        assert secret[1] not in later.text
        assert "whsec_" not in later.text
        bad_url = await client.post("/settings/webhooks", data={
            "csrf_token": csrf, "url": "ftp://example.com/x", "event_types": "digest.created"})
        assert bad_url.status_code == 422
    async with transaction(runtime.sessionmaker) as session:
        changed = await users.get(session=session, user_id=user.id)
        assert changed.timezone == "Asia/Tokyo"
        assert changed.daily_cost_cap_usd == 2.5


async def test_every_settings_form_comes_back_to_its_own_section(runtime: Runtime) -> None:
    """Creating a token (shown only once), adding a webhook (its secret, or what was wrong)
    and saving the time zone answered with the page at its top: what happened was in a
    section below the fold, and a token could be left behind unseen."""
    user, _ = await factories.user_with_token(runtime)
    async with transaction(runtime.sessionmaker) as session:
        await webhooks.create(session=session, user=user, settings=runtime.settings,
                              data=WebhookCreate(url="http://127.0.0.1:9/hooks"))
        await push_service.subscribe(
            session=session, user=user, settings=runtime.settings,
            data=PushSubscriptionCreate.model_validate(
                {"endpoint": "http://127.0.0.1:9/push", "keys": {"p256dh": P256DH, "auth": AUTH}}))
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        settings = (await client.get("/settings")).text
    sections = re.findall(r'<section class="card" id="(\w+)"(.*?)</section>', settings, re.S)
    actions = [(section, action) for section, body in sections
               for action in re.findall(r'<form method="post" action="([^"]+)"', body)]
    assert len(actions) == 7, actions  # the push, webhook, token and profile forms
    for section, action in actions:
        assert action.endswith(f"#{section}"), (section, action)


async def test_a_token_name_with_nul_is_refused(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        refused = await client.post("/settings/tokens", data={
            "csrf_token": csrf, "name": "a\u0000b"}, headers={"Accept": "text/html"})
        assert refused.status_code == 422, refused.text
        assert "must not contain NUL" in refused.text
    async with transaction(runtime.sessionmaker) as session:
        assert len(await users.list_tokens(session=session, user=user)) == 1  # the fixture's


async def test_pages_name_their_icon_so_browsers_do_not_ask_for_a_missing_one(
    runtime: Runtime,
) -> None:
    """Browsers asked for /favicon.ico, a 404 and a console error on every first load."""
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        assert '<link rel="icon" href="/static/favicon.svg"' in (await client.get("/")).text
        icon = await client.get("/static/favicon.svg")
        assert icon.status_code == 200
        assert icon.headers["content-type"].startswith("image/svg+xml")


async def test_the_service_worker_is_served_from_the_root(runtime: Runtime) -> None:
    async with browser(runtime) as client:
        response = await client.get("/sw.js")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/javascript")
        assert response.headers["service-worker-allowed"] == "/"
        assert "notificationclick" in response.text
        assert "X-CSRF-Token" in response.text  # answers go through the app with the token


async def test_a_finished_run_without_steps_says_no_model_was_called(runtime: Runtime) -> None:
    """A skipped run's page said "Model pilotlight-offline" and "No steps yet", as if the
    model had been asked and its trace were still to come."""
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    async with transaction(runtime.sessionmaker) as session:
        run = Run(user_id=user.id, instruction_id=instruction.id, reason="schedule",
                  scheduled_for=utcnow(), status="skipped", model="pilotlight-offline",
                  finished_at=utcnow())
        session.add(run)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        html = (await client.get(f"/runs/{run.id}")).text
    assert "<dt>Model</dt><dd>none called</dd>" in html
    assert "No steps: this run made no model turn and no tool call." in html
    assert "pilotlight-offline" not in html


async def test_a_cancelled_questions_page_offers_the_later_run_that_asked_it_again(
    runtime: Runtime,
) -> None:
    """A push notification or the feed opens the question the user was told of. Once
    its run was cancelled, the page said it was closed, while the same question, asked
    again by a later run (merged, so not told), waited for an answer."""
    user, headers = await factories.user_with_token(runtime)
    made = await factories.instruction(runtime, user)
    first_run, first = await question_for(runtime, user, made.id)
    later_run, later = await question_for(runtime, user, made.id)
    async with browser(runtime) as client:
        cancelled = await client.post(f"/api/v1/runs/{first_run}/cancel", headers=headers)
        assert cancelled.status_code == 200, cancelled.text
        await sign_in(runtime, client, user)
        html = (await client.get(f"/questions/{first}")).text
        assert f'action="/questions/{later}/answer"' in html
        assert f'action="/questions/{first}/answer"' not in html
    assert later_run != first_run


async def test_a_blank_answer_is_said_under_the_question_still_open(runtime: Runtime) -> None:
    """An answer of spaces (the field's `required` lets them through) led to an error
    page, "That did not work", whose only way on was back to the instructions."""
    user, _ = await factories.user_with_token(runtime)
    made = await factories.instruction(runtime, user)
    _run, question = await question_for(runtime, user, made.id, text="Which <b>project</b>?")
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        refused = await client.post(f"/questions/{question}/answer",
                                    data={"csrf_token": csrf, "answer": "   "})
        assert refused.status_code == 422, refused.text
        html = refused.text
        assert "Which &lt;b&gt;project&lt;/b&gt;?" in html
        assert (f'<p id="answer-error-{question}" class="problem" role="alert">Write an answer:'
                " 1 to 2000 characters of plain text, or choose one of the choices.</p>") in html
        assert f'aria-invalid="true" aria-describedby="answer-error-{question}"' in html
        assert f'action="/questions/{question}/answer"' in html
        answered = await client.post(f"/questions/{question}/answer",
                                     data={"csrf_token": csrf, "answer": "Apollo"})
        assert answered.status_code == 303, answered.text
        listing = (await client.get("/questions")).text
        assert "No open questions" in listing
        assert "Write an answer" not in listing


async def test_after_an_answer_the_run_says_what_was_answered_and_only_that(
    runtime: Runtime,
) -> None:
    """An answer led to `/runs/{id}?answered=1`, which the run's page ignored: nothing said
    the answer was taken. The address names the question, and the page says what was
    answered for as long as it is so; `answered=1` or another question says nothing."""
    user, _ = await factories.user_with_token(runtime)
    made = await factories.instruction(runtime, user)
    run_id, question = await question_for(runtime, user, made.id)
    other_run, still_open = await question_for(runtime, user, made.id, text="Which <b>team</b>?")
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        answered = await client.post(f"/questions/{question}/answer",
                                     data={"csrf_token": csrf, "answer": "Apollo <b>2</b>"})
        assert answered.status_code == 303, answered.text
        location = answered.headers["location"]
        assert location == f"/runs/{run_id}?answered={question}"
        for _ in range(2):  # the redirect, then a reload
            shown = await client.get(location)
            assert shown.status_code == 200
            assert ('<p class="notice" role="status" id="answered">You answered '
                    "“Apollo &lt;b&gt;2&lt;/b&gt;” on ") in shown.text
            assert "the run goes on with your answer." in shown.text
        for quiet in (f"/runs/{run_id}?answered=1", f"/runs/{run_id}?answered={still_open}",
                      f"/runs/{other_run}?answered={question}",
                      f"/runs/{other_run}?answered={still_open}", f"/runs/{run_id}"):
            page = await client.get(quiet)
            assert page.status_code == 200, quiet
            assert "You answered" not in page.text, quiet


async def test_the_webhook_form_keeps_what_was_typed_and_an_off_webhook_can_be_turned_on(
    runtime: Runtime,
) -> None:
    """A refused URL came back with the URL cleared and every event ticked again; a
    webhook a 410 had turned off could only be deleted here (the feed said to PATCH it)."""
    user, _ = await factories.user_with_token(runtime)
    async with transaction(runtime.sessionmaker) as session:
        webhook, _secret = await webhooks.create(
            session=session, user=user, settings=runtime.settings,
            data=WebhookCreate(url="http://127.0.0.1:9/gone", enabled=False))
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        refused = await client.post("/settings/webhooks", data={
            "csrf_token": csrf, "url": "ftp://127.0.0.1/hook", "event_types": "alert.created"})
        assert refused.status_code == 422
        assert 'value="ftp://127.0.0.1/hook"' in refused.text
        ticked = re.findall(r'name="event_types" value="([\w.]+)" checked', refused.text)
        assert ticked == ["alert.created"]
        fresh = (await client.get("/settings")).text
        assert len(re.findall(r'name="event_types" value="[\w.]+" checked', fresh)) == 4

        assert "Turn on webhook http://127.0.0.1:9/\u2026" in fresh
        turned = await client.post(f"/settings/webhooks/{webhook.id}/enable",
                                   data={"csrf_token": csrf})
        assert turned.status_code == 303
        assert "Turn on webhook" not in (await client.get("/settings")).text
    async with transaction(runtime.sessionmaker) as session:
        assert (await webhooks.get(session=session, user=user, webhook_id=webhook.id)).enabled


async def test_a_webhook_is_given_a_new_secret_shown_once(runtime: Runtime) -> None:
    """A leaked secret could only be replaced by deleting the webhook and adding it again."""
    user, _ = await factories.user_with_token(runtime)
    async with transaction(runtime.sessionmaker) as session:
        webhook, old = await webhooks.create(
            session=session, user=user, settings=runtime.settings,
            data=WebhookCreate(url="http://127.0.0.1:9/hooks"))
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        assert "New signing secret for webhook http://127.0.0.1:9/\u2026" in (
            await client.get("/settings")).text
        rotated = await client.post(f"/settings/webhooks/{webhook.id}/secret",
                                    data={"csrf_token": csrf})
        assert rotated.status_code == 303, rotated.text
        shown = await client.get(rotated.headers["location"])
        secret = re.search(r'<code id="new-webhook-secret">(whsec_[^<]+)</code>', shown.text)
        assert secret
        assert secret[1] != old
        assert "each request is signed with the secret before it too" in shown.text
        assert "whsec_" not in (await client.get("/settings")).text
        refused = await client.post(f"/settings/webhooks/{webhook.id}/secret", data={})
        assert refused.status_code == 403  # no CSRF token
    async with transaction(runtime.sessionmaker) as session:
        found = await webhooks.get(session=session, user=user, webhook_id=webhook.id)
        assert webhooks.secret_of(found, secret_box(runtime.settings)) == secret[1]


async def test_two_webhooks_on_one_host_are_told_apart_on_the_page_and_their_buttons(
    runtime: Runtime,
) -> None:
    """With the URL masked to its host, two webhooks there with the same events read the
    same, and their buttons' labels ("Delete webhook http://127.0.0.1:9/…") were one."""
    user, _ = await factories.user_with_token(runtime)
    async with transaction(runtime.sessionmaker) as session:
        first, _ = await webhooks.create(
            session=session, user=user, settings=runtime.settings,
            data=WebhookCreate(url="http://127.0.0.1:9/hooks/one", enabled=False))
        second, _ = await webhooks.create(
            session=session, user=user, settings=runtime.settings,
            data=WebhookCreate(url="http://127.0.0.1:9/hooks/two", enabled=False))
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        html = (await client.get("/settings")).text
    items = re.findall(r"<li>\s*<span class=\"endpoint\">.*?</li>", html, re.S)
    assert len(items) == 2
    assert items[0] != items[1]
    for action in ("Delete webhook", "New signing secret for webhook", "Turn on webhook"):
        labels = re.findall(rf'aria-label="({action} [^"]*)"', html)
        assert len(labels) == 2, (action, labels)
        assert labels[0] != labels[1], labels
        # Each names its own webhook by the start of its id, as the page beside it does.
        named = [re.findall(r"\(id ([0-9a-f]{8}), added ", label) for label in labels]
        assert sorted(sum(named, [])) == sorted([str(first.id)[:8], str(second.id)[:8]])
    for item in items:
        (short,) = re.findall(r"id <code>([0-9a-f]{8})</code>, added ", item)
        assert f"/settings/webhooks/{short}" in item  # the id of this item's own forms


async def test_settings_offer_to_connect_google_only_where_it_is_set_up(runtime: Runtime) -> None:
    """Without an OAuth client the button led to a page of raw JSON (409)."""
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        off = (await client.get("/settings")).text
        assert "Connect Google</a>" not in off
        assert "Google is not set up on this server" in off
    google = Runtime(runtime.settings.model_copy(update={
        "google_client_id": "client-1", "google_client_secret": SecretStr("secret-1")}),
        runtime.engine, runtime.sessionmaker, runtime.wakeups)
    async with browser(google) as client:
        await sign_in(google, client, user)
        on = (await client.get("/settings")).text
        assert 'href="/api/v1/google/connect">Connect Google</a>' in on
        assert "Google is not set up" not in on


async def test_a_next_run_in_another_zone_than_the_schedules_says_whose_time_it_is(
    runtime: Runtime,
) -> None:
    """"At 09:00 (Pacific/Chatham)" stood beside "Next run Wed 25 Nov 01:00" (Berlin)."""
    user, _ = await factories.user_with_token(runtime)
    await factories.instruction(runtime, user, title="Chatham", trigger={
        "type": "cron", "cron": "0 9 * * *", "timezone": "Pacific/Chatham"})
    await factories.instruction(runtime, user, title="Berlin")
    await factories.instruction(runtime, user, title="Hourly",
                                trigger={"type": "interval", "seconds": 3600})
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        html = (await client.get("/")).text
    chatham, berlin, hourly = (html[html.index(f">{title}</a>"):]
                               for title in ("Chatham", "Berlin", "Hourly"))
    assert "your time (Europe/Berlin)" in chatham[:chatham.index("Last result")]
    assert "your time" not in berlin[:berlin.index("Last result")]
    assert "your time" not in hourly[:hourly.index("Last result")]
