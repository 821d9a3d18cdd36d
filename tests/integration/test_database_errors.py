"""A database error never carries what the statement was given: such errors are logged
(a failed run, a crashed delivery, a 500) and a failed run's error goes to its user's
feed, email and webhooks, while the values are mail text, capability URLs and tokens."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from app.channels.models import PushSubscription
from app.core.db import transaction
from app.core.runtime import Runtime
from tests.factories import user_with_token

ENDPOINT = "https://push.example.com/send/capability-of-one-browser"


async def test_a_failed_statement_does_not_show_its_values(runtime: Runtime) -> None:
    user, _headers = await user_with_token(runtime)
    async with transaction(runtime.sessionmaker) as session:
        session.add(PushSubscription(user_id=user.id, endpoint=ENDPOINT, p256dh="B" * 87,
                                     auth_encrypted=b"sealed-1"))
    with pytest.raises(IntegrityError) as failed:
        async with transaction(runtime.sessionmaker) as session:
            session.add(PushSubscription(user_id=user.id, endpoint=ENDPOINT,
                                         p256dh="secret-p256dh-value",
                                         auth_encrypted=b"sealed-2"))
    said = str(failed.value)
    assert "push_subscriptions" in said  # it still says what failed
    assert "capability-of-one-browser" not in said
    assert "secret-p256dh-value" not in said
