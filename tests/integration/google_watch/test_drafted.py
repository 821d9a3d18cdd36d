"""A watch drafted from a sentence, saved as proposed with a Google account, fires."""

from __future__ import annotations

import httpx

from app.core.runtime import Runtime
from tests.factories import user_with_token
from tests.fakes.google import FakeGoogle
from tests.integration.google_watch.conftest import (
    EMAIL,
    fired_ids,
    google_account,
    pdf,
    poller,
    watch_runs,
)

API = "/api/v1"


async def test_a_drafted_invoice_watch_is_saved_as_proposed_and_fires_for_an_invoice(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    drafted = await client.post(f"{API}/instructions/draft", headers=headers,
                                json={"text": "whenever an invoice arrives tell me at once"})
    assert drafted.status_code == 200, drafted.text
    created = await client.post(f"{API}/instructions", headers=headers,
                                json=drafted.json()["instruction"])
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["trigger"] == {"type": "watch", "gmail_query": "subject:invoice OR invoice"}
    assert body["schedule"] == drafted.json()["schedule"]
    assert body["next_run_at"] is None

    watch = poller(runtime)
    await watch.run_once()  # the first poll: nothing new yet
    invoice = fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 42",
                               attachments=pdf())
    fake.add_message(EMAIL, sender="bob@example.com", subject="Lunch?")
    report = await watch.poll_accounts([account.id])

    assert len(report.runs) == 1
    assert fired_ids(await watch_runs(runtime, body["id"])) == [invoice]
