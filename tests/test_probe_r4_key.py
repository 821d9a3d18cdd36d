"""Probes (review-4): a Gemini key the service rejects (401/403)."""

from __future__ import annotations

from app.agent.llm import KeyRejected, TurnRequest, TurnResponse
from app.agent.offline import OfflineModel
from app.core.db import transaction
from app.core.runtime import Runtime
from app.instructions.models import Instruction
from tests import factories
from tests.integration.runs.helpers import get_run, make_worker, notifications_of, work_once
from tests.integration.runs.test_worker import run_now


class Rejected(OfflineModel):
    async def turn(self, request: TurnRequest) -> TurnResponse:
        raise KeyRejected("Gemini API key rejected: API key not valid.")


async def test_a_rejected_service_key_does_not_stop_users_instructions(runtime: Runtime) -> None:
    runtime.settings.worker_max_attempts = 1
    runtime.settings.worker_failures_before_error = 1
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["in_app", "email"])
    run_id = await run_now(runtime, instruction)
    await work_once(make_worker(runtime, Rejected()))
    run = await get_run(runtime, run_id)
    async with transaction(runtime.sessionmaker) as session:
        reloaded = await session.get(Instruction, instruction.id)
        assert reloaded is not None
    told = [(n.kind, n.title) for n in await notifications_of(runtime, user.id)]
    # Expected: the operator's key is broken, not the user's instruction: the run waits
    # (or fails) without counting against the instruction and without stopping it.
    assert reloaded.status == "active", (
        f"run {run.status} ({run.error}); instruction {reloaded.status}: "
        f"{reloaded.status_detail}; user told {told}"
    )
