"""Imports every domain's models so the metadata is complete (Alembic, tests)."""

from app.accounts.models import Account
from app.channels.models import PushSubscription, Webhook
from app.core.db import Base
from app.instructions.models import Instruction
from app.notifications.models import Delivery, Notification
from app.questions.models import Question
from app.runs.models import Run, RunStep
from app.users.models import ApiToken, User

__all__ = [
    "Account", "ApiToken", "Base", "Delivery", "Instruction", "Notification",
    "PushSubscription", "Question", "Run", "RunStep", "User", "Webhook",
]
