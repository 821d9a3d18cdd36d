"""A run paused on `ask_user`: the state it keeps, and what resumes it.

Free of the database like the runner: the executor stores `PausedState` as
JSON on the run and hands it back, with the user's answer, in `ResumeState`.
The state holds everything the loop needs to go on without asking the
sources for their delta again: the asking turn's interaction and call ids,
the results of the turn's other calls (sent with the answer in one turn),
the budgets spent, usage, the cursors to store once the run succeeds, the
index of seen items that turns cited ids into refs, and the fallback digest
for a run that runs out of turns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.agent.digest import DigestDraft, DraftItem, DraftSection
from app.agent.llm import FunctionResult, Usage
from app.sources.base import Delta


class PausedState(BaseModel):
    """What a run waiting for the user keeps (`Run.agent_state["state"]`)."""

    version: Literal[1] = 1
    # The turn that called ask_user: the resume turn chains to it and answers its calls.
    interaction_id: str
    call_id: str
    question: str
    choices: list[str] = Field(default_factory=list)
    # The results of that turn's other calls, in call order; the answer goes in at
    # `question_index`.
    results: list[FunctionResult] = Field(default_factory=list)
    question_index: int = 0
    turns: int
    calls_used: int
    refused_calls: int = 0
    questions_asked: int = 1
    alerts_sent: int = 0
    usage: Usage = Field(default_factory=Usage)
    interaction_ids: list[str] = Field(default_factory=list)
    # Stored on the instruction only when the run finally succeeds.
    cursors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # ToolBox.export_seen(): [kind, id, account, title] per item the run saw.
    seen: list[list[str]] = Field(default_factory=list)
    # The web addresses the run read (`app/agent/links.py`); none for a run paused before
    # they were kept: its addresses come out inert.
    read: list[str] = Field(default_factory=list)
    # The new items from their previews, for a run that runs out of turns.
    fallback: DigestDraft


@dataclass(frozen=True)
class ResumeState:
    """Resume a paused run: its stored state, and the answer (None: the question expired)."""

    state: Mapping[str, Any]
    answer: str | None


def fallback_draft(deltas: Mapping[str, Delta]) -> DigestDraft:
    """What the run has when the model ran out of turns without answering: the new items."""
    messages = [m for d in deltas.values() for m in d.messages]
    files = [f for d in deltas.values() for f in d.files]
    mail = [
        DraftItem(title=m.subject, detail=f"From {m.sender}: {m.snippet}" if m.snippet
                  else f"From {m.sender}", message_ids=[m.id])
        for m in messages
    ]
    docs = [DraftItem(title=f.name, detail=f.snippet, file_ids=[f.id]) for f in files]
    return DigestDraft(
        summary=f"The agent ran out of turns before writing its digest. {len(messages)} new "
        f"messages and {len(files)} new or changed documents are listed below, unread.",
        sections=[
            DraftSection(title=title, items=items)
            for title, items in (("New mail", mail), ("Documents changed", docs))
            if items
        ],
    )
