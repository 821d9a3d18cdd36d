"""Delivery benchmarks on PostgreSQL: the outbox to a local webhook receiver and SMTP server.

    .venv/bin/python bench/delivery.py --quick
    .venv/bin/python bench/delivery.py --count 2000 --rate 200 --seconds 10

Figures: throughput (our DeliverySender draining N notifications with an email and a
webhook delivery each, against the same sends made directly without the outbox) and lag
(notification written to delivery received, at a steady rate). The receivers, the sender
and the baseline each run in a child process of their own; only 127.0.0.1 is contacted.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from typing import Any

from _common import (
    Child,
    Report,
    child,
    children,
    connect,
    install_stop,
    median,
    ms,
    percentile,
    reset_schema,
    settings,
    start_benchmark,
    wait_until,
)
from _delivery_receivers import direct_child, receivers_child
from cryptography.fernet import Fernet

from app.channels import service as channels
from app.channels.schemas import WebhookCreate
from app.core.config import Settings
from app.core.db import transaction
from app.core.runtime import Runtime
from app.delivery import wakeup
from app.delivery.mail import EmailChannel
from app.delivery.render import message_id
from app.delivery.sender import DeliverySender
from app.delivery.webhooks import WebhookChannel
from app.notifications.service import notify
from app.users import service as users

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/pilotlight_bench"
# Made once in the script and handed to every child (a spawned child re-imports this module).
SECRET_KEY = os.environ.get("BENCH_DELIVERY_FERNET_KEY") or Fernet.generate_key().decode()
os.environ["BENCH_DELIVERY_FERNET_KEY"] = SECRET_KEY
BODY = "Three threads need you today. " * 10


def bench_settings(dsn: str, smtp_port: int, **overrides: Any) -> Settings:
    """What PILOTLIGHT_SMTP_HOST=127.0.0.1, PILOTLIGHT_SMTP_TLS=none,
    PILOTLIGHT_WEBHOOK_ALLOW_PRIVATE=true and PILOTLIGHT_SECRET_KEYS=<a new Fernet key> set;
    every other setting as the environment says (defaults otherwise)."""
    return settings(dsn, smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_tls="none",
                    webhook_allow_private=True, secret_keys=[SECRET_KEY], **overrides)


# --- child processes ---------------------------------------------------------------------------


@child
async def sender_child(pipe: Any, p: dict[str, Any]) -> None:
    """Our DeliverySender with its email (SMTP) and webhook channels, as `pilotlight worker`
    runs it; until no delivery is pending, or until SIGTERM."""
    stop = asyncio.Event()
    install_stop(stop)
    overrides = {"delivery_concurrency": p["concurrency"]} if p["concurrency"] else {}
    runtime = Runtime.build(bench_settings(p["dsn"], p["smtp_port"], **overrides))
    # The two channels measured, named explicitly (other channels' deliveries are not made).
    sender = DeliverySender(runtime=runtime, channels={
        "email": EmailChannel(runtime.settings), "webhook": WebhookChannel(runtime.settings)})
    s = runtime.settings
    async with connect(p["dsn"]) as conn:
        pipe.send({"ready": True, "poll": s.delivery_poll_seconds, "batch": s.delivery_batch_size,
                   "concurrency": s.delivery_concurrency, "pool": s.database_pool_size})
        if not p["until_drained"]:
            task = asyncio.create_task(sender.run(stop))
            # Answers {"cmd": "cpu"} with the CPU seconds this process has used so far.
            while not task.done():
                if pipe.poll():
                    if pipe.recv().get("cmd") == "cpu":
                        pipe.send({"cpu": time.process_time()})
                await asyncio.sleep(0.02)
            task.result()
            await runtime.close()
            return
        started, cpu = time.perf_counter(), time.process_time()
        task = asyncio.create_task(sender.run(stop))
        while await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'pending'"):
            if task.done():
                task.result()
                raise RuntimeError("the sender stopped early")
            await asyncio.sleep(0.02)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        stop.set()
        await task
    await runtime.close()
    pipe.send({"elapsed": elapsed, "cpu": cpu})


# --- data --------------------------------------------------------------------------------------


async def setup_user(runtime: Runtime, http_port: int) -> Any:
    """One user with one webhook (all events) pointing at the local receiver."""
    async with transaction(runtime.sessionmaker) as session:
        user = await users.create_user(session=session, email="bench@example.com")
        await channels.create(session=session, user=user, settings=runtime.settings,
                              data=WebhookCreate(url=f"http://127.0.0.1:{http_port}/hook"))
    return user


async def add_notification(runtime: Runtime, user: Any) -> uuid.UUID:
    async with transaction(runtime.sessionmaker) as session:
        nid = await notify(session=session, user_id=user.id, key=f"bench:{uuid.uuid4()}",
                           kind="digest", title="Morning digest", body=BODY,
                           channels=["email", "webhook"])
    assert nid is not None
    return nid


async def expected(dsn: str, smtp_from: str) -> dict[str, tuple[str, float]]:
    """Every outbox delivery by the id its receiver sees (webhook-id or Message-ID):
    (channel, notification created_at as a Unix time)."""
    async with connect(dsn) as conn:
        rows = await conn.fetch(
            "SELECT d.channel, d.idempotency_key, extract(epoch FROM n.created_at)::float8 AS t"
            " FROM deliveries d JOIN notifications n ON n.id = d.notification_id"
            " WHERE d.channel <> 'in_app'")
    found = {}
    for row in rows:
        key = row["idempotency_key"]
        seen = key if row["channel"] == "webhook" else message_id(key, smtp_from)
        found[seen] = (row["channel"], row["t"])
    return found


async def statuses(dsn: str) -> dict[str, int]:
    async with connect(dsn) as conn:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM deliveries"
                                " WHERE channel <> 'in_app' GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


async def take(receivers: Child) -> dict[str, list[tuple[str, float]]]:
    receivers.pipe.send({"cmd": "take"})
    return await receivers.recv()


# --- figures -----------------------------------------------------------------------------------


async def throughput(dsn: str, args: argparse.Namespace, report: Report) -> None:
    n = args.count
    report.title(1, f"Throughput: {n:,} notifications x (email + webhook) = {2 * n:,} deliveries")
    await reset_schema(dsn)
    async with children(receivers_child, {}) as [receivers]:
        ports = await receivers.recv()
        s = bench_settings(dsn, ports["smtp_port"])
        runtime = Runtime.build(s)
        try:
            user = await setup_user(runtime, ports["http_port"])
            started = time.perf_counter()
            for _ in range(n):
                await add_notification(runtime, user)
            report.line("written through notify()", f"{n:,} in {time.perf_counter() - started:.1f}"
                        " s (before the sender starts)")
        finally:
            await runtime.close()
        params = {"dsn": dsn, "smtp_port": ports["smtp_port"], "concurrency": args.concurrency,
                  "until_drained": True}
        async with children(sender_child, params) as [kid]:
            info = await kid.recv()
            ours = await kid.recv(timeout=900)
        wanted = await expected(dsn, s.smtp_from)
        got = await take(receivers)
        counts = await statuses(dsn)
        arrived = {key for key, _ in got["webhooks"] + got["mails"]}
        if counts != {"sent": 2 * n} or not set(wanted) <= arrived:
            raise RuntimeError(f"expected {2 * n} sent and received: {counts}, "
                               f"{len(set(wanted) & arrived)} received")
        duplicates = len(got["webhooks"]) + len(got["mails"]) - len(arrived)

        keys = [str(uuid.uuid4()) for _ in range(n)]
        params = {"keys": keys, "http_port": ports["http_port"], "smtp_port": ports["smtp_port"],
                  "concurrency": info["concurrency"], "smtp_from": s.smtp_from, "body": BODY}
        async with children(direct_child, params) as [kid]:
            await kid.recv()
            theirs = await kid.recv(timeout=900)
        got_direct = await take(receivers)
        if theirs["failed"] or len(got_direct["webhooks"]) + len(got_direct["mails"]) != 2 * n:
            raise RuntimeError(f"direct sends failed: {theirs['failures']}")
    ours_rate, their_rate = 2 * n / ours["elapsed"], 2 * n / theirs["elapsed"]
    ratio = ours_rate / their_rate
    report.line("ours (DeliverySender, outbox)",
                f"{ours_rate:,.0f} deliveries/s  ({ours['elapsed']:.2f} s; concurrency "
                f"{info['concurrency']}, batch {info['batch']}, poll {info['poll']:g} s, pool "
                f"{info['pool']}; {duplicates} duplicate arrivals)")
    report.line("ours: sender CPU", f"{ms(ours['cpu'] / (2 * n))} per delivery "
                f"({ours['cpu']:.2f} s of CPU in {ours['elapsed']:.2f} s)")
    report.line("baseline (direct httpx + aiosmtplib)",
                f"{their_rate:,.0f} sends/s  ({theirs['elapsed']:.2f} s; same concurrency "
                f"{info['concurrency']}, kept-alive connections, from a list in memory)")
    report.line("baseline: CPU", f"{ms(theirs['cpu'] / (2 * n))} per send")
    report.line("ratio ours/direct", f"{ratio:.2f}x (1.0 = the outbox costs nothing)")
    report.verdict("throughput", f"{ours_rate:,.0f}/s = {ratio:.2f}x direct",
                   f">= {args.rate}/s (the lag figure's rate)", ours_rate >= args.rate)


async def lag(dsn: str, args: argparse.Namespace, report: Report) -> None:
    per_second = args.rate / 2  # two deliveries (email, webhook) per notification
    total = max(1, round(per_second * args.seconds))
    report.title(2, f"Lag at {args.rate} deliveries/s: {per_second:g} notifications/s x 2 "
                 f"channels for {args.seconds:g} s ({total:,} notifications)")
    await reset_schema(dsn)
    async with children(receivers_child, {}) as [receivers]:
        ports = await receivers.recv()
        s = bench_settings(dsn, ports["smtp_port"])
        runtime = Runtime.build(s)
        try:
            user = await setup_user(runtime, ports["http_port"])
            params = {"dsn": dsn, "smtp_port": ports["smtp_port"],
                      "concurrency": args.concurrency, "until_drained": False}
            async with children(sender_child, params) as [kid]:
                info = await kid.recv()
                await asyncio.sleep(info["poll"] + 0.5)  # the sender is idle and polling
                kid.pipe.send({"cmd": "cpu"})
                cpu = (await kid.recv())["cpu"]
                started = time.perf_counter()
                behind = [0.0]

                async def produce(first: int) -> None:
                    # Notification i is due at started + i / per_second; producer k writes
                    # i = k, k + P, k + 2P, ... each when due (or at once when late).
                    for i in range(first, total, args.producers):
                        wait = started + i / per_second - time.perf_counter()
                        if wait > 0:
                            await asyncio.sleep(wait)
                        else:
                            behind[0] = max(behind[0], -wait)
                        await add_notification(runtime, user)

                await asyncio.gather(*(produce(k) for k in range(args.producers)))
                produced = time.perf_counter() - started

                async def drained() -> bool:
                    return (await statuses(dsn)).get("pending", 0) == 0

                await wait_until(drained, timeout=300, every=0.05)
                kid.pipe.send({"cmd": "cpu"})
                cpu = (await kid.recv())["cpu"] - cpu
        finally:
            await runtime.close()
        wanted = await expected(dsn, s.smtp_from)
        got = await take(receivers)
    first: dict[str, float] = {}
    for key, at in got["webhooks"] + got["mails"]:
        first[key] = min(at, first.get(key, at))
    missing = set(wanted) - set(first)
    if missing:
        raise RuntimeError(f"{len(missing)} deliveries never arrived")
    lags = {"all": [], "email": [], "webhook": []}
    for key, (channel, created) in wanted.items():
        lags["all"].append(first[key] - created)
        lags[channel].append(first[key] - created)
    offered = 2 * total / produced
    report.line("producer", f"{total:,} notify() transactions in {produced:.1f} s = "
                f"{total / produced:,.0f}/s (target {per_second:g}/s; at most "
                f"{ms(behind[0])} behind schedule; {args.producers} concurrent "
                f"producers)")
    report.line("offered", f"{offered:,.0f} deliveries/s")
    report.line("sender", f"concurrency {info['concurrency']}, batch {info['batch']}, poll "
                f"{info['poll']:g} s (PILOTLIGHT_DELIVERY_POLL_SECONDS), woken by NOTIFY "
                f"{wakeup.DELIVERY_CHANNEL}; CPU {ms(cpu / (2 * total))} per delivery")
    for label, values in lags.items():
        report.line(f"lag {label} p50 / p99 / max", f"{ms(median(values))} / "
                    f"{ms(percentile(values, 99))} / {ms(max(values))}  ({len(values):,})")
    p99 = percentile(lags["all"], 99)
    report.line("ratio p99 / poll interval", f"{p99 / info['poll']:.2f}x (below 1: the "
                "deliveries were sent on the wake-up, not found by a poll)")
    # Judged only when the producer offered (nearly) the rate: a slower producer is a
    # lighter load, not a pass.
    reached = offered >= 0.95 * args.rate
    report.verdict("lag p99", f"{ms(p99)} at {offered:,.0f}/s offered",
                   f"< 1 s at {args.rate}/s", p99 < 1.0 and reached)


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL,
                        help="PostgreSQL on this machine; created if missing, its schema reset")
    parser.add_argument("--quick", action="store_true", help="small sizes: under ~2 minutes")
    parser.add_argument("--count", type=int, default=None,
                        help="throughput: notifications (2 deliveries each); 2000, quick 200")
    parser.add_argument("--rate", type=int, default=200,
                        help="lag: deliveries per second (half as many notifications)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="lag: how long the producer runs; 10, quick 5")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="delivery_concurrency of the sender and the baseline "
                        "(default: the setting's, 10)")
    parser.add_argument("--producers", type=int, default=4,
                        help="lag: concurrent tasks writing the fixed schedule (each notify() "
                        "its own transaction); 4")
    parser.add_argument("--only", default="throughput,lag", help="throughput,lag")
    args = parser.parse_args()
    args.count = args.count or (200 if args.quick else 2_000)
    args.seconds = args.seconds or (5.0 if args.quick else 10.0)
    args.only = [f.strip() for f in args.only.split(",") if f.strip()]
    if set(args.only) - {"throughput", "lag"}:
        parser.error("--only takes throughput and/or lag")
    if args.count < 1 or args.rate < 2 or args.seconds <= 0:
        parser.error("--count >= 1, --rate >= 2 and --seconds > 0")
    return args


async def main() -> None:
    args = parse_args()
    dsn, server = await start_benchmark(args.database_url)
    print(f"Pilotlight delivery benchmarks ({'quick' if args.quick else 'full'}) on {dsn}")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL "
          f"{server}; everything on this one machine (producer, sender, receivers and "
          "PostgreSQL share the cores)")
    print("load average at start: {:.2f} {:.2f} {:.2f} (other work on the machine skews every"
          " figure)".format(*os.getloadavg()))
    report = Report()
    started = time.perf_counter()
    if "throughput" in args.only:
        await throughput(dsn, args, report)
    if "lag" in args.only:
        await lag(dsn, args, report)
    report.summary()
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end: "
          "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        print("\ninterrupted; child processes stopped", file=sys.stderr)
        sys.exit(130)
