"""GeminiModel through the real google-genai SDK, over HTTP, against the fake Interactions API."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.agent.digest import draft_json_schema
from app.agent.factory import build_llm, probe
from app.agent.gemini import GeminiModel, parse_interaction, quota_resets_at
from app.agent.llm import (
    ConversationGone,
    FunctionResult,
    IncompleteAnswer,
    KeyRejected,
    LLMError,
    QuotaExhausted,
    TurnRequest,
    Usage,
)
from app.agent.offline import OfflineModel
from app.agent.pricing import ModelPrice, cost_usd
from app.agent.prompt import CUT_OFF_GUIDANCE, LAST_CALL_GUIDANCE, SYSTEM_INSTRUCTION
from app.agent.runner import AgentOutcome, AgentRequest, StepRecord, run_agent
from app.core.config import Settings
from app.sources.sample import SampleSource
from tests.fakes.gemini import Calls, FakeGemini, Text

NOW = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
INVOICE_ID = "1795086141.M1P2041.sample"
PRICES = {"gemini-3.5-flash": ModelPrice(input=1.50, output=9.00, cached=0.15)}


class Delays(list[float]):
    """A sleep that records the delay and returns at once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


def make_model(fake: FakeGemini, **options: Any) -> GeminiModel:
    options.setdefault("retry_base_seconds", 0.01)
    return GeminiModel(fake.api_key, base_url=fake.url, **options)


@pytest.fixture
async def gemini(fake: FakeGemini) -> AsyncIterator[GeminiModel]:
    model = make_model(fake)
    yield model
    await model.aclose()


def agent_request(**changes: Any) -> AgentRequest:
    request = AgentRequest(
        title="Morning digest",
        text="Every weekday at 8:00 digest my team's mail and yesterday's Drive changes.",
        thinking_level="low",
        max_tool_calls=30,
        max_turns=6,
        only_new=True,
        read_mail=True,
        read_files=True,
        timezone="Europe/Berlin",
        now=NOW,
        window_start=None,
        model="gemini-3.5-flash",
    )
    return dataclasses.replace(request, **changes)


async def run(llm: GeminiModel, steps: list[StepRecord] | None = None, **changes: Any):
    recorded = steps if steps is not None else []

    async def record(step: StepRecord) -> None:
        recorded.append(step)

    return await run_agent(
        llm=llm, sources={"sample": SampleSource()}, cursors={},
        request=agent_request(**changes), record=record,
    )


def first_turn(text: str = "Hello") -> TurnRequest:
    return TurnRequest(
        model="gemini-3.5-flash", system_instruction="Be brief.", input=text, thinking_level="low"
    )


