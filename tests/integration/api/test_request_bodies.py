"""What the API cannot take gets a 4xx that says why: bodies too large, not JSON or bad
JSON; values of the wrong JSON type; query parameters and bodies an endpoint does not take."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from app.core.runtime import Runtime
from tests.factories import instruction_body, user_with_token
from tests.integration.api.helpers import API, assert_error


async def test_a_body_over_the_bound_is_refused_before_anything_reads_it(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    bound = runtime.settings.api_max_body_bytes
    big = b'{"title": "' + b"x" * bound + b'"}'
    # Refused before the route looks at the token: no token is needed to see it.
    for headers in ({}, (await user_with_token(runtime))[1]):
        response = await client.post(f"{API}/instructions", content=big, headers={
            **headers, "Content-Type": "application/json"})
        assert_error(response, 413, "PayloadTooLarge", f"larger than {bound} bytes")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
        for _ in range(bound // 65_536 + 2):
            yield b" " * 65_536

    response = await client.post(f"{API}/instructions", content=chunks(), headers={
        "Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "PayloadTooLarge")


async def test_a_body_that_is_not_json_says_so(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await user_with_token(runtime)
    url = f"{API}/instructions"
    response = await client.post(url, content=b'{"title": "x",', headers={
        **headers, "Content-Type": "application/json"})
    error = assert_error(response, 422, "ValidationError", "not valid JSON", "character 14")
    assert [e["field"] for e in error["errors"]] == ["body"]

    # curl -d without -H: form-encoded, though the text is JSON.
    body = httpx.Request("POST", url, json=instruction_body()).content
    for content, content_type in ((body, "application/x-www-form-urlencoded"),
                                  (body, "text/plain"), (b"title=Morning", "multipart/form-data"),
                                  (b"hello", "text/plain")):
        response = await client.post(url, content=content, headers={
            **headers, "Content-Type": content_type})
        assert_error(response, 415, "UnsupportedMediaType", "Content-Type: application/json",
                     content_type)
    # No Content-Type at all (Python's requests with data=): not "not an object".
    response = await client.post(url, content=body, headers=headers)
    assert "content-type" not in response.request.headers
    assert_error(response, 415, "UnsupportedMediaType", "Content-Type: application/json",
                 "it has none")
    response = await client.post(url, content=body, headers={
        **headers, "Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(("content", "why"), [
    pytest.param('{"title": "café", "text": "t"}'.encode("latin-1"),
                 "not UTF-8 at byte offset 14", id="latin-1"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="deep"),
    pytest.param(b'{"max_tool_calls": ' + b"9" * 5000 + b"}", "too many digits",
                 id="long-number"),
])
async def test_json_that_cannot_be_read_is_a_422_saying_why(
    client: httpx.AsyncClient, runtime: Runtime, content: bytes, why: str
) -> None:
    """Not a syntax error, so FastAPI answered 400 "There was an error parsing the body"."""
    _user, headers = await user_with_token(runtime)
    response = await client.post(f"{API}/instructions", content=content, headers={
        **headers, "Content-Type": "application/json"})
    error = assert_error(response, 422, "ValidationError", "not valid JSON", why)
    assert [e["field"] for e in error["errors"]] == ["body"]


async def test_a_query_parameter_the_endpoint_does_not_take_is_refused_not_ignored(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Ignored, a filter /notifications does not have answered the whole feed as if it
    had been filtered."""
    _user, headers = await user_with_token(runtime)
    response = await client.get(f"{API}/notifications", headers=headers,
                                params={"instruction_id": str(uuid.uuid4())})
    body = assert_error(response, 422, "ValidationError", "unknown query parameter")
    assert body["errors"][0]["field"] == "instruction_id"
    assert "cursor, limit, unread" in body["errors"][0]["message"]
    ok = await client.get(f"{API}/notifications", headers=headers, params={"unread": "true"})
    assert ok.status_code == 200, ok.text
    # Without a token the answer is the 401: the request's shape is not told to anyone.
    assert (await client.get(f"{API}/notifications?x=1")).status_code == 401


async def test_a_query_parameter_given_twice_is_refused_not_read_as_the_last(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """`?status=active&status=paused` listed the paused ones only, as if asked for them."""
    _user, headers = await user_with_token(runtime)
    response = await client.get(f"{API}/instructions?status=active&status=paused",
                                headers=headers)
    body = assert_error(response, 422, "ValidationError", "given more than once")
    assert body["errors"][0]["field"] == "status"
    once = await client.get(f"{API}/instructions?status=paused", headers=headers)
    assert once.status_code == 200, once.text


async def test_a_body_sent_to_an_endpoint_that_takes_none_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A client that thinks run-now takes `{"days": 3}` as preview does must not get a run
    that is not what it asked for."""
    _user, headers = await user_with_token(runtime)
    created = await client.post(f"{API}/instructions", json=instruction_body(), headers=headers)
    url = f"{API}/instructions/{created.json()['id']}/run"
    response = await client.post(url, json={"days": 3}, headers=headers)
    assert_error(response, 422, "ValidationError", "takes no body")
    runs = await client.get(f"{API}/runs", headers=headers,
                            params={"instruction_id": created.json()["id"]})
    assert runs.json()["items"] == []
    # No body, or an empty object as some clients send by default, is fine.
    assert (await client.post(url, headers=headers)).status_code == 201
    # The run it queued, not started yet, is returned (200) rather than a second one.
    assert (await client.post(url, json={}, headers=headers)).status_code == 200


async def test_numbers_and_booleans_must_be_json_numbers_and_booleans(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """`true` was stored as an action budget of 1, and "yes" as only_new."""
    _user, headers = await user_with_token(runtime)
    created = await client.post(f"{API}/instructions", json=instruction_body(), headers=headers)
    url = f"{API}/instructions/{created.json()['id']}"
    for change in ({"max_tool_calls": True}, {"max_tool_calls": "5"}, {"only_new": "yes"},
                   {"only_new": 1}, {"trigger": {"type": "interval", "seconds": "3600"}}):
        response = await client.patch(url, json=change, headers=headers)
        body = assert_error(response, 422, "ValidationError")
        assert body["errors"][0]["field"].split(".")[0] == next(iter(change)), body
    changed = await client.patch(url, json={"max_tool_calls": 5, "only_new": False},
                                 headers=headers)
    assert (changed.json()["max_tool_calls"], changed.json()["only_new"]) == (5, False)
