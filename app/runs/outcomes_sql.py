"""PostgreSQL: successful outcomes of many runs in ONE statement, on a held connection.

The executor's held connection needs no checkout (whose ping is three round trips): a
batch of runs ends with BEGIN, one statement and COMMIT. (The statement is atomic on
its own; the transaction around it lets a crash test stop the worker after the digest
and the notification were written and before they were committed.) In order, within
the statement:

- `locked`: the runs' instructions, locked FOR UPDATE in id order (a delete that
  commits meanwhile waits, or is seen; two workers cannot deadlock);
- `plain`: those not deleted whose channels need no look-up (in-app, email);
- `done`: each run's outcome, fenced row by row by its claim's lease token, for the
  runs of `plain` instructions: a worker that lost a run writes nothing for it;
- `moved`: each done run's instruction moved on (as `_succeeded_one`: cursor merged
  with the run's, covered until the later of the two ends, no failures);
- `noted`, `delivered`: each done run's digest notification, once per key, and its
  deliveries (in-app sent at once, email pending in the outbox);
- the NOTIFYs of the event streams, as `publish_event`: everyone, each user told; and
  of the delivery senders when an email (pending delivery) was written.

Runs whose instruction was deleted, or now has webhook or push channels (the run
loaded it before), come back as `redo` and go through `_succeeded_one`, in a
transaction of their own, as do resumed runs (their cursors merge key by key).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from app.core.db import utcnow
from app.core.pubsub import EVENTS_CHANNEL
from app.delivery import wakeup as delivery_wakeup
from app.runs import metrics, queue
from app.runs.steps import LeaseLost, without_nul

if TYPE_CHECKING:
    from app.runs.execute import RunExecutor
    from app.runs.outcomes import Success

_PLAIN_CHANNELS = frozenset({"in_app", "email"})

# The channel kinds of an instruction as a JSON array (anything else: none).
_KINDS = "CASE WHEN jsonb_typeof({0}->'kinds') = 'array' THEN {0}->'kinds' ELSE '[]'::jsonb END"

_SUCCEEDED = text(
    f"""
    WITH v AS (
        SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[]),
            CAST(:instruction_ids AS uuid[]), CAST(:status AS varchar[]),
            CAST(:finished_at AS timestamptz[]), CAST(:result AS text[]),
            CAST(:model AS varchar[]), CAST(:error AS text[]),
            CAST(:interaction_ids AS text[]), CAST(:agent_state AS text[]),
            CAST(:input_tokens AS integer[]), CAST(:output_tokens AS integer[]),
            CAST(:thought_tokens AS integer[]), CAST(:cached_tokens AS integer[]),
            CAST(:cost_usd AS float8[]), CAST(:day_start AS timestamptz[]))
            AS v(id, token, instruction_id, status, finished_at, result, model, error,
                 interaction_ids, agent_state, input_tokens, output_tokens, thought_tokens,
                 cached_tokens, cost_usd, day_start)
    ),
    locked AS (
        SELECT i.id, i.title, i.deleted_at, i.channels FROM instructions i
        WHERE i.id = ANY(CAST(:instruction_ids AS uuid[]))
        ORDER BY i.id
        FOR UPDATE
    ),
    plain AS (
        SELECT l.id, l.title, l.channels FROM locked l
        WHERE l.deleted_at IS NULL AND NOT EXISTS (
            SELECT 1 FROM jsonb_array_elements_text({_KINDS.format("l.channels")}) AS k(kind)
            WHERE k.kind NOT IN ('in_app', 'email'))
    ),
    done AS (
        UPDATE runs SET {queue.OUTCOME_SET}
        FROM v JOIN plain ON plain.id = v.instruction_id
        WHERE runs.id = v.id AND runs.lease_token = v.token AND runs.status = 'running'
        RETURNING runs.id, runs.instruction_id
    ),
    moved AS (
        UPDATE instructions SET cursor = instructions.cursor || CAST(m.cursor AS jsonb),
            covered_until = GREATEST(instructions.covered_until, m.window_end),
            last_run_at = :now, consecutive_failures = 0, updated_at = :now
        FROM unnest(CAST(:m_run AS uuid[]), CAST(:m_cursor AS text[]),
            CAST(:m_window_end AS timestamptz[])) AS m(run_id, cursor, window_end)
        JOIN done ON done.id = m.run_id
        WHERE instructions.id = done.instruction_id
        RETURNING instructions.id
    ),
    noted AS (
        INSERT INTO notifications (id, user_id, key, kind, title, body, data, run_id,
            instruction_id, created_at)
        SELECT n.id, n.user_id, n.key, 'digest', substr(plain.title, 1, 300), n.body,
            CAST(n.data AS jsonb), n.run_id, done.instruction_id, :now
        FROM unnest(CAST(:n_id AS uuid[]), CAST(:n_user AS uuid[]), CAST(:n_key AS text[]),
            CAST(:n_body AS text[]), CAST(:n_data AS text[]), CAST(:n_run AS uuid[]))
            AS n(id, user_id, key, body, data, run_id)
        JOIN done ON done.id = n.run_id
        JOIN plain ON plain.id = done.instruction_id
        ON CONFLICT (user_id, key) DO NOTHING
        RETURNING notifications.id, notifications.user_id, notifications.instruction_id
    ),
    delivered AS (
        INSERT INTO deliveries (id, user_id, notification_id, channel, target,
            idempotency_key, status, attempts, sent_at, next_attempt_at, created_at)
        SELECT gen_random_uuid(), noted.user_id, noted.id, c.channel, '',
            noted.id::text || ':' || c.channel,
            CASE WHEN c.channel = 'in_app' THEN 'sent' ELSE 'pending' END,
            CASE WHEN c.channel = 'in_app' THEN 1 ELSE 0 END,
            CASE WHEN c.channel = 'in_app' THEN CAST(:now AS timestamptz) END, :now, :now
        FROM noted JOIN plain ON plain.id = noted.instruction_id
        CROSS JOIN LATERAL (
            SELECT DISTINCT k.kind AS channel FROM jsonb_array_elements_text(
                '["in_app"]'::jsonb || {_KINDS.format("plain.channels")}) AS k(kind)
        ) AS c
        RETURNING deliveries.id, deliveries.status
    )
    SELECT 'done' AS what, done.id,
        (SELECT count(*) FROM moved) AS moved,
        (SELECT count(*) FROM delivered) AS delivered,
        (SELECT count(*) FROM (SELECT pg_notify(:events, told.user_id) FROM
            (SELECT DISTINCT user_id::text AS user_id FROM noted) AS told) AS t) AS told,
        (SELECT count(*) FROM (SELECT pg_notify(:events, '')) AS e) AS notified,
        (SELECT count(*) FROM (SELECT pg_notify(:deliveries, '') WHERE EXISTS (
            SELECT 1 FROM delivered WHERE delivered.status = 'pending')) AS s) AS to_send
    FROM done
    UNION ALL
    SELECT 'redo', v.id, 0, 0, 0, 0, 0 FROM v
    WHERE v.instruction_id NOT IN (SELECT id FROM plain)
    """
)


async def write_postgresql(
    executor: RunExecutor, items: list[Success]
) -> list[None | BaseException]:
    """Each item's answer, as `outcomes.write_successes` gives them."""
    from app.runs.outcomes import _digest, _values

    assert executor.writes is not None
    now = utcnow()
    answers: list[None | BaseException] = [None] * len(items)
    batch: list[int] = []
    redo: list[int] = []
    for n, item in enumerate(items):
        kinds = item.ctx.instruction.channels.get("kinds", [])
        if item.ctx.cursors_from is not None or not set(kinds) <= _PLAIN_CHANNELS:
            redo.append(n)
        else:
            batch.append(n)
    if len({items[n].ctx.instruction.id for n in batch}) != len(batch):
        raise RuntimeError("two runs of one instruction in a batch")  # never: one runs
    if batch:
        digests = {n: _digest(items[n].outcome) for n in batch}
        params: dict[str, Any] = queue.finish_many_params(
            [(items[n].claim, _values(executor, items[n], digests[n], now)) for n in batch]
        )
        params["instruction_ids"] = [items[n].ctx.instruction.id for n in batch]
        params.update(_moves_and_notes(items, batch, digests))
        async with executor.writes.use() as connection, connection.begin():
            rows = (
                await connection.execute(_SUCCEEDED, {
                    **params, "now": now, "events": EVENTS_CHANNEL,
                    "deliveries": delivery_wakeup.DELIVERY_CHANNEL})
            ).all()
            done = {row.id for row in rows if row.what == "done"}
            if done:
                # Written, not committed yet (the crash tests stop a worker here).
                executor.fault("digest_written")
                if any(row.delivered for row in rows):
                    executor.fault("notification_written")
        if done:
            executor.fault("outcome_committed")
            if any(row.to_send for row in rows):
                # The NOTIFY wakes the senders of every process, this one's too (it
                # LISTENs); waking it here directly saves the round trip.
                delivery_wakeup.wake_here()
        again = {row.id for row in rows if row.what == "redo"}
        for n in batch:
            run_id = items[n].claim.run_id
            if run_id in again:
                redo.append(n)
            elif run_id not in done:
                answers[n] = LeaseLost()
            else:
                metrics.RUNS_FINISHED.labels(items[n].outcome.status).inc()
    for n in sorted(redo):
        item = items[n]
        try:
            await executor._succeeded_one(item.claim, item.ctx, item.outcome)
        except Exception as exc:
            answers[n] = exc
    return answers


def _moves_and_notes(
    items: list[Success], batch: list[int], digests: dict[int, dict[str, Any] | None]
) -> dict[str, list[Any]]:
    import uuid

    columns: dict[str, list[Any]] = {key: [] for key in (
        "m_run", "m_cursor", "m_window_end",
        "n_id", "n_user", "n_key", "n_body", "n_data", "n_run")}
    for n in batch:
        item = items[n]
        if item.ctx.run.reason == "preview":
            continue  # the digest is on the run; nothing else changes
        run_id = item.claim.run_id
        window_end: datetime | None = item.ctx.covered_until()
        columns["m_run"].append(run_id)
        columns["m_cursor"].append(json.dumps(item.outcome.cursors))
        columns["m_window_end"].append(window_end)
        if item.outcome.digest is None:
            continue
        columns["n_id"].append(uuid.uuid4())
        columns["n_user"].append(item.ctx.user.id)
        columns["n_key"].append(f"run:{run_id}:digest")
        columns["n_body"].append(without_nul(item.outcome.digest.summary))
        columns["n_data"].append(json.dumps({"digest": digests[n]}))
        columns["n_run"].append(run_id)
    return columns