def keys_anywhere(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_anywhere(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_anywhere(v)}
    return set()


def billed_usage(fake: FakeGemini) -> Usage:
    total = Usage()
    for usage in fake.billed():
        total += Usage(
            input_tokens=usage["total_input_tokens"],
            output_tokens=usage["total_output_tokens"],
            thought_tokens=usage["total_thought_tokens"],
            cached_tokens=usage["total_cached_tokens"],
        )
    return total


# --- the whole pipeline --------------------------------------------------------------------


async def test_a_run_over_the_sample_with_gemini_produces_a_valid_digest(fake, gemini):
    steps: list[StepRecord] = []
    outcome = await run(gemini, steps)

    assert outcome.status == "succeeded"
    assert outcome.digest is not None
    assert outcome.digest.model == "gemini-3.5-flash"
    refs = [r for s in outcome.digest.sections for i in s.items for r in i.refs]
    assert refs
    assert INVOICE_ID in {r.id for r in refs}
    answered = [r.response for r in fake.requests() if r.status == 200]
    assert outcome.interaction_ids == [a["id"] for a in answered]
    assert len(outcome.interaction_ids) >= 2  # tool calls, then the digest
    assert [s.interaction_id for s in steps if s.kind == "model"] == outcome.interaction_ids
    # The mail was read for the prompt; the documents' cards are snippets cut short.
    assert any(s.kind == "tool" and s.name == "read_file" for s in steps)
    # Cited by their short ids, stored by their real ones.
    first = fake.bodies()[0]["input"]
    assert INVOICE_ID not in first
    assert '"m14"' in first


async def test_the_wire_carries_thinking_level_chaining_and_one_result_per_call(fake, gemini):
    await run(gemini, max_tool_calls=2)

    records = fake.requests()
    bodies = [r.body for r in records]
    assert len(bodies) == 2
    for record in records:
        assert record.headers["x-goog-api-key"] == fake.api_key
        body = record.body
        assert body["model"] == "gemini-3.5-flash"
        # The output limit's default, PILOTLIGHT_GEMINI_MAX_OUTPUT_TOKENS's.
        assert body["generation_config"] == {"thinking_level": "low", "max_output_tokens": 16384}
        assert not keys_anywhere(body) & {"temperature", "top_p", "top_k", "thinking_budget"}
        assert body["system_instruction"] == SYSTEM_INSTRUCTION
        assert {t["name"] for t in body["tools"]} >= {"read_message", "read_file"}
        assert all(t["type"] == "function" for t in body["tools"])
        assert body["response_format"] == {
            "type": "text", "mime_type": "application/json", "schema": draft_json_schema()
        }
    assert "previous_interaction_id" not in bodies[0]
    assert isinstance(bodies[0]["input"], str)
    assert "You have a limited action budget of 2 tool calls." in bodies[0]["input"]

    first_answer = records[0].response
    assert bodies[1]["previous_interaction_id"] == first_answer["id"]
    calls = [s for s in first_answer["steps"] if s["type"] == "function_call"]
    results = bodies[1]["input"]
    assert len(calls) == len(results) == 2
    assert [(r["call_id"], r["name"]) for r in results] == [(c["id"], c["name"]) for c in calls]
    assert all(r["type"] == "function_result" and isinstance(r["result"], str) for r in results)
    # Guidance rides on the last result's text, after two newlines; never a part of its own.
    assert results[-1]["result"].endswith("\n\n" + LAST_CALL_GUIDANCE)
    assert LAST_CALL_GUIDANCE not in results[0]["result"]


async def test_an_invalid_final_answer_is_repaired_by_the_runner(fake, gemini):
    valid = {
        "summary": "One invoice is due.",
        "sections": [{"title": "Needs your attention", "items": [
            {"title": "Skyline Cloud invoice", "detail": "Due soon.", "message_ids": [INVOICE_ID]}
        ]}],
    }
    fake.script(
        Calls([("read_message", {"id": INVOICE_ID})]),
        Text("Here is your digest: the invoice is due."),
        Text(json.dumps(valid)),
    )

    outcome = await run(gemini)

    assert outcome.digest is not None
    assert outcome.digest.summary == "One invoice is due."
    assert [r.id for r in outcome.digest.sections[0].items[0].refs] == [INVOICE_ID]
    bodies = fake.bodies()
    assert len(bodies) == 3
    repair = bodies[2]
    assert isinstance(repair["input"], str)
    assert "not a valid digest" in repair["input"]
    assert repair["previous_interaction_id"] == fake.requests()[1].response["id"]


def digest_json(detail: str) -> str:
    return json.dumps({
        "summary": "One invoice is due.",
        "sections": [{"title": "Needs your attention", "items": [
            {"title": "Skyline Cloud invoice", "detail": detail, "message_ids": [INVOICE_ID]}
        ]}],
    })


async def test_an_answer_cut_off_at_the_output_limit_is_asked_for_again_once():
    """An `incomplete` interaction (the answer reached the output token limit) is not an
    answer: a digest cut mid JSON is never used. The turn is sent again, once, asking for
    brevity; its billed tokens count in the run's usage all the same."""
    steps: list[StepRecord] = []
    with FakeGemini(max_output_tokens=150) as fake:
        fake.script(
            Calls([("read_message", {"id": INVOICE_ID})]),
            Text(digest_json("Due soon. " * 200)),  # far past the limit: cut off
            Text(digest_json("Due soon.")),
        )
        model = make_model(fake)
        outcome = await run(model, steps)
        await model.aclose()

    assert outcome.digest is not None
    assert outcome.digest.sections[0].items[0].detail == "Due soon."
    records = fake.requests()
    assert [r.response["status"] for r in records] == [
        "requires_action", "incomplete", "completed"]
    first, cut, again = (r.body for r in records)
    # The same turn again, on the same conversation, with a note on its last result.
    assert again["previous_interaction_id"] == cut["previous_interaction_id"]
    assert again["input"][-1]["result"] == (
        cut["input"][-1]["result"] + "\n\n" + CUT_OFF_GUIDANCE)
    assert outcome.usage == billed_usage(fake)  # the cut-off answer's tokens too
    model_steps = [s for s in steps if s.kind == "model"]
    assert [s.error is not None for s in model_steps] == [False, True, False]
    assert model_steps[1].usage.output_tokens == fake.billed()[1]["total_output_tokens"] > 0
    assert model_steps[1].interaction_id == records[1].response["id"]


async def test_an_answer_cut_off_twice_fails_the_turn_with_the_reason():
    steps: list[StepRecord] = []
    with FakeGemini(max_output_tokens=150) as fake:
        fake.script(*[Text(digest_json("Due soon. " * 200))] * 2)
        model = make_model(fake)
        with pytest.raises(IncompleteAnswer, match=(
            r"^the model's answer was cut off twice, so no digest was made of it: Gemini "
            r"interaction \S+ ended incomplete: it reached its output token limit$"
        )):
            await run(model, steps)
        await model.aclose()

    assert [r.response["status"] for r in fake.requests()] == ["incomplete", "incomplete"]
    spent = Usage()
    for step in steps:
        spent += step.usage
    assert spent == billed_usage(fake) != Usage()


async def test_an_answer_cut_off_with_no_turn_left_fails_the_turn():
    with FakeGemini(max_output_tokens=150) as fake:
        fake.script(Text(digest_json("Due soon. " * 200)))
        model = make_model(fake)
        with pytest.raises(IncompleteAnswer, match="no turn was left to ask again"):
            await run(model, max_turns=1)
        await model.aclose()
    assert len(fake.requests()) == 1


async def test_a_turn_is_bounded_by_the_output_limit_it_sends():
    """No output limit was sent: a runaway answer could run to the model's own (65,536
    tokens on the Gemini 3 models), each of them billed. The limit goes with every turn,
    and the service cuts the answer there (status `incomplete`), billing what it made."""
    with FakeGemini() as fake:  # the model's own limit: 65,536
        fake.script(Text("word " * 4000, thought_tokens=100))  # 5,000 tokens
        model = make_model(fake, max_output_tokens=1024, max_retries=0)
        with pytest.raises(IncompleteAnswer, match="reached its output token limit") as cut:
            await model.turn(first_turn())
        await model.aclose()

    (record,) = fake.requests()
    assert record.body["generation_config"]["max_output_tokens"] == 1024
    assert record.response["status"] == "incomplete"
    assert cut.value.usage.thought_tokens + cut.value.usage.output_tokens == 1024


def test_the_output_limit_comes_from_the_settings(fake):
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, gemini_api_key="k", gemini_base_url=fake.url,
        gemini_max_output_tokens=4096,
    )
    llm = build_llm(settings)
    assert isinstance(llm, GeminiModel)
    assert llm.max_output_tokens == 4096
    assert Settings(_env_file=None).gemini_max_output_tokens == 16384  # type: ignore[call-arg]
    assert make_model(fake).max_output_tokens == 16384


