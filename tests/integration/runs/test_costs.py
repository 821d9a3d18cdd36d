"""Costs: runs are priced, a day's spend is capped, usage is reported."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import event, select, text, update

from app.agent.llm import FunctionCall, LLMError, TurnRequest, TurnResponse, Usage
from app.agent.offline import OfflineModel
from app.agent.pricing import ModelPrice
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.instructions.models import Instruction
from app.questions import service as questions
from app.questions.models import Question
from app.runs import costs, queue
from app.runs import service as runs_service
from app.runs.models import Run
from app.runs.worker import Worker
from app.users.models import User
from tests import factories
from tests.integration.runs.helpers import (
    get_run,
    make_worker,
    notifications_of,
    steps_of,
    work_once,
)
from tests.integration.runs.test_worker import run_now

# Input tokens of one turn of the models below: $1.00 at the `dear` price ($10 a million).
DOLLAR = 100_000


def _dear(runtime: Runtime) -> Runtime:
    runtime.settings.gemini_prices["pilotlight-offline"] = ModelPrice(input=10.0, output=10.0)
    return runtime


class Searching(OfflineModel):
    """Turn by turn a search for more mail, each turn billed $1.00 (at the `dear` price);
    the turns listed in `failing` fail (an LLMError, as a 503 after its retries), and
    from turn `done_at` on it answers with a digest (billed 1000 input tokens)."""

    def __init__(self, failing: tuple[int, ...] = (), done_at: int = 0) -> None:
        super().__init__()
        self.turns = 0
        self.failing, self.done_at = failing, done_at

    async def turn(self, request: TurnRequest) -> TurnResponse:
        self.turns += 1
        if self.turns in self.failing:
            raise LLMError("Gemini API still failing after 5 attempts: 503")
        if self.done_at and self.turns >= self.done_at:
            return TurnResponse(
                interaction_id=f"i{self.turns}", usage=Usage(input_tokens=1000),
                text='{"summary": "Done.", "sections": []}',
            )
        return TurnResponse(
            interaction_id=f"i{self.turns}", usage=Usage(input_tokens=DOLLAR),
            function_calls=[FunctionCall(call_id=f"c{self.turns}", name="search_mail",
                                         arguments={"query": f"invoice {self.turns}"})],
        )


async def _spent_today(runtime: Runtime, user: User) -> float:
    async with transaction(runtime.sessionmaker) as session:
        owner = await session.get(User, user.id)
        assert owner is not None
        return await costs.spent_today(session=session, user=owner)


async def _cap(runtime: Runtime, user: User, usd: float) -> None:
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(User).where(User.id == user.id).values(
            daily_cost_cap_usd=usd))


async def _cost(runtime: Runtime, run_id: uuid.UUID, usd: float) -> None:
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(
            cost_usd=usd, charged_at=utcnow()))


async def _answer(runtime: Runtime, user: User, run_id: uuid.UUID, text: str) -> User:
    """The user answers the run's question; returns the user as the session read them."""
    async with transaction(runtime.sessionmaker) as session:
        question = (await session.execute(
            select(Question).where(Question.run_id == run_id))).scalar_one()
        owner = await session.get(User, user.id)
        assert owner is not None
        await questions.answer(session=session, user=owner, question_id=question.id,
                               text=text, wakeups=runtime.wakeups)
    return owner


@pytest.fixture
def priced(runtime: Runtime) -> Runtime:
    """The runtime with the offline model priced as if it were a paid one: a free model
    is never capped."""
    runtime.settings.gemini_prices["pilotlight-offline"] = ModelPrice(input=1.0, output=1.0)
    return runtime


async def test_a_cap_of_nothing_says_so_rather_than_that_a_run_costs_about_nothing(
    priced: Runtime,
) -> None:
    """Before, a cap of $0 skipped a run 'costing about $0.0000' (no run had a cost yet)."""
    runtime = priced
    user, _ = await factories.user_with_token(runtime)
    await _cap(runtime, user, 0.0)
    skipped = await run_now(runtime, await factories.instruction(runtime, user))
    await work_once(make_worker(runtime))
    run = await get_run(runtime, skipped)
    assert run.status == "skipped"
    assert run.error == "your daily cost cap is $0, which stops paid model turns"


