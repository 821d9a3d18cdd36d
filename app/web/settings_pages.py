"""Settings: Google connection, web push, webhooks, API tokens, time zone, cost cap, usage."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import queries as accounts
from app.channels import push as push_service
from app.channels import service as webhooks
from app.channels.schemas import EVENT_TYPES, WebhookCreate, WebhookUpdate
from app.core.config import Settings
from app.core.crypto import SecretKeyError, secret_box
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import BadRequest, DomainError
from app.core.runtime import Runtime
from app.core.security import hash_token, same_secret
from app.core.validation import check_timezone
from app.delivery import gmail
from app.runs import costs
from app.users import service as users
from app.web import shown_once
from app.web.charts import usage_chart
from app.web.deps import FormViewerDep, Viewer, ViewerDep
from app.web.forms import errors_of
from app.web.render import page, redirect
from app.web.shown_once import ShownOnce

# Pages return responses they build; none has a response model.
router = APIRouter(include_in_schema=False)
GOOGLE_CONNECT = "/api/v1/google/connect"


async def _settings_page(
    request: Request, viewer: Viewer, session: AsyncSession, runtime: Runtime, *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    user = viewer.user
    usage = await costs.usage(session=session, user=user, days=30)
    context.setdefault("new_token", None)
    context.setdefault("new_secret", None)
    context.setdefault("token_error", None)
    context.setdefault("webhook_errors", [])
    # What the webhook form shows: as the user sent it after an error, else empty (every
    # event ticked).
    context.setdefault("webhook_form", {"url": "", "event_types": None})
    context.setdefault("profile_error", None)
    context.setdefault("profile_saved", False)
    # What the profile form shows: as the user sent it after an error, else as saved.
    context.setdefault("profile_form", {
        "timezone": user.timezone, "daily_cost_cap_usd": user.daily_cost_cap_usd,
        "move_instructions": True, "invalid": None,
    })
    listed = await accounts.list_for(session=session, user=user)
    return page(
        request, "settings.html", viewer, status_code=status_code, active="settings",
        accounts=listed,
        # Where email goes, as the email channel (app/delivery/mail.py) chooses.
        email_through=gmail.sender_account([a for a in listed if a.status == "active"]),
        email_smtp=bool(runtime.settings.smtp_host),
        google_connect=GOOGLE_CONNECT,
        google_configured=bool(runtime.settings.google_client_id
                               and runtime.settings.google_client_secret),
        tokens=await users.list_tokens(session=session, user=user),
        webhooks=[webhooks.to_out(w) for w in await webhooks.list_for(session=session,
                                                                       user=user)],
        event_types=EVENT_TYPES,
        subscriptions=await push_service.list_for(session=session, user=user),
        usage=usage, chart=usage_chart(usage),
        spent_today=await costs.spent_today(session=session, user=user), **context,
    )


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(
    request: Request, viewer: ViewerDep, session: SessionDep, runtime: RuntimeDep,
    saved: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    """`saved=profile`: the time zone and cap were just saved, which the page says. After
    a new token or webhook secret, the form's redirect leads here with it in a sealed
    cookie (`app.web.shown_once`): shown this once, and the cookie deleted."""
    settings = runtime.settings
    held, shown = shown_once.take(request, viewer, settings)
    context = await _shown(session, viewer, settings, shown) if shown else {}
    response = await _settings_page(request, viewer, session, runtime,
                                    profile_saved=saved == "profile", **context)
    if held:
        shown_once.forget(response, settings)
        response.headers["Cache-Control"] = "no-store"
    return response


async def _shown(
    session: AsyncSession, viewer: Viewer, settings: Settings, shown: ShownOnce
) -> dict[str, Any]:
    """What the page shows of a secret from the cookie: only while it is still the one
    in use (a token since revoked, a webhook since deleted or given another secret shows
    nothing)."""
    if shown.kind == "token":
        for token in await users.list_tokens(session=session, user=viewer.user):
            if (token.id == shown.id and token.revoked_at is None
                    and same_secret(token.token_hash, hash_token(shown.secret))):
                return {"new_token": (token, shown.secret)}
        return {}
    try:
        webhook = await webhooks.get(session=session, user=viewer.user, webhook_id=shown.id)
        current = webhooks.secret_of(webhook, secret_box(settings))
    except (webhooks.WebhookNotFound, SecretKeyError):
        return {}
    if not same_secret(current, shown.secret):
        return {}
    return {"new_secret": (webhooks.to_out(webhook), shown.secret)}


@router.post("/settings/profile")
async def update_profile(
    request: Request, viewer: FormViewerDep, session: SessionDep, runtime: RuntimeDep,
    timezone: Annotated[str, Form(max_length=64)] = "",
    daily_cost_cap_usd: Annotated[str, Form(max_length=20)] = "",
    move_instructions: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Save the time zone and the cap; with `move_instructions`, the scheduled
    instructions in the old time zone move to the new one. Refused, the form comes back
    with what was typed in it and the field that is wrong named."""
    timezone = timezone.strip()
    invalid = "timezone"
    try:
        if timezone:
            try:
                check_timezone(timezone)
            except ValueError as exc:
                raise BadRequest(f"Time zone: {exc}") from None
        invalid = "cap"  # the zone is one: what update_profile refuses now is the cap
        try:
            cap = float(daily_cost_cap_usd) if daily_cost_cap_usd.strip() else None
        except ValueError:
            raise BadRequest("Daily cost cap: must be a number of US dollars") from None
        await users.update_profile(session=session, user=viewer.user,
                                   timezone=timezone or None, daily_cost_cap_usd=cap,
                                   move_instructions=bool(move_instructions))
    except BadRequest as exc:
        return await _settings_page(
            request, viewer, session, runtime, status_code=422, profile_error=exc.detail,
            profile_form={"timezone": timezone or viewer.user.timezone,
                          "daily_cost_cap_usd": daily_cost_cap_usd.strip()
                          or viewer.user.daily_cost_cap_usd,
                          "move_instructions": bool(move_instructions), "invalid": invalid})
    return redirect(request, "/settings?saved=profile#profile", viewer)