async def test_an_answer_cut_off_is_asked_for_again_at_thinking_level_low_at_most():
    """Thoughts count against the output limit first: at level high they alone reached it,
    and the turn asked again at high was cut off the same way, a second turn billed in
    full for nothing. Asked again, it thinks at low."""
    with FakeGemini(max_output_tokens=150) as fake:
        fake.script(
            Text(digest_json("Due soon."), thought_tokens=150),  # all thoughts: cut off
            Text(digest_json("Due soon.")),
        )
        model = make_model(fake)
        outcome = await run(model, thinking_level="high")
        await model.aclose()

    assert outcome.digest is not None
    records = fake.requests()
    assert [r.response["status"] for r in records] == ["incomplete", "completed"]
    assert [r.body["generation_config"]["thinking_level"] for r in records] == ["high", "low"]


async def test_a_turn_on_its_way_when_the_run_is_cancelled_is_counted_not_used(fake, gemini):
    """A worker stopping (or losing the run) cancels it mid-turn: the request was sent and
    the service bills it, but nothing recorded what it spent, so it was in no run's cost.
    The cancelled run waits a little for that answer, records its usage, and stops."""
    steps: list[StepRecord] = []
    fake.slow(0.5)
    fake.script(Calls([("read_message", {"id": INVOICE_ID})]))
    running = asyncio.create_task(run(gemini, steps))
    while not fake.requests():  # the first turn is on its way
        await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    assert len(fake.requests()) == 1
    (step,) = steps
    assert step.kind == "model"
    assert step.usage == billed_usage(fake) != Usage()
    assert step.interaction_id == fake.requests()[0].response["id"]
    assert step.error == "the run was stopped before this answer was used"


