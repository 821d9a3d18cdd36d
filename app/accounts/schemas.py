"""What the API shows of a source account: never a token."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class AccountFeatures(BaseModel):
    gmail: bool = Field(description="Mail is read from this account.")
    drive: bool = Field(description="Documents are read from this account.")
    gmail_send: bool = Field(description="Digests can be sent to you through its Gmail.")


class AccountOut(BaseModel):
    id: uuid.UUID
    kind: str = Field(description="`google`, or `sample` (the bundled demo mailbox).")
    email: str
    status: str = Field(description="`active`, or `disconnected` (reconnect to go on).")
    status_detail: str | None = Field(
        description="Why it is disconnected, or which feature its grant leaves off."
    )
    features: AccountFeatures
    scopes: list[str] = Field(description="The OAuth scopes Google granted.")
    created_at: datetime
    updated_at: datetime
