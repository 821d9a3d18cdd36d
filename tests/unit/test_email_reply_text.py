"""What a reply to a question's email says: the new text, the choice it names, the
Message-IDs it answers."""

from __future__ import annotations

from app.questions.models import Question
from app.questions.replies import as_answer, is_forward, referenced_ids, reply_text


def test_the_quote_after_the_attribution_line_is_dropped() -> None:
    body = ("Apollo, please.\r\n\r\nOn Mon, 23 Nov 2026 at 08:00, Pilotlight "
            "<digests@pilotlight.example> wrote:\r\n> Which project?\r\n> Apollo or Gemini\r\n")
    assert reply_text(body) == "Apollo, please."


def test_an_attribution_line_wrapped_over_two_lines_still_ends_the_reply() -> None:
    body = ("Gemini\n\nOn Mon, 23 Nov 2026 at 08:00, Pilotlight <\n"
            "digests@pilotlight.example> wrote:\n\nWhich project?\n")
    assert reply_text(body) == "Gemini"


def test_quoted_lines_and_the_signature_are_dropped_and_the_rest_kept() -> None:
    body = ("> Which project?\nThe launch plan.\n> Apollo\nThen Apollo.\n\n-- \nAlice\n"
            "Sent from my phone\n")
    assert reply_text(body) == "The launch plan.\nThen Apollo."


def test_a_line_that_only_starts_with_on_is_kept() -> None:
    assert reply_text("On second thought: Gemini\n") == "On second thought: Gemini"


def test_nothing_but_a_quote_is_no_text() -> None:
    assert reply_text("On Mon, Nov 23, Pilotlight wrote:\n> Which project?\n") == ""


def test_a_reply_written_below_the_quote_is_read() -> None:
    body = ("On Mon, 23 Nov 2026 at 08:00, Pilotlight <digests@pilotlight.example> wrote:\n"
            "> Which project?\n> Apollo or Gemini\n\nGemini\n")
    assert reply_text(body) == "Gemini"


def test_an_attribution_in_another_language_goes_with_its_quote() -> None:
    for attribution in (
        "Le lun. 23 nov. 2026 à 08:00, Pilotlight <digests@pilotlight.example> a écrit :",
        "Am Mo., 23. Nov. 2026 um 08:00 Uhr schrieb Pilotlight <digests@pilotlight.example>:",
    ):
        assert reply_text(f"Apollo\n\n{attribution}\n\n> Which project?\n") == "Apollo"


def test_the_original_below_an_outlook_reply_is_not_part_of_it() -> None:
    header = ("From: Pilotlight <digests@pilotlight.example>\nSent: Monday, November 23, "
              "2026 8:00 AM\nTo: Alice <alice@example.com>\nSubject: a question\n\n"
              "Which project?\nApollo or Gemini\n")
    assert reply_text(f"Gemini\n\n________________________________\n{header}") == "Gemini"
    assert reply_text(f"Gemini\r\n\r\n{header}") == "Gemini"
    assert reply_text(f"Gemini\n-----Original Message-----\n{header}") == "Gemini"
    assert reply_text("From: the launch plan, Apollo.\n") == "From: the launch plan, Apollo."


def test_a_forward_is_told_by_its_subject_or_its_marker_line() -> None:
    assert is_forward("Fwd: a question", "Bob, what do you think?")
    assert is_forward("WG: a question", "")
    assert is_forward("Re: a question", "Bob?\n\n---------- Forwarded message ---------\n"
                      "From: Pilotlight\n\nWhich project?")
    assert not is_forward("Re: a question", "Apollo.\n\nOn Mon, Pilotlight wrote:\n> ?")


def test_the_text_is_cut_to_an_answer_length_and_nul_free() -> None:
    assert reply_text("a\x00b" + "x" * 3000) == ("ab" + "x" * 3000)[:2000]


def test_a_choice_named_in_any_case_is_that_choice_else_the_text_itself() -> None:
    question = Question(text="Which project?", choices={"choices": ["Apollo", "Gemini 2"]})
    assert as_answer(question, "apollo") == "Apollo"
    assert as_answer(question, "  GEMINI   2. ") == "Gemini 2"
    assert as_answer(question, "Apollo first, then Gemini") == "Apollo first, then Gemini"
    assert as_answer(Question(text="Why?", choices={}), "because") == "because"


def test_the_message_answered_comes_first_then_the_references_newest_first() -> None:
    assert referenced_ids("<b@x>", "<a@x> <c@x>\t<b@x>") == ["<b@x>", "<c@x>", "<a@x>"]
    assert referenced_ids("", "") == []
    assert referenced_ids("not an id", "<bad id@x>") == []
