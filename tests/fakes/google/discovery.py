"""Routes, parameters and response fields of Gmail v1 and Drive v3, read from the discovery
documents google-api-python-client ships, so the fake accepts exactly what the APIs accept."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import unquote

from .errors import ApiError, invalid_argument


@dataclass(frozen=True)
class Method:
    id: str  # e.g. "gmail.users.messages.get"
    api: str  # "gmail" or "drive"
    http_method: str
    pattern: re.Pattern[str]
    literal_rank: int  # routes with fewer path variables win
    parameters: dict[str, dict[str, Any]]  # query and path parameters, with the global ones
    scopes: frozenset[str]
    response_ref: str | None
    upload: bool


@dataclass(frozen=True)
class Api:
    name: str
    document: dict[str, Any]
    methods: tuple[Method, ...]

    @property
    def schemas(self) -> dict[str, Any]:
        schemas: dict[str, Any] = self.document["schemas"]
        return schemas


def _pattern(path: str) -> tuple[re.Pattern[str], int]:
    variables = 0
    regex = ""
    for piece in re.split(r"(\{[+]?[A-Za-z_]+\})", path):
        if piece.startswith("{"):
            variables += 1
            name = piece.strip("{}+")
            regex += f"(?P<{name}>[^/]+)"
        else:
            regex += re.escape(piece)
    return re.compile(f"^{regex}$"), variables


def _load(name: str, version: str) -> Api:
    text = (
        resources.files("googleapiclient")
        .joinpath("discovery_cache", "documents", f"{name}.{version}.json")
        .read_text()
    )
    document = json.loads(text)
    service_path = document["servicePath"]
    common = document.get("parameters", {})
    methods: list[Method] = []

    def walk(resource: dict[str, Any]) -> None:
        for method in resource.get("methods", {}).values():
            params = {**common, **method.get("parameters", {})}
            paths = [("/" + service_path + method["path"], False)]
            upload = method.get("mediaUpload", {}).get("protocols", {}).get("simple", {})
            if upload.get("path"):
                paths.append((upload["path"], True))
            for path, is_upload in paths:
                pattern, variables = _pattern(path)
                methods.append(
                    Method(
                        id=method["id"], api=name, http_method=method["httpMethod"],
                        pattern=pattern, literal_rank=variables, parameters=params,
                        scopes=frozenset(method.get("scopes", ())),
                        response_ref=(method.get("response") or {}).get("$ref"),
                        upload=is_upload,
                    )
                )
        for child in resource.get("resources", {}).values():
            walk(child)

    walk(document)
    methods.sort(key=lambda m: m.literal_rank)
    return Api(name, document, tuple(methods))


@cache
def apis() -> dict[str, Api]:
    return {"gmail": _load("gmail", "v1"), "drive": _load("drive", "v3")}


def route(http_method: str, path: str) -> tuple[Method, dict[str, str]] | None:
    """The API method serving `http_method path`, and its path parameters."""
    for api in apis().values():
        for method in api.methods:
            match = method.pattern.match(path)
            if match and method.http_method == http_method:
                return method, {k: unquote(v) for k, v in match.groupdict().items()}
    return None


def check_query(method: Method, query: list[tuple[str, str]]) -> dict[str, Any]:
    """The query parameters, typed and validated as the API does; 400 on anything wrong."""
    values: dict[str, Any] = {}
    for name, raw in query:
        spec = method.parameters.get(name)
        if spec is None or spec.get("location") != "query":
            raise invalid_argument(
                f"Invalid JSON payload received. Unknown name \"{name}\": Cannot bind query "
                f"parameter. Field '{name}' could not be found in request message.",
            )
        value = _typed(name, raw, spec)
        if spec.get("repeated"):
            values.setdefault(name, []).append(value)
        elif name in values:
            raise invalid_argument(f"Parameter '{name}' was given more than once.", name)
        else:
            values[name] = value
    for name, spec in method.parameters.items():
        if spec.get("location") == "query" and spec.get("required") and name not in values:
            raise ApiError(400, "required", f"Required parameter: {name}",
                           location=name, location_type="parameter")
    return values


def _typed(name: str, raw: str, spec: dict[str, Any]) -> Any:
    kind = spec.get("type")
    if kind == "integer":
        try:
            number = int(raw)
        except ValueError:
            raise invalid_argument(
                f"Invalid value at '{name}' (TYPE_UINT32), \"{raw}\"", name
            ) from None
        if number < int(spec.get("minimum", -(2**63))) or number < 0:
            raise invalid_argument(f"Invalid value at '{name}', {raw} is out of range.", name)
        if "maximum" in spec:
            number = min(number, int(spec["maximum"]))  # Google coerces large page sizes
        return number
    if kind == "boolean":
        if raw not in ("true", "false", "True", "False", "1", "0"):
            raise invalid_argument(f"Invalid value at '{name}' (TYPE_BOOL), \"{raw}\"", name)
        return raw in ("true", "True", "1")
    if "enum" in spec and raw not in spec["enum"]:
        raise invalid_argument(f"Invalid value at '{name}', \"{raw}\"", name)
    return raw


# --- partial responses (`fields`) -------------------------------------------------------------


def parse_fields(text: str) -> dict[str, Any]:
    """`a,b(c,d/e),f/g` -> {"a": {}, "b": {"c": {}, "d": {"e": {}}}, "f": {"g": {}}}."""
    position = 0

    def selection(closing: str | None) -> dict[str, Any]:
        nonlocal position
        result: dict[str, Any] = {}
        while position < len(text):
            match = re.compile(r"\s*([A-Za-z0-9_*]+(?:/[A-Za-z0-9_*]+)*)\s*").match(text, position)
            if not match:
                raise _bad_fields(text)
            position = match.end()
            path = match.group(1).split("/")
            target = result
            for part in path[:-1]:
                target = target.setdefault(part, {})
            leaf = target.setdefault(path[-1], {})
            if position < len(text) and text[position] == "(":
                position += 1
                leaf.update(selection(")"))
            if position < len(text) and text[position] == ",":
                position += 1
                continue
            if position < len(text) and text[position] == ")":
                if closing != ")":
                    raise _bad_fields(text)
                position += 1
                return result
        if closing is not None:
            raise _bad_fields(text)
        return result

    return selection(None)


def _bad_fields(text: str) -> ApiError:
    return ApiError(400, "invalidParameter", f"Invalid field selection {text}",
                    location="fields", location_type="parameter")


def select(
    payload: Any, selection: dict[str, Any], schema_ref: str | None, schemas: dict[str, Any]
) -> Any:
    """`payload` cut down to `selection`; a field the schema does not have is a 400."""
    if not selection or "*" in selection:
        return payload
    if isinstance(payload, list):
        return [select(item, selection, schema_ref, schemas) for item in payload]
    if not isinstance(payload, dict):
        return payload
    properties = schemas.get(schema_ref or "", {}).get("properties", {}) if schema_ref else {}
    result: dict[str, Any] = {}
    for name, sub in selection.items():
        if properties and name not in properties:
            raise _bad_fields(name)
        if name not in payload:
            continue
        spec = properties.get(name, {})
        ref = spec.get("$ref") or spec.get("items", {}).get("$ref")
        result[name] = select(payload[name], sub, ref, schemas)
    return result
