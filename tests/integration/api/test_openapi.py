"""The OpenAPI document and docs, health checks, and errors of routing itself."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest

from app.core.runtime import Runtime
from app.main import create_app
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
README = Path(__file__).resolve().parents[3] / "README.md"
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


def readme_api_routes() -> set[tuple[str, str]]:
    """(method, path) of each route the README's API overview lists, ids as `{}`: its
    rows read "`GET /me`", "`GET`, `PATCH`, `DELETE /instructions/{id}`" and
    "`POST /instructions/{id}/pause`, `/resume`"."""
    text = README.read_text().split("## API overview", 1)[1].split("\n#", 1)[0]
    routes: set[tuple[str, str]] = set()
    for cell in re.findall(r"^\| (`[A-Z].*?) \|", text, re.M):
        pending: list[str] = []  # methods whose path comes next
        for part in re.findall(r"`([^`]+)`", cell):
            if re.fullmatch(r"[A-Z]+", part):
                pending.append(part)
                continue
            if match := re.fullmatch(r"([A-Z]+) (/\S*)", part):
                methods, path, pending = [*pending, match[1]], match[2], []
            elif part.startswith("/"):  # a sibling of the path before
                path = path.rsplit("/", 1)[0] + part
            else:
                continue  # a body, such as `{"endpoint": …}`
            routes |= {(method, re.sub(r"{\w+}", "{}", path)) for method in methods}
    return routes


def test_the_readme_lists_every_api_route_and_no_other() -> None:
    routes = {(method, re.sub(r"{\w+}", "{}", path.removeprefix(API)))
              for method, path in app_routes() if path.startswith(API)}
    assert ("GET", "/instructions/{}") in readme_api_routes()  # the table is read as meant
    assert readme_api_routes() == routes


async def test_the_api_docs_are_off_by_default_and_the_document_is_served(
    client: httpx.AsyncClient,
) -> None:
    """FastAPI's /docs and /redoc load scripts from a CDN on the dashboard's origin: off
    unless PILOTLIGHT_API_DOCS turns them on. /openapi.json is always there."""
    for path in ("/docs", "/redoc"):
        response = await client.get(path, headers={"Accept": "text/html"})
        assert response.status_code == 404, path
        assert "cdn.jsdelivr.net" not in response.text
        assert "script-src 'self'" in response.headers["content-security-policy"]
    assert (await client.get("/openapi.json")).status_code == 200


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_api_docs_when_turned_on_may_load_only_what_they_name(
    runtime: Runtime, path: str
) -> None:
    """Turned on, each page carries a policy allowing the hosts it loads from and its one
    inline script by hash: no 'unsafe-inline' script, no frame, no form."""
    on = Runtime(runtime.settings.model_copy(update={"api_docs": True}), runtime.engine,
                 runtime.sessionmaker, runtime.wakeups)
    transport = httpx.ASGITransport(app=create_app(on))
    async with httpx.AsyncClient(transport=transport, base_url="http://pilotlight.test") as c:
        response = await c.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    csp = dict(
        (part.split()[0], part.split()[1:])
        for part in response.headers["content-security-policy"].split("; ")
    )
    assert csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["form-action"] == ["'none'"]
    assert "'unsafe-inline'" not in csp["script-src"]
    for script in re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp["script-src"]
    loaded = set(re.findall(r'(?:src|href)="(https://[^/"]+)', response.text))
    assert loaded
    allowed = {source for sources in csp.values() for source in sources}
    assert loaded <= allowed, loaded - allowed
    assert response.headers["x-frame-options"] == "DENY"


async def test_every_answer_of_the_app_carries_the_security_headers(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Not only the dashboard's pages: API answers, health and the OAuth callback's errors
    too (a policy restricts documents only, so JSON is unchanged)."""
    _user, headers = await user_with_token(runtime)
    answers = [
        await client.get(f"{API}/me", headers=headers),
        await client.get("/healthz"),
        await client.get("/openapi.json"),
        await client.get("/oauth/google/callback", params={"state": "s"}),
        await client.get("/nowhere", headers={"Accept": "text/html"}),
    ]
    for response in answers:
        assert "script-src 'self'" in response.headers["content-security-policy"], response.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    assert answers[0].json()["email"]
    assert "no-store" not in answers[0].headers.get("cache-control", "")
    assert answers[-1].headers["cache-control"] == "no-store"  # an HTML page


async def test_health(client: httpx.AsyncClient) -> None:
    healthz = await client.get("/healthz")
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    readyz = await client.get("/readyz")
    assert (readyz.status_code, readyz.json()) == (200, {"status": "ok"})
    for path in ("/healthz", "/readyz"):  # as monitors probe
        probed = await client.head(path)
        assert probed.status_code == 200, path


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


@pytest.mark.parametrize(("public_url", "name"), [
    ("", "pilotlight_session"),
    ("https://pilot.example.com", "__Host-pilotlight_session"),
])
async def test_the_document_names_the_session_cookie_the_api_reads(
    runtime: Runtime, public_url: str, name: str
) -> None:
    runtime.settings.public_url = public_url
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://pilotlight.test") as c:
        document = (await c.get("/openapi.json")).json()
    (cookie,) = [s for s in document["components"]["securitySchemes"].values()
                 if s.get("in") == "cookie"]
    assert cookie["name"] == name


@pytest.mark.parametrize(
    ("method", "path", "errors"),
    [("post", "/instructions", {"NothingToRead", "WatchNeedsGoogle"}),
     ("post", "/instructions/{instruction_id}/resume", {"NothingToRead", "WatchNeedsGoogle"}),
     ("post", "/instructions/{instruction_id}/run", {"NothingToRead"}),
     ("post", "/instructions/{instruction_id}/preview", {"NothingToRead"})],
)
async def test_setting_an_instruction_running_documents_its_refusals(
    client: httpx.AsyncClient, method: str, path: str, errors: set[str]
) -> None:
    """The README says these answer 422 NothingToRead (and a watch WatchNeedsGoogle)
    without an account to read: the document says so too."""
    document = (await client.get("/openapi.json")).json()
    described = document["paths"][API + path][method]["responses"]["422"]["description"]
    assert errors <= set(described.split(", "))
