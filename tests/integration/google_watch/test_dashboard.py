"""Watch triggers in the dashboard's editor: shown, previewed, saved, kept on edit."""

from __future__ import annotations

from sqlalchemy import select

from app.core.runtime import Runtime
from app.instructions.models import Instruction
from tests import factories
from tests.fakes.google import FakeGoogle
from tests.integration.google_watch.conftest import google_account
from tests.integration.web.helpers import browser, sign_in

QUERY = "from:billing@example.com has:attachment"


async def test_a_watch_is_previewed_saved_and_kept_when_edited_in_the_dashboard(
    runtime: Runtime, fake: FakeGoogle
) -> None:
    user, _ = await factories.user_with_token(runtime, sample=False)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        preview = await client.get("/instructions/schedule", params={
            "trigger_type": "watch", "gmail_query": QUERY})
        assert preview.json() == {"schedule": f"When new mail matches '{QUERY}'", "next": []}
        both = await client.get("/instructions/schedule", params={
            "trigger_type": "watch", "gmail_query": QUERY, "drive_folder_id": "f1"})
        assert both.status_code == 422
        assert "exactly one of gmail_query" in both.json()["detail"]

        form = {"csrf_token": csrf, "title": "Invoices", "text": "Tell me about each invoice.",
                "trigger_type": "watch", "gmail_query": QUERY, "sources": "gmail",
                "channels": "in_app", "thinking_level": "low", "only_new": "on"}
        refused = await client.post("/instructions", data=form)
        assert refused.status_code == 422
        assert "needs a connected Google account" in refused.text

        await google_account(runtime, user, fake)
        saved = await client.post("/instructions", data=form)
        assert saved.status_code == 303, saved.text
        async with runtime.sessionmaker() as session:
            instruction = (await session.execute(select(Instruction))).scalar_one()
        assert instruction.trigger == {"type": "watch", "gmail_query": QUERY}

        editor = (await client.get(f"/instructions/{instruction.id}")).text
        assert 'value="watch" checked' in editor
        assert f'value="{QUERY}"' in editor
        form["title"] = "Invoices, renamed"
        edited = await client.post(f"/instructions/{instruction.id}", data=form)
        assert edited.status_code == 303, edited.text
        async with runtime.sessionmaker() as session:
            instruction = (await session.execute(select(Instruction))).scalar_one()
        assert instruction.title == "Invoices, renamed"
        assert instruction.trigger == {"type": "watch", "gmail_query": QUERY}

        drive = {**form, "gmail_query": "", "drive_folder_id": "folder1"}
        switched = await client.post(f"/instructions/{instruction.id}", data=drive)
        assert switched.status_code == 303, switched.text
        async with runtime.sessionmaker() as session:
            instruction = (await session.execute(select(Instruction))).scalar_one()
        assert instruction.trigger == {"type": "watch", "drive_folder_id": "folder1"}
