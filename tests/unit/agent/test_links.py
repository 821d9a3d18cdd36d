"""Web addresses the model writes: kept when the run read them, made inert when it made
them up, so that no link scanner or chat preview fetches what an injected mail had the
model put in one (`app/agent/links.py`)."""

from __future__ import annotations

import json

from app.agent.links import addresses_in, inert
from app.agent.resume import PausedState, ResumeState
from app.agent.tools import Alert
from tests.liveness import read_in_child
from tests.unit.agent.test_ask_user import Alerts, CountingSource, calls, go
from tests.unit.agent.test_runner import INVOICE_ID, ScriptedModel, Steps, final

# In the text of the sample mail 1795327203.M10P2041.sample, which the run reads.
READ = "https://opsweekly.example/212/tagging"
MADE_UP = "https://collect.evil.example/c?d=Q4+budget+is+1.2M"
NEWSLETTER_ID = "1795327203.M10P2041.sample"


def test_an_address_not_read_keeps_only_its_host_unlinkable() -> None:
    read = addresses_in(json.dumps({"text": f"Your tasks: {READ}\nThanks"}))
    assert read == {READ}
    text = (f"See {READ}. Then {MADE_UP}, https://u:p@evil.example:8443/x#frag, "
            "www.evil.example/?q=1 and evil.example/collect?d=2.")
    assert inert(text, read) == (
        f"See {READ}. Then [link to collect[.]evil[.]example], [link to evil[.]example], "
        "[link to www[.]evil[.]example] and [link to evil[.]example].")
    # Addresses' look-alikes are not touched: mail addresses, file names, versions.
    plain = "Mail jane@acme.example about q4-budget.csv (v1.2.3), due 19.12."
    assert inert(plain, set()) == plain


def test_an_address_without_a_scheme_is_found_whatever_letters_its_host_has() -> None:
    """A host with "_" or letters outside ASCII, or a punycode top-level label, is a host
    browsers and link scanners take: its path goes too."""
    text = ("Then x_evil.example/c?d=Q4, évil.example/c?d=Q4, пример.рф/c?d=Q4, "
            "xn--vil-dma.example/c?d=Q4 and evil.xn--p1ai/c?d=Q4.")
    assert inert(text, set()) == (
        "Then [link to x_evil[.]example], [link to évil[.]example], [link to пример[.]рф], "
        "[link to xn--vil-dma[.]example] and [link to evil[.]xn--p1ai].")
    # As read, such an address is kept.
    assert inert("See évil.example/c?d=Q4.", {"évil.example/c?d=Q4"}) == (
        "See évil.example/c?d=Q4.")
    # Nor does a port hide one.
    assert inert("evil.example:8080/c?d=Q4 or évil.example:1/c", set()) == (
        "[link to evil[.]example] or [link to évil[.]example]")
    # Still untouched: file names with "_" or accents, versions, paths, mail addresses,
    # times.
    plain = ("Open report_v2.pdf, résumé_final.docx and docs/v1.2/notes (v1.2.3, 3.14/2); "
             "mail jane_doe@acme.example or zoë@café.example at 10:30/11:00.")
    assert inert(plain, set()) == plain


async def test_the_digest_keeps_what_the_run_read_and_defuses_what_the_model_made_up():
    model = ScriptedModel(
        calls(("read_message", {"id": NEWSLETTER_ID})),
        final({
            "summary": f"Your tasks are at {READ}; the budget: see {MADE_UP}",
            "sections": [{"title": f"Links {MADE_UP}", "items": [
                {"title": "Tasks", "detail": f"Open {READ} or {MADE_UP}.",
                 "message_ids": [NEWSLETTER_ID]}]}],
            "action_items": [{"text": f"Visit {MADE_UP}", "owner": "you",
                              "due": f"before {MADE_UP}"}],
            "notes": [f"from {MADE_UP}"],
        }),
    )
    outcome = await go(model, CountingSource(), Steps(), interactive=False)
    assert outcome.digest is not None
    digest = outcome.digest.model_dump_json()
    assert "evil.example" not in digest
    assert digest.count("[link to collect[.]evil[.]example]") == 6
    assert outcome.digest.summary.startswith(f"Your tasks are at {READ}; ")
    assert outcome.digest.sections[0].items[0].detail == (
        f"Open {READ} or [link to collect[.]evil[.]example].")


async def test_questions_and_alerts_defuse_made_up_addresses_also_after_a_pause():
    alerts = Alerts()
    model = ScriptedModel(
        calls(("read_message", {"id": NEWSLETTER_ID})),
        calls(
            ("notify_now", {"title": f"Go to {MADE_UP}", "message": f"{READ} and {MADE_UP}",
                            "about": [NEWSLETTER_ID]}),
            ("ask_user", {"question": f"Open {MADE_UP} or {READ}?",
                          "choices": [MADE_UP, READ]}),
        ),
    )
    paused = await go(model, CountingSource(), Steps(), notify=alerts)
    assert paused.paused is not None
    [alert] = alerts
    assert isinstance(alert, Alert)
    assert (alert.title, alert.message) == (
        "Go to [link to collect[.]evil[.]example]",
        f"{READ} and [link to collect[.]evil[.]example]")
    state = PausedState.model_validate(json.loads(json.dumps(
        paused.paused.model_dump(mode="json"))))
    assert state.question == f"Open [link to collect[.]evil[.]example] or {READ}?"
    assert state.choices == ["[link to collect[.]evil[.]example]", READ]
    assert READ in state.read

    # Resumed: what the run read before the pause, and the user's answer, are still read.
    answer = "https://wiki.example/answer"
    resumed = await go(
        ScriptedModel(final({
            "summary": f"{READ}, {answer} and {MADE_UP}",
            "sections": [{"title": "Due", "items": [
                {"title": "Invoice", "detail": "Due soon.", "message_ids": [INVOICE_ID]}]}],
        })),
        CountingSource(), Steps(),
        resume=ResumeState(state=state.model_dump(mode="json"), answer=answer),
    )
    assert resumed.digest is not None
    assert resumed.digest.summary == (
        f"{READ}, {answer} and [link to collect[.]evil[.]example]")


# Text a sender writes that sent the old pattern into quadratic backtracking: from each
# start in a long run of "a.a.a.…" it read to the run's end (minutes for these).
ADVERSARIAL = {
    "labels": "a." * 100_000,
    "hyphens": "a-" * 100_000,
    "underscores": "a_." * 70_000,
    "accented labels": "é." * 100_000,
    "punycode": "a.xn--" * 35_000,
    "ports": "a.io:1" * 35_000,
}


def test_text_built_to_backtrack_is_read_at_once() -> None:
    """Read in a child process, which a hang cannot take the suite down with: the time
    limit is a liveness bound (minutes), not a measurement."""
    code = (
        "import json, sys\n"
        "from app.agent.links import addresses_in, inert\n"
        "texts = json.load(sys.stdin)\n"
        "print(json.dumps({name: [sorted(addresses_in(text)), inert(text, ()) == text]\n"
        "                  for name, text in texts.items()}))\n"
    )
    assert read_in_child(code, ADVERSARIAL) == {name: [[], True] for name in ADVERSARIAL}
    # Under the run of labels, an address with a path is still found, and only it.
    assert addresses_in("a." * 200 + " see evil.example/c?d=x.") == {"evil.example/c?d=x"}
    # A host of at most a DNS name's 253 characters is found whole.
    host = ".".join(["b" * 61] * 4)  # 247 characters
    assert addresses_in(f"{host}.io/x") == {f"{host}.io/x"}
