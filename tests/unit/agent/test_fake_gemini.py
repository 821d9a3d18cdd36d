"""The fake Interactions API refuses what the real service refuses, and runs on its own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import _interactions as api_errors
from google.genai import types as genai_types

from tests.fakes.gemini import Calls, FakeGemini, Text

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


def post(fake: FakeGemini, body: Any, key: str | None = None) -> httpx.Response:
    headers = {} if key == "" else {"x-goog-api-key": key or fake.api_key}
    return httpx.post(f"{fake.url}/v1/interactions", json=body, headers=headers, timeout=10)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


BASE = {"model": "gemini-3.5-flash", "input": "hello"}


def test_the_api_key_header_is_required_and_checked_in_googles_error_shape(fake):
    missing = post(fake, BASE, key="").json()["error"]
    assert (missing["code"], missing["status"]) == (403, "PERMISSION_DENIED")
    assert missing["message"].startswith("Method doesn't allow unregistered callers")
    wrong = post(fake, BASE, key="nope")
    assert wrong.status_code == 400
    error = wrong.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["message"] == "API key not valid. Please pass a valid API key."
    assert [d["reason"] for d in error["details"]] == ["API_KEY_INVALID"]
    fake.script(Text("hi"))
    assert post(fake, BASE).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {**BASE, "generation_config": {"temperature": 0.2}},
        {**BASE, "generation_config": {"top_p": 0.9}},
        {**BASE, "generation_config": {"top_k": 40}},
        {**BASE, "generation_config": {"thinking_budget": 1024}},
        {**BASE, "temperature": 0.2},
        {**BASE, "generation_config": {"thinking_level": "extreme"}},
        {"input": "hello"},
        {"model": "gemini-3.5-flash"},
        {**BASE, "tools": [{"type": "google_search"}]},
        {**BASE, "response_format": {"type": "text", "schema": {"type": "object"}}},
        {**BASE, "input": [{"type": "function_result", "call_id": "c", "name": "f", "result": ""}]},
    ],
)
def test_what_the_model_does_not_accept_is_a_400(fake, body):
    status, code, message = error_of(post(fake, body))
    assert (status, code) == (400, "invalid_request")
    assert message


@pytest.mark.parametrize(
    ("model", "level"),
    [("gemini-3.7-flash", "minimal"), ("gemini-3.1-pro-preview", "minimal"),
     ("gemini-3-pro-preview", "medium")],
)
def test_a_thinking_level_the_model_does_not_take_is_a_400(fake, model, level):
    body = {"model": model, "input": "hi", "generation_config": {"thinking_level": level}}
    status, code, message = error_of(post(fake, body))
    assert (status, code) == (400, "invalid_request")
    assert message == f"THINKING_LEVEL_{level.upper()} is unsupported for {model}."
    assert post(fake, {**body, "generation_config": {"thinking_level": "low"}}).status_code == 200


def test_an_unknown_previous_interaction_is_a_404(fake):
    response = post(fake, {**BASE, "previous_interaction_id": "v1_gone"})
    assert error_of(response) == (404, "not_found", "Interaction v1_gone not found.")


def test_function_results_must_answer_each_call_once_by_id_and_name(fake):
    fake.script(Calls([("read_message", {"id": "m1"}), ("read_file", {"id": "f1"})]), Text("ok"))
    first = post(fake, BASE).json()
    assert first["status"] == "requires_action"
    calls = [s for s in first["steps"] if s["type"] == "function_call"]
    results = [
        {"type": "function_result", "call_id": c["id"], "name": c["name"], "result": "r"}
        for c in calls
    ]

    def chained(items: list[dict[str, Any]] | str) -> httpx.Response:
        return post(fake, {**BASE, "input": items, "previous_interaction_id": first["id"]})

    assert chained(results[:1]).status_code == 400
    assert chained([*results, results[0]]).status_code == 400
    assert chained([results[0], results[0]]).status_code == 400
    assert chained([results[0], {**results[1], "name": "read_thread"}]).status_code == 400
    assert chained([results[0], {**results[1], "call_id": "call_x"}]).status_code == 400
    assert chained("just text").status_code == 400
    answer = chained(results)
    assert answer.status_code == 200
    assert answer.json()["status"] == "completed"
    assert answer.json()["previous_interaction_id"] == first["id"]


def test_failures_and_retry_after_on_demand(fake):
    fake.fail(429, retry_after=3, times=2)
    fake.fail(500)
    first = post(fake, BASE)
    assert first.status_code == 429
    # The quota says how long in its body, as the service does, not in a header.
    assert "retry-after" not in first.headers
    error = first.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}
    ]
    assert post(fake, BASE).status_code == 429
    assert error_of(post(fake, BASE))[:2] == (500, "internal")
    assert post(fake, BASE).status_code == 200  # the planner answers by default
    assert [r.status for r in fake.requests()] == [429, 429, 500, 200]


def test_an_answer_past_the_output_limit_is_cut_and_incomplete_but_billed():
    with FakeGemini(max_output_tokens=30) as fake:
        fake.script(Text("y" * 400, thought_tokens=10), Calls([("f", {"q": "z" * 200})]),
                    Text("short", thought_tokens=10))
        body = {**BASE, "generation_config": {"thinking_level": "low"}}
        cut = post(fake, body).json()
        calls_cut = post(fake, body).json()
        lower = post(fake, {**BASE, "generation_config": {"max_output_tokens": 12}}).json()
        refused = post(fake, {**BASE, "generation_config": {"max_output_tokens": 0}})

    # Thoughts count against the limit first; the text is cut where the limit fell.
    assert cut["status"] == "incomplete"
    (text,) = [s for s in cut["steps"] if s["type"] == "model_output"]
    assert text["content"][0]["text"] == "y" * 80
    assert (cut["usage"]["total_thought_tokens"], cut["usage"]["total_output_tokens"]) == (10, 20)
    # A function call that is not whole is not sent.
    assert calls_cut["status"] == "incomplete"
    assert not [s for s in calls_cut["steps"] if s["type"] == "function_call"]
    usage = calls_cut["usage"]  # low thinking: 8 tokens, then the call's first 22
    assert (usage["total_thought_tokens"], usage["total_output_tokens"]) == (8, 22)
    # The request's own, lower limit holds too.
    assert lower["status"] == "completed"
    assert lower["usage"]["total_thought_tokens"] == 10
    assert refused.status_code == 400
    assert "max_output_tokens" in refused.json()["error"]["message"]


def test_a_429_names_the_quota_that_ran_out_in_a_quota_failure(fake):
    fake.fail(429, retry_after=12.5, quota_id="GenerateRequestsPerDayPerProjectPerModel")
    error = post(fake, BASE).json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"] == [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_requests_per_model_per_day",
            "quotaId": "GenerateRequestsPerDayPerProjectPerModel",
            "quotaDimensions": {"location": "global", "model": "gemini-3.5-flash"},
        }]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"},
    ]


def test_chained_turns_are_billed_for_the_whole_conversation(fake):
    fake.script(Calls([("f", {})], thought_tokens=5), Text("x" * 40, thought_tokens=0))
    first = post(fake, {**BASE, "input": "a" * 400}).json()
    call = next(s for s in first["steps"] if s["type"] == "function_call")
    result = {"type": "function_result", "call_id": call["id"], "name": "f", "result": "b" * 80}
    second = post(fake, {**BASE, "input": [result], "previous_interaction_id": first["id"]}).json()

    said = len('[{"name": "f", "arguments": {}}]') // 4
    assert first["usage"]["total_input_tokens"] == 100 + len("[]") // 4
    assert first["usage"]["total_output_tokens"] == said
    assert first["usage"]["total_thought_tokens"] == 5
    assert second["usage"]["total_input_tokens"] == 100 + said + 20
    assert second["usage"]["total_output_tokens"] == 10
    assert second["usage"]["total_thought_tokens"] == 0
    assert [s["type"] for s in first["steps"]] == ["thought", "function_call"]


SCHEMA = {"type": "object", "properties": {"summary": {"type": "string"}}}
FORMAT = {"type": "text", "mime_type": "application/json", "schema": SCHEMA}


def test_the_response_schema_is_billed_as_input_on_every_turn(fake):
    fake.script(Text("{}"), Text("{}"))
    plain = post(fake, {**BASE, "input": "a" * 400}).json()["usage"]["total_input_tokens"]
    shaped = post(fake, {**BASE, "input": "a" * 400, "response_format": FORMAT}).json()

    schema_tokens = len(json.dumps(SCHEMA, sort_keys=True)) // 4
    assert shaped["usage"]["total_input_tokens"] == plain + schema_tokens


def chain(fake: FakeGemini, first_input: str, system: str = "s") -> tuple[dict, dict]:
    fake.script(Calls([("f", {})], thought_tokens=0), Text("done", thought_tokens=0))
    body = {**BASE, "system_instruction": system, "input": first_input}
    first = post(fake, body).json()
    call = next(s for s in first["steps"] if s["type"] == "function_call")
    result = {"type": "function_result", "call_id": call["id"], "name": "f", "result": "r" * 40}
    second = post(fake, {**body, "input": [result], "previous_interaction_id": first["id"]})
    return first, second.json()


def test_implicit_caching_reports_the_processed_prefix_of_a_chained_turn():
    with FakeGemini(cache_min_tokens=100) as fake:
        first, second = chain(fake, "a" * 800)

    assert first["usage"]["total_cached_tokens"] == 0
    # The first turn's whole prompt (system instruction and input) is the cached prefix;
    # its output is not (no request had processed it yet). All of it is still input.
    assert second["usage"]["total_cached_tokens"] == first["usage"]["total_input_tokens"]
    assert second["usage"]["total_input_tokens"] > second["usage"]["total_cached_tokens"]


def test_no_cache_below_the_models_minimum_or_after_the_prefix_changed():
    with FakeGemini() as fake:  # gemini-3.5-flash: 4,096 tokens at least
        _, short = chain(fake, "a" * 800)
        assert short["usage"]["total_cached_tokens"] == 0
        _, long = chain(fake, "a" * 20_000)
        assert long["usage"]["total_cached_tokens"] == 5_000 + 0  # 20,000 chars, "s" is 0
        # A new conversation with the same long input is cached in stateless mode too...
        again = post(fake, {**BASE, "system_instruction": "s", "input": "a" * 20_000}).json()
        assert again["usage"]["total_cached_tokens"] == 5_000
        # ...but not behind another system instruction: the prefix differs from the start.
        fake.script(Text("x"))
        other = post(fake, {**BASE, "system_instruction": "t", "input": "a" * 20_000}).json()
        assert other["usage"]["total_cached_tokens"] == 0


async def test_the_real_sdk_sees_the_fakes_errors_as_the_apis(fake):
    client = genai.Client(
        api_key=fake.api_key,
        http_options=genai_types.HttpOptions(
            base_url=fake.url, retry_options=genai_types.HttpRetryOptions(attempts=1)
        ),
    )
    with pytest.raises(api_errors.BadRequestError) as caught:
        await client.aio.interactions.create(
            model="gemini-3.5-flash", input="hi",
            generation_config={"thinking_level": "low", "temperature": 0.5},
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["message"].startswith("temperature is not supported")
    fake.script(Text("fine"))
    interaction = await client.aio.interactions.create(
        model="gemini-3.5-flash", input="hi", generation_config={"thinking_level": "minimal"}
    )
    assert interaction.output_text == "fine"
    await client.aio.aclose()


@pytest.mark.slow
def test_it_starts_on_its_own_with_a_control_api():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.gemini", "--port", "0", "--api-key", "k"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        control = httpx.post(f"{url}/_fake/script", json={"replies": [{"text": "scripted"}]})
        assert control.json() == {"ok": True}
        answer = httpx.post(
            f"{url}/v1/interactions", json=BASE, headers={"x-goog-api-key": "k"}, timeout=10
        )
        assert answer.json()["steps"][-1]["content"][0]["text"] == "scripted"
        recorded = httpx.get(f"{url}/_fake/requests").json()
        assert [r["status"] for r in recorded] == [200]
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