async def test_a_run_that_would_pass_the_daily_cap_is_skipped_with_one_notice(
    priced: Runtime,
) -> None:
    runtime = priced
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    worker = make_worker(runtime)
    first = await run_now(runtime, instruction)
    await work_once(worker)
    assert (await get_run(runtime, first)).status == "succeeded"
    # That run cost 0.80 of the 1.00 cap; the next would cost about as much.
    await _cost(runtime, first, 0.80)

    for _ in range(2):
        skipped = await run_now(runtime, instruction)
        await work_once(worker)
        run = await get_run(runtime, skipped)
        assert run.status == "skipped"
        assert run.error is not None
        assert "daily cost cap of $1.00" in run.error
    alerts = [n for n in await notifications_of(runtime, user.id) if n.kind == "alert"]
    assert len(alerts) == 1  # told once a day, not once a run

    await _cap(runtime, user, 5.0)
    allowed = await run_now(runtime, instruction)
    await work_once(worker)
    assert (await get_run(runtime, allowed)).status in ("succeeded", "skipped")
    assert (await get_run(runtime, allowed)).error != run.error


async def _two_spent(runtime: Runtime, usd: float) -> tuple[Instruction, Instruction, Worker]:
    """One user's two instructions, each with a finished run that cost `usd`; a worker."""
    user, _ = await factories.user_with_token(runtime)
    morning = await factories.instruction(runtime, user)
    evening = await factories.instruction(runtime, user, title="Evening")
    worker = make_worker(runtime)
    for instruction in (morning, evening):
        done = await run_now(runtime, instruction)
        await work_once(worker)
        await _cost(runtime, done, usd)
    return morning, evening, worker


async def test_runs_of_one_user_starting_together_cannot_pass_the_cap_together(
    priced: Runtime,
) -> None:
    runtime = priced
    morning, evening, worker = await _two_spent(runtime, 0.30)
    # 0.60 spent of the 1.00 cap; each instruction's run costs about 0.30. Alone, either
    # run fits; claimed in one batch, the first counts against the cap for the second.
    both = [await run_now(runtime, morning), await run_now(runtime, evening)]
    assert await work_once(worker) == 2
    runs = [await get_run(runtime, run_id) for run_id in both]
    capped = [run for run in runs if "daily cost cap" in (run.error or "")]
    # The other ran its agent (skipped too, as a run with nothing new, or succeeded).
    assert len(capped) == 1
    assert capped[0].status == "skipped"
    assert "$0.90 spent today or held by runs at work" in (capped[0].error or "")


async def test_a_run_at_work_on_another_worker_holds_its_estimate_against_the_cap(
    priced: Runtime,
) -> None:
    runtime = priced
    morning, evening, worker = await _two_spent(runtime, 0.30)
    # 0.60 spent of the 1.00 cap. Another worker has started a run of `morning` (about
    # 0.30, not spent yet); a run of `evening` (about 0.30) would pass the cap with it.
    elsewhere = await run_now(runtime, morning)
    async with transaction(runtime.sessionmaker) as session:
        taken = await queue.claim(session=session, worker_id="elsewhere", limit=1,
                                  lease_seconds=60)
    assert [claim.run_id for claim in taken] == [elsewhere]
    capped = await run_now(runtime, evening)
    assert await work_once(worker) == 1
    run = await get_run(runtime, capped)
    assert run.status == "skipped"
    assert "$0.90 spent today or held by runs at work" in (run.error or "")

    # Once that run has finished, for less than its estimate, 0.65 is spent: 0.95 with a
    # run of `evening` fits.
    async with transaction(runtime.sessionmaker) as session:
        assert await queue.finish(session=session, claim=taken[0], status="succeeded",
                                  finished_at=utcnow(), agent_state=None)
    await _cost(runtime, elsewhere, 0.05)
    allowed = await run_now(runtime, evening)
    await work_once(worker)
    assert "daily cost cap" not in ((await get_run(runtime, allowed)).error or "")


