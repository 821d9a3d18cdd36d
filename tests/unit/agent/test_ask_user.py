"""ask_user pauses the loop with a JSON state and resumes from it; notify_now reaches the user.

With a scripted model (no database, no network): the runner's side of the flow.
The same flow through the real SDK, the fake Gemini and the database is in
tests/integration/runs/test_questions_flow.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.agent.llm import FunctionCall, TurnResponse
from app.agent.prompt import (
    ALERT_SENT,
    ASKED,
    BUDGET_SPENT,
    LAST_TURN_GUIDANCE,
    NO_ANSWER,
    ONE_QUESTION_AT_A_TIME,
)
from app.agent.resume import PausedState, ResumeState
from app.agent.runner import MAX_QUESTIONS_PER_RUN, AgentOutcome, run_agent
from app.agent.tools import (
    MAX_ALERT_ITEMS,
    QUESTION_CHARS,
    USER_TOOLS,
    Alert,
    plain_text,
    tool_declarations,
)
from app.sources.base import Delta
from app.sources.sample import SampleSource
from tests.unit.agent.test_runner import (
    INVOICE_ID,
    ScriptedModel,
    Steps,
    final,
    make_request,
)

DRAFT = {
    "summary": "The invoice is due.",
    "sections": [{"title": "Due", "items": [
        {"title": "Invoice", "detail": "Due soon.", "message_ids": [INVOICE_ID]},
    ]}],
}


class CountingSource(SampleSource):
    """The sample source, counting how often its delta is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.deltas = 0

    async def delta(self, *args: Any, **kwargs: Any) -> Delta:
        self.deltas += 1
        return await super().delta(*args, **kwargs)


class Alerts(list[Alert]):
    """A Notifier that keeps the alerts; an alert it has seen counts as already sent."""

    async def __call__(self, alert: Alert) -> bool:
        seen = any(a.call_id == alert.call_id for a in self)
        self.append(alert)
        return not seen


def calls(*calls: tuple[str, dict[str, Any]]) -> TurnResponse:
    return TurnResponse(
        interaction_id="",
        function_calls=[
            FunctionCall(call_id=f"c{i}", name=name, arguments=arguments)
            for i, (name, arguments) in enumerate(calls)
        ],
    )


async def go(
    model: ScriptedModel,
    source: SampleSource,
    steps: Steps,
    *,
    resume: ResumeState | None = None,
    notify: Alerts | None = None,
    **changes: Any,
) -> AgentOutcome:
    changes.setdefault("interactive", True)
    changes.setdefault("model", "scripted")
    return await run_agent(
        llm=model, sources={"sample": source}, cursors={}, request=make_request(**changes),
        record=steps, resume=resume, notify=notify if notify is not None else Alerts(),
    )


async def test_a_question_pauses_with_a_json_state_and_the_answer_resumes_in_one_turn():
    source = CountingSource()
    asking = ScriptedModel(calls(
        ("read_message", {"id": INVOICE_ID}),
        ("ask_user", {"question": "Which project?", "choices": ["Apollo", "Gemini"]}),
        ("search_mail", {"query": "invoice"}),
    ))
    paused = await go(asking, source, Steps())

    assert paused.status == "waiting"
    assert paused.digest is None
    assert paused.paused is not None
    stored = json.loads(json.dumps(paused.paused.model_dump(mode="json")))  # JSON all through
    state = PausedState.model_validate(stored)
    assert (state.interaction_id, state.call_id) == ("scripted-1", "c1")
    assert (state.question, state.choices) == ("Which project?", ["Apollo", "Gemini"])
    assert [r.call_id for r in state.results] == ["c0", "c2"]
    assert state.question_index == 1
    assert (state.turns, state.calls_used, state.questions_asked) == (1, 3, 1)
    assert state.usage.input_tokens == 10
    assert state.interaction_ids == ["scripted-1"]
    assert state.cursors == paused.cursors
    assert ["message", INVOICE_ID, "sample"] in [s[:3] for s in state.seen]
    assert source.deltas == 1

    resuming = ScriptedModel(final(DRAFT))
    steps = Steps()
    done = await go(resuming, source, steps, resume=ResumeState(stored, "Apollo"))

    assert source.deltas == 1  # the delta is not asked again
    (request,) = resuming.requests
    assert request.previous_interaction_id == "scripted-1"
    assert isinstance(request.input, list)
    assert [(r.call_id, r.name) for r in request.input] == [
        ("c0", "read_message"), ("c1", "ask_user"), ("c2", "search_mail")]
    assert request.input[1].result == "The user answered: Apollo"
    # The read result shows the message under the alias the paused run gave it.
    alias = next(s[4] for s in state.seen if s[:2] == ["message", INVOICE_ID])
    assert f'"id":"{alias}"' in request.input[0].result
    assert done.status == "succeeded"
    assert done.cursors == state.cursors
    assert done.interaction_ids == ["scripted-1", "scripted-1"]  # the fresh script's ids
    assert done.usage.input_tokens == 20
    assert done.digest is not None
    assert [r.id for r in done.digest.sections[0].items[0].refs] == [INVOICE_ID]
    assert [(s.kind, s.name) for s in steps] == [("tool", "ask_user"), ("model", "scripted")]


