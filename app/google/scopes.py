"""The OAuth scopes Pilotlight asks for, and what each one turns on."""

from __future__ import annotations

GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
DRIVE_READONLY = "https://www.googleapis.com/auth/drive.readonly"
# Asked for only when the user turns on digests sent through their own Gmail.
GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"

READ_SCOPES = (GMAIL_READONLY, DRIVE_READONLY)