async def test_a_run_at_work_holds_only_what_its_estimate_leaves_after_its_spend(
    priced: Runtime,
) -> None:
    """Its turns so far are on it, and in today's spend, as their steps are written:
    holding its whole estimate on top counted them twice against the cap."""
    runtime = priced
    morning, evening, worker = await _two_spent(runtime, 0.30)
    owner = await _owner(runtime, morning)
    await _cap(runtime, owner, 1.25)
    # 0.60 spent. Another worker's run of `morning` (about 0.30) has spent 0.25 so far:
    # 0.85 spent, and 0.05 held for it. A run of `evening` (about 0.30) fits in 1.25.
    elsewhere = await run_now(runtime, morning)
    async with transaction(runtime.sessionmaker) as session:
        taken = await queue.claim(session=session, worker_id="elsewhere", limit=1,
                                  lease_seconds=60)
    assert [claim.run_id for claim in taken] == [elsewhere]
    await _cost(runtime, elsewhere, 0.25)
    assert await _spent_today(runtime, owner) == pytest.approx(0.85)
    allowed = await run_now(runtime, evening)
    await work_once(worker)
    assert "daily cost cap" not in ((await get_run(runtime, allowed)).error or "")


async def _owner(runtime: Runtime, instruction: Instruction) -> User:
    async with transaction(runtime.sessionmaker) as session:
        owner = await session.get(User, instruction.user_id)
        assert owner is not None
        return owner


async def test_the_cap_check_of_a_batch_is_three_statements_whatever_its_size(
    priced: Runtime,
) -> None:
    runtime = priced
    queued = []
    for _ in range(4):
        user, _headers = await factories.user_with_token(runtime)
        queued.append(await run_now(runtime, await factories.instruction(runtime, user)))
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert await work_once(make_worker(runtime)) == 4
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", seen)
    assert [(await get_run(runtime, run_id)).status for run_id in queued] == ["succeeded"] * 4
    # One statement for the four users' spend, one for their runs at work, one for the
    # estimates of the instructions of both.
    assert sum("model_calls" in statement for statement in statements) == 1
    assert sum("runs.status = " in statement and "runs.id NOT IN" in statement
               for statement in statements) == 1
    assert sum("avg(" in statement.lower() for statement in statements) == 1


async def test_usage_by_day_and_instruction(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    user, headers = await factories.user_with_token(runtime)
    morning = await factories.instruction(runtime, user)
    evening = await factories.instruction(runtime, user, title="Evening")
    worker = make_worker(runtime)
    ids = [await run_now(runtime, morning), await run_now(runtime, evening)]
    await work_once(worker)
    await _cost(runtime, ids[0], 0.1)
    await _cost(runtime, ids[1], 0.2)

    body = (await client.get("/api/v1/usage?days=7", headers=headers)).json()
    assert body["timezone"] == "Europe/Berlin"
    assert len(body["days"]) == 7
    today = body["days"][-1]
    assert today["runs"] == 2
    assert today["cost_usd"] == 0.3  # not the float sum 0.30000000000000004
    assert today["input_tokens"] > 0
    assert [i["instruction_id"] for i in body["instructions"]] == [str(evening.id),
                                                                   str(morning.id)]
    assert body["total"]["cost_usd"] == 0.3
    assert (await client.get("/api/v1/usage?days=0", headers=headers)).status_code == 422
    _other, other_headers = await factories.user_with_token(runtime)
    theirs = (await client.get("/api/v1/usage", headers=other_headers)).json()
    assert theirs["total"]["runs"] == 0


async def test_what_a_failed_run_spent_is_on_the_run_and_counts_against_the_cap(
    runtime: Runtime,
) -> None:
    _dear(runtime)
    runtime.settings.worker_max_attempts = 1
    user, _ = await factories.user_with_token(runtime)
    await _cap(runtime, user, 5.0)
    run_id = await run_now(runtime, await factories.instruction(runtime, user))
    await work_once(make_worker(runtime, Searching(failing=(2,))))

    run = await get_run(runtime, run_id)
    assert run.status == "failed"
    assert sum(step.input_tokens for step in await steps_of(runtime, run_id)) == DOLLAR
    assert run.input_tokens == DOLLAR  # the turn before the failure was paid for
    assert run.cost_usd == pytest.approx(1.0)
    assert await _spent_today(runtime, user) == pytest.approx(1.0)


async def test_a_retried_run_adds_up_what_each_of_its_attempts_spent(runtime: Runtime) -> None:
    _dear(runtime)
    runtime.settings.worker_max_attempts = 2
    user, _ = await factories.user_with_token(runtime)
    await _cap(runtime, user, 5.0)
    run_id = await run_now(runtime, await factories.instruction(runtime, user))
    worker = make_worker(runtime, Searching(failing=(2,), done_at=4))
    await work_once(worker)  # turn 1 ($1.00), then turn 2 fails: queued again
    retried = await get_run(runtime, run_id)
    assert retried.status == "queued"
    assert retried.input_tokens == DOLLAR
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(
            available_at=utcnow()))
    await work_once(worker)  # turn 3 ($1.00), turn 4: the digest ($0.01)

    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error
    assert run.input_tokens == 2 * DOLLAR + 1000
    assert run.input_tokens == sum(s.input_tokens for s in await steps_of(runtime, run_id))
    assert run.cost_usd == pytest.approx(2.01)
    assert await _spent_today(runtime, user) == pytest.approx(2.01)


