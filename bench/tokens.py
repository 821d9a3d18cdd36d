"""Tokens and cost per digest: our context-first agent against a naive tool-loop agent.

    .venv/bin/python bench/tokens.py
    .venv/bin/python bench/tokens.py --mails 200 --seed 1 --no-change-runs 20

Both agents drive the real `GeminiModel` (google-genai SDK) against the fake Interactions
API on 127.0.0.1 (`tests/fakes/gemini.py`), which bills like the service: every turn pays
for the system instruction, the tools and the response schema; a chained turn pays input
for the whole conversation so far; len // 4 tokens per character count; implicit caching
reports a repeated prefix of at least 4,096 tokens as cached. Ours is `run_agent` (the app
reads the new mail for the first prompt: cards under short ids with key-line excerpts;
tools read further; the fake answers from the offline planner); the naive agent
(`bench/_naive.py`) has no context, lists the mailbox with a tool and reads every message,
then writes the same digest as ours. Mailboxes: the bundled sample and a generated day of
`--mails` mails (`bench/_mailgen.py`). Costs are at list price for gemini-3.5-flash
(`DEFAULT_GEMINI_PRICES`), cached input at its cached rate. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import Report
from _mailgen import write_day
from _naive import PAGE_SIZE, FakeGemini, NaiveOutcome, ToolLoopBrain, run_naive, tokens

from app.agent.digest import DigestDraft
from app.agent.gemini import GeminiModel
from app.agent.llm import Usage
from app.agent.pricing import cost_usd
from app.agent.prompt import parse_first_prompt
from app.agent.runner import AgentOutcome, AgentRequest, StepRecord, run_agent
from app.core.config import DEFAULT_GEMINI_PRICES, Settings
from app.sources.sample import SAMPLE_DATA_DIR, SampleSource

MODEL = "gemini-3.5-flash"
NOW = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)  # the morning after the generated day
INSTRUCTION = (
    "Digest what is new in my mail: what needs my attention first, then team mail, and "
    "list the action items with owners and due dates."
)
RATIO_TARGET = 0.2
COST_TARGET = 0.03


def default(name: str) -> Any:
    """A setting's default (not the environment's value: the figures must not depend on it)."""
    return Settings.model_fields[name].default


@dataclass
class Mailbox:
    label: str
    mails: int
    shown: int  # mails whose id is in the first prompt the fake received
    ours: AgentOutcome
    ours_turns: int
    ours_reads: int
    ours_turn_inputs: list[int]  # input tokens billed per turn
    digest_tokens: int  # the final digest JSON, as the fake counts it
    naive: NaiveOutcome
    one_turn: NaiveOutcome  # the naive agent with every read in one turn
    quiet_runs: int  # no-change runs
    quiet_silent: int  # ... of them without a request to the fake


def cost(usage: Usage) -> float:
    return cost_usd(MODEL, usage, DEFAULT_GEMINI_PRICES)


def uncached(usage: Usage) -> Usage:
    return usage.model_copy(update={"cached_tokens": 0})


def billed(fake: FakeGemini) -> Usage:
    total = Usage()
    for usage in fake.billed():
        total += Usage(
            input_tokens=usage["total_input_tokens"], output_tokens=usage["total_output_tokens"],
            thought_tokens=usage["total_thought_tokens"],
            cached_tokens=usage["total_cached_tokens"],
        )
    return total


def final_text(fake: FakeGemini) -> str:
    """The text of the last answer the fake gave (the digest JSON)."""
    answered = [r.response for r in fake.requests() if r.status == 200]
    steps = answered[-1]["steps"]
    return "".join(c["text"] for s in steps if s["type"] == "model_output" for c in s["content"])


async def ignore(step: StepRecord) -> None:
    return None


async def measure(label: str, root: Path, fake: FakeGemini, llm: GeminiModel,
                  args: argparse.Namespace) -> Mailbox:
    source = SampleSource(root)
    ids = [card.id for card in await source.search_mail("", limit=1_000_000)]
    request = AgentRequest(
        title="Morning digest", text=INSTRUCTION, thinking_level="medium",
        max_tool_calls=default("agent_default_max_tool_calls"),
        max_turns=default("agent_max_turns"), only_new=True, read_mail=True, read_files=False,
        timezone="Europe/Berlin", now=NOW, window_start=None, model=MODEL,
        context_limit=len(ids),  # every mail of the mailbox goes into the prompt
        max_input_tokens=default("agent_max_input_tokens"),
    )

    # Ours: the context-first agent, the fake answering from the offline planner.
    fake.reset()
    ours = await run_agent(llm=llm, sources={"mail": source}, cursors={}, request=request,
                           record=ignore)
    first_prompt = fake.bodies()[0]["input"]
    # Every mail is a card of the first prompt, under its own short id.
    shown = len({card.id for card in parse_first_prompt(first_prompt).messages})
    if shown != len(ids):
        raise SystemExit(f"{label}: only {shown} of {len(ids)} mails are in the first prompt")
    if ours.usage != billed(fake):
        raise SystemExit(f"{label}: our usage {ours.usage} is not what the fake billed")
    ours_turns = len(fake.requests())
    turn_inputs = [usage["total_input_tokens"] for usage in fake.billed()]
    ours_reads = sum(
        len(b["input"]) for b in fake.bodies()[1:] if isinstance(b["input"], list)
    )
    digest = final_text(fake)
    DigestDraft.model_validate_json(digest)

    # The naive tool loop, scripted to write the same digest: the difference is the loop.
    naive_runs = []
    for reads_per_turn in (args.reads_per_turn, len(ids)):
        fake.reset()
        naive = await run_naive(
            llm=llm, source=source, request=request,
            brain=ToolLoopBrain(digest, reads_per_turn), script=fake.script,
        )
        if naive.usage != billed(fake):
            raise SystemExit(f"{label}: the naive usage is not what the fake billed")
        if sorted(naive.read) != sorted(ids) or sorted(naive.listed) != sorted(ids):
            raise SystemExit(f"{label}: the naive agent did not list and read every mail")
        naive_runs.append(naive)

    # No change: run again from the cursors the app would have stored, nothing new.
    silent = 0
    cursors = ours.cursors
    for run in range(args.no_change_runs):
        before = len(fake.requests(creates_only=False))
        later = dataclasses.replace(
            request, window_start=request.now, now=NOW + timedelta(minutes=15 * (run + 1))
        )
        outcome = await run_agent(llm=llm, sources={"mail": source}, cursors=cursors,
                                  request=later, record=ignore)
        cursors = outcome.cursors
        if outcome.status == "skipped" and len(fake.requests(creates_only=False)) == before:
            silent += 1
    return Mailbox(label, len(ids), shown, ours, ours_turns, ours_reads, turn_inputs,
                   tokens(digest), naive_runs[0], naive_runs[1], args.no_change_runs, silent)


def tokens_line(what: str, ours: int, naive: int) -> None:
    ratio = ours / naive if naive else float("inf")
    Report.line(what, f"ours {ours:>9,}   naive {naive:>10,}   ours/naive {ratio:.3f}")


def money(value: float) -> str:
    return f"${value:.4f}"


def show(report: Report, number: int, box: Mailbox, args: argparse.Namespace) -> None:
    ours, naive, one = box.ours.usage, box.naive.usage, box.one_turn.usage
    title = "bundled sample mailbox" if box.label == "sample" else "generated day"
    report.title(number, f"{title}: {box.mails} mails, {MODEL} at list price")
    Report.line("mails in our first prompt", f"{box.shown}/{box.mails}")
    Report.line("ours: model turns, tool calls", f"{box.ours_turns}, {box.ours_reads}")
    Report.line(
        "naive: model turns, tool calls",
        f"{box.naive.turns}, {box.naive.calls} "
        f"(list_mail pages of {PAGE_SIZE}, then {args.reads_per_turn} reads per turn)",
    )
    tokens_line("input tokens", ours.input_tokens, naive.input_tokens)
    first = box.ours_turn_inputs[0]
    Report.line(
        "  ours per turn",
        " + ".join(f"{n:,}" for n in box.ours_turn_inputs)
        + f" (first prompt: about {first // box.mails:,} per mail)",
    )
    tokens_line("output tokens (incl. thought)", ours.output_tokens + ours.thought_tokens,
                naive.output_tokens + naive.thought_tokens)
    Report.line("  of which thought", f"ours {ours.thought_tokens:>9,}   naive "
                f"{naive.thought_tokens:>10,}")
    Report.line(
        "cost per digest",
        f"ours {money(cost(ours)):>9}   naive {money(cost(naive)):>10}   ours/naive "
        f"{cost(ours) / cost(naive):.3f}",
    )
    spoken = Usage(output_tokens=ours.output_tokens, thought_tokens=ours.thought_tokens)
    heard = Usage(input_tokens=ours.input_tokens, cached_tokens=ours.cached_tokens)
    Report.line(
        "  ours: input + output",
        f"{money(cost(heard))} + {money(cost(spoken))} "
        f"(the digest JSON is {box.digest_tokens:,} output tokens)",
    )
    Report.line(
        "  cached input (implicit caching)",
        f"ours {ours.cached_tokens:>9,}   naive {naive.cached_tokens:>10,}   "
        f"(billed at the cached rate)",
    )
    Report.line(
        "  cost if nothing were cached",
        f"ours {money(cost(uncached(ours))):>9}   naive {money(cost(uncached(naive))):>10}",
    )
    Report.line(
        "naive, all reads in one turn",
        f"input {one.input_tokens:,} in {box.one_turn.turns} turns, {money(cost(one))} "
        f"(ours/that {ours.input_tokens / one.input_tokens:.3f}; not judged)",
    )
    ratio = ours.input_tokens / naive.input_tokens
    report.verdict(f"input ratio, {box.label}", f"{ratio:.3f}", f"<= {RATIO_TARGET}",
                   ratio <= RATIO_TARGET)
    share = box.quiet_silent / box.quiet_runs if box.quiet_runs else 0.0
    Report.line("no-change runs, no model call", f"{box.quiet_silent}/{box.quiet_runs}")
    report.verdict(f"no model call, {box.label}", f"{share:.0%}", "100%",
                   box.quiet_runs > 0 and box.quiet_silent == box.quiet_runs)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=200,
                        help="mails in the generated day (1-1000; default 200)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated day")
    parser.add_argument("--no-change-runs", type=int, default=20,
                        help="runs with nothing new, per mailbox (default 20)")
    parser.add_argument("--reads-per-turn", type=int, default=10,
                        help="read_message calls per turn of the naive agent (default 10)")
    args = parser.parse_args()
    if not 1 <= args.mails <= 1000:
        parser.error("--mails must be between 1 and 1000 (agent_context_limit's range)")
    if args.no_change_runs < 0 or args.reads_per_turn < 1:
        parser.error("--no-change-runs must be >= 0 and --reads-per-turn >= 1")
    return args


async def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    report = Report()
    print(f"tokens per digest: ours (context-first) vs a naive tool loop, fake Gemini on "
          f"127.0.0.1; generated day: {args.mails} mails, seed {args.seed}")
    with tempfile.TemporaryDirectory(prefix="pilotlight-bench-") as tmp, FakeGemini() as fake:
        llm = GeminiModel(fake.api_key, base_url=fake.url, model=MODEL, max_retries=0)
        try:
            sample = await measure("sample", SAMPLE_DATA_DIR, fake, llm, args)
            mails = write_day(Path(tmp), args.mails, args.seed)
            lengths = sorted(len(m.body) for m in mails)
            kinds = Counter(m.kind for m in mails)
            day = await measure(f"{args.mails}-mail", Path(tmp), fake, llm, args)
        finally:
            await llm.aclose()

    show(report, 1, sample, args)
    print(f"\n    generated: {', '.join(f'{n} {k}' for k, n in kinds.most_common())}; bodies "
          f"{lengths[0]}-{lengths[-1]} chars (median {lengths[len(lengths) // 2]})")
    show(report, 2, day, args)
    all_shown = day.shown == day.mails
    per_digest = cost(day.ours.usage)
    Report.line(f"cost per {args.mails}-mail digest", f"{money(per_digest)} "
                f"({'every mail shown to the model' if all_shown else 'MAILS DROPPED'})")
    report.verdict(f"cost per {args.mails}-mail digest", money(per_digest),
                   f"< ${COST_TARGET:.2f}, no mail dropped", all_shown and per_digest < COST_TARGET)
    report.summary()
    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
