"""The seeded account: alice@example.com with a fortnight of mail and a small Drive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .drive import pdf_bytes

if TYPE_CHECKING:
    from .server import FakeGoogle

ALICE = "alice@example.com"
DOC = "application/vnd.google-apps.document"
SHEET = "application/vnd.google-apps.spreadsheet"
SLIDES = "application/vnd.google-apps.presentation"
FOLDER = "application/vnd.google-apps.folder"


def seed_alice(fake: FakeGoogle) -> None:
    now = datetime.now(UTC).replace(microsecond=0)

    def ago(days: float) -> datetime:
        return now - timedelta(days=days)

    fake.add_message(
        ALICE, sender="Billing <billing@example.com>", subject="Your invoice INV-1042",
        text="Hello Alice,\n\nYour invoice INV-1042 for 129.00 EUR is attached.\n"
             "It is due on the 30th.\n\nThe billing team",
        attachments=[("INV-1042.pdf", "application/pdf",
                      pdf_bytes("Invoice INV-1042\nTotal: 129.00 EUR"))],
        date=ago(9),
    )
    thread = fake.add_message(
        ALICE, sender="Bob Builder <bob@example.com>", subject="Plan for the launch",
        text="Hi Alice,\n\nI drafted the launch plan; can you review it by Friday?\n\nBob",
        date=ago(6), labels=("INBOX",),
    )
    fake.add_message(
        ALICE, sender="Alice <alice@example.com>", to=["bob@example.com"],
        subject="Re: Plan for the launch", text="Looks good, two comments inline.\n\nAlice",
        date=ago(5.5), labels=("SENT",), thread_id=thread,
    )
    fake.add_message(
        ALICE, sender="Bob Builder <bob@example.com>", subject="Re: Plan for the launch",
        text="Thanks! Updated the doc with your comments.\n\nBob", date=ago(5),
        thread_id=thread,
    )
    fake.add_message(
        ALICE, sender="The Weekly <news@newsletter.example>", subject="This week in gardening",
        text="Tomatoes, basil and a word about slugs.",
        html="<html><body><h1>This week</h1><p>Tomatoes, <b>basil</b> and a word about "
             "slugs.</p></body></html>",
        date=ago(4), labels=("INBOX", "UNREAD", "CATEGORY_PROMOTIONS"),
    )
    fake.add_message(
        ALICE, sender="Carol <carol@example.com>", subject="Photos from Saturday",
        text="Here are two photos from the picnic.",
        attachments=[("picnic.png", "image/png", _png())], date=ago(3),
    )
    fake.add_message(
        ALICE, sender="Billing <billing@example.com>", subject="Payment received",
        text="We received your payment for INV-1001. Thank you!", date=ago(2),
        labels=("INBOX",),
    )
    fake.add_message(
        ALICE, sender="Dave <dave@example.com>", subject="Lunch on Thursday?",
        text="Are you free for lunch on Thursday at noon?", date=ago(1),
    )
    fake.add_message(
        ALICE, sender="Prize Desk <winner@spam.example>", subject="You won!!!",
        text="Claim your prize now.", date=ago(1), labels=("SPAM",),
    )
    fake.add_message(
        ALICE, sender="Billing <billing@example.com>", subject="Your invoice INV-1043",
        text="Hello Alice,\n\nYour invoice INV-1043 for 42.00 EUR is attached.",
        attachments=[("INV-1043.pdf", "application/pdf",
                      pdf_bytes("Invoice INV-1043\nTotal: 42.00 EUR"))],
        date=ago(0.2),
    )

    projects = fake.add_file(ALICE, name="Projects", mime_type=FOLDER, content=b"",
                             modified=ago(20))
    fake.add_file(ALICE, name="Launch plan", mime_type=DOC, parents=(projects,),
                  content="Launch plan\n\nGoal: ship v1 by the end of the month.\n"
                          "Owner: Bob. Reviewer: Alice.", modified_by="bob@example.com",
                  modified=ago(5))
    fake.add_file(ALICE, name="Budget 2026", mime_type=SHEET, parents=(projects,),
                  content="item,amount\nservers,1200\ndesign,800\n", modified=ago(8))
    fake.add_file(ALICE, name="Kickoff deck", mime_type=SLIDES, parents=(projects,),
                  content="Kickoff\nWhy we build this\nMilestones", modified=ago(12))
    fake.add_file(ALICE, name="notes.txt", mime_type="text/plain",
                  content="Remember: renew the domain before the 15th.\n", modified=ago(2))
    fake.add_file(ALICE, name="Contract.pdf", mime_type="application/pdf",
                  content=pdf_bytes("Service contract\nSigned by both parties."), modified=ago(15))


def _png() -> bytes:
    """A valid 1x1 PNG."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x80\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + \
        chunk(b"IEND", b"")