async def test_what_a_run_cancelled_while_at_work_spent_is_still_on_the_run(
    runtime: Runtime,
) -> None:
    _dear(runtime)
    user, _ = await factories.user_with_token(runtime)
    await _cap(runtime, user, 5.0)
    run_id = await run_now(runtime, await factories.instruction(runtime, user))

    class CancelledMeanwhile(Searching):
        """The user cancels the run while its second turn is being answered."""

        async def turn(self, request: TurnRequest) -> TurnResponse:
            if self.turns == 1:
                async with transaction(runtime.sessionmaker) as session:
                    owner = await session.get(User, user.id)
                    assert owner is not None
                    await runs_service.cancel(session=session, user=owner, run_id=run_id)
            return await super().turn(request)

    await work_once(make_worker(runtime, CancelledMeanwhile()))
    run = await get_run(runtime, run_id)
    assert run.status == "cancelled"
    # Both turns were paid for, the second one after the worker lost the run.
    assert run.input_tokens == 2 * DOLLAR
    assert run.cost_usd == pytest.approx(2.0)
    assert await _spent_today(runtime, user) == pytest.approx(2.0)


async def test_a_run_stops_where_the_daily_cap_is_reached_and_says_so(runtime: Runtime) -> None:
    _dear(runtime)
    user, _ = await factories.user_with_token(runtime)  # a cap of $1.00
    # A new instruction: no runs to estimate its cost from ($0.00), so the run starts.
    instruction = await factories.instruction(runtime, user, max_tool_calls=30)
    run_id = await run_now(runtime, instruction)
    model = Searching()  # would search on and on, at $1.00 a turn
    await work_once(make_worker(runtime, model))

    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error
    assert model.turns == 1  # the first turn spent what the cap left: no second one
    assert run.cost_usd == pytest.approx(1.0)
    assert run.result is not None
    assert any("daily cost cap was reached" in note for note in run.result["notes"])


async def test_a_run_may_spend_only_what_the_cap_leaves_after_the_days_spend(
    runtime: Runtime,
) -> None:
    _dear(runtime)
    user, _ = await factories.user_with_token(runtime)
    await _cap(runtime, user, 5.0)
    earlier = await run_now(runtime, await factories.instruction(runtime, user, title="Other"))
    await work_once(make_worker(runtime))
    await _cost(runtime, earlier, 2.5)  # $2.50 of $5.00 spent today by another instruction
    run_id = await run_now(runtime, await factories.instruction(runtime, user))
    model = Searching()
    await work_once(make_worker(runtime, model))
    run = await get_run(runtime, run_id)
    assert model.turns == 3  # $1.00, $2.00, $3.00: the third reached the $2.50 left
    assert run.cost_usd == pytest.approx(3.0)
    assert run.result is not None
    assert any("the $2.50 left today" in note for note in run.result["notes"])


