"""Gmail quota units and HTTP requests: our incremental sync against a naive sync.

    .venv/bin/python bench/gmail_quota.py                 # about 30 seconds
    .venv/bin/python bench/gmail_quota.py --mails 500 --polls 96

Both sides talk through the real google-api-python-client to the fake Google of
`tests/fakes/google.py` on 127.0.0.1, which charges Gmail's documented quota units and
records every request; the figures are the fake's counts. Ours is `GoogleSource`:
`mail_changes` (one `history.list`) as the watch poller's change detector, `delta` from
the cursor for the digest (`history.list`, then metadata in batches of at most 50). The
naive sync keeps no cursor: every time, `messages.list` (all pages) then
`messages.get` (format=metadata) for each message listed, one request each. The day's
mail comes from `bench/_mailgen.py`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The fake lives in tests/, at the repository root.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import Report  # noqa: E402
from _mailgen import generate
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.accounts.models import Account
from app.core.config import Settings
from app.google.client import GoogleClient
from app.google.credentials import seal_refresh_token
from app.google.gmail_format import METADATA_HEADERS
from app.google.scopes import READ_SCOPES
from app.google.source import GoogleSource
from tests.fakes.google import FakeGoogle

ME = "alex.morgan@northwind.example"
NO_CHANGE_TARGET = 2
DAY_RATIO_TARGET = 10.0
NAIVE_PAGE = 100  # messages.list's default page size
NAIVE_CONCURRENCY = 8


@dataclass
class Cost:
    units: int
    http: int  # HTTP requests (a batch is one)
    calls: int  # API calls (each part of a batch is one)

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.units + other.units, self.http + other.http, self.calls + other.calls)


def measure(fake: FakeGoogle) -> Cost:
    """What the fake counted since its last reset, then reset it."""
    requests = [r for r in fake.requests if "/gmail/" in r.path or "/batch/gmail" in r.path]
    http = [r for r in requests if not r.in_batch]
    parts = [r for r in requests if not r.path.startswith("/batch/")]
    cost = Cost(fake.quota_units(ME), len(http), len(parts))
    fake.reset_counters()
    return cost


async def naive_sync(client: GoogleClient) -> int:
    """No cursor: list every message, then get each one. Returns how many it got."""
    messages = client.gmail().users().messages()
    ids: list[str] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"userId": "me", "maxResults": NAIVE_PAGE}
        if token:
            kwargs["pageToken"] = token
        page = await client.call("gmail", messages.list(**kwargs))
        ids += [m["id"] for m in page.get("messages") or []]
        token = page.get("nextPageToken")
        if not token:
            break
    for start in range(0, len(ids), NAIVE_CONCURRENCY):
        await asyncio.gather(*(
            client.call("gmail", messages.get(
                userId="me", id=mid, format="metadata", metadataHeaders=METADATA_HEADERS
            ))
            for mid in ids[start : start + NAIVE_CONCURRENCY]
        ))
    return len(ids)


def ratio(naive: int, ours: int) -> float:
    return naive / ours if ours else float("inf")


def show(report: Report, label: str, ours: Cost, naive: Cost) -> None:
    report.line(f"{label}: ours", f"{ours.units:>6} units  {ours.http:>5} HTTP requests  "
                f"{ours.calls:>5} API calls")
    report.line(f"{label}: naive", f"{naive.units:>6} units  {naive.http:>5} HTTP requests  "
                f"{naive.calls:>5} API calls")
    report.line(f"{label}: naive / ours", f"{ratio(naive.units, ours.units):.1f}x units, "
                f"{ratio(naive.http, ours.http):.1f}x HTTP requests")


async def bench(args: argparse.Namespace) -> None:
    report = Report()
    mails = generate(count=args.mails, seed=args.seed)
    print(f"Gmail quota units and HTTP requests, fake Google on 127.0.0.1: a day of {args.mails} "
          f"mails (seed {args.seed}) arriving over {args.polls} polls")
    started = time.monotonic()
    with FakeGoogle(seed=False) as fake:
        fake.latency_seconds = args.latency
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, google_endpoint_root=fake.url,
            google_client_id=FakeGoogle.CLIENT_ID,
            google_client_secret=SecretStr(FakeGoogle.CLIENT_SECRET),
            secret_keys=[SecretStr(Fernet.generate_key().decode())],
        )
        account = Account(
            id=uuid.uuid4(), user_id=uuid.uuid4(), kind="google", email=ME,
            scopes={"granted": list(READ_SCOPES)}, sync_cursor={}, status="active",
            refresh_token_encrypted=seal_refresh_token(
                settings, fake.issue_refresh_token(ME, list(READ_SCOPES))
            ),
        )
        source = GoogleSource(account, settings)
        naive = GoogleClient(account, settings)

        # Yesterday's cursor, as the digest instruction stored it; the poller's historyId.
        yesterday = await source.delta(None, files=False, limit=0)
        history_id = (await source.mail_changes(None)).history_id
        measure(fake)

        ours_polls = Cost(0, 0, 0)
        naive_polls = Cost(0, 0, 0)
        for poll in range(args.polls):
            chunk = mails[poll * len(mails) // args.polls : (poll + 1) * len(mails) // args.polls]
            for mail in chunk:
                fake.add_message(ME, sender=mail.sender, to=[ME], subject=mail.subject,
                                 text=mail.body, date=mail.date)
            measure(fake)
            changes = await source.mail_changes(history_id)
            history_id = changes.history_id
            if len(changes.added_message_ids) != len(chunk):
                raise SystemExit(f"poll {poll}: {len(changes.added_message_ids)} new, "
                                 f"{len(chunk)} added")
            ours_polls += measure(fake)
            await naive_sync(naive)
            naive_polls += measure(fake)

        digest = await source.delta(yesterday.cursor, files=False, limit=args.mails)
        if len(digest.messages) != args.mails:
            raise SystemExit(f"the digest saw {len(digest.messages)} of {args.mails} mails")
        ours_digest = measure(fake)
        if await naive_sync(naive) != args.mails:
            raise SystemExit("the naive sync did not list every mail")
        naive_digest = measure(fake)

        nothing = await source.delta(digest.cursor, files=False, limit=args.mails)
        if nothing.messages:
            raise SystemExit("a no-change delta found mail")
        ours_quiet = measure(fake)
        await source.mail_changes(history_id)
        ours_poll_quiet = measure(fake)
        await naive_sync(naive)
        naive_quiet = measure(fake)

    report.title(1, f"no-change poll (after the day: {args.mails} mails in the mailbox)")
    report.line("ours: mail_changes (watch poller)",
                f"{ours_poll_quiet.units} units, {ours_poll_quiet.http} HTTP request")
    show(report, "delta", ours_quiet, naive_quiet)
    report.verdict("no-change poll units", str(ours_quiet.units), f"{NO_CHANGE_TARGET} units "
                   "(one history.list)", ours_quiet.units == NO_CHANGE_TARGET
                   and ours_quiet.calls == 1 and ours_poll_quiet.units == NO_CHANGE_TARGET)

    report.title(2, f"the digest alone: one sync of the day's {args.mails} mails")
    show(report, "digest", ours_digest, naive_digest)
    report.line("note", "not judged: each message shown costs messages.get (5 units) on both "
                "sides; ours saves the listing and sends 50 calls per HTTP request")

    report.title(3, f"the day: {args.polls} polls while the mail arrives, then the digest")
    ours_day = ours_polls + ours_digest
    naive_day = naive_polls + naive_digest
    show(report, "polls", ours_polls, naive_polls)
    show(report, "day", ours_day, naive_day)
    day_ratio = ratio(naive_day.units, ours_day.units)
    report.verdict("day units, naive / ours", f"{day_ratio:.1f}x", f">= {DAY_RATIO_TARGET:.0f}x",
                   day_ratio >= DAY_RATIO_TARGET)
    report.summary()
    print(f"\n(measured in {time.monotonic() - started:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=200, choices=range(1, 1001),
                        metavar="N", help="mails in the day (1 to 1000)")
    parser.add_argument("--polls", type=int, default=24, choices=range(1, 501), metavar="N",
                        help="polls over the day (default 24: hourly)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated day")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the fake adds to every API response")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
