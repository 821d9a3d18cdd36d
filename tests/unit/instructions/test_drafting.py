"""Drafting an instruction from a sentence: the parser's table, its refusals, the LLM seam."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.agent.llm import LLMError, TurnRequest, TurnResponse
from app.agent.offline import OfflineModel
from app.core.errors import DomainError
from app.instructions.drafting import (
    PARSER_NAME,
    DraftIntervalTooShort,
    DraftNotUnderstood,
    DraftWatchNotAvailable,
    draft,
    draft_json_schema,
    parse,
)
from app.instructions.drafting.prompt import (
    PROMPT_EXAMPLES,
    PROMPT_REFUSALS,
    draft_system_instruction,
)
from app.instructions.schemas import InstructionCreate
from app.instructions.triggers import describe

TZ = "Europe/Berlin"
BOTH = ["gmail", "drive"]
MAIL = ["gmail"]
DOCS = ["drive"]
APP = ["in_app"]
EMAIL = ["in_app", "email"]
PUSH = ["in_app", "push"]


def cron(expression: str) -> dict[str, Any]:
    return {"type": "cron", "cron": expression, "timezone": TZ}


def every(seconds: int) -> dict[str, Any]:
    return {"type": "interval", "seconds": seconds}


# sentence -> (trigger, sources, channels)
PHRASES: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    # every day / daily / mornings and evenings / a time of day
    ("every weekday at 8 tell me what my team sent", cron("0 8 * * 1-5"), MAIL, APP),
    ("daily tell me what changed in my documents", cron("0 8 * * *"), DOCS, APP),
    ("every day at 8am summarize my inbox", cron("0 8 * * *"), MAIL, APP),
    ("every day at 7:30 summarize my inbox", cron("30 7 * * *"), MAIL, APP),
    ("each morning tell me what's new in my drive", cron("0 8 * * *"), DOCS, APP),
    ("every morning summarize new mail from my team", cron("0 8 * * *"), MAIL, APP),
    ("each morning at 7:30 list the documents that changed", cron("30 7 * * *"), DOCS, APP),
    ("every evening tell me what my team sent", cron("0 18 * * *"), MAIL, APP),
    ("every evening email me a summary of my mail", cron("0 18 * * *"), MAIL, EMAIL),
    ("at 8 tell me what my team sent", cron("0 8 * * *"), MAIL, APP),
    ("at 17:45 tell me what my team sent", cron("45 17 * * *"), MAIL, APP),
    ("daily at noon list the documents that changed", cron("0 12 * * *"), DOCS, APP),
    ("every day at 6 pm email me a digest of my mail", cron("0 18 * * *"), MAIL, EMAIL),
    ("every day at noon notify my phone about urgent messages", cron("0 12 * * *"), MAIL, PUSH),
    ("every evening at 7 tell me what changed in my drive", cron("0 19 * * *"), DOCS, APP),
    ("every morning at 6 tell me about overnight mail", cron("0 6 * * *"), MAIL, APP),
    ("every afternoon tell me what changed in my notes", cron("0 14 * * *"), DOCS, APP),
    ("every night at 10 summarize the day's email", cron("0 22 * * *"), MAIL, APP),
    ("at midnight list the files that changed", cron("0 0 * * *"), DOCS, APP),
    ("every Tuesday at 9.30 summarize the sprint notes", cron("30 9 * * 2"), DOCS, APP),
    ("every morning and evening summarize my mail", cron("0 8,18 * * *"), MAIL, APP),
    ("twice a day check my inbox", cron("0 8,18 * * *"), MAIL, APP),
    ("every weekday at 8 and 17 tell me what my team sent", cron("0 8,17 * * 1-5"), MAIL, APP),
    ("at 9 and 5 on weekdays check my inbox", cron("0 9,17 * * 1-5"), MAIL, APP),
    # weekdays, weekends, named days
    ("every weekday at 17:45 tell me what my team sent", cron("45 17 * * 1-5"), MAIL, APP),
    ("on weekdays at 8 tell me what changed in the shared drive", cron("0 8 * * 1-5"), DOCS, APP),
    ("Monday to Friday at 9am digest my inbox and drive", cron("0 9 * * 1-5"), BOTH, APP),
    ("Monday through Friday at 7 give me a briefing", cron("0 7 * * 1-5"), BOTH, APP),
    ("Mon-Fri 8am what did my team send", cron("0 8 * * 1-5"), BOTH, APP),
    # "on a Monday" is on Mondays, as "on a workday" is (was the task's: every day at 9)
    ("at 9 on a Monday summarise my mail", cron("0 9 * * 1"), MAIL, APP),
    ("on any Friday at 10 list the documents that changed", cron("0 10 * * 5"), DOCS, APP),
    # a range said backwards is read as the hours said ("10-8": 10:00 to 20:59)
    ("every 3 hours from 10-8 check my inbox", cron("0 10-20/3 * * *"), MAIL, APP),
    ("weekdays 7:30 what changed in the budget sheet", cron("30 7 * * 1-5"), DOCS, APP),
    ("every workday at 08:00 summarize my mail", cron("0 8 * * 1-5"), MAIL, APP),
    # the workday said as "every workday" is (these ran every day, or were refused)
    ("at 9 on a workday summarize my mail", cron("0 9 * * 1-5"), MAIL, APP),
    ("at 9 on any workday summarize my mail", cron("0 9 * * 1-5"), MAIL, APP),
    ("at 9 in the workday summarize my mail", cron("0 9 * * 1-5"), MAIL, APP),
    ("at 9 every work-day summarize my mail", cron("0 9 * * 1-5"), MAIL, APP),
    ("at 9 each week-day summarize my mail", cron("0 9 * * 1-5"), MAIL, APP),
    ("every day except work-days at 9 summarize my mail", cron("0 9 * * 6,0"), MAIL, APP),
    ("on the workday at 9 summarize my mail", cron("0 9 * * 1-5"), MAIL, APP),
    ("each workday at 9 summarize my mail", cron("0 9 * * 1-5"), MAIL, APP),
    ("every 2 hours on the workday check urgent mail", cron("0 */2 * * 1-5"), MAIL, APP),
    ("every weekday morning tell me what my team sent", cron("0 8 * * 1-5"), MAIL, APP),
    ("every weekday at 6 pm push urgent mail", cron("0 18 * * 1-5"), MAIL, PUSH),
    ("on weekends at 10 tell me everything", cron("0 10 * * 6,0"), BOTH, APP),
    ("every weekend at 9 give me a full summary", cron("0 9 * * 6,0"), BOTH, APP),
    ("every Monday summarize last week's documents", cron("0 8 * * 1"), DOCS, APP),
    ("every Friday at 4pm email me what changed in my files", cron("0 16 * * 5"), DOCS, EMAIL),
    ("on Tuesdays and Thursdays at 16:00 tell me what the sales team sent",
     cron("0 16 * * 2,4"), MAIL, APP),
    ("Monday, Wednesday and Friday at 8 check my inbox", cron("0 8 * * 1,3,5"), MAIL, APP),
    ("every Sunday evening plan my week from my documents", cron("0 18 * * 0"), DOCS, APP),
    ("Mondays at 7 pm digest the drive", cron("0 19 * * 1"), DOCS, APP),
    # short day names, where a day is meant: after "every", "each" or "on", or in a list
    ("every tue at 8 check mail", cron("0 8 * * 2"), MAIL, APP),
    ("on wed at 8 check mail", cron("0 8 * * 3"), MAIL, APP),
    ("every Mon, Wed, Fri at 8 check my inbox", cron("0 8 * * 1,3,5"), MAIL, APP),
    ("Sat and Sun at 10 summarise my documents", cron("0 10 * * 6,0"), DOCS, APP),
    ("at 8 every mon wed fri summarise my mail", cron("0 8 * * 1,3,5"), MAIL, APP),
    ("every tue thu at 9 summarise my mail", cron("0 9 * * 2,4"), MAIL, APP),
    ("Mon Wed Fri at 8 summarise my mail", cron("0 8 * * 1,3,5"), MAIL, APP),
    ("every mon/wed/fri at 8 summarise my mail", cron("0 8 * * 1,3,5"), MAIL, APP),
    ("every Monday/Friday at 8 summarise my mail", cron("0 8 * * 1,5"), MAIL, APP),
    ("every Monday, wed at 8 check mail", cron("0 8 * * 1,3"), MAIL, APP),
    ("every fri at 5pm email me what changed in my files", cron("0 17 * * 5"), DOCS, EMAIL),
    ("every weds at 9 summarise mail", cron("0 9 * * 3"), MAIL, APP),
    ("on weds and fri at 9 summarise mail", cron("0 9 * * 3,5"), MAIL, APP),
    ("weekly summarize my documents", cron("0 8 * * 1"), DOCS, APP),
    ("on the 1st of every month at 9 report on invoices in my mail", cron("0 9 1 * *"), MAIL,
     APP),
    ("on the 15th at 10 summarize the invoices", cron("0 10 15 * *"), BOTH, APP),
    # a list of days of the month, all of them (only the first was kept)
    ("on the 1st and 15th at 8 summarise mail", cron("0 8 1,15 * *"), MAIL, APP),
    ("on the 2nd and 16th summarise mail", cron("0 8 2,16 * *"), MAIL, APP),
    ("on the 1st, 10th and 20th summarise mail", cron("0 8 1,10,20 * *"), MAIL, APP),
    ("on the 1st, 10th, and the 20th of every month at 9 summarise mail",
     cron("0 9 1,10,20 * *"), MAIL, APP),
    # "twice a week" or "twice a month" with as many days said
    ("twice a week on Mondays and Thursdays at 9 check my mail", cron("0 9 * * 1,4"), MAIL,
     APP),
    ("twice a month on the 1st and 15th check my mail", cron("0 8 1,15 * *"), MAIL, APP),
    ("every Monday list invoices due by the end of the month", cron("0 8 * * 1"), BOTH, APP),
    ("every day at 9 remind me about items due mid-month", cron("0 9 * * *"), BOTH, APP),
    # intervals
    ("every 2 hours check for invoices in my inbox", every(7200), MAIL, APP),
    ("every hour tell me about urgent mail", every(3600), MAIL, APP),
    ("hourly check my inbox", every(3600), MAIL, APP),
    ("hourly check my inbox and push urgent things", every(3600), MAIL, PUSH),
    ("every 30 minutes check my inbox", every(1800), MAIL, APP),
    ("every half hour check my inbox", every(1800), MAIL, APP),
    ("every 15 minutes look for replies from the client", every(900), MAIL, APP),
    ("every 90 minutes check the shared drive", every(5400), DOCS, APP),
    ("every six hours summarize the drive", every(21600), DOCS, APP),
    ("every minute check for urgent mail", every(60), MAIL, APP),
    ("every other day check the drive", every(172800), DOCS, APP),
    # intervals in two parts, all of them (were cut to the first)
    ("every hour and a half check the shared drive", every(5400), DOCS, APP),
    ("every 1 hour 30 minutes check my inbox", every(5400), MAIL, APP),
    ("every hour and 30 minutes check my inbox", every(5400), MAIL, APP),
    ("every one and a half hours check my inbox", every(5400), MAIL, APP),
    ("every 2 hours and 15 minutes check my inbox", every(8100), MAIL, APP),
    ("every 1h30 check my inbox", every(5400), MAIL, APP),
    ("every couple of hours check my inbox", every(7200), MAIL, APP),
    # intervals on some days or hours only: the same rhythm in cron
    ("every hour on weekdays check urgent mail", cron("0 * * * 1-5"), MAIL, APP),
    ("every hour during workdays check urgent mail", cron("0 * * * 1-5"), MAIL, APP),
    ("every hour Monday to Friday check urgent mail", cron("0 * * * 1-5"), MAIL, APP),
    ("every 2 hours between 8 and 18 check my inbox", cron("0 8-18/2 * * *"), MAIL, APP),
    ("every hour from 9 to 5 check urgent mail", cron("0 9-17 * * *"), MAIL, APP),
    ("every 30 minutes between 9am and 5pm on weekdays check support mail",
     cron("*/30 9-17 * * 1-5"), MAIL, APP),
    ("every hour between 9am and 5 check my inbox", cron("0 9-17 * * *"), MAIL, APP),
    # overnight: from the first hour past midnight to the last
    ("every hour between 17 and 9 digest my mail", cron("0 17-23,0-9 * * *"), MAIL, APP),
    ("every hour between 22 and 6 digest my mail", cron("0 22-23,0-6 * * *"), MAIL, APP),
    ("every hour between 20 and 8 digest my mail", cron("0 20-23,0-8 * * *"), MAIL, APP),
    ("every hour between 10pm and 6am check urgent mail", cron("0 22-23,0-6 * * *"), MAIL,
     APP),
    # at a minute past the hour: on the clock, not counted from saving
    ("every hour on the hour check urgent mail", cron("0 * * * *"), MAIL, APP),
    ("every hour at :15 check urgent mail", cron("15 * * * *"), MAIL, APP),
    ("every 2 hours at :30 check urgent mail", cron("30 */2 * * *"), MAIL, APP),
    ("every hour at quarter past the hour check urgent mail", cron("15 * * * *"), MAIL, APP),
    ("every hour at the top of the hour check urgent mail", cron("0 * * * *"), MAIL, APP),
    ("every hour between 9 and 17 at :15 on weekdays check urgent mail",
     cron("15 9-17 * * 1-5"), MAIL, APP),
    ("every hour on the half-hour check urgent mail", cron("30 * * * *"), MAIL, APP),
    ("every day at 8 tell me what happened on the hour-long call", cron("0 8 * * *"), BOTH,
     APP),
    # days left out
    ("every day except Sunday at 8 digest my mail", cron("0 8 * * 1-6"), MAIL, APP),
    ("daily at 17:00 except weekends digest my mail", cron("0 17 * * 1-5"), MAIL, APP),
    ("not on weekends, every day at 8 digest my mail", cron("0 8 * * 1-5"), MAIL, APP),
    ("every weekday except Friday at 8 digest my mail", cron("0 8 * * 1-4"), MAIL, APP),
    ("every day except saturday and sunday at 8 digest my mail", cron("0 8 * * 1-5"), MAIL,
     APP),
    ("every day at 8 digest my mail, but never run on Sundays or Mondays",
     cron("0 8 * * 2-6"), MAIL, APP),
    ("every hour except weekends check urgent mail", cron("0 * * * 1-5"), MAIL, APP),
    # times written with seconds or an "h"
    ("every day at 8:00:00 digest my mail", cron("0 8 * * *"), MAIL, APP),
    ("every day at 8h30 digest my mail", cron("30 8 * * *"), MAIL, APP),
    ("every day at 17h15 digest my mail", cron("15 17 * * *"), MAIL, APP),
    # words of the task, not of the schedule
    ("every Monday summarize the january invoices", cron("0 8 * * 1"), BOTH, APP),
    ("every evening at 7 tell me the quarterly report status", cron("0 19 * * *"), BOTH, APP),
    ("every quarter hour check my inbox", {"type": "interval", "seconds": 900}, MAIL, APP),
    ("every day at 8 summarize my mail except newsletters", cron("0 8 * * *"), MAIL, APP),
    ("every day at 8 summarize my mail except for newsletters from Bob", cron("0 8 * * *"),
     MAIL, APP),
    ("every day at 9 summarise new mail unless I've read it", cron("0 9 * * *"), MAIL, APP),
    ("every day at 8 tell me about the sun and the moon", cron("0 8 * * *"), BOTH, APP),
    # words spelt near a day are not misspelt days
    ("every day at 8 report on money received", cron("0 8 * * *"), BOTH, APP),
    ("every day at 8 list the sundry expenses on sundry items", cron("0 8 * * *"), BOTH, APP),
    ("every day at 9 tell me what Tom and Sandy sent", cron("0 9 * * *"), MAIL, APP),
    ("every day at 9 tell me what is on today", cron("0 9 * * *"), BOTH, APP),
    ("at 8 tell me if I sat on anything", cron("0 8 * * *"), BOTH, APP),
    # short day names without a schedule's cue, before a noun or after "the", are the task's
    ("every day at 9 tell me what Sat Nav orders came in", cron("0 9 * * *"), BOTH, APP),
    ("at 9 list Sat Nav orders from my mail", cron("0 9 * * *"), MAIL, APP),
    ("at 9 tell me what the mon orders are", cron("0 9 * * *"), BOTH, APP),
    ("every day at 9 summarise the Sun Sat mail", cron("0 9 * * *"), MAIL, APP),
    # a period the task names is not a schedule "weeks, months or years apart"
    ("every Monday at 9 list unpaid invoices older than a year", cron("0 9 * * 1"), BOTH, APP),
    ("every morning at 8 tell me about annual leave requests", cron("0 8 * * *"), BOTH, APP),
    ("every day at 8 tell me which contracts expire in a year", cron("0 8 * * *"), BOTH, APP),
    ("every Monday at 10 send me a summary of bi-weekly sprint notes", cron("0 10 * * 1"),
     DOCS, APP),
    # channels
    ("every weekday at 8:30 a.m. email me and push a summary of my mail", cron("30 8 * * 1-5"),
     MAIL, ["in_app", "email", "push"]),
    ("every weekday at 8 tell me what my team sent and email me", cron("0 8 * * 1-5"), MAIL,
     EMAIL),
    ("every morning email me a summary of the changed docs", cron("0 8 * * *"), DOCS, EMAIL),
    ("every evening send a push notification about new files", cron("0 18 * * *"), DOCS, PUSH),
]


@pytest.mark.parametrize(("sentence", "trigger", "sources", "channels"), PHRASES,
                         ids=[p[0] for p in PHRASES])
def test_phrasings(
    sentence: str, trigger: dict[str, Any], sources: list[str], channels: list[str]
) -> None:
    out = parse(sentence, timezone=TZ)
    body = out.instruction.model_dump()
    assert body["trigger"] == trigger
    assert body["sources"] == sources
    assert body["channels"] == channels
    assert out.schedule == describe(trigger)
    assert out.drafted_by == PARSER_NAME == "pilotlight-offline"
    assert out.explanation.startswith("Understood: ")
    assert "\n" not in out.explanation
    assert body["thinking_level"] == "medium"
    assert body["max_tool_calls"] is None
    # The proposal is valid input for POST /instructions as it is.
    assert InstructionCreate.model_validate(out.model_dump(mode="json")["instruction"])


# Days the task talks about are not the schedule's: sentence -> (trigger, title). A day is the
# task's when its words say so (possessive, "last", "next", "the", "by", a noun after it), or
# when it stands inside the task, apart from the schedule, and the schedule has its days.
TASK_DAYS: list[tuple[str, dict[str, Any], str]] = [
    ("every morning at 8 list Friday's meetings", cron("0 8 * * *"),
     "Daily Friday meetings digest at 08:00"),
    ("every day at 9 tell me who is off on Monday", cron("0 9 * * *"),
     "Daily off Monday digest at 09:00"),
    ("at 7 each weekday summarise the weekend's mail", cron("0 7 * * 1-5"),
     "Weekday weekend mail at 07:00"),
    ("every Monday at 8 summarise last week's invoices and Friday's orders",
     cron("0 8 * * 1"), "Monday invoices Friday digest at 08:00"),
    ("each evening at 6 list tomorrow's Tuesday meetings", cron("0 18 * * *"),
     "Daily Tuesday meetings digest at 18:00"),
    ("every day at 8 list next Monday's meetings", cron("0 8 * * *"),
     "Daily Monday meetings digest at 08:00"),
    ("every day at 8 tell me what is due this Friday", cron("0 8 * * *"),
     "Daily due Friday digest at 08:00"),
    ("every Friday at 5pm list the meetings on Monday", cron("0 17 * * 5"),
     "Friday meetings Monday digest at 17:00"),
    ("every day at 8 summarise the Monday meeting notes", cron("0 8 * * *"),
     "Daily Monday meeting documents at 08:00"),
    ("every weekday at 8 list Saturday shifts", cron("0 8 * * 1-5"),
     "Weekday Saturday shifts digest at 08:00"),
    ("daily at 9 remind me of weekend plans", cron("0 9 * * *"),
     "Daily weekend plans digest at 09:00"),
    ("every morning list Sunday's orders", cron("0 8 * * *"),
     "Daily Sunday orders digest at 08:00"),
    ("every day at 8 tell me what happened over the weekend", cron("0 8 * * *"),
     "Daily weekend digest at 08:00"),
    ("every weekday at 7 summarise what came in over the weekend", cron("0 7 * * 1-5"),
     "Weekday weekend digest at 07:00"),
    ("on Mondays at 8 summarise the weekend", cron("0 8 * * 1"),
     "Monday weekend digest at 08:00"),
    ("at 8 list tomorrow's meetings", cron("0 8 * * *"), "Daily meetings digest at 08:00"),
    ("at 8 list Saturday and Sunday shifts", cron("0 8 * * *"),
     "Daily Saturday Sunday digest at 08:00"),
    ("every weekday at 8 list the tasks due by Friday", cron("0 8 * * 1-5"),
     "Weekday tasks due digest at 08:00"),
    ("every evening at 6 email me the team's Monday standup notes", cron("0 18 * * *"),
     "Daily team Monday documents at 18:00"),
    ("every Monday and Thursday at 9 list Friday's orders", cron("0 9 * * 1,4"),
     "Monday and Thursday Friday orders digest at 09:00"),
    ("every morning at 8 list meetings on Friday and Saturday", cron("0 8 * * *"),
     "Daily meetings Friday digest at 08:00"),
    ("every Sunday at 18 plan the week from Monday's calendar", cron("0 18 * * 0"),
     "Sunday plan Monday digest at 18:00"),
    ("each Sunday night list Monday to Friday meetings", cron("0 21 * * 0"),
     "Sunday Monday Friday digest at 21:00"),
    ("every Monday at 8 tell me what happened between Friday and Sunday", cron("0 8 * * 1"),
     "Monday between Friday digest at 08:00"),
    ("every day at 8 find mail with subject Monday report", cron("0 8 * * *"),
     "Daily find subject mail at 08:00"),
    # ... and days said as a schedule still are, wherever they stand
    ("at 8 check my inbox on weekdays", cron("0 8 * * 1-5"), "Weekday mail at 08:00"),
    ("tell me what my team sent every Monday at 8", cron("0 8 * * 1"),
     "Monday team mail at 08:00"),
    ("summarise my mail on Mondays at 8", cron("0 8 * * 1"), "Monday mail at 08:00"),
    ("summarise my documents on Monday", cron("0 8 * * 1"), "Monday documents at 08:00"),
    ("summarise my mail every Monday and Friday", cron("0 8 * * 1,5"),
     "Monday and Friday mail at 08:00"),
    ("at 8 check mail Monday to Friday", cron("0 8 * * 1-5"), "Weekday mail at 08:00"),
    ("at 8 check my inbox Monday, Wednesday and Friday", cron("0 8 * * 1,3,5"),
     "Monday, Wednesday and Friday mail at 08:00"),
    ("weekly on Friday at 4pm summarise Monday's notes", cron("0 16 * * 5"),
     "Friday Monday documents at 16:00"),
    # ... and the sentence's only day is its schedule's, unless its own words tie it to the
    # task: "for Mondays" is a schedule's plural, "Friday what ..." no noun after the day.
    ("set a reminder for Mondays at 9 to check invoices", cron("0 9 * * 1"),
     "Monday set reminder digest at 09:00"),
    ("a reminder for Fridays at 5pm to submit my timesheet", cron("0 17 * * 5"),
     "Friday reminder submit digest at 17:00"),
    ("at 9 tell me on Friday what is still open", cron("0 9 * * 5"),
     "Friday still open digest at 09:00"),
    ("at 8 send me on Monday a summary of my mail", cron("0 8 * * 1"), "Monday mail at 08:00"),
    ("at 5pm remind me on Friday that timesheets are due", cron("0 17 * * 5"),
     "Friday timesheets due digest at 17:00"),
    ("every week tell me on Friday which invoices are unpaid", cron("0 8 * * 5"),
     "Friday invoices unpaid digest at 08:00"),
    ("weekly at 9 summarise my mail on Monday", cron("0 9 * * 1"), "Monday mail at 09:00"),
    ("weekly tell me on Friday which meetings I had", cron("0 8 * * 5"),
     "Friday meetings had digest at 08:00"),
    ("every day at 8 summarise the mail I sent on Friday", cron("0 8 * * *"),
     "Daily Friday mail at 08:00"),
    ("at 9 summarise my mail on Monday", cron("0 9 * * 1"), "Monday mail at 09:00"),
    ("at 8 check my inbox on Friday", cron("0 8 * * 5"), "Friday mail at 08:00"),
    ("tell me on Friday if any invoice is unpaid", cron("0 8 * * 5"),
     "Friday invoice unpaid digest at 08:00"),
    ("send me on Monday a list of unpaid invoices", cron("0 8 * * 1"),
     "Monday unpaid invoices digest at 08:00"),
    ("check my mail on Monday please", cron("0 8 * * 1"), "Monday mail at 08:00"),
    ("summarise my mail on Friday only", cron("0 8 * * 5"), "Friday only mail at 08:00"),
    ("list on Friday what is still open", cron("0 8 * * 5"),
     "Friday still open digest at 08:00"),
    ("at 9 remind me Friday to send the report", cron("0 9 * * 5"), "Friday digest at 09:00"),
    ("tell me my mail Friday morning", cron("0 8 * * 5"), "Friday mail at 08:00"),
    # ... while one day after "for", "by" or "since" is still the task's
    ("at 9 list tasks for Friday", cron("0 9 * * *"), "Daily tasks Friday digest at 09:00"),
    ("every day at 8 list tasks for Mondays", cron("0 8 * * *"),
     "Daily tasks Mondays digest at 08:00"),
    ("at 8 summarise mail since Monday", cron("0 8 * * *"),
     "Daily since Monday mail at 08:00"),
]


@pytest.mark.parametrize(("sentence", "trigger", "title"), TASK_DAYS,
                         ids=[t[0] for t in TASK_DAYS])
def test_days_the_task_talks_about_are_not_the_schedules(
    sentence: str, trigger: dict[str, Any], title: str
) -> None:
    out = parse(sentence, timezone=TZ)
    assert out.instruction.trigger.model_dump() == trigger
    assert out.instruction.title == title
    # What the user is shown is what is saved: the schedule in words, and the days in the
    # explanation, are the trigger's.
    assert out.schedule == describe(trigger)
    days = trigger["cron"].split()[-1]
    shown = {"*": "every day", "1-5": "every weekday", "1": "every Monday",
             "5": "every Friday", "0": "every Sunday", "1,4": "on Mondays and Thursdays",
             "1,5": "on Mondays and Fridays", "1,3,5": "on Mondays, Wednesdays and Fridays"}[days]
    assert out.explanation.startswith(f"Understood: {shown} at ")
    assert out.instruction.text == _cleaned(sentence)  # the task keeps its days


# A time inside a clause of the task is what the task is about when the schedule says its
# time elsewhere (each added a fire time: "at 3am" ran at 03:00 too).
# sentence -> (trigger, the words the task keeps)
TASK_TIMES: list[tuple[str, dict[str, Any], str]] = [
    ("every day at 9 tell me who wrote to me at 3am", cron("0 9 * * *"), "at 3am"),
    ("every day at 9 list mail that arrived after 6pm", cron("0 9 * * *"), "6pm"),
    ("every day at 9 summarise the mail I got at three am", cron("0 9 * * *"), "at three am"),
    ("every morning tell me who wrote at 3am", cron("0 8 * * *"), "at 3am"),
    ("every 2 hours tell me who wrote at 3:15", every(7200), "at 3:15"),
    ("at 9 tell me who wrote to me at 3am in London", cron("0 9 * * *"), "at 3am in london"),
    # said with the schedule, not in the clause: the schedule's, as before
    ("tell me what my team sent at 8 every weekday", cron("0 8 * * 1-5"), ""),
    ("every weekday tell me what my team sent, at 8", cron("0 8 * * 1-5"), ""),
]


@pytest.mark.parametrize(("sentence", "trigger", "kept"), TASK_TIMES,
                         ids=[t[0] for t in TASK_TIMES])
def test_times_the_task_talks_about_are_not_the_schedules(
    sentence: str, trigger: dict[str, Any], kept: str
) -> None:
    out = parse(sentence, timezone=TZ)
    assert out.instruction.trigger.model_dump() == trigger
    assert out.instruction.text == _cleaned(sentence)
    assert kept in out.instruction.text.lower()


def _cleaned(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:] + "."


def test_table_is_large() -> None:
    assert len(PHRASES) >= 40
    assert len({p[0] for p in PHRASES}) == len(PHRASES)


def test_example_title_text_and_explanation() -> None:
    out = parse("  every weekday at 8   tell me what my team sent ", timezone=TZ)
    assert out.instruction.title == "Weekday team mail at 08:00"
    assert out.instruction.text == "Every weekday at 8 tell me what my team sent."
    assert out.instruction.only_new is True
    assert out.schedule == "At 08:00, Monday through Friday (Europe/Berlin)"
    assert out.explanation == (
        "Understood: every weekday at 08:00 (Europe/Berlin); reads Gmail; delivers in the app; "
        "reports only what is new."
    )


@pytest.mark.parametrize(
    ("sentence", "title"),
    [
        ("every hour tell me about urgent mail", "Hourly urgent mail"),
        ("every 30 minutes check my inbox", "Mail every 30 minutes"),
        ("on weekends at 10 tell me everything", "Weekend digest at 10:00"),
        ("every Friday at 4pm email me what changed in my files", "Friday documents at 16:00"),
        ("every day at 1 pm tell me about new messages from billing@example.com",
         "Daily mail from billing@example.com at 13:00"),
        ("on the 1st of every month at 9 report on invoices in my mail",
         "Monthly invoices mail at 09:00"),
        ("every day except Sunday at 8 digest my mail", "Daily except Sunday mail at 08:00"),
        ("every weekday except Friday at 8 digest my mail", "Monday to Thursday mail at 08:00"),
    ],
)
def test_titles(sentence: str, title: str) -> None:
    assert parse(sentence, timezone=TZ).instruction.title == title


@pytest.mark.parametrize(
    ("sentence", "only_new"),
    [
        ("every day at 8 tell me everything", False),
        ("every day at 8 summarize all mail", False),
        ("every day at 8 summarize all of my emails", False),
        ("every Friday give me a full summary of the drive", False),
        ("daily at 8 tell me everything new in my inbox", True),
        ("every day at 8 tell me what my team sent", True),
    ],
)
def test_only_new(sentence: str, only_new: bool) -> None:
    assert parse(sentence, timezone=TZ).instruction.only_new is only_new


@pytest.mark.parametrize(
    ("sentence", "zone", "title"),
    [
        ("every day at 8 in New York time digest my mail", "America/New_York",
         "Daily mail at 08:00"),
        ("every day at 8 in UTC digest my mail", "UTC", "Daily mail at 08:00"),
        ("every day at 8 Europe/London time digest my mail", "Europe/London",
         "Daily mail at 08:00"),
        ("every day at 8 asia/kolkata digest my mail", "Asia/Kolkata", "Daily mail at 08:00"),
        ("every hour on weekdays in Tokyo time check urgent mail", "Asia/Tokyo",
         "Weekday urgent mail every hour"),
        # a place beside the schedule, without "time" (was dropped for the user's zone)
        ("every day at 8 in London digest my mail", "Europe/London", "Daily mail at 08:00"),
        ("every day at 8 in Paris digest my mail", "Europe/Paris", "Daily mail at 08:00"),
        ("at 9 in Tokyo digest my mail", "Asia/Tokyo", "Daily mail at 09:00"),
        ("at 9 in New York digest my mail", "America/New_York", "Daily mail at 09:00"),
        ("in London, every weekday at 8 digest my mail", "Europe/London",
         "Weekday mail at 08:00"),
        # a city no zone of the tz database is named after (was dropped for the user's zone,
        # "San Francisco time" too)
        ("every day at 9 in San Francisco digest my mail", "America/Los_Angeles",
         "Daily mail at 09:00"),
        ("every day at 9 San Francisco time digest my mail", "America/Los_Angeles",
         "Daily mail at 09:00"),
        ("every weekday at 8 in Mumbai digest my mail", "Asia/Kolkata", "Weekday mail at 08:00"),
        ("in Beijing, every day at 9 digest my mail", "Asia/Shanghai", "Daily mail at 09:00"),
    ],
)
def test_a_time_zone_the_sentence_names_is_the_schedules(
    sentence: str, zone: str, title: str
) -> None:
    out = parse(sentence, timezone=TZ)
    assert out.instruction.trigger.model_dump()["timezone"] == zone
    assert out.schedule.endswith(f"({zone})")
    assert f"({zone})" in out.explanation
    assert out.instruction.title == title  # the zone's words are read, not left in the title


def test_a_place_inside_the_task_is_the_tasks() -> None:
    for sentence in ("every day at 8 list mail from people in Paris",
                     "every day at 8 list mail from people in Boston",
                     "every day at 9 in my inbox summarise the unread mail",
                     "every day at 9 in Drive list the docs that changed",
                     "every day at 8 in the morning summarise my inbox",
                     "every day at 9 local time summarise my mail",  # the user's own
                     # capitalized after "in", but no place: where to read, a language
                     "every day at 9 in Gmail summarise the unread mail",
                     "every day at 9 in English summarise my mail"):
        out = parse(sentence, timezone=TZ)
        assert out.instruction.trigger.model_dump()["timezone"] == TZ


def test_the_time_zone_is_the_users() -> None:
    out = parse("every weekday at 8 tell me what my team sent", timezone="America/New_York")
    assert out.instruction.trigger.model_dump() == {
        "type": "cron", "cron": "0 8 * * 1-5", "timezone": "America/New_York"
    }
    assert out.schedule.endswith("(America/New_York)")


def test_defaults_are_explained() -> None:
    assert "no time was given, so 08:00" in parse(
        "every Monday summarize my documents", timezone=TZ
    ).explanation
    assert "weekly means Mondays" in parse("weekly summarize my docs", timezone=TZ).explanation
    assert parse("on the 1st and 15th at 8 summarise mail", timezone=TZ).explanation.startswith(
        "Understood: on days 1 and 15 of every month at 08:00 (Europe/Berlin); ")
    interval = parse("every 2 hours check my inbox", timezone=TZ)
    assert interval.explanation.startswith("Understood: every 2 hours; reads Gmail")
    # days apart: the time of day is the saving's, which the sentence does not say
    for sentence in ("every other day check the drive", "every 3 days check the drive"):
        assert "(counted from when it is saved, so at the time of day it is saved)" in parse(
            sentence, timezone=TZ).explanation


# An hour alone is read as people say it: 1 to 6 the afternoon or evening, 7 to 11 the
# morning, 12 noon; am/pm, minutes, a leading zero, a 24-hour value or "in the morning" keep
# what they say. sentence -> (cron, hours as shown)
BARE_HOURS: list[tuple[str, str, str]] = [
    ("on Friday at 5 send me the week's invoices", "0 17 * * 5", "17:00"),
    ("every day at 1 summarise my mail", "0 13 * * *", "13:00"),
    ("every day at 6 summarise my mail", "0 18 * * *", "18:00"),
    ("every day around 4 summarise my mail", "0 16 * * *", "16:00"),
    ("at 1 and 3 summarise my mail", "0 13,15 * * *", "13:00 and 15:00"),
    ("at 5 and 9 summarise my mail", "0 9,17 * * *", "09:00 and 17:00"),
    # a list said rising keeps its order: an hour up to two after one read as the
    # afternoon is the afternoon too
    ("every day at 6 and 7 summarise my mail", "0 18,19 * * *", "18:00 and 19:00"),
    ("every day at 5, 6 and 7 summarise my mail", "0 17,18,19 * * *",
     "17:00, 18:00 and 19:00"),
    ("every day at 4, 6 and 8 summarise my mail", "0 16,18,20 * * *",
     "16:00, 18:00 and 20:00"),
    ("every day at 6:30 and 7:30 summarise my mail", "30 18,19 * * *", "18:30 and 19:30"),
    ("every day at 1 and 7 summarise my mail", "0 7,13 * * *", "07:00 and 13:00"),
    # "am" after the last time of a list is said for all of them
    ("every day at 4 and 5am summarise my mail", "0 4,5 * * *", "04:00 and 05:00"),
    ("every day at 4, 5 and 6 am summarise my mail", "0 4,5,6 * * *",
     "04:00, 05:00 and 06:00"),
    ("every day at 5:30 and 6:30am summarise my mail", "30 5,6 * * *", "05:30 and 06:30"),
    ("at 11 and 1 summarise my mail", "0 11,13 * * *", "11:00 and 13:00"),
    ("at lunch at 1 summarise my mail", "0 13 * * *", "13:00"),
    ("every day at 5:30 summarise my mail", "30 17 * * *", "17:30"),
    ("every day at 4.15 summarise my mail", "15 16 * * *", "16:15"),
    # ... and what says the morning, or a 24-hour clock, keeps it
    ("every day at 7 summarise my mail", "0 7 * * *", "07:00"),
    ("every day at 11 summarise my mail", "0 11 * * *", "11:00"),
    ("every day at 12 summarise my mail", "0 12 * * *", "12:00"),
    ("every day at 5am summarise my mail", "0 5 * * *", "05:00"),
    ("every day at 5 am summarise my mail", "0 5 * * *", "05:00"),
    ("every day at 5 a.m. summarise my mail", "0 5 * * *", "05:00"),
    ("every day at 05:00 summarise my mail", "0 5 * * *", "05:00"),
    ("every day at 05:30 summarise my mail", "30 5 * * *", "05:30"),
    ("every day at 05 summarise my mail", "0 5 * * *", "05:00"),
    ("every day at 5h summarise my mail", "0 5 * * *", "05:00"),
    ("every day at 5 in the morning summarise my mail", "0 5 * * *", "05:00"),
    ("every morning at 6 summarise my mail", "0 6 * * *", "06:00"),
    ("every day at 5 at dawn summarise my mail", "0 5 * * *", "05:00"),
    ("every weekday at 6 before work summarise my mail", "0 6 * * 1-5", "06:00"),
    ("every day at 6 before breakfast summarise my mail", "0 6 * * *", "06:00"),
    ("every day at 5 when I wake up summarise my mail", "0 5 * * *", "05:00"),
    ("every day at 17 summarise my mail", "0 17 * * *", "17:00"),
    ("every day at 17:00 summarise my mail", "0 17 * * *", "17:00"),
    ("every evening at 5 summarise my mail", "0 17 * * *", "17:00"),
    # the night's small hours are past midnight, not the afternoon (refused before)
    ("every night at 1 back up the drive report", "0 1 * * *", "01:00"),
    ("every night at 2:30 summarise my mail", "30 2 * * *", "02:30"),
    ("nightly at 3 summarise my mail", "0 3 * * *", "03:00"),
    ("every day at 4 at night summarise my mail", "0 4 * * *", "04:00"),
    ("every night at 11 summarise my mail", "0 23 * * *", "23:00"),
]


@pytest.mark.parametrize(("sentence", "expression", "shown"), BARE_HOURS,
                         ids=[b[0] for b in BARE_HOURS])
def test_an_hour_alone_is_read_as_people_say_it(
    sentence: str, expression: str, shown: str
) -> None:
    out = parse(sentence, timezone=TZ)
    assert out.instruction.trigger.model_dump() == cron(expression)
    assert f" at {shown} " in out.explanation  # the time read is what the user is shown
    assert out.instruction.title.endswith(f" at {shown}")


def test_an_hour_read_as_the_afternoon_says_so() -> None:
    out = parse("on Friday at 5 send me the week's invoices", timezone=TZ)
    assert out.explanation.startswith(
        'Understood: every Friday at 17:00 (Europe/Berlin) (read "5" as 17:00; say "5am" for '
        "the morning); "
    )
    assert out.schedule == "At 17:00, only on Friday (Europe/Berlin)"
    assert 'read "5:30" as 17:30; say "5:30am" for the morning' in parse(
        "every day at 5:30 summarise my mail", timezone=TZ).explanation
    assert 'read "6" as 18:00 and "7" as 19:00; say "6am" for the morning' in parse(
        "every day at 6 and 7 summarise my mail", timezone=TZ).explanation
    # As the user wrote it: "3:00", "4.15"
    assert 'read "3:00" as 15:00; say "3:00am" for the morning' in parse(
        "every day at 3:00 summarise my mail", timezone=TZ).explanation
    assert 'read "4.15" as 16:15; say "4.15am" for the morning' in parse(
        "every day at 4.15 summarise my mail", timezone=TZ).explanation
    # Where the sentence says the time of day itself, or "am", there is nothing to say.
    for sentence in ("every evening at 5 summarise my mail", "every day at 5pm summarise my mail",
                     "every day at 8 summarise my mail"):
        assert "read " not in parse(sentence, timezone=TZ).explanation

# A range of hours is read the same way: both ends from 1 to 6, or the end up to two hours
# after such a start, are the afternoon; otherwise the range is kept as said.
BARE_WINDOWS: list[tuple[str, str]] = [
    ("every hour between 2 and 6 summarise my mail", "0 14-18 * * *"),
    ("every hour from 1 to 5 on weekdays summarise my mail", "0 13-17 * * 1-5"),
    ("every 30 minutes between 5 and 7 summarise my mail", "*/30 17-19 * * *"),
    ("every hour between 5 and 9 summarise my mail", "0 5-9 * * *"),
    ("every hour between 2am and 6 summarise my mail", "0 2-6 * * *"),
    ("every hour between 02 and 06 summarise my mail", "0 2-6 * * *"),
    ("every hour between 9 and 5 summarise my mail", "0 9-17 * * *"),
]


@pytest.mark.parametrize(("sentence", "expression"), BARE_WINDOWS,
                         ids=[b[0] for b in BARE_WINDOWS])
def test_a_range_of_hours_alone_is_read_as_people_say_it(sentence: str, expression: str) -> None:
    assert parse(sentence, timezone=TZ).instruction.trigger.model_dump() == cron(expression)


def test_a_range_read_as_the_afternoon_says_so() -> None:
    out = parse("every hour between 2 and 6 summarise my mail", timezone=TZ)
    assert out.explanation.startswith(
        "Understood: every hour between 14:00 and 18:59 (Europe/Berlin) (read \"2\" to \"6\" "
        'as 14:00 to 18:59; say "2am" for the morning); ')
    assert "read " not in parse("every hour between 9 and 5 summarise my mail",
                                timezone=TZ).explanation


# "half past 5", "quarter past 5", "quarter to 6", "from 9": the hour is read as "at 5" would be.
# sentence -> (cron, time as shown)
CLOCK_PHRASES: list[tuple[str, str, str]] = [
    ("every day at half past 5 summarise my mail", "30 17 * * *", "17:30"),
    ("every day at quarter past 9 summarise my mail", "15 9 * * *", "09:15"),
    ("every day at a quarter past 2 summarise my mail", "15 14 * * *", "14:15"),
    ("every day at quarter to 6 summarise my mail", "45 17 * * *", "17:45"),
    ("every day at quarter to 7 summarise my mail", "45 6 * * *", "06:45"),
    ("every day at quarter to 1 summarise my mail", "45 12 * * *", "12:45"),
    ("every day at half past 10 summarise my mail", "30 10 * * *", "10:30"),
    ("every day at half past five summarise my mail", "30 17 * * *", "17:30"),
    ("every day at half past 5 in the morning summarise my mail", "30 5 * * *", "05:30"),
    ("every day at half past 17 summarise my mail", "30 17 * * *", "17:30"),
    ("every day at 5 o'clock summarise my mail", "0 17 * * *", "17:00"),
    ("every weekday half past 8 summarise my mail", "30 8 * * 1-5", "08:30"),
    # minutes past or to an hour, in figures or in words (were read as the minutes' hour)
    ("every day at 10 past 8 summarise my mail", "10 8 * * *", "08:10"),
    ("at 20 past 8 summarise my mail", "20 8 * * *", "08:20"),
    ("every day 10 past 8 summarise my mail", "10 8 * * *", "08:10"),
    ("every day at 10 to 8 summarise my mail", "50 7 * * *", "07:50"),
    ("every day at 20 to 5 summarise my mail", "40 16 * * *", "16:40"),
    ("every day at 10 after 8 summarise my mail", "10 8 * * *", "08:10"),
    ("every day at five past nine summarise my mail", "5 9 * * *", "09:05"),
    ("every day at ten to eight summarise my mail", "50 7 * * *", "07:50"),
    ("every day at 25 minutes to 3 summarise my mail", "35 14 * * *", "14:35"),
    # "half 8", as said in Britain, is 8:30
    ("every day at half 8 summarise my mail", "30 8 * * *", "08:30"),
    ("every day at half 5 summarise my mail", "30 17 * * *", "17:30"),
    # hours in words, and figures run together (were dropped for "no time was given")
    ("every day at seven summarise my mail", "0 7 * * *", "07:00"),
    ("every day at nine thirty summarise my mail", "30 9 * * *", "09:30"),
    ("every day at twelve fifteen summarise my mail", "15 12 * * *", "12:15"),
    ("every day at seven pm summarise my mail", "0 19 * * *", "19:00"),
    ("seven am every day summarise my mail", "0 7 * * *", "07:00"),
    ("at nine and ten summarise my mail", "0 9,10 * * *", "09:00 and 10:00"),
    ("every day at 0830 summarise my mail", "30 8 * * *", "08:30"),
    ("every day at 930 summarise my mail", "30 9 * * *", "09:30"),
    ("at 0830 and 1730 summarise my mail", "30 8,17 * * *", "08:30 and 17:30"),
    ("every day at 9 30 summarise my mail", "30 9 * * *", "09:30"),
    # an hour in figures and its minutes in words (the minutes were dropped: 12:00)
    ("every day at 12 fifteen summarise my mail", "15 12 * * *", "12:15"),
    ("every day at 7 forty-five summarise my mail", "45 7 * * *", "07:45"),
    ("every day at 9 thirty pm summarise my mail", "30 21 * * *", "21:30"),
    ("at 12 fifteen, summarise my mail", "15 12 * * *", "12:15"),
    ("every day at 9 oh 5 summarise my mail", "5 9 * * *", "09:05"),
    ("every day at nine oh five summarise my mail", "5 9 * * *", "09:05"),
    # Without an interval, "from 9" is when the day's run starts, as "at 9" would be
    ("every day from 9 check my mail", "0 9 * * *", "09:00"),
    ("from 9 every day check my mail", "0 9 * * *", "09:00"),
    ("every weekday from 9 summarize my inbox", "0 9 * * 1-5", "09:00"),
    ("every monday from 10:30 list my docs", "30 10 * * 1", "10:30"),
    ("every day from 5 check my mail", "0 17 * * *", "17:00"),  # the afternoon rule
]


@pytest.mark.parametrize(("sentence", "expression", "shown"), CLOCK_PHRASES,
                         ids=[c[0] for c in CLOCK_PHRASES])
def test_half_past_quarter_to_and_from_an_hour_are_read(
    sentence: str, expression: str, shown: str
) -> None:
    out = parse(sentence, timezone=TZ)
    assert out.instruction.trigger.model_dump() == cron(expression)
    assert f" at {shown} " in out.explanation
    assert "no time was given" not in out.explanation


def test_half_past_read_as_the_afternoon_says_so_in_the_users_words() -> None:
    assert 'read "half past 5" as 17:30; say "5:30am" for the morning' in parse(
        "every day at half past 5 summarise my mail", timezone=TZ).explanation
    assert 'read "quarter to 6" as 17:45; say "5:45am" for the morning' in parse(
        "every day at quarter to 6 summarise my mail", timezone=TZ).explanation
    assert 'read "5:45" as 17:45' in parse(
        "every day at 5:45 summarise my mail", timezone=TZ).explanation
    assert 'read "20 to 5" as 16:40; say "4:40am" for the morning' in parse(
        "every day at 20 to 5 summarise my mail", timezone=TZ).explanation
    assert 'read "five thirty" as 17:30; say "5:30am" for the morning' in parse(
        "every day at five thirty summarise my mail", timezone=TZ).explanation
    assert 'read "5 thirty" as 17:30; say "5:30am" for the morning' in parse(
        "every day at 5 thirty summarise my mail", timezone=TZ).explanation
    assert 'read "530" as 17:30' in parse(
        "every day at 530 summarise my mail", timezone=TZ).explanation


def test_words_and_figures_that_are_no_time_stay_the_tasks() -> None:
    for sentence in ("every day at 9 look at one invoice", "every day at 9 look at 2024 invoices",
                     "every day at 9 one page summary of my mail",
                     "every day at 9 two reports from my team",
                     "every hour from 9 to 5 check urgent mail"):
        out = parse(sentence, timezone=TZ)
        assert out.instruction.trigger.model_dump()["cron"] in ("0 9 * * *", "0 9-17 * * *")
    assert "no time was given" in parse(
        "every day look at 2024 invoices", timezone=TZ).explanation


def test_an_interval_from_an_hour_starts_there() -> None:
    out = parse("every 2 hours from 9 check my mail", timezone=TZ)
    assert out.instruction.trigger.model_dump() == cron("0 9-23/2 * * *")
    assert "between 09:00 and 23:59" in out.explanation
    out = parse("every hour starting at 8 on weekdays check my mail", timezone=TZ)
    assert out.instruction.trigger.model_dump() == cron("0 8-23 * * 1-5")
    # an hour from 1 to 6 alone is the afternoon, as "at 1" is, and says so
    out = parse("every 2 hours from 1 check my mail", timezone=TZ)
    assert out.instruction.trigger.model_dump() == cron("0 13-23/2 * * *")
    assert 'read "1" as 13:00; say "1am" for the morning' in out.explanation
    assert parse("every 2 hours from 1am check my mail", timezone=TZ).instruction.trigger \
        .model_dump() == cron("0 1-23/2 * * *")
    assert parse("every 15 minutes from 9 check my mail", timezone=TZ).instruction.trigger \
        .model_dump() == cron("*/15 9-23 * * *")
    # a count the task names is not an hour
    assert parse("every hour check mail from 3 clients", timezone=TZ).instruction.trigger \
        .model_dump() == every(3600)


def test_a_minute_past_the_hour_is_explained() -> None:
    assert parse("every hour on the hour check mail", timezone=TZ).explanation.startswith(
        "Understood: every hour on the hour (Europe/Berlin); ")
    assert parse("every hour at :15 check mail", timezone=TZ).explanation.startswith(
        "Understood: every hour at 15 minutes past the hour (Europe/Berlin); ")


def test_a_count_after_from_is_not_an_hour() -> None:
    assert parse("every day check mail from 9 senders", timezone=TZ).instruction.trigger \
        .model_dump() == cron("0 8 * * *")


def test_a_title_keeps_the_names_the_user_capitalized() -> None:
    assert parse("every tue and thu at 10 tell me what Anna sent", timezone=TZ).instruction \
        .title == "Tuesday and Thursday Anna mail at 10:00"
    assert parse("Every day at 9 summarize Project Apollo mail", timezone=TZ).instruction \
        .title == "Daily Project Apollo mail at 09:00"
    # the sentence's first word, and a sentence in capitals, say nothing of names
    assert parse("EVERY DAY AT 9 SUMMARIZE MAIL", timezone=TZ).instruction.title == (
        "Daily mail at 09:00")


def test_an_hour_of_a_list_moved_to_the_afternoon_says_so() -> None:
    out = parse("at 7 and 6 summarise my mail", timezone=TZ)
    assert out.instruction.trigger.model_dump() == cron("0 7,18 * * *")
    assert 'read "6" as 18:00; say "6am" for the morning' in out.explanation
    out = parse("at 9 and 5 summarise my mail", timezone=TZ)
    assert out.instruction.trigger.model_dump() == cron("0 9,17 * * *")
    assert 'read "5" as 17:00; say "5am" for the morning' in out.explanation
    assert "read " not in parse("at 9 and 5pm summarise my mail", timezone=TZ).explanation


def test_twelve_at_night_is_midnight() -> None:
    out = parse("every day at 12 at night check my mail", timezone=TZ)
    assert out.instruction.trigger.model_dump() == cron("0 0 * * *")
    assert " at 00:00 " in out.explanation
    assert parse("every night at 12:30 check my mail", timezone=TZ).instruction.trigger \
        .model_dump() == cron("30 0 * * *")
    for sentence in ("every day at 12 at noon check my mail", "every day at 12 check my mail"):
        assert parse(sentence, timezone=TZ).instruction.trigger.model_dump() == cron(
            "0 12 * * *")


# --- refusals ---------------------------------------------------------------------------------

REFUSALS: list[tuple[str, type[DomainError], list[str]]] = [
    # no schedule, nonsense
    ("tell me what my team sent", DraftNotUnderstood, ["when to run", "how often"]),
    ("asdf qwer", DraftNotUnderstood, ["when to run", '"asdf qwer"']),
    ("12345 !!!", DraftNotUnderstood, ["no words"]),
    ("every blorp tell me things", DraftNotUnderstood, ['"every blorp"']),
    ("tous les jours à 8 heures résume mes mails", DraftNotUnderstood,
     ["only English sentences are read", "say how often or at what time"]),
    ("jeden Tag um 8 Uhr fasse meine Mails zusammen", DraftNotUnderstood,
     ["only English sentences are read"]),
    ("todos los días a las 8 resume mi correo", DraftNotUnderstood,
     ["only English sentences are read"]),
    ("every day at 8", DraftNotUnderstood, ["no task", "every day at 08:00"]),
    ("tomorrow at 8 tell me what my team sent", DraftNotUnderstood, ['"tomorrow"', "not once"]),
    ("at 25:00 tell me my mail", DraftNotUnderstood, ['"25:00"']),
    ("at 13 pm tell me my mail", DraftNotUnderstood, ['"13 pm"']),
    ("three times a day check my mail", DraftNotUnderstood, ["at 8, 12 and 17"]),
    ("every other week check my drive", DraftNotUnderstood, ['"every other week"']),
    ("every second monday report on the drive", DraftNotUnderstood, ['"every second monday"']),
    ("on the last day of the month report invoices", DraftNotUnderstood, ["last day"]),
    # ... and no day said for them (were Mondays, or the 1st, or every day)
    ("twice a week check my mail", DraftNotUnderstood,
     ['"twice a week"', '"every Monday and Thursday at 8"']),
    ("three times a week check my mail", DraftNotUnderstood, ['"three times a week"']),
    ("twice a month check my mail", DraftNotUnderstood,
     ['"twice a month"', '"on the 1st and 15th at 8"']),
    ("at the end of every month check my mail", DraftNotUnderstood,
     ['"at the end of every month"', "say the day of the month"]),
    ("at the end of the month at 9 send me the invoices", DraftNotUnderstood,
     ['"at the end of the month"', "say the day of the month"]),
    ("mid-month check my mail", DraftNotUnderstood, ['"mid-month"', '"on the 15th']),
    ("at the end of every week check my mail", DraftNotUnderstood,
     ['"at the end of every week"', '"every Friday at 17"']),
    # contradictory times
    ("every morning at 6 pm tell me my mail", DraftNotUnderstood, ["18:00", "morning"]),
    ("every evening at 7am tell me my mail", DraftNotUnderstood, ["07:00", "evening"]),
    ("every 2 hours at 9 check mail", DraftNotUnderstood, ["interval", "time of day"]),
    ("every hour and every 2 hours check mail", DraftNotUnderstood, ["two different intervals"]),
    ("every few hours check my mail", DraftNotUnderstood, ['"every few hours"', "say how many"]),
    ("every 90 minutes on the hour check mail", DraftNotUnderstood,
     ['"on the hour" with "every 90 minutes"', "whole hours"]),
    ("every day on the hour check mail", DraftNotUnderstood,
     ['"on the hour"', '"every hour at :15"']),
    ("at :15 check mail", DraftNotUnderstood, ['"at :15"', "interval of hours"]),
    # hours an interval keeps to, in words with no clock: refused, never around the clock
    ("every 2 hours during work hours check mail", DraftNotUnderstood,
     ['"during work hours" as the hours of "every 2 hours"', "between 9 and 17"]),
    ("every hour during business hours check mail", DraftNotUnderstood,
     ['"during business hours"']),
    ("every 2 hours during the day check mail", DraftNotUnderstood, ['"during the day"']),
    # "the workday" is its hours (it was read as weekdays, around the clock); "workdays",
    # the days, still are.
    ("every 2 hours during the workday check mail", DraftNotUnderstood,
     ['"during the workday" as the hours of "every 2 hours"']),
    ("every 2 hours in the work-day check mail", DraftNotUnderstood,
     ['"in the work-day" as the hours of "every 2 hours"']),
    ("every hour throughout my working day check mail", DraftNotUnderstood,
     ['"throughout my working day"']),
    ("at 7:30 and 17:45 tell me my mail", DraftNotUnderstood, ["07:30 and 17:45"]),
    ("monthly on mondays report the drive", DraftNotUnderstood, ["day of the month"]),
    ("between 9 and 17 check mail", DraftNotUnderstood, ["needs an interval"]),
    ("every 45 minutes on weekdays check mail", DraftNotUnderstood, ["divides"]),
    ("every 2 days at 8 check mail", DraftNotUnderstood, ["interval", "08:00"]),
    ("every day at half past summarise my mail", DraftNotUnderstood, ['"at half past"']),
    ("every day at quarter to summarise my mail", DraftNotUnderstood, ['"at quarter to"']),
    ("every day at 10 past summarise my mail", DraftNotUnderstood, ['"at 10 past"',
                                                                    "say the hour"]),
    ("every day at five past summarise my mail", DraftNotUnderstood, ['"at five past"']),
    # a time after "at" that cannot be read is refused, never replaced by 08:00
    ("every day at 99999999999:00 check mail", DraftNotUnderstood,
     ['the time "99999999999:00"', '"0830"']),
    ("every day at 12345 check mail", DraftNotUnderstood, ['the time "12345"']),
    ("every day at seven blah check mail", DraftNotUnderstood, ['the time "seven"']),
    ("at 2400 check mail", DraftNotUnderstood, ['"2400"', "no such time of day"]),
    ("every weekday at 6 before work and 5 after work summarise my mail", DraftNotUnderstood,
     ['"5 after work"']),
    ("every 2 hours from 1:30 check my mail", DraftNotUnderstood, ['"from 1:30"',
                                                                   "whole hours"]),
    # too far apart, or too long to be a Gmail query
    ("every 400 days check my inbox", DraftNotUnderstood, ["up to a year"]),
    ("every 1" + "0" * 320 + " minutes summarize my mail", DraftNotUnderstood,
     ["up to a year"]),
    ("every 1" + "0" * 320 + ".5 hours summarize my mail", DraftNotUnderstood,
     ["up to a year"]),
    ("when mail from " + "a" * 600 + "@x.com arrives tell me", DraftNotUnderstood,
     ["the mail to watch for"]),
    # schedules said but not readable: refused, never saved as something else
    ("every 2nd monday at 9 digest my mail", DraftNotUnderstood, ['"every 2nd monday"']),
    ("every first monday at 9 digest my mail", DraftNotUnderstood, ['"every first monday"']),
    ("on the last friday at 9 digest my mail", DraftNotUnderstood, ['"on the last friday"']),
    ("fortnightly on mondays digest my mail", DraftNotUnderstood, ['"fortnightly"']),
    ("every year at 9 digest my mail", DraftNotUnderstood, ['"every year"']),
    ("every 3rd day check my mail", DraftNotUnderstood, ['"every 3rd"']),
    ("at 8 on weekdays and 10 on weekends digest my mail", DraftNotUnderstood,
     ['"10"', "make one instruction for each set of days"]),
    ("on weekdays at 8 and on weekends at 10 digest my mail", DraftNotUnderstood,
     ["which time goes with which days"]),
    ("every weekday morning and saturday evening digest my mail", DraftNotUnderstood,
     ["which time goes with which days"]),
    ("every day at 8:00:30 digest my mail", DraftNotUnderstood, ['"8:00:30"', "on the minute"]),
    ("on the 30th of february at 9 summarize my documents", DraftNotUnderstood,
     ['"of february"', "not in chosen months"]),
    ("on the 1st and 15th of january summarise mail", DraftNotUnderstood,
     ['"of january"', "not in chosen months"]),
    ("on the 1st and 32nd summarise mail", DraftNotUnderstood,
     ['"on the 1st and 32nd"', "no such day of the month"]),
    ("every friday in august summarize my mail", DraftNotUnderstood, ['"in august"']),
    ("every day except holidays at 8 digest my mail", DraftNotUnderstood,
     ['"except holidays"', "only days of the week can be left out"]),
    ("every day at 8 digest my mail, don't send anything on public holidays",
     DraftNotUnderstood, ["holidays", "only days of the week can be left out"]),
    # ... and every other exception of when (were dropped: every day, Christmas included)
    ("every day at 9 except Christmas check mail", DraftNotUnderstood,
     ['"except christmas" as a schedule', "only days of the week", "pause the instruction"]),
    ("every morning check my mail except Christmas", DraftNotUnderstood,
     ['"except christmas"']),
    ("every day at 9 except when I am on vacation check mail", DraftNotUnderstood,
     ['"except when i am on vacation']),
    ("every day at 9 unless I'm away check mail", DraftNotUnderstood, ['"unless i\'m away']),
    ("every day at 9 except on my birthday check mail", DraftNotUnderstood,
     ['"except on my birthday"']),
    ("every day at 9 except if it rains check mail", DraftNotUnderstood,
     ['"except if it rains']),
    ("every day at 9 except the Smith account check mail", DraftNotUnderstood,
     ['"except the smith"', "only days of the week"]),
    ("every day except weekdays and weekends at 8 digest my mail", DraftNotUnderstood,
     ["every day is left out"]),
    # a day that could be when to run or what the task is about, or both every day and days
    ("at 9 tell me who is off on Monday", DraftNotUnderstood,
     ['"on Monday"', "when to run or what the task is about", '"every Monday at 8 ..."']),
    ("every day at 8 list meetings on weekdays", DraftNotUnderstood,
     ['"on weekdays"', "when to run or what the task is about", '"every weekday at 8 ..."']),
    ("every Monday at 8 list who works on Saturdays", DraftNotUnderstood,
     ['"on Saturdays"', "when to run or what the task is about"]),
    ("every day at 8 summarise mail from Monday to Friday", DraftNotUnderstood,
     ['"from Monday to Friday"', "when to run or what the task is about"]),
    ("every week at 9 tell me who is off on Monday", DraftNotUnderstood,
     ['"on Monday"', "when to run or what the task is about"]),
    ("at 5pm remind me that timesheets are due on Friday", DraftNotUnderstood,
     ['"on Friday"', "when to run or what the task is about"]),
    # ... "weekly" says when as a time does, and "the mail I sent" is a clause too
    ("every week tell me which meetings I had on Friday", DraftNotUnderstood,
     ['"on Friday"', "when to run or what the task is about"]),
    ("weekly summarise the mail I sent on Friday", DraftNotUnderstood,
     ['"on Friday"', "when to run or what the task is about"]),
    ("weekly at 9 summarise the mail I sent on Friday", DraftNotUnderstood,
     ['"on Friday"', "when to run or what the task is about"]),
    ("at 9 summarise the mail we sent on Friday", DraftNotUnderstood,
     ['"on Friday"', "when to run or what the task is about"]),
    ("every day at 9 tell me who is off on a Monday", DraftNotUnderstood,
     ['"on a Monday"', "when to run or what the task is about"]),
    ("every day on Mondays at 8 check my mail", DraftNotUnderstood,
     ["both every day and some days of the week"]),
    # a day misspelt, or a word after "every" that is no schedule: refused, never every day
    ("every wednsday at 9 summarise mail", DraftNotUnderstood,
     ['"wednsday" as a day of the week', "did you mean Wednesday?"]),
    ("every mondy at 9 summarise mail", DraftNotUnderstood, ['"mondy"', "Monday?"]),
    ("on frday at 9 summarise mail", DraftNotUnderstood, ['"frday"', "Friday?"]),
    ("every tuesdy at 9 summarise mail", DraftNotUnderstood, ['"tuesdy"', "Tuesday?"]),
    ("every wensday at 9 summarise mail", DraftNotUnderstood, ['"wensday"', "Wednesday?"]),
    ("every thrusday at 9 summarise mail", DraftNotUnderstood, ['"thrusday"', "Thursday?"]),
    ("every monday and wensday at 9 summarise mail", DraftNotUnderstood, ['"wensday"']),
    ("every monday to frday at 9 summarise mail", DraftNotUnderstood, ['"frday"']),
    ("every blorp at 9 check mail", DraftNotUnderstood, ['"every blorp" as a schedule']),
    ("every payday at 9 check mail", DraftNotUnderstood, ['"every payday" as a schedule']),

    ("weekly except mondays digest my mail", DraftNotUnderstood,
     ["left out of every day or of days of the week"]),
    ("on the 1st of every month except sundays digest my mail", DraftNotUnderstood,
     ["left out of every day or of days of the week"]),
    ("every 2 hours between 22 and 6 digest my mail", DraftNotUnderstood, ["spans midnight"]),
    # a time zone said but not one to name
    ("every day at 9am EST digest my mail", DraftNotUnderstood, ['"est"', "tz database"]),
    ("every day at 9 pacific time digest my mail", DraftNotUnderstood, ['"pacific time"']),
    # a state or province: "New Jersey time" was Europe/Jersey, "California time" Berlin's
    ("every day at 9 New Jersey time digest my mail", DraftNotUnderstood,
     ['"new jersey time"', "name a city of it"]),
    ("every day at 9 California time digest my mail", DraftNotUnderstood,
     ['"california time"', "name a city of it"]),
    ("every day at 9 in New South Wales time digest my mail", DraftNotUnderstood,
     ['"new south wales time"']),
    ("every day at 8 in UTC+2 digest my mail", DraftNotUnderstood, ['"utc+2"']),
    # a minute past 59 after an hour: was the hour alone, "sixty" or "60" left in the task
    ("every day at 9 sixty summarise my mail", DraftNotUnderstood,
     ['the time "9 sixty"', "no minute 60", '"9:30" or "10:00"']),
    ("every day at nine sixty summarise my mail", DraftNotUnderstood,
     ['the time "nine sixty"', "no minute 60"]),
    ("every day at 9 sixty-five summarise my mail", DraftNotUnderstood, ["no minute 65"]),
    ("every day at 9 60 summarise my mail", DraftNotUnderstood,
     ['the time "9 60"', "no minute 60"]),
    # a range of hours with the same two ends: was "0 8-8 * * *", one run a day at 8
    ("every hour between 8 and 8 check mail", DraftNotUnderstood,
     ['"between 8 and 8"', "starts and ends at different hours",
      '"every hour between 8am and 8pm"', '"every day at 8am"']),
    ("every hour from 8-8 check mail", DraftNotUnderstood, ['"from 8-8"', "different hours"]),
    ("every hour between 8am and 8am check mail", DraftNotUnderstood, ["different hours"]),
    # a range of hours in figures beside the schedule or after "at", crontab's step too:
    # was dropped ("every day at 10-8/3": 10:00; "every weekday 9-5": 08:00)
    ("every day at 10-8/3 check mail", DraftNotUnderstood,
     ['the hours "10-8/3"', '"every 3 hours between 10 and 8"', "cron trigger"]),
    ("every 3 hours from 10-8/3 check mail", DraftNotUnderstood, ['the hours "10-8/3"']),
    ("every 3 hours 10-8 check mail", DraftNotUnderstood,
     ['the hours "10-8"', '"every hour between 10 and 8"']),
    ("every hour 8-8 check mail", DraftNotUnderstood,
     ['the hours "8-8"', '"every hour between 9 and 17"']),
    ("every weekday 9-5 check my mail", DraftNotUnderstood, ['the hours "9-5"']),
    # minutes in words after an hour in figures that are not read as a time: never dropped
    ("every day at 12 fifteen reports summarise my mail", DraftNotUnderstood,
     ['the time "12 fifteen"', '"12:15"']),
    ("every day at 9 ten minutes list my mail", DraftNotUnderstood, ['"9 ten"', '"9:10"']),
    # the only time said stands in a clause of the task: when to run, or the mail's?
    ("every weekday tell me who wrote to me at 3am", DraftNotUnderstood,
     ['"at 3am"', "could be when to run or what the task is about",
      '"every day at 3am ..."']),
    ("every weekday tell me what my team sent at 8", DraftNotUnderstood,
     ['"at 8"', "could be when to run"]),
    # said as a zone, but no city this knows: was dropped for the user's zone
    ("every day at 9 Springfield time digest my mail", DraftNotUnderstood,
     ['the time zone "Springfield"', "America/Los_Angeles"]),
    ("every day at 8 in Mars/Olympus time digest my mail", DraftNotUnderstood,
     ['"mars/olympus"', "no such zone"]),
    ("every day at 8 in UTC and in Tokyo time digest my mail", DraftNotUnderstood,
     ["two different time zones"]),
    ("every day at 8 in UTC and in Tokyo digest my mail", DraftNotUnderstood,
     ["two different time zones"]),
    # a place after "in" beside the schedule that is no city this knows: was read as the
    # user's zone, the place left in the task's title ("Daily Springfieldia mail")
    ("every day at 9 in Springfieldia", DraftNotUnderstood,
     ['"in Springfieldia" as a place', "no city this knows a time zone of",
      '"in Los Angeles"', '"in America/Los_Angeles time"', "leave the place out"]),
    ("every day at 9 in Springfieldia summarise my mail", DraftNotUnderstood,
     ['"in Springfieldia" as a place']),
    ("In New Springfield, every day at 9 summarise my mail", DraftNotUnderstood,
     ['"in New Springfield" as a place']),
    ("every day at 9 in Davis summarise my mail", DraftNotUnderstood,  # not Antarctica's
     ['"in Davis" as a place']),
    # a watch on no sender, or no topic
    ("whenever mail from arrives tell me", DraftNotUnderstood,
     ["who the mail to watch for is from", "name the sender"]),
    ("whenever mail from someone arrives tell me", DraftNotUnderstood, ["name the sender"]),
    ('whenever mail about "" arrives tell me', DraftNotUnderstood,
     ["what the mail to watch for is about", "name the topic"]),
    ("whenever mail about the arrives tell me", DraftNotUnderstood, ["name the topic"]),
    # too often
    ("every 10 seconds check my inbox", DraftIntervalTooShort, ["once a minute"]),
    ("every 30 seconds check my inbox", DraftIntervalTooShort, ['"every 30 seconds"']),
    ("every second check my inbox", DraftIntervalTooShort, ["once a minute"]),
    # watch triggers drafting cannot propose: a Drive folder (needs its id), no clear target
    ("whenever a document in folder Contracts changes tell me", DraftWatchNotAvailable,
     ["whenever a document in the folder 'Contracts' changes", "Drive folder: 'Contracts'",
      "drive_folder_id", "folder's URL", '"every hour tell me what changed in the folder']),
    ('when a file in the "Board minutes" folder is updated email me', DraftWatchNotAvailable,
     ["Drive folder: 'Board minutes'", "drive_folder_id", "folder's URL"]),
    ("when a document changes email me", DraftWatchNotAvailable,
     ['"when a document changes"', "drive_folder_id", "folder's URL",
      '"every hour tell me what changed in my documents"']),
    ("whenever it arrives tell me", DraftWatchNotAvailable, ["not what to watch"]),
    ("whenever something changes tell me", DraftWatchNotAvailable,
     ['"whenever something changes"', "not what to watch", "whenever mail from",
      "drive_folder_id", '"every hour"']),
]


@pytest.mark.parametrize(("sentence", "error", "fragments"), REFUSALS,
                         ids=[r[0][:60] for r in REFUSALS])
def test_refusals(sentence: str, error: type[DomainError], fragments: list[str]) -> None:
    with pytest.raises(error) as caught:
        parse(sentence, timezone=TZ)
    assert caught.value.status_code == 422
    detail = caught.value.detail
    for fragment in fragments:
        assert fragment.lower() in detail.lower(), (fragment, detail)
    if error is DraftNotUnderstood:  # it says what works
        assert '"every weekday at 8 tell me what my team sent"' in detail


def test_the_example_in_refusals_works() -> None:
    assert parse("every weekday at 8 tell me what my team sent", timezone=TZ)


def gmail_watch(query: str) -> dict[str, Any]:
    return {"type": "watch", "gmail_query": query, "drive_folder_id": None}


# sentence -> (Gmail query, title, channels, what was understood)
WATCHES: list[tuple[str, str, str, list[str], str]] = [
    ("whenever mail from billing@example.com arrives, tell me", "from:billing@example.com",
     "New mail from billing@example.com", APP, "whenever mail from billing@example.com arrives"),
    ("whenever an invoice arrives tell me at once", "subject:invoice OR invoice",
     "New invoices", APP, "whenever an invoice arrives"),
    ("whenever an invoice arrives notify my phone", "subject:invoice OR invoice",
     "New invoices", PUSH, "whenever an invoice arrives"),
    ("when invoices come in email me", "subject:invoice OR invoice", "New invoices", EMAIL,
     "whenever an invoice arrives"),
    ("when I get mail about the merger tell me", "subject:merger OR merger",
     "New mail about merger", APP, "whenever mail about merger arrives"),
    ("when I get an email about the quarterly report, push it",
     'subject:"quarterly report" OR "quarterly report"', "New mail about quarterly report",
     PUSH, "whenever mail about quarterly report arrives"),
    ("every time my boss emails me tell me", "from:boss", "New mail from boss", APP,
     "whenever mail from boss arrives"),
    ("as soon as new mail arrives summarize it", "in:inbox", "New mail", APP,
     "whenever new mail arrives in the inbox"),
    ("as soon as new mail arrives email me", "in:inbox", "New mail", EMAIL,
     "whenever new mail arrives in the inbox"),
]


@pytest.mark.parametrize(("sentence", "query", "title", "channels", "understood"), WATCHES,
                         ids=[w[0] for w in WATCHES])
def test_mail_events_are_drafted_as_a_watch_on_a_gmail_query(
    sentence: str, query: str, title: str, channels: list[str], understood: str
) -> None:
    out = parse(sentence, timezone=TZ)
    data = out.instruction
    assert data.trigger.model_dump() == gmail_watch(query)
    assert data.sources == MAIL
    assert data.channels == channels
    assert data.title == title
    assert data.text == sentence[:1].upper() + sentence[1:] + "."
    assert out.drafted_by == PARSER_NAME
    assert out.schedule == f"When new mail matches {query!r}"
    assert out.schedule == describe({"type": "watch", "gmail_query": query})
    assert out.explanation == (
        f"Understood: {understood}; one run for each new message that matches the Gmail "
        f"query {query}; delivers {EXPLAINED_CHANNELS[tuple(channels)]}. Saving it needs a "
        "connected Google account that allows reading Gmail."
    )
    # what create takes as is (the API then asks for a Google account that can serve it)
    assert InstructionCreate.model_validate(data.model_dump()) == data


EXPLAINED_CHANNELS = {tuple(APP): "in the app", tuple(PUSH): "in the app and by push",
                      tuple(EMAIL): "in the app and by email"}


def test_a_schedule_wins_over_a_watch_phrase() -> None:
    out = parse("every hour tell me when mail from billing@example.com arrives", timezone=TZ)
    assert out.instruction.trigger.model_dump() == every(3600)
    assert out.instruction.title == "Hourly mail from billing@example.com"


# --- the seam for a real model ----------------------------------------------------------------


class ScriptedModel:
    """A stand-in for a remote model behind the port: answers each turn from a script."""

    def __init__(self, *answers: str | Exception, name: str = "gemini-test") -> None:
        self.name = name
        self.answers = list(answers)
        self.requests: list[TurnRequest] = []

    async def turn(self, request: TurnRequest) -> TurnResponse:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return TurnResponse(interaction_id=f"i{len(self.requests)}", text=answer)


def model_answer(**changes: Any) -> str:
    answer: dict[str, Any] = {
        "understood": True,
        "title": "Weekday team mail",
        "text": "Every weekday at 8 tell me what my team sent.",
        "trigger": {"type": "cron", "cron": "0 8 * * 1-5"},
        "sources": ["gmail"],
        "channels": ["in_app"],
        "only_new": True,
    }
    answer.update(changes)
    return json.dumps(answer)


SENTENCE = "every weekday at 8 tell me what my team sent"


async def test_a_model_drafts_with_structured_output() -> None:
    model = ScriptedModel(model_answer(channels=["in_app", "email"]))
    out = await draft(text=SENTENCE, timezone=TZ, llm=model)
    assert out.drafted_by == "gemini-test"
    assert out.instruction.trigger.model_dump() == cron("0 8 * * 1-5")
    assert out.instruction.channels == ["in_app", "email"]
    assert out.schedule == "At 08:00, Monday through Friday (Europe/Berlin)"
    assert out.explanation.startswith("Understood: at 08:00, Monday through Friday")
    (request,) = model.requests
    assert request.input == SENTENCE
    assert request.tools == []
    assert request.model == "gemini-test"
    assert request.response_schema == draft_json_schema()
    assert TZ in request.system_instruction
    assert "days the task is about" in request.system_instruction


def _trigger_words(trigger: dict[str, Any]) -> str:
    if trigger["type"] == "interval":
        return f"interval {trigger['seconds']}"
    zone = "" if trigger["timezone"] == TZ else f" in {trigger['timezone']}"
    return f"cron {trigger['cron']}{zone}"


@pytest.mark.parametrize(("sentence", "trigger"), PROMPT_EXAMPLES,
                         ids=[e[0] for e in PROMPT_EXAMPLES])
def test_the_models_examples_are_what_the_parser_reads(sentence: str, trigger: str) -> None:
    """With Gemini or without, a sentence means the same: the prompt shows the model what
    the parser reads (the prompt did not know "in San Francisco", "12 fifteen", "on a
    workday" or a time the task is about)."""
    assert f'"{sentence}": {trigger}' in draft_system_instruction(TZ)
    assert _trigger_words(parse(sentence, timezone=TZ).instruction.trigger.model_dump()) == (
        trigger)


@pytest.mark.parametrize("sentence", PROMPT_REFUSALS)
def test_the_models_refusals_are_the_parsers(sentence: str) -> None:
    assert f'"{sentence}"' in draft_system_instruction(TZ)
    with pytest.raises(DraftNotUnderstood):
        parse(sentence, timezone=TZ)


def test_the_response_schema_is_self_contained() -> None:
    schema = draft_json_schema()
    assert "$ref" not in json.dumps(schema)
    assert "$defs" not in schema
    assert {"understood", "trigger", "sources", "channels"} <= set(schema["properties"])


async def test_an_interval_from_a_model() -> None:
    model = ScriptedModel(model_answer(trigger={"type": "interval", "seconds": 7200}))
    out = await draft(text="every 2 hours check mail", timezone=TZ, llm=model)
    assert out.instruction.trigger.model_dump() == every(7200)
    assert out.schedule == "Every 2 hours"


@pytest.mark.parametrize(
    "answer",
    [
        "not json",
        "",
        json.dumps({"title": "missing understood"}),
        model_answer(trigger={"type": "cron", "cron": "61 8 * * *"}),
        model_answer(trigger={"type": "daily"}),
        model_answer(sources=["dropbox"]),
        model_answer(title=""),
        model_answer(understood=False, reason="no idea"),
        model_answer(trigger=None),
        LLMError("Gemini API still failing"),
    ],
    ids=["text", "empty", "missing", "bad-cron", "bad-type", "bad-source", "no-title",
         "not-understood", "no-trigger", "llm-error"],
)
async def test_invalid_model_output_falls_back_to_the_parser(answer: str | Exception) -> None:
    model = ScriptedModel(answer)
    out = await draft(text=SENTENCE, timezone=TZ, llm=model)
    assert out.drafted_by == PARSER_NAME
    assert out == parse(SENTENCE, timezone=TZ)


async def test_a_time_zone_from_a_model_is_the_schedules() -> None:
    model = ScriptedModel(model_answer(
        trigger={"type": "cron", "cron": "0 8 * * 1-5", "timezone": "America/New_York"}))
    out = await draft(text=SENTENCE + " in New York time", timezone=TZ, llm=model)
    assert out.drafted_by == "gemini-test"
    assert out.instruction.trigger.model_dump() == {
        "type": "cron", "cron": "0 8 * * 1-5", "timezone": "America/New_York"}
    assert out.schedule == "At 08:00, Monday through Friday (America/New_York)"
    assert out.explanation.startswith(
        "Understood: at 08:00, Monday through Friday (America/New_York);")
    assert "timezone" in json.dumps(draft_json_schema()["properties"]["trigger"])


async def test_an_invalid_time_zone_from_a_model_falls_back_to_the_parser() -> None:
    model = ScriptedModel(model_answer(
        trigger={"type": "cron", "cron": "0 8 * * 1-5", "timezone": "Mars/Olympus"}))
    out = await draft(text=SENTENCE, timezone=TZ, llm=model)
    assert out == parse(SENTENCE, timezone=TZ)


async def test_the_fallback_keeps_the_parsers_refusal() -> None:
    with pytest.raises(DraftNotUnderstood, match="when to run"):
        await draft(text="tell me things", timezone=TZ, llm=ScriptedModel("garbage"))


async def test_a_watch_on_mail_from_a_model_is_proposed() -> None:
    model = ScriptedModel(
        model_answer(trigger={"type": "watch", "gmail_query": "from:billing@example.com"},
                     title="Billing mail", sources=["gmail", "drive"],
                     channels=["in_app", "push"],
                     text="Whenever mail from billing@example.com arrives, tell me.")
    )
    out = await draft(text="whenever mail from billing@example.com arrives", timezone=TZ,
                      llm=model)
    assert out.drafted_by == "gemini-test"
    data = out.instruction
    assert data.trigger.model_dump() == gmail_watch("from:billing@example.com")
    assert data.title == "Billing mail"
    assert data.sources == BOTH
    assert data.channels == PUSH
    assert out.schedule == "When new mail matches 'from:billing@example.com'"
    assert out.explanation.startswith(
        "Understood: whenever matching mail arrives; one run for each new message that "
        "matches the Gmail query from:billing@example.com; delivers in the app and by push."
    )


async def test_a_mail_watch_from_a_model_reads_gmail() -> None:
    model = ScriptedModel(
        model_answer(trigger={"type": "watch", "gmail_query": "subject:invoice"},
                     sources=["drive"])
    )
    out = await draft(text="whenever an invoice arrives tell me", timezone=TZ, llm=model)
    assert out.drafted_by == "gemini-test"
    assert out.instruction.sources == MAIL


@pytest.mark.parametrize(
    "trigger",
    [{"type": "watch", "gmail_query": "   "}, {"type": "watch", "gmail_query": "x" * 501},
     {"type": "watch", "gmail_query": "from:a\u0000"}, {"type": "watch"}],
    ids=["blank", "too-long", "nul", "no-target"],
)
async def test_an_invalid_watch_from_a_model_falls_back_to_the_parser(
    trigger: dict[str, Any],
) -> None:
    sentence = "whenever an invoice arrives tell me"
    model = ScriptedModel(model_answer(trigger=trigger))
    out = await draft(text=sentence, timezone=TZ, llm=model)
    assert out == parse(sentence, timezone=TZ)
    assert out.drafted_by == PARSER_NAME


async def test_a_drive_folder_watch_from_a_model_is_refused_with_how_to_give_its_id() -> None:
    model = ScriptedModel(
        model_answer(trigger={"type": "watch", "drive_folder": "Contracts"}, sources=["drive"],
                     text="Whenever a document in Contracts changes, tell me.")
    )
    with pytest.raises(DraftWatchNotAvailable) as caught:
        await draft(text="whenever a document in Contracts changes tell me", timezone=TZ,
                    llm=model)
    detail = caught.value.detail
    assert caught.value.status_code == 422
    for fragment in ("Drive folder: 'Contracts'", '"drive_folder_id"', "folder's URL",
                     '"every hour tell me what changed in the folder \'Contracts\'"'):
        assert fragment in detail, (fragment, detail)


async def test_a_too_short_interval_from_a_model_is_refused() -> None:
    model = ScriptedModel(model_answer(trigger={"type": "interval", "seconds": 10}))
    with pytest.raises(DraftIntervalTooShort):
        await draft(text="every 10 seconds check mail", timezone=TZ, llm=model)


async def test_the_offline_model_and_no_model_use_the_parser() -> None:
    expected = parse(SENTENCE, timezone=TZ)
    assert await draft(text=SENTENCE, timezone=TZ) == expected
    assert await draft(text=SENTENCE, timezone=TZ, llm=OfflineModel()) == expected