class Asking(OfflineModel):
    """First turn: ask_user, billed $2.00 (at the `dear` price); after the answer, a
    digest (1000 input tokens, $0.01)."""

    def __init__(self) -> None:
        super().__init__()
        self.turns = 0

    async def turn(self, request: TurnRequest) -> TurnResponse:
        self.turns += 1
        if request.previous_interaction_id is None:
            return TurnResponse(
                interaction_id=f"i{self.turns}", usage=Usage(input_tokens=2 * DOLLAR),
                function_calls=[FunctionCall(call_id=f"ask{self.turns}", name="ask_user",
                                             arguments={"question": "Which project?"})],
            )
        return TurnResponse(interaction_id=f"i{self.turns}", usage=Usage(input_tokens=1000),
                            text='{"summary": "Done.", "sections": []}')


async def _usage_today(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    body = (await client.get("/api/v1/usage?days=7", headers=headers)).json()
    today: dict[str, Any] = body["days"][-1]
    return today


async def test_what_a_run_waiting_for_the_user_spent_counts_today(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    _dear(runtime)
    user, headers = await factories.user_with_token(runtime)
    await _cap(runtime, user, 3.0)
    run_id = await run_now(runtime, await factories.instruction(runtime, user))
    await work_once(make_worker(runtime, Asking()))
    run = await get_run(runtime, run_id)
    assert run.status == "waiting_for_user", run.error
    assert run.cost_usd == pytest.approx(2.0)
    assert await _spent_today(runtime, user) == pytest.approx(2.0)
    today = await _usage_today(client, headers)
    assert today["runs"] == 1
    assert today["cost_usd"] == pytest.approx(2.0)


async def test_a_run_that_ends_days_after_it_was_created_counts_today(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """A question may wait for its answer up to 30 days (agent_question_ttl_seconds)."""
    user, headers = await factories.user_with_token(runtime)
    run_id = await run_now(runtime, await factories.instruction(runtime, user))
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(
            status="succeeded", cost_usd=0.75, created_at=utcnow() - timedelta(days=20),
            finished_at=utcnow(), charged_at=utcnow()))
    assert await _spent_today(runtime, user) == pytest.approx(0.75)
    today = await _usage_today(client, headers)
    assert today["runs"] == 1
    assert today["cost_usd"] == pytest.approx(0.75)


async def test_todays_spend_is_read_through_the_index_of_the_runs_that_spent(
    runtime: Runtime,
) -> None:
    """However old its runs, a user's spend today is found through ix_runs_spend, not by
    reading all the user's runs."""
    user, _ = await factories.user_with_token(runtime)
    query = select(costs._spent_since(user, utcnow()))
    async with transaction(runtime.sessionmaker) as session:
        compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join((await session.execute(text(f"EXPLAIN {compiled}"))).scalars())
        else:
            plan = "\n".join(str(row[-1]) for row in await session.execute(
                text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "ix_runs_spend" in plan, plan


async def test_an_answered_run_over_the_cap_goes_on_tomorrow_with_the_answer(
    runtime: Runtime,
) -> None:
    _dear(runtime)
    user, _ = await factories.user_with_token(runtime)  # Europe/Berlin
    await _cap(runtime, user, 3.0)
    model = Asking()
    worker = make_worker(runtime, model)
    run_id = await run_now(runtime, await factories.instruction(runtime, user))
    await work_once(worker)
    assert (await get_run(runtime, run_id)).status == "waiting_for_user"
    # Meanwhile another run of the user's spends the rest of the day's cap.
    other = await run_now(runtime, await factories.instruction(runtime, user, title="Other"))
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == other).values(
            status="succeeded", cost_usd=1.5, finished_at=utcnow(), charged_at=utcnow()))
    owner = await _answer(runtime, user, run_id, "Apollo")
    await work_once(worker)

    run = await get_run(runtime, run_id)
    assert run.status == "queued"  # not skipped: its state, and so the answer, are kept
    assert run.agent_state is not None
    midnight = costs.next_day(owner, utcnow())
    assert run.available_at == midnight.astimezone(UTC)
    assert midnight.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") == "00:00"
    assert "daily cost cap" in (run.error or "")
    assert model.turns == 1  # nothing was spent on it past the cap
    told = [n for n in await notifications_of(runtime, user.id)
            if n.kind == "alert" and n.run_id == run_id]
    assert len(told) == 1
    assert "goes on after midnight" in told[0].body
    assert "your answer" in told[0].body

    # Past midnight (here: the run's time has come, and the day's spend is under the cap).
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == other).values(cost_usd=0.0))
        await session.execute(update(Run).where(Run.id == run_id).values(
            available_at=utcnow()))
    await work_once(worker)
    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error
    assert run.error is None
    assert run.cost_usd == pytest.approx(2.01)  # the $2.00 before the question, and after
    answered = [s for s in await steps_of(runtime, run_id) if s.name == "ask_user"]
    assert answered
    assert "Apollo" in (answered[-1].result_excerpt or "")