async def test_usage_and_cost_are_what_the_fake_billed(fake, gemini):
    outcome: AgentOutcome = await run(gemini)

    billed = fake.billed()
    assert outcome.usage == billed_usage(fake)
    # A chained turn is billed for the whole conversation so far.
    assert billed[1]["total_input_tokens"] > billed[0]["total_input_tokens"]
    assert outcome.usage.thought_tokens == 2 * 8  # the fake's "low" thinking, twice
    expected = sum(
        (u["total_input_tokens"] * 1.50
         + (u["total_output_tokens"] + u["total_thought_tokens"]) * 9.00) / 1_000_000
        for u in billed
    )
    assert cost_usd("gemini-3.5-flash", outcome.usage, PRICES) == pytest.approx(expected)


async def test_cached_input_is_priced_at_the_cached_rate():
    # The fake's implicit cache, with its minimum lowered so that a short run reaches it.
    with FakeGemini(cache_min_tokens=1) as fake:
        model = make_model(fake)
        outcome = await run(model)
        await model.aclose()
        billed = fake.billed()

    assert billed[0]["total_cached_tokens"] == 0
    assert 0 < billed[1]["total_cached_tokens"] < billed[1]["total_input_tokens"]
    usage = outcome.usage
    assert usage.cached_tokens == billed[1]["total_cached_tokens"]
    fresh = usage.input_tokens - usage.cached_tokens
    expected = (fresh * 1.50 + usage.cached_tokens * 0.15
                + (usage.output_tokens + usage.thought_tokens) * 9.00) / 1_000_000
    assert cost_usd("gemini-3.5-flash", usage, PRICES) == pytest.approx(expected)


# --- errors and retries --------------------------------------------------------------------


async def test_a_429_is_retried_after_the_retry_delay_of_its_body(fake):
    fake.fail(429, retry_after=1)  # RESOURCE_EXHAUSTED with RetryInfo {"retryDelay": "1s"}
    fake.fail(503)
    model = make_model(fake)
    response = await model.turn(first_turn())
    await model.aclose()

    records = fake.requests()
    assert [r.status for r in records] == [429, 503, 200]
    assert records[1].at - records[0].at >= 1.0  # waited as long as the quota said
    assert response.interaction_id == records[2].response["id"]


