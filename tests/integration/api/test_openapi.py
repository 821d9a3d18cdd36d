"""The OpenAPI document and docs, health checks, and errors of routing itself."""

from __future__ import annotations

import json

import httpx
import pytest

from app.core.runtime import Runtime
from tests.factories import user_with_token
from tests.integration.api.helpers import API, app_routes, assert_error

# The paths known when these tests were written; the app may add more.
EXPECTED_PATHS = {
    f"{API}/me": {"get"},
    f"{API}/instructions": {"get", "post"},
    f"{API}/instructions/{{instruction_id}}": {"get", "patch", "delete"},
    f"{API}/instructions/{{instruction_id}}/pause": {"post"},
    f"{API}/instructions/{{instruction_id}}/resume": {"post"},
    f"{API}/instructions/{{instruction_id}}/run": {"post"},
    f"{API}/runs": {"get"},
    f"{API}/runs/{{run_id}}": {"get"},
    f"{API}/runs/{{run_id}}/cancel": {"post"},
    f"{API}/questions": {"get"},
    f"{API}/questions/{{question_id}}/answer": {"post"},
    f"{API}/notifications": {"get"},
    f"{API}/notifications/read": {"post"},
    f"{API}/notifications/{{notification_id}}/read": {"post"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def test_openapi_lists_every_api_path(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = json.loads(response.text)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "Pilotlight"

    paths = document["paths"]
    api_paths = {path: set(ops) & HTTP_METHODS for path, ops in paths.items()
                 if path.startswith(API)}
    routes: dict[str, set[str]] = {}
    for method, path in app_routes():
        if path.startswith(API):
            routes.setdefault(path, set()).add(method.lower())
    assert api_paths == routes  # every route of the app is documented, and nothing else
    for path, methods in EXPECTED_PATHS.items():
        assert methods <= api_paths.get(path, set()), path
    assert {"/healthz", "/readyz"} <= set(paths)

    for path, operations in api_paths.items():
        for method in operations:
            operation = paths[path][method]
            assert operation["operationId"], (method, path)
            responses = operation["responses"]
            assert "401" in responses, (method, path)  # every API route needs a token
            if "{" in path:
                assert "404" in responses or "422" in responses, (method, path)
    # the error body is documented
    assert "ErrorBody" in document["components"]["schemas"]
    # the bearer scheme is declared
    assert any(s.get("scheme") == "bearer"
               for s in document["components"]["securitySchemes"].values())


async def test_docs_serve_html(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in response.text


async def test_health(client: httpx.AsyncClient) -> None:
    healthz = await client.get("/healthz")
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    readyz = await client.get("/readyz")
    assert (readyz.status_code, readyz.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    "path", ["/nowhere", f"{API}/nowhere", f"{API}/instructions/x/y/z", "/api/v2/instructions"]
)
async def test_unknown_path_is_404(
    client: httpx.AsyncClient, runtime: Runtime, path: str
) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.get(path, headers=headers)
    body = assert_error(response, 404, "NotFound")
    assert set(body) == {"error", "detail"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", f"{API}/instructions"),
        ("PUT", f"{API}/instructions/00000000-0000-0000-0000-000000000000"),
        ("GET", f"{API}/instructions/00000000-0000-0000-0000-000000000000/run"),
        ("POST", f"{API}/me"),
        ("DELETE", f"{API}/runs/00000000-0000-0000-0000-000000000000"),
        ("GET", f"{API}/notifications/read"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_is_405(
    client: httpx.AsyncClient, runtime: Runtime, method: str, path: str
) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.request(method, path, headers=headers)
    body = assert_error(response, 405, "MethodNotAllowed")
    assert set(body) == {"error", "detail"}
    assert response.headers.get("allow")


async def test_the_patch_body_documents_no_field_as_nullable(client: httpx.AsyncClient) -> None:
    # A field set to null is refused (leave it out to keep its value): the document says so.
    document = (await client.get("/openapi.json")).json()
    body = document["paths"][f"{API}/instructions/{{instruction_id}}"]["patch"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    fields = schema["properties"]
    assert set(fields) >= {"title", "text", "trigger", "channels", "only_new"}
    assert "null" not in json.dumps(fields)
    assert fields["title"] == {"type": "string", "minLength": 1, "maxLength": 200,
                               "title": "Title"}
    assert "oneOf" in fields["trigger"]
    assert not schema.get("required")


async def test_every_422_is_documented_as_the_error_body_the_api_sends(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    document = (await client.get("/openapi.json")).json()
    invalid = [(path, method, operation["responses"]["422"])
               for path, operations in document["paths"].items()
               for method, operation in operations.items()
               if "422" in operation.get("responses", {})]
    assert len(invalid) > 10
    for path, method, response in invalid:
        schema = response["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    # What a 422 is sent with matches it.
    _user, headers = await user_with_token(runtime)
    sent = (await client.get(f"{API}/instructions/not-an-id", headers=headers)).json()
    body = document["components"]["schemas"]["ErrorBody"]
    assert set(sent) <= set(body["properties"])
    assert set(body["required"]) <= set(sent)