async def test_watch_runs_over_the_cap_wait_for_tomorrow_instead_of_losing_their_item(
    priced: Runtime,
) -> None:
    """A watch's run reports one message or file that no later run reports: skipped at
    the cap, "tell me when an invoice arrives" never told. It waits for the next day."""
    runtime = priced
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    worker = make_worker(runtime)
    spent = await run_now(runtime, instruction)
    await work_once(worker)
    await _cost(runtime, spent, 1.00)  # the whole of the $1.00 cap
    watched = []
    async with transaction(runtime.sessionmaker) as session:
        for item in ("m1", "m2"):
            watched.append(await queue.enqueue(
                session=session, user_id=user.id, instruction_id=instruction.id,
                reason="watch", scheduled_for=utcnow(), window_start=None,
                window_end=utcnow(),
                trigger_item={"account_id": str(uuid.uuid4()), "kind": "message", "id": item}))
    await work_once(worker)
    await work_once(worker)

    async with transaction(runtime.sessionmaker) as session:
        owner = await session.get(User, user.id)
        assert owner is not None
        midnight = costs.next_day(owner, utcnow())
    for run_id in watched:
        run = await get_run(runtime, run_id)
        assert run.status == "queued"
        assert run.available_at == midnight.astimezone(UTC)
        assert run.attempt == 0  # not counted
        assert "daily cost cap" in (run.error or "")
    told = [n for n in await notifications_of(runtime, user.id) if n.kind == "alert"]
    assert [n.title for n in told] == ["Watches wait for tomorrow"]  # once, for both


async def test_a_run_deferred_to_midnight_goes_on_then_whatever_it_spent_before(
    runtime: Runtime,
) -> None:
    """Its earlier spend was charged on the day it paused. Counted again when the run was
    claimed at midnight (spend went by the run's last change), it passed the cap with
    the instruction's usual cost on top: deferred again, every night, for ever."""
    _dear(runtime)
    user, _ = await factories.user_with_token(runtime)
    await _cap(runtime, user, 2.5)
    instruction = await factories.instruction(runtime, user)
    earlier = await run_now(runtime, instruction)  # the instruction usually costs $1.00
    yesterday = utcnow() - timedelta(days=1)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == earlier).values(
            status="succeeded", cost_usd=1.0, finished_at=yesterday, updated_at=yesterday,
            charged_at=yesterday))
    worker = make_worker(runtime, Asking())
    run_id = await run_now(runtime, instruction)
    await work_once(worker)
    assert (await get_run(runtime, run_id)).status == "waiting_for_user"  # spent $2.00
    await _answer(runtime, user, run_id, "Apollo")
    # As if the pause, the answer and the deferral were yesterday; today nothing is spent.
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(
            status="queued", available_at=utcnow(), updated_at=yesterday,
            charged_at=yesterday))
    assert await _spent_today(runtime, user) == pytest.approx(0.0)
    await work_once(worker)
    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", (run.status, run.error)


@pytest.mark.parametrize("how", ["cancel", "delete"])
async def test_ending_a_run_that_spent_last_week_charges_nothing_today(
    runtime: Runtime, client: httpx.AsyncClient, how: str
) -> None:
    """Cancelling a run paused a week ago, or deleting its instruction, moved its $2.00
    into today's spend, and today's runs were skipped for it."""
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    run_id = await run_now(runtime, instruction)
    week_ago = utcnow() - timedelta(days=7)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(
            status="waiting_for_user", cost_usd=2.0, agent_state={"attempt": 1},
            created_at=week_ago, updated_at=week_ago, charged_at=week_ago))
    if how == "cancel":
        response = await client.post(f"/api/v1/runs/{run_id}/cancel", headers=headers)
    else:
        response = await client.delete(f"/api/v1/instructions/{instruction.id}",
                                       headers=headers)
    assert response.status_code < 300, response.text
    assert await _spent_today(runtime, user) == pytest.approx(0.0)