async def test_an_expired_question_resumes_with_no_answer_and_the_digest_says_so():
    source = SampleSource()
    paused = await go(ScriptedModel(calls(("ask_user", {"question": "Which?"}))), source, Steps(),
                      max_turns=2)
    assert paused.paused is not None
    resuming = ScriptedModel(final(DRAFT))
    state = paused.paused.model_dump(mode="json")
    done = await go(resuming, source, Steps(), resume=ResumeState(state, None), max_turns=2)

    (result,) = resuming.requests[0].input
    assert not isinstance(result, str)
    # The guidance of the last turn rides on the result, after two newlines.
    assert result.result == NO_ANSWER + "\n\n" + LAST_TURN_GUIDANCE
    assert done.digest is not None
    assert any("did not answer" in note and "Which?" in note for note in done.digest.notes)


@pytest.mark.parametrize(
    ("budget", "note"),
    [
        ({"max_turns": 1}, "Stopped after 1 model turns"),
        ({"max_input_tokens": 10}, "Stopped after 10 input tokens (the budget is 10)"),
    ],
)
async def test_a_resume_sends_no_turn_once_a_budget_is_spent(budget: dict[str, int], note: str):
    """The budgets in force when the run resumes (settings change while a question waits)
    hold the resuming turn too: the run finishes from the previews without a model call."""
    source = SampleSource()
    paused = await go(ScriptedModel(calls(("ask_user", {"question": "Which?"}))), source, Steps())
    assert paused.paused is not None
    resuming = ScriptedModel(final(DRAFT))
    steps = Steps()
    state = paused.paused.model_dump(mode="json")
    done = await go(resuming, source, steps, resume=ResumeState(state, "Apollo"), **budget)

    assert resuming.requests == []
    assert [s.kind for s in steps] == ["tool"]  # the answer is recorded all the same
    assert done.status == "succeeded"
    assert done.budget_exhausted
    assert done.digest is not None
    assert done.digest.summary != DRAFT["summary"]
    assert any(note in n for n in done.digest.notes)
    assert done.interaction_ids == ["scripted-1"]


async def test_one_question_per_turn_and_a_bounded_number_per_run():
    source = SampleSource()
    steps = Steps()
    paused = await go(ScriptedModel(calls(
        ("ask_user", {"question": "First?"}), ("ask_user", {"question": "Second?"}),
    )), source, steps)
    assert paused.paused is not None
    assert paused.paused.question == "First?"
    assert [r.result for r in paused.paused.results] == [ONE_QUESTION_AT_A_TIME]
    assert [s.result_excerpt for s in steps if s.kind == "tool"] == [
        ASKED, ONE_QUESTION_AT_A_TIME]

    state = paused.paused.model_dump(mode="json")
    state["questions_asked"] = MAX_QUESTIONS_PER_RUN
    again = ScriptedModel(calls(("ask_user", {"question": "Third?"})), final(DRAFT))
    done = await go(again, source, Steps(), resume=ResumeState(state, "yes"))
    assert done.status == "succeeded"  # not asked: the run went on
    assert "at most" in again.requests[1].input[0].result  # type: ignore[union-attr]