async def test_retry_delays_honour_the_servers_delay_and_back_off_exponentially(fake):
    delays = Delays()
    fake.fail(429, retry_after=37.5)  # the quota's RetryInfo
    fake.fail(503, retry_after=7)  # a Retry-After header
    fake.fail(500, times=2)
    model = make_model(fake, sleep=delays, retry_base_seconds=1.0)
    await model.turn(first_turn())
    await model.aclose()

    assert len(fake.requests()) == 5
    assert delays[:2] == [37.5, 7.0]
    assert 2.0 <= delays[2] <= 4.0  # 1 s doubled twice, with jitter
    assert 4.0 <= delays[3] <= 8.0


async def test_a_retry_delay_longer_than_the_bound_is_cut_to_it(fake):
    delays = Delays()
    fake.fail(429, retry_after=3600)
    model = make_model(fake, sleep=delays, retry_max_seconds=60.0)
    await model.turn(first_turn())
    await model.aclose()

    assert delays == [60.0]


async def test_retries_are_bounded(fake):
    fake.fail(503, times=5, message="The model is overloaded.")
    model = make_model(fake, max_retries=2, sleep=Delays())
    with pytest.raises(LLMError, match=r"after 3 attempts: 503 The model is overloaded\."):
        await model.turn(first_turn())
    await model.aclose()
    assert len(fake.requests()) == 3


