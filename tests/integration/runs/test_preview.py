"""Preview: a trial over a past window that delivers nothing and moves no cursor."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx

from app.core.db import transaction
from app.core.runtime import Runtime
from app.instructions.models import Instruction
from app.sources.sample import SAMPLE_DATA_DIR
from tests import factories
from tests.integration.runs.helpers import get_run, make_worker, notifications_of, work_once


def sample_copy(tmp_path: Path, *, redate: dict[str, datetime]) -> Path:
    """The bundled sample with the given mails (by subject word) re-dated; the rest are old."""
    root = tmp_path / "sample"
    shutil.copytree(SAMPLE_DATA_DIR, root)
    long_ago = format_datetime(datetime(2001, 1, 1, 9, 0, tzinfo=UTC))
    for path in (root / "maildir" / "cur").iterdir():
        lines = path.read_text().splitlines(keepends=True)
        subject = next((ln for ln in lines if ln.startswith("Subject:")), "")
        when = next((format_datetime(d) for word, d in redate.items() if word in subject),
                    long_ago)
        path.write_text("".join(f"Date: {when}\n" if ln.startswith("Date:") else ln
                                for ln in lines))
    shutil.rmtree(root / "docs")
    (root / "docs").mkdir()
    return root


async def test_preview_shows_a_digest_of_the_window_and_changes_nothing(
    runtime: Runtime, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    runtime.settings.sample_data_dir = sample_copy(
        tmp_path, redate={"invoice": datetime.now(UTC) - timedelta(days=2)}
    )
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["in_app", "email"])

    response = await client.post(f"/api/v1/instructions/{instruction.id}/preview",
                                 headers=headers, json={"days": 7})
    assert response.status_code == 201, response.text
    queued = response.json()
    assert queued["reason"] == "preview"
    assert queued["status"] == "queued"
    await work_once(make_worker(runtime))

    run = await get_run(runtime, uuid.UUID(queued["id"]))
    assert run.status == "succeeded", run.error
    assert run.result is not None
    titles = [i["title"] for s in run.result["sections"] for i in s["items"]]
    assert any("invoice" in t.lower() for t in titles)
    assert len(titles) == 1  # only the mail inside the window
    assert await notifications_of(runtime, user.id) == []  # nothing delivered
    async with transaction(runtime.sessionmaker) as session:
        after = await session.get(Instruction, instruction.id)
        assert after is not None
        assert after.cursor == {}
        assert after.last_run_at is None


async def test_preview_of_an_empty_window_says_so(
    runtime: Runtime, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    runtime.settings.sample_data_dir = sample_copy(tmp_path, redate={})
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    response = await client.post(f"/api/v1/instructions/{instruction.id}/preview",
                                 headers=headers)
    assert response.status_code == 201, response.text
    await work_once(make_worker(runtime))
    run = await get_run(runtime, uuid.UUID(response.json()["id"]))
    assert run.status == "skipped"
    assert run.error == "Nothing dated in this window."


async def test_preview_refuses_bad_windows(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    for body in ({"days": 0}, {"days": 91}, {"days": "x"}, {"weeks": 1}):
        response = await client.post(f"/api/v1/instructions/{instruction.id}/preview",
                                     headers=headers, json=body)
        assert response.status_code == 422, body
        assert response.json()["error"] == "ValidationError"
