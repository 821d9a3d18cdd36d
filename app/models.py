"""Imports every domain's models so the metadata is complete (Alembic, tests)."""

from app.accounts.models import Account
from app.auth.models import LoginLink, WebSession
from app.channels.models import PushSubscription, Webhook
from app.core.db import Base
from app.events.models import EventCounter
from app.google.models import OAuthState
from app.google.watch_models import WatchCursor, WatchHit, WatchPendingFile
from app.instructions.models import Instruction
from app.notifications.models import AlertedItem, Delivery, Notification
from app.questions.models import EmailReply, Question, QuestionEmail
from app.runs.models import ModelCall, Run, RunStep
from app.users.models import ApiToken, User

__all__ = [
    "Account", "AlertedItem", "ApiToken", "Base", "Delivery", "EmailReply", "EventCounter",
    "Instruction", "LoginLink", "ModelCall", "Notification", "OAuthState", "PushSubscription",
    "Question", "QuestionEmail", "Run", "RunStep", "User", "WatchCursor", "WatchHit",
    "WatchPendingFile", "WebSession", "Webhook",
]
