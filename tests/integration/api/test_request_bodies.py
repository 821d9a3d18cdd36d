"""Bodies the API cannot take get a 4xx that says why: too large, not JSON, bad JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

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
    response = await client.post(url, content=body, headers={
        **headers, "Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 201, response.text