async def _a_run_paused_yesterday(
    runtime: Runtime,
) -> tuple[User, dict[str, str], uuid.UUID, Worker, datetime]:
    """A run spent $2.00 before its question, as if it had paused yesterday (charged then);
    the user, their headers, the run, its worker and when "yesterday" was."""
    _dear(runtime)
    user, headers = await factories.user_with_token(runtime)
    await _cap(runtime, user, 5.0)
    run_id = await run_now(runtime, await factories.instruction(runtime, user))
    worker = make_worker(runtime, Asking())
    await work_once(worker)
    assert (await get_run(runtime, run_id)).status == "waiting_for_user"
    assert await _spent_today(runtime, user) == pytest.approx(2.0)
    yesterday = utcnow() - timedelta(days=1)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(
            charged_at=yesterday, updated_at=yesterday))
    return user, headers, run_id, worker, yesterday


async def test_a_run_paused_yesterday_counts_today_only_what_it_spends_today(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """The $2.00 before the question was charged on the day the run paused. The resumed
    attempt's $0.01 moved the whole run to today: its turns before the pause counted
    against yesterday's cap and again against today's."""
    user, _headers, run_id, worker, _yesterday = await _a_run_paused_yesterday(runtime)
    assert await _spent_today(runtime, user) == pytest.approx(0.0)
    await _answer(runtime, user, run_id, "Apollo")
    await work_once(worker)

    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error
    assert run.cost_usd == pytest.approx(2.01)  # the run's whole spend, once
    assert await _spent_today(runtime, user) == pytest.approx(0.01)


async def _usual_cost(runtime: Runtime, instruction: Instruction, usd: float) -> None:
    """A run of the instruction finished yesterday at `usd`: its estimate at the cap."""
    earlier = await run_now(runtime, instruction)
    yesterday = utcnow() - timedelta(days=1)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == earlier).values(
            status="succeeded", cost_usd=usd, finished_at=yesterday, updated_at=yesterday,
            charged_at=yesterday))


async def _a_run_failed_after_spending(
    runtime: Runtime, *, cap: float, usual: float
) -> tuple[User, uuid.UUID, Worker]:
    """A user with this cap, an instruction that usually costs `usual`, and its run whose
    first attempt spent $1.00 (turn 1) and failed (turn 2): queued again for its retry."""
    _dear(runtime)
    runtime.settings.worker_max_attempts = 2
    user, _ = await factories.user_with_token(runtime)
    await _cap(runtime, user, cap)
    instruction = await factories.instruction(runtime, user)
    await _usual_cost(runtime, instruction, usual)
    run_id = await run_now(runtime, instruction)
    worker = make_worker(runtime, Searching(failing=(2,), done_at=3))
    await work_once(worker)
    assert (await get_run(runtime, run_id)).status == "queued"
    return user, run_id, worker


async def test_a_retried_run_needs_at_the_cap_only_what_its_estimate_leaves_after_its_spend(
    runtime: Runtime,
) -> None:
    """The instruction usually costs $1.00; the cap is $1.50. The first attempt spends
    $1.00 and fails on a 503. Its retry was skipped for the cap: the check counted that
    $1.00 (in today's spend) and the whole estimate on top, though $0.50 was left."""
    user, run_id, worker = await _a_run_failed_after_spending(runtime, cap=1.5, usual=1.0)
    assert await _spent_today(runtime, user) == pytest.approx(1.0)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(
            available_at=utcnow()))
    await work_once(worker)  # turn 3: the digest ($0.01)

    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", (run.status, run.error)
    assert run.cost_usd == pytest.approx(1.01)
    assert await _spent_today(runtime, user) == pytest.approx(1.01)


