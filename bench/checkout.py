"""Pool checkout on PostgreSQL: what every API request pays before its own statements.

    .venv/bin/python bench/checkout.py
    .venv/bin/python bench/checkout.py --count 5000

Our engine (`app.core.db.create_engine`: a pool with `pool_pre_ping`) checks each
connection on checkout with one `SELECT 1` in the simple query protocol; the asyncpg
dialect's own check is BEGIN, a prepared `;` and ROLLBACK. This checks a connection
out, runs `SELECT 1` and gives it back, N times with each ping, alternating, twice, in
one process on a pool of one connection. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import start_benchmark
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.core.db import create_engine

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/pilotlight_bench"


async def per_checkout(url: str, count: int, *, dialect_ping: bool) -> float:
    """Seconds per checkout with a `SELECT 1` on it."""
    engine = create_engine(url, pool_size=1)
    if dialect_ping:  # the asyncpg dialect's own, as SQLAlchemy ships it
        dialect = engine.dialect
        dialect.do_ping = type(dialect).do_ping.__get__(dialect)  # type: ignore[method-assign]
    try:
        async with engine.connect() as connection:  # connected, statement cache warm
            await connection.execute(text("SELECT 1"))
        started = time.perf_counter()
        for _ in range(count):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        return (time.perf_counter() - started) / count
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL,
                        help="a PostgreSQL on this machine (127.0.0.1 only)")
    parser.add_argument("--count", type=int, default=2000, help="checkouts per measurement")
    args = parser.parse_args()
    dsn, server = await start_benchmark(args.database_url)
    url = make_url(dsn).set(drivername="postgresql+asyncpg").render_as_string(False)
    print(f"Pool checkout + SELECT 1 on PostgreSQL {server}, {args.count:,} each, "
          "pool of one connection")
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(2):
        theirs.append(await per_checkout(url, args.count, dialect_ping=True))
        ours.append(await per_checkout(url, args.count, dialect_ping=False))
    for label, values in (("dialect's ping (BEGIN, ;, ROLLBACK)", theirs),
                          ("ours (one SELECT 1)", ours)):
        shown = ", ".join(f"{v * 1e6:,.0f} us" for v in values)
        print(f"    {label:<38} {shown}")
    best_ours, best_theirs = min(ours), min(theirs)
    print(f"    {'ratio ours / dialect (best of each)':<38} {best_ours / best_theirs:.2f}x "
          f"({(best_theirs - best_ours) * 1e6:,.0f} us less per checkout; lower is better)")


if __name__ == "__main__":
    asyncio.run(main())
