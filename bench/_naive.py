"""The baseline of bench/tokens.py: a naive tool-loop agent over the same model port.

It gets no context: its first turn holds only the instruction. Its tools are
`list_mail` (ids and subjects, a page at a time) and `read_message` (the same read
as ours, through our `ToolBox`, so a message costs the same tokens in both agents).
It lists every page, reads every message, then answers with the digest JSON, chaining
its turns with `previous_interaction_id` as the Interactions API wants, so each turn is
billed for the whole conversation so far.

The loop (`run_naive`) is a real agent harness: it sends the turns, runs the tools and
sends their results back. What the model decides is scripted by `ToolLoopBrain`, which
sees only what the model would see (the turn's input) and answers as such an agent does:
list, read each id it was shown (`reads_per_turn` calls at a time), then the digest.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.agent.digest import DigestDraft, draft_json_schema
from app.agent.llm import LLM, FunctionCall, FunctionDeclaration, FunctionResult, TurnRequest, Usage
from app.agent.prompt import SYSTEM_INSTRUCTION, fence, parse_fences, window_text
from app.agent.runner import AgentRequest
from app.agent.tools import MAIL_TOOLS, ToolBox
from app.sources.base import Source

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fake lives in tests/, at the repository root
    sys.path.insert(0, str(ROOT))

from tests.fakes.gemini import Calls, FakeGemini, Reply, Text, tokens  # noqa: E402

__all__ = ["FakeGemini", "NaiveOutcome", "ToolLoopBrain", "run_naive", "tokens"]

PAGE_SIZE = 50
ALL_MAIL = 1_000_000
_NEXT_PAGE = re.compile(r"^next_page_token: (\S+)$", re.MULTILINE)

LIST_MAIL = FunctionDeclaration(
    name="list_mail",
    description="List the messages in the mailbox, newest first: their ids and subjects, "
    f"{PAGE_SIZE} per page. Pass a page's next_page_token to get the next page.",
    parameters={
        "type": "object",
        "properties": {
            "page_token": {"type": "string", "description": "A next_page_token; none: page 1."}
        },
    },
)
READ_MESSAGE = next(tool for tool in MAIL_TOOLS if tool.name == "read_message")
TOOLS = [LIST_MAIL, READ_MESSAGE]


def naive_prompt(request: AgentRequest) -> str:
    """The first turn: the instruction and the time, no data (the tools fetch it all)."""
    return "\n".join([
        "# Standing instruction",
        f"Title: {request.title}",
        f"<instruction>\n{request.text}\n</instruction>",
        "",
        f"It is now {request.now.isoformat()} ({request.timezone}).",
        f"This digest covers: {window_text(request.window_start, request.timezone)}.",
        "Sources: mail.",
        "",
        "Use list_mail to see the mailbox and read_message to read messages, then answer "
        "with the digest JSON.",
    ])


@dataclass
class NaiveOutcome:
    usage: Usage = field(default_factory=Usage)
    turns: int = 0
    calls: int = 0
    listed: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    draft: DigestDraft | None = None


class ToolLoopBrain:
    """The naive agent's decisions: list every page, read every listed id, answer."""

    def __init__(self, final_text: str, reads_per_turn: int) -> None:
        self.final_text = final_text
        self.reads_per_turn = max(1, reads_per_turn)
        self.to_read: list[str] = []
        self.listing_done = False

    def decide(self, turn_input: str | list[FunctionResult]) -> Reply:
        if isinstance(turn_input, str):  # the first turn: start listing
            return Calls([("list_mail", {})])
        for result in turn_input:
            if result.name != "list_mail":
                continue
            for fenced in parse_fences(result.result):
                self.to_read += [str(r["id"]) for r in fenced.records if "id" in r]
            if token := _NEXT_PAGE.search(result.result):
                return Calls([("list_mail", {"page_token": token[1]})])
            self.listing_done = True
        if self.to_read:
            batch, self.to_read = (
                self.to_read[: self.reads_per_turn], self.to_read[self.reads_per_turn :]
            )
            return Calls([("read_message", {"id": message_id}) for message_id in batch])
        return Text(self.final_text)


async def _list_page(source: Source, page_token: object) -> tuple[str, list[str]]:
    cards = await source.search_mail("", limit=ALL_MAIL)  # every message, newest first
    start = int(page_token) if isinstance(page_token, str) and page_token.isdigit() else 0
    page = cards[start : start + PAGE_SIZE]
    more = start + PAGE_SIZE < len(cards)
    text = (
        f"Messages {start + 1}-{start + len(page)} of {len(cards)}.\n"
        + fence("list_mail", [{"id": c.id, "subject": c.subject} for c in page])
        + (f"\nnext_page_token: {start + PAGE_SIZE}" if more else "\nThis is the last page.")
    )
    return text, [c.id for c in page]


async def run_naive(
    *, llm: LLM, source: Source, request: AgentRequest, brain: ToolLoopBrain,
    script: Callable[[Reply], None], max_turns: int = 10_000,
) -> NaiveOutcome:
    """Run the tool loop until the model answers with text; `script` sets its next reply."""
    toolbox = ToolBox({"mail": source}, read_mail=True, read_files=False)
    outcome = NaiveOutcome()
    turn_input: str | list[FunctionResult] = naive_prompt(request)
    previous: str | None = None
    schema = draft_json_schema()
    while outcome.turns < max_turns:
        script(brain.decide(turn_input))
        response = await llm.turn(TurnRequest(
            model=request.model, system_instruction=SYSTEM_INSTRUCTION, input=turn_input,
            tools=TOOLS, previous_interaction_id=previous,
            thinking_level=request.thinking_level, response_schema=schema,
        ))
        outcome.turns += 1
        outcome.usage += response.usage
        if not response.function_calls:
            outcome.draft = DigestDraft.model_validate_json(response.text or "")
            return outcome
        outcome.calls += len(response.function_calls)
        results = [await _call(toolbox, source, call, outcome) for call in response.function_calls]
        turn_input, previous = results, response.interaction_id
    raise RuntimeError(f"the naive agent did not answer within {max_turns} turns")


async def _call(
    toolbox: ToolBox, source: Source, call: FunctionCall, outcome: NaiveOutcome
) -> FunctionResult:
    if call.name == "list_mail":
        text, ids = await _list_page(source, call.arguments.get("page_token"))
        outcome.listed += ids
    else:
        result = await toolbox.execute(call)
        if result.error is not None:
            raise RuntimeError(f"the naive agent's {call.name} failed: {result.error}")
        text = result.text
        outcome.read.append(str(call.arguments.get("id")))
    return FunctionResult(call_id=call.call_id, name=call.name, result=text)
