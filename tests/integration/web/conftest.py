"""Dashboard fixtures: the suite's settings plus a secret key (webhook secrets are sealed
with it, and PostgreSQL generates none) and loopback webhook and push URLs allowed."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.core.config import Settings

SECRET_KEY = Fernet.generate_key().decode()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "secret_keys": [SecretStr(SECRET_KEY)], "webhook_allow_private": True,
    })
