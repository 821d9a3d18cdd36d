"""What the API refuses rather than ignores: query parameters an endpoint does not take
or that are given more than once, and a body sent to one that takes none.

Ignored, a misspelt or unsupported filter (`/notifications?instruction_id=…`) answers
the whole list as if it were filtered, and a body sent to run-now (`{"days": 3}`, as
preview takes) would queue a run that is not what was asked for. Both are 422s in the
API's one error shape, naming what the endpoint does take.
"""

from __future__ import annotations

import typing
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

# What a client may send to an endpoint that takes no body (some send `{}` by default).
_EMPTY_BODIES = (b"", b"{}", b"null")

# The query parameters a route takes, worked out once and kept on the route itself
# (routes compare by value and cannot be dict keys; an id could be reused by another).
_KNOWN = "_pilotlight_query_names"


def _query_names(dependant: Dependant) -> frozenset[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


def _list_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters that take several values (`?a=1&a=2`)."""
    names = {param.alias for param in dependant.query_params
             if typing.get_origin(param.field_info.annotation) in (list, tuple, set)}
    for sub in dependant.dependencies:
        names |= _list_names(sub)
    return frozenset(names)


def _takes_body(dependant: Dependant) -> bool:
    return bool(dependant.body_params) or any(_takes_body(d) for d in dependant.dependencies)


async def as_declared(request: Request) -> None:
    """422 for an unknown query parameter, or for a body sent to an endpoint without one.
    Called once the request is signed in (`app.users.deps.get_sign_in`)."""
    route = request.scope.get("route")
    dependant: Dependant | None = getattr(route, "dependant", None)
    if dependant is None:
        return
    names: tuple[frozenset[str], frozenset[str]] | None = getattr(route, _KNOWN, None)
    if names is None:
        names = (_query_names(dependant), _list_names(dependant))
        setattr(route, _KNOWN, names)
    known, lists = names
    problems: list[dict[str, Any]] = []
    takes = ", ".join(sorted(known)) or "none"
    for name in sorted(set(request.query_params) - known):
        problems.append({"type": "extra_forbidden", "loc": ("query", name),
                         "msg": f"unknown query parameter (this endpoint takes: {takes})",
                         "input": request.query_params[name]})
    for name in sorted((set(request.query_params) & known) - lists):
        given = request.query_params.getlist(name)
        if len(given) > 1:  # else the last would win, silently
            problems.append({"type": "extra_forbidden", "loc": ("query", name),
                             "msg": "given more than once (it takes one value)",
                             "input": given})
    if not _takes_body(dependant) and request.method in ("POST", "PUT", "PATCH", "DELETE"):
        body = (await request.body()).strip()
        if body not in _EMPTY_BODIES:
            problems.append({"type": "extra_forbidden", "loc": ("body",),
                             "msg": "this endpoint takes no body", "input": None})
    if problems:
        raise RequestValidationError(problems)