async def test_a_retried_run_is_still_skipped_when_the_rest_of_its_estimate_passes_the_cap(
    runtime: Runtime,
) -> None:
    """What the run spent today is taken off its estimate, not off the cap: the
    instruction usually costs $2.00 and the cap is $2.50; the first attempt spent $1.00,
    another instruction's run $1.00 more, so the $1.00 the retry still needs would pass
    the cap."""
    user, run_id, worker = await _a_run_failed_after_spending(runtime, cap=2.5, usual=2.0)
    other = await run_now(runtime, await factories.instruction(runtime, user))
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == other).values(
            status="failed", finished_at=utcnow()))
        await session.execute(update(Run).where(Run.id == run_id).values(
            available_at=utcnow()))
    await _cost(runtime, other, 1.0)
    assert await _spent_today(runtime, user) == pytest.approx(2.0)
    await work_once(worker)

    run = await get_run(runtime, run_id)
    assert run.status == "skipped", (run.status, run.error)
    assert run.error is not None
    assert "$1.00 of it spent by this run today" in run.error
    assert run.cost_usd == pytest.approx(1.0)


async def test_an_answered_run_needs_at_the_cap_only_what_its_estimate_leaves_after_its_spend(
    runtime: Runtime,
) -> None:
    """The run spent $2.00 today before its question; the instruction usually costs
    $2.01 in all; the cap is $3.00. At the resume the check counted the $2.00 and the
    whole $2.01 on top: the answered run waited for midnight, with $0.01 left to spend."""
    _dear(runtime)
    user, _ = await factories.user_with_token(runtime)
    await _cap(runtime, user, 3.0)
    instruction = await factories.instruction(runtime, user)
    await _usual_cost(runtime, instruction, 2.01)
    worker = make_worker(runtime, Asking())
    run_id = await run_now(runtime, instruction)
    await work_once(worker)
    assert (await get_run(runtime, run_id)).status == "waiting_for_user"
    assert await _spent_today(runtime, user) == pytest.approx(2.0)
    await _answer(runtime, user, run_id, "Apollo")
    await work_once(worker)

    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", (run.status, run.error, run.available_at)
    assert await _spent_today(runtime, user) == pytest.approx(2.01)


async def test_usage_puts_a_runs_spend_before_its_question_on_the_day_it_paused(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """A run spent $2.00 yesterday before its question and $0.01 today. The cap counts
    $0.01 today; /usage (and the dashboard's chart) put all $2.01 on today and nothing
    on yesterday."""
    user, headers, run_id, worker, yesterday = await _a_run_paused_yesterday(runtime)
    await _answer(runtime, user, run_id, "Apollo")
    await work_once(worker)
    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error
    assert run.charged_before_at == yesterday
    assert await _spent_today(runtime, user) == pytest.approx(0.01)

    body = (await client.get("/api/v1/usage?days=7", headers=headers)).json()
    by_day = [day["cost_usd"] for day in body["days"]]
    assert by_day[-1] == pytest.approx(0.01), by_day  # what the cap counted today
    assert by_day[-2] == pytest.approx(2.0), by_day
    assert body["total"]["cost_usd"] == pytest.approx(2.01)
    assert body["instructions"][0]["cost_usd"] == pytest.approx(2.01)
    # The run and its tokens are on the day it was last charged.
    assert [day["runs"] for day in body["days"]][-2:] == [0, 1]


@pytest.mark.parametrize(("days", "total"), [(7, 2.01), (2, 0.01)])
async def test_usage_puts_earlier_spend_charged_before_it_was_dated_on_the_runs_first_day(
    runtime: Runtime, client: httpx.AsyncClient, days: int, total: float
) -> None:
    """A run charged before `charged_before_at` was recorded: what it spent before its
    last day goes on the day it was created, and only inside the days asked for."""
    user, headers = await factories.user_with_token(runtime)
    run_id = await run_now(runtime, await factories.instruction(runtime, user))
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(
            status="succeeded", cost_usd=2.01, charged_before_usd=2.0, charged_at=utcnow(),
            finished_at=utcnow(), created_at=utcnow() - timedelta(days=2)))
    assert await _spent_today(runtime, user) == pytest.approx(0.01)

    body = (await client.get(f"/api/v1/usage?days={days}", headers=headers)).json()
    by_day = [day["cost_usd"] for day in body["days"]]
    assert by_day[-1] == pytest.approx(0.01), by_day
    assert sum(by_day) == pytest.approx(total), by_day
    if days == 7:
        assert by_day[-3] == pytest.approx(2.0), by_day
    assert body["total"]["cost_usd"] == pytest.approx(total)
    assert body["instructions"][0]["cost_usd"] == pytest.approx(total)