async def test_a_429_for_the_days_quota_is_not_retried_and_says_when_it_resets(fake):
    """A day's quota used up lasts until midnight Pacific time, whatever the short RetryInfo
    delay of its 429 says: retrying sooner only burns the retries."""
    delays = Delays()
    fake.fail(429, retry_after=23, times=5,
              quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier")
    model = make_model(fake, sleep=delays)
    with pytest.raises(QuotaExhausted, match=(
        "^Gemini's daily quota GenerateRequestsPerDayPerProjectPerModel-FreeTier is used up"
    )) as exhausted:
        await model.turn(first_turn())
    await model.aclose()

    assert (len(fake.requests()), delays) == (1, [])
    resets_at = exhausted.value.resets_at
    assert resets_at.astimezone(ZoneInfo("America/Los_Angeles")).time() == time(0)
    assert timedelta(0) < resets_at - datetime.now(UTC) <= timedelta(hours=24)


async def test_a_429_for_the_minutes_quota_is_retried_after_its_delay(fake):
    delays = Delays()
    fake.fail(429, retry_after=2, quota_id="GenerateRequestsPerMinutePerProjectPerModel")
    model = make_model(fake, sleep=delays)
    await model.turn(first_turn())
    await model.aclose()
    assert ([r.status for r in fake.requests()], delays) == ([429, 200], [2.0])


def test_the_daily_quota_resets_at_midnight_pacific_time_across_dst():
    # 2026-03-08 is the day Pacific time moves from PST (-8) to PDT (-7).
    assert quota_resets_at(datetime(2026, 3, 8, 7, 59, tzinfo=UTC)) == datetime(
        2026, 3, 8, 8, 0, tzinfo=UTC)
    assert quota_resets_at(datetime(2026, 3, 8, 8, 0, tzinfo=UTC)) == datetime(
        2026, 3, 9, 7, 0, tzinfo=UTC)


async def test_a_slow_answer_times_out_and_is_retried(fake):
    fake.slow(2.0)
    model = make_model(fake, timeout_seconds=0.3)
    response = await model.turn(first_turn())
    await model.aclose()

    assert len(fake.requests()) == 2
    assert response.interaction_id == fake.requests()[1].response["id"]


async def test_a_400_fails_at_once_with_the_apis_message(fake, gemini):
    fake.fail(400, message="Request contains an invalid argument.")
    with pytest.raises(LLMError, match="Request contains an invalid argument."):
        await gemini.turn(first_turn())
    assert len(fake.requests()) == 1


async def test_mismatched_function_results_are_refused_with_the_apis_message(fake, gemini):
    fake.script(Calls([("read_message", {"id": "m1"}), ("read_file", {"id": "f1"})]))
    first = await gemini.turn(first_turn())
    assert [c.name for c in first.function_calls] == ["read_message", "read_file"]
    call = first.function_calls[0]
    wrong_id = FunctionResult(call_id="call_nope", name=call.name, result="x")
    right = [FunctionResult(call_id=c.call_id, name=c.name, result="x")
             for c in first.function_calls]
    chained = first_turn().model_copy(update={"previous_interaction_id": first.interaction_id})

    with pytest.raises(LLMError, match="400.*does not match a function call"):
        await gemini.turn(chained.model_copy(update={"input": [wrong_id, right[1]]}))
    with pytest.raises(LLMError, match="400.*number of function results"):
        await gemini.turn(chained.model_copy(update={"input": right[:1]}))
    renamed = right[0].model_copy(update={"name": "read_thread"})
    with pytest.raises(LLMError, match="400.*does not match the function call"):
        await gemini.turn(chained.model_copy(update={"input": [renamed, right[1]]}))
    fake.script(Text("done"))
    answer = await gemini.turn(chained.model_copy(update={"input": right}))
    assert answer.text == "done"
    assert answer.function_calls == []


async def test_an_unknown_previous_interaction_fails_without_retries(fake, gemini):
    chained = first_turn().model_copy(update={"previous_interaction_id": "v1_missing"})
    with pytest.raises(ConversationGone, match="no longer has interaction v1_missing"):
        await gemini.turn(chained)
    assert len(fake.requests()) == 1


async def test_a_conversation_past_its_retention_is_gone(fake, gemini):
    first = await gemini.turn(first_turn())
    fake.forget(first.interaction_id)  # its retention ran out (1 day on the free tier)
    chained = first_turn("And then?").model_copy(
        update={"previous_interaction_id": first.interaction_id}
    )
    with pytest.raises(ConversationGone):
        await gemini.turn(chained)
    assert [r.status for r in fake.requests()] == [200, 404]


async def test_a_chained_turns_404_for_something_else_is_not_a_gone_conversation(fake, gemini):
    # The interaction is still there: the 404 is the model's (a name the service does not
    # know), which a resumed run must fail on, not hide behind a digest from the previews.
    first = await gemini.turn(first_turn())
    fake.fail(404, message="models/gemini-9-flash is not found.")
    chained = first_turn("And then?").model_copy(
        update={"previous_interaction_id": first.interaction_id}
    )
    with pytest.raises(LLMError, match="404: models/gemini-9-flash is not found") as failed:
        await gemini.turn(chained)
    assert not isinstance(failed.value, ConversationGone)
    asked = fake.requests(creates_only=False)[-1]
    assert (asked.method, asked.status) == ("GET", 200)
    assert asked.path.endswith(f"/interactions/{first.interaction_id}")


async def test_a_rejected_key_says_so(fake):
    model = GeminiModel("wrong-key", base_url=fake.url)
    with pytest.raises(KeyRejected, match="^Gemini API key rejected: API key not valid"):
        await model.turn(first_turn())
    await model.aclose()
    # The service answers a key that is not valid 400 INVALID_ARGUMENT, reason
    # API_KEY_INVALID: told apart from a bad request, and not retried.
    assert [r.status for r in fake.requests()] == [400]


async def test_a_key_refused_with_403_is_rejected_without_retries(fake):
    model = GeminiModel(fake.api_key, base_url=fake.url, max_retries=3)
    fake.fail(403, message="Generative Language API has not been used in this project.")
    with pytest.raises(KeyRejected, match="has not been used"):
        await model.turn(first_turn())
    await model.aclose()
    assert [r.status for r in fake.requests()] == [403]


# --- parsing and wiring --------------------------------------------------------------------


def test_parsing_skips_thoughts_and_echoed_input_and_reads_usage():
    response = parse_interaction({
        "id": "v1_x", "status": "completed",
        "steps": [
            {"type": "user_input", "content": [{"type": "text", "text": "hi"}]},
            {"type": "thought", "signature": "s"},
            {"type": "model_output", "content": [{"type": "text", "text": "{\"a\": "},
                                                  {"type": "text", "text": "1}"}]},
        ],
        "usage": {"total_input_tokens": 10, "total_output_tokens": 4,
                  "total_thought_tokens": 3, "total_cached_tokens": 2},
    })
    assert response.text == '{"a": 1}'
    assert response.usage == Usage(input_tokens=10, output_tokens=4, thought_tokens=3,
                                   cached_tokens=2)


def test_a_failed_interaction_is_an_llm_error():
    with pytest.raises(LLMError, match="failed: quota"):
        parse_interaction({"id": "v1_x", "status": "failed", "errors": [{"message": "quota"}]})


@pytest.mark.parametrize(("status", "why"), [
    ("incomplete", "it reached its output token limit"),
    ("budget_exceeded", "its token budget was exceeded"),
    ("requires_continuation", "it holds no whole answer"),
])
def test_an_interaction_without_a_whole_answer_is_no_answer_but_billed(status, why):
    with pytest.raises(IncompleteAnswer, match=f"^Gemini interaction v1_x ended {status}: {why}$"
                       ) as cut:
        parse_interaction({
            "id": "v1_x", "status": status,
            "steps": [{"type": "model_output", "content": [{"type": "text", "text": "{\"su"}]}],
            "usage": {"total_input_tokens": 10, "total_output_tokens": 4,
                      "total_thought_tokens": 3},
        })
    assert cut.value.usage == Usage(input_tokens=10, output_tokens=4, thought_tokens=3)
    assert cut.value.interaction_id == "v1_x"


def test_build_llm_chooses_gemini_when_a_key_is_set(fake):
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, gemini_api_key="k", gemini_base_url=fake.url,
        gemini_model="gemini-3.1-pro-preview", gemini_max_retries=1,
    )
    llm = build_llm(settings)
    assert isinstance(llm, GeminiModel)
    assert (llm.name, llm.max_retries) == ("gemini-3.1-pro-preview", 1)
    assert isinstance(build_llm(Settings(_env_file=None)), OfflineModel)  # type: ignore[call-arg]


