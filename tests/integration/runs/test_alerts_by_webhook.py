"""An instruction's immediate alert (`notify_now`) reaches the webhook its channels name.

The whole path: the real google-genai SDK against the fake Interactions API, a worker
running the instruction, the outbox sender, and a receiver on 127.0.0.1 that verifies
the Standard Webhooks signature.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.channels import service as channels
from app.channels.schemas import WebhookCreate
from app.core.db import transaction
from app.core.runtime import Runtime
from app.delivery.sender import DeliverySender
from tests import factories
from tests.fakes.gemini import Calls, FakeGemini, Text
from tests.integration.delivery.receivers import WebhookReceiver, webhook_receiver
from tests.integration.runs.helpers import get_run, make_worker, notifications_of, work_once
from tests.integration.runs.test_questions_flow import DIGEST, gemini_for, point_at_fake
from tests.integration.runs.test_worker import run_now


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as started:
        yield started


async def test_tell_me_at_once_by_webhook_posts_the_alert(
    runtime: Runtime, fake: FakeGemini, receiver: WebhookReceiver
) -> None:
    """ "Tell me at once when an invoice arrives", by webhook: the alert is posted as
    alert.created (and the run's digest as digest.created), nothing fails."""
    point_at_fake(runtime.settings, fake)
    runtime.settings.secret_keys = [SecretStr(Fernet.generate_key().decode())]
    runtime.settings.webhook_allow_private = True  # the receiver listens on 127.0.0.1
    user, _ = await factories.user_with_token(runtime)
    async with transaction(runtime.sessionmaker) as session:
        _webhook, receiver.secret = await channels.create(
            session=session, user=user, data=WebhookCreate(url=receiver.url),
            settings=runtime.settings,
        )
    instruction = await factories.instruction(runtime, user, title="Invoices",
                                              channels=["in_app", "webhook"])
    fake.script(
        Calls([("notify_now", {"title": "Invoice INV-1187 arrived",
                               "message": "Skyline Cloud sent INV-1187, due Friday."})]),
        Text(json.dumps(DIGEST)),
    )
    run_id = await run_now(runtime, instruction)
    llm = gemini_for(runtime.settings)
    await work_once(make_worker(runtime, llm))
    await llm.aclose()
    assert (await get_run(runtime, run_id)).status == "succeeded"

    sender = DeliverySender(runtime=runtime)
    for _ in range(5):  # both are sent at the first try; later rounds find nothing
        await sender.run_once()

    posted = {r.json["type"]: r for r in receiver.received}
    assert sorted(posted) == ["alert.created", "digest.created"]
    alert = posted["alert.created"]
    assert alert.verified, alert.error
    assert (alert.json["data"]["title"], alert.json["data"]["body"]) == (
        "Invoices: Invoice INV-1187 arrived", "Skyline Cloud sent INV-1187, due Friday.")
    assert alert.json["data"]["run_id"] == str(run_id)
    kinds = sorted(n.kind for n in await notifications_of(runtime, user.id))
    assert kinds == ["alert", "digest"]  # and no "Could not deliver by webhook"