@router.post("/settings/tokens", response_model=None)
async def create_token(
    request: Request, viewer: FormViewerDep, session: SessionDep, runtime: RuntimeDep,
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Create a token and show it on the page this leads to only: it is stored as a hash.
    Without a key to seal it across the redirect, none is created (503, saying why)."""
    try:
        shown_once.require_keys(runtime.settings)
    except SecretKeyError as exc:
        return await _settings_page(request, viewer, session, runtime,
                                    status_code=exc.status_code, token_error=exc.detail)
    token, plaintext = await users.create_token(
        session=session, user=viewer.user, name=name.strip() or "dashboard"
    )
    return shown_once.redirect_showing(
        request, viewer, "/settings#tokens",
        ShownOnce(kind="token", id=token.id, secret=plaintext), runtime.settings)


@router.post("/settings/tokens/{token_id}/revoke")
async def revoke_token(
    request: Request, token_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep
) -> Response:
    await users.revoke_token(session=session, user=viewer.user, token_id=token_id)
    return redirect(request, "/settings#tokens", viewer)


@router.post("/settings/webhooks", response_model=None)
async def create_webhook(
    request: Request, viewer: FormViewerDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Register a webhook and show its signing secret on the page this leads to only."""
    form = await request.form()
    body = {"url": str(form.get("url") or "").strip(),
            "event_types": [v for v in form.getlist("event_types") if isinstance(v, str)]}
    try:
        data = WebhookCreate.model_validate(body)
        webhook, secret = await webhooks.create(
            session=session, user=viewer.user, data=data, settings=runtime.settings
        )
    except ValidationError as exc:
        return await _settings_page(request, viewer, session, runtime, status_code=422,
                                    webhook_errors=errors_of(exc), webhook_form=body)
    except DomainError as exc:  # a refused URL, too many webhooks, no secret key
        return await _settings_page(request, viewer, session, runtime,
                                    status_code=exc.status_code, webhook_errors=[exc.detail],
                                    webhook_form=body)
    return shown_once.redirect_showing(
        request, viewer, "/settings#webhooks",
        ShownOnce(kind="webhook", id=webhook.id, secret=secret), runtime.settings)


@router.post("/settings/webhooks/{webhook_id}/secret", response_model=None)
async def rotate_webhook_secret(
    request: Request, webhook_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    """A new signing secret, shown on the page this leads to only; the old one signs too
    for a day."""
    try:
        webhook, secret = await webhooks.rotate_secret(
            session=session, user=viewer.user, webhook_id=webhook_id,
            settings=runtime.settings)
    except SecretKeyError as exc:
        return await _settings_page(request, viewer, session, runtime,
                                    status_code=exc.status_code, webhook_errors=[exc.detail])
    return shown_once.redirect_showing(
        request, viewer, "/settings#webhooks",
        ShownOnce(kind="webhook", id=webhook.id, secret=secret), runtime.settings)


@router.post("/settings/webhooks/{webhook_id}/enable")
async def enable_webhook(
    request: Request, webhook_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    """Turn on a webhook that was off (a 410 turned it off, or the API did)."""
    await webhooks.update_webhook(session=session, user=viewer.user, webhook_id=webhook_id,
                                  data=WebhookUpdate(enabled=True), settings=runtime.settings)
    return redirect(request, "/settings#webhooks", viewer)


@router.post("/settings/webhooks/{webhook_id}/delete")
async def delete_webhook(
    request: Request, webhook_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep
) -> Response:
    await webhooks.delete(session=session, user=viewer.user, webhook_id=webhook_id)
    return redirect(request, "/settings#webhooks", viewer)


@router.post("/settings/push/{subscription_id}/delete")
async def delete_push_subscription(
    request: Request, subscription_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep
) -> Response:
    await push_service.unsubscribe(session=session, user=viewer.user,
                                   subscription_id=subscription_id)
    return redirect(request, "/settings#push", viewer)