@pytest.mark.parametrize("model", ["gemini-3.5-flash", "gemini-3.7-flash", "gemini-3.1-pro"])
async def test_the_start_check_works_with_every_gemini_3_model(fake, model):
    # 3.7 Flash and the Pro models refuse thinking level minimal: a check sent at it would
    # say the model does not answer when the key and the service are fine.
    llm = make_model(fake, model=model)
    await probe(llm)
    await llm.aclose()
    assert fake.bodies()[0]["generation_config"]["thinking_level"] == "low"


@pytest.mark.parametrize(
    ("model", "level", "sent"),
    [("gemini-3.7-flash", "minimal", "low"), ("gemini-3.1-pro-preview", "minimal", "low"),
     ("gemini-3-pro-preview", "medium", "high"), ("gemini-3.5-flash", "minimal", "minimal"),
     ("gemini-3.7-flash", "medium", "medium")],
)
async def test_a_thinking_level_the_model_does_not_take_is_sent_as_the_next_one_up(
    fake, model, level, sent
):
    # An instruction at minimal on 3.7 Flash or a Pro model: each of its runs failed on a 400.
    llm = make_model(fake, model=model)
    turn = first_turn().model_copy(update={"model": model, "thinking_level": level})
    try:
        await llm.turn(turn)
    finally:
        await llm.aclose()
    assert fake.bodies()[0]["generation_config"]["thinking_level"] == sent