async def test_the_user_tools_have_no_recipient_and_a_preview_is_not_offered_them():
    for tool in USER_TOOLS:
        properties = set(tool.parameters["properties"])
        assert not properties & {"to", "recipient", "recipients", "email", "address", "cc"}
    names = {d.name for d in tool_declarations(read_mail=True, read_files=True, user_tools=True)}
    assert {"ask_user", "notify_now"} <= names

    preview = ScriptedModel(calls(("ask_user", {"question": "Which?"})), final(DRAFT))
    outcome = await go(preview, SampleSource(), Steps(), interactive=False)
    assert outcome.status == "succeeded"
    offered = {d.name for d in preview.requests[0].tools}
    assert not offered & {"ask_user", "notify_now"}
    assert "There is no tool named 'ask_user'" in preview.requests[1].input[0].result  # type: ignore[union-attr]


async def test_notify_now_reaches_only_the_user_and_spends_the_action_budget():
    alerts = Alerts()
    model = ScriptedModel(
        calls(("notify_now", {"title": "Overdue", "message": "Pay it.", "to": "x@evil.example"}),
              ("notify_now", {"title": "Again", "message": "More."})),
        final(DRAFT),
    )
    outcome = await go(model, SampleSource(), Steps(), notify=alerts, max_tool_calls=1)

    assert outcome.status == "succeeded"
    assert alerts == [Alert(call_id="c0", title="Overdue", message="Pay it.")]
    results = model.requests[1].input
    assert not isinstance(results, str)
    assert results[0].result == ALERT_SENT
    assert results[1].result.startswith(BUDGET_SPENT)


async def test_notify_now_names_its_items_by_the_ids_the_run_saw():
    """"about" takes the ids the run showed (an alias or the real id); the notifier gets
    the app's key of each item, or the model is told why not, and nothing is sent."""
    alerts = Alerts()
    refused = [
        {"about": ["m999"]},  # never shown
        {"about": "m1"},  # not a list
        {"about": [f"m{i}" for i in range(1, MAX_ALERT_ITEMS + 2)]},  # too many
    ]
    model = ScriptedModel(
        calls(("notify_now", {"title": "Overdue", "message": "Pay it.",
                              "about": [INVOICE_ID, " m1 ", INVOICE_ID]}),
              *(("notify_now", {"title": "No", "message": "No.", **bad}) for bad in refused)),
        final(DRAFT),
    )
    outcome = await go(model, SampleSource(), Steps(), notify=alerts)

    assert outcome.status == "succeeded"
    (alert,) = alerts
    assert alert.about == (INVOICE_ID, "m1")
    invoice, m1 = alert.items
    assert invoice == f"sample:message:{INVOICE_ID}"
    assert m1.startswith("sample:message:")
    assert m1.endswith(".sample")  # m1, by its real id
    results = model.requests[1].input
    assert not isinstance(results, str)
    assert results[0].result == ALERT_SENT
    never, not_list, too_many = (r.result for r in results[1:])
    assert never.startswith("Error:")
    assert "'m999'" in never
    assert not_list.startswith('Error: "about" must be a list')
    assert too_many.startswith(f'Error: "about" names {MAX_ALERT_ITEMS + 1} items')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<b>Which</b> project?", "<b>Which</b> project?"),
        ("a\x00b\x07c\u202ed\r\ne", "abcd\ne"),
        ("  padded\t ", "padded"),
    ],
)
def test_plain_text_drops_control_characters_and_keeps_markup_as_characters(text, expected):
    assert plain_text(text, 100) == expected


def test_plain_text_is_bounded():
    bounded = plain_text("x" * 2000, QUESTION_CHARS)
    assert len(bounded) == QUESTION_CHARS
    assert bounded.endswith("…")
