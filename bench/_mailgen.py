"""A generated day of mail for bench/tokens.py: a Maildir of N realistic messages, seeded.

`write_day(root, count=200, seed=1, day=date(2026, 11, 23))` writes `<root>/maildir/{cur,new,tmp}`
and an empty `<root>/docs`, the layout `SampleSource(root)` reads, and returns what it
wrote. The same seed writes the same bytes (Message-IDs, dates and file names included).

The mix is that of a busy team lead's inbox: threads between colleagues (replies quote
the message they answer), mail from customers, tool notifications, newsletters, meeting
notes with action items and a few invoices. Every body is 300 to 3,000 characters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

MIN_BODY, MAX_BODY = 300, 3000
DOMAIN = "northwind.example"
ME = ("Alex Morgan", f"alex.morgan@{DOMAIN}")

COLLEAGUES = [
    ("Priya Raman", "Engineering Manager"), ("Jonas Weber", "Staff Engineer"),
    ("Mei Tanaka", "Product Manager"), ("Carlos Ortega", "Head of Sales"),
    ("Fatima Okafor", "Finance Lead"), ("Liam O'Connor", "Site Reliability Engineer"),
    ("Sofia Rossi", "Product Designer"), ("Daniel Kim", "Backend Engineer"),
    ("Hannah Schulz", "Customer Success Manager"), ("Omar Haddad", "Data Engineer"),
    ("Chloe Martin", "Marketing Lead"), ("Ravi Patel", "Frontend Engineer"),
    ("Ingrid Larsen", "Security Engineer"), ("Tom Becker", "QA Lead"),
    ("Aisha Bello", "Recruiter"), ("Lucas Silva", "Mobile Engineer"),
    ("Nora Fischer", "Legal Counsel"), ("Ethan Wright", "Solutions Architect"),
    ("Yuki Sato", "Support Engineer"), ("Grace Lee", "VP Engineering"),
    ("Mateo Garcia", "Platform Engineer"), ("Elena Petrova", "Data Scientist"),
    ("Ben Carter", "Office Manager"), ("Zara Ahmed", "Technical Writer"),
]
CUSTOMERS = [
    ("Laura Jensen", "Brightwave Retail", "brightwave.example"),
    ("Marcus Hill", "Fjord Logistics", "fjordlogistics.example"),
    ("Ana Sousa", "Porto Health", "portohealth.example"),
    ("Kenji Mori", "Sakura Foods", "sakurafoods.example"),
    ("Rachel Green", "Greenline Energy", "greenline.example"),
    ("Pieter de Vries", "Canal Insurance", "canalinsure.example"),
]
VENDORS = [
    ("Skyline Cloud Billing", "billing@skylinecloud.example", "Skyline Cloud", "USD"),
    ("Papertrail Logs", "invoices@papertrail-logs.example", "Papertrail Logs", "EUR"),
    ("Officely Accounts", "accounts@officely.example", "Officely", "EUR"),
    ("Northbeam Analytics", "billing@northbeam.example", "Northbeam Analytics", "USD"),
    ("Lumen Telecom", "ebill@lumentelecom.example", "Lumen Telecom", "EUR"),
    ("Draftboard Design", "finance@draftboard.example", "Draftboard", "USD"),
]
NEWSLETTERS = [
    ("The Platform Weekly", "newsletter@platformweekly.example"),
    ("SaaS Metrics Digest", "news@saasmetrics.example"),
    ("Frontend Focus", "newsletter@frontendfocus.example"),
    ("Security Roundup", "news@securityroundup.example"),
]
NOTIFIERS = [
    ("CI", f"ci-notifications@{DOMAIN}"), ("Tracker", f"tracker-notifications@{DOMAIN}"),
    ("Calendar", f"calendar-noreply@{DOMAIN}"), ("Code review", f"review-notifications@{DOMAIN}"),
]

PROJECTS = ["the Atlas migration", "the Q4 launch", "the SSO rollout", "billing v2",
            "mobile 3.2", "the data warehouse move", "the onboarding revamp",
            "the pricing page", "the EU region", "the audit log"]
ARTIFACTS = ["rollout plan", "budget sheet", "API spec", "runbook", "launch checklist",
             "pricing proposal", "design doc", "test plan", "migration script", "SLA draft",
             "hiring plan", "board deck"]
TOPICS = ["rate limits", "the EU data residency question", "SSO for enterprise tenants",
          "the on-call rotation", "invoice exports", "the churn dashboard", "search latency",
          "the mobile crash spike", "the renewal discount", "accessibility fixes"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
TEAMS = ["platform", "finance", "sales", "security", "design", "support", "data"]
ROOMS = ["Fjord", "Harbor", "Summit", "the small room on 3"]

TEAM_SENTENCES = [
    "Quick update on {project}: we finished the {artifact} review yesterday and the "
    "implementation work starts on {day}.",
    "{person} and I walked through the {artifact} this morning; there are {n} open "
    "questions, mostly about {topic}.",
    "The staging deploy went out at {hour}:{minute:02d} and the error rate is back to "
    "0.{digit}%.",
    "I moved the {artifact} to the shared drive so everyone works from the same copy.",
    "We are still blocked on {topic}; {person} is chasing it with the {team} team.",
    "Numbers from last week: {n3} sign-ups, {n2} activations and churn at {pct}.{digit}%.",
    "If nobody objects I will merge the {artifact} changes on {day}.",
    "The load test peaked at {n3} requests per second before p99 latency went above "
    "{n2} ms.",
    "Customer feedback on {project} has been mostly positive, with {n} tickets about "
    "{topic}.",
    "I'd suggest we leave {topic} out of the first cut of {project} and ship it in the "
    "follow-up.",
    "Design review notes are in the doc; the main change is how we present {topic}.",
    "Legal came back on the {artifact} with two small wording changes, nothing blocking.",
    "The {team} team needs a headcount estimate for Q1 by the end of the month.",
    "The retro surfaced three themes: {topic}, the {artifact} and on-call load.",
    "I've booked {room} for {day} at {hour}:00 so we can go through {topic} together.",
    "Thanks for the quick turnaround on the {artifact}, it made the demo much easier.",
    "For context, the last time we touched {topic} it took two sprints longer than planned.",
    "The dashboard shows {n2} failed jobs overnight, all retried successfully by 06:00.",
    "Sharing the draft now rather than polishing it further; comments are welcome inline.",
    "We agreed to keep the scope of {project} fixed and move the extra requests to January.",
    "The vendor confirmed the new quota, so {topic} should stop being a problem next week.",
    "I added {n} test cases around {topic}; two of them fail on the current main branch.",
    "{person} will be out from {day} to the end of next week, so please route questions "
    "about the {artifact} to me.",
    "The cost report for {project} came in {pct}% under the estimate, mainly thanks to "
    "reserved capacity.",
    "Support saw {n2} conversations about {topic} this week, up from {n} the week before.",
    "My take: the {artifact} is good enough to share with the {team} team as it is.",
]
ASK_SENTENCES = [
    "Could you review the {artifact} by {day}?",
    "Can you confirm the numbers for {project} before the {day} sync?",
    "Please send me your comments on the {artifact} by end of day {day}.",
    "Let me know if {day} at {hour}:00 works for a call about {topic}.",
    "Would you be able to join the {team} review on {day}?",
    "We need your sign-off on the {artifact} before we can go ahead.",
]
CUSTOMER_SENTENCES = [
    "Since {day} we are seeing {topic} issues that affect roughly {n2} of our users.",
    "Our contract renews next month and we would like to talk about the enterprise tier.",
    "The export your team sent over looks right, thank you for the quick help.",
    "Our security team has a few follow-up questions about {topic}.",
    "We rolled the integration out to {n} more stores this week without problems.",
    "One of our admins cannot log in since the SSO change; the error mentions an expired "
    "certificate.",
    "We would love to be part of the beta for {project} if there is still room.",
    "Attached you will find the list of users we would like to migrate in the first wave.",
    "Our finance department needs the invoices split by cost centre from January on.",
    "Response times have been much better since the fix last {day}, thanks again.",
]
NEWS_SENTENCES = [
    "This week: why {topic} keeps coming up in platform teams, and what to do about it.",
    "Our lead story looks at how {n} companies cut their cloud bill by {pct}% this year.",
    "In the interview section, a staff engineer explains how her team runs {topic}.",
    "Tooling corner: three open-source projects that make {topic} less painful.",
    "From the community: a long thread about migrating {n3} services without downtime.",
    "Numbers of the week: median time to first response fell to {n2} minutes.",
    "Events: the next meetup on {topic} is on {day}, tickets are free but limited.",
    "Sponsored: try the new observability suite free for {n} days.",
]


@dataclass
class Mail:
    """One generated message, as written to the Maildir."""

    key: str
    message_id: str
    thread_root: str
    sender: str
    subject: str
    date: datetime
    body: str
    kind: str  # team, customer, notification, newsletter, notes, invoice
    references: list[str] = field(default_factory=list)


@dataclass
class _Thread:
    root: str
    subject: str
    people: list[tuple[str, str]]
    messages: list[Mail] = field(default_factory=list)


def _address(name: str, email: str) -> str:
    return f'"{name}" <{email}>' if any(c in name for c in ",.'") else f"{name} <{email}>"


def _colleague_email(name: str) -> str:
    first, last = name.lower().replace("'", "").split(" ", 1)
    return f"{first}.{last.replace(' ', '')}@{DOMAIN}"


class _Writer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def fill(self, template: str) -> str:
        r = self.rng
        return template.format(
            project=r.choice(PROJECTS), artifact=r.choice(ARTIFACTS), topic=r.choice(TOPICS),
            day=r.choice(DAYS), team=r.choice(TEAMS), room=r.choice(ROOMS),
            person=r.choice(COLLEAGUES)[0].split()[0], n=r.randint(2, 9),
            n2=r.randint(12, 95), n3=r.randint(120, 4800), pct=r.randint(1, 30),
            digit=r.randint(0, 9), hour=r.randint(9, 17), minute=r.choice([0, 15, 30, 45]),
        )

    def paragraphs(self, pool: list[str], target: int, asks: int = 0) -> str:
        """Paragraphs of 2-4 sentences from `pool` until about `target` characters."""
        sentences: list[str] = [self.fill(self.rng.choice(ASK_SENTENCES)) for _ in range(asks)]
        out: list[str] = []
        length = 0
        deck: list[str] = []  # each template once before any comes again

        def draw() -> str:
            if not deck:
                deck.extend(self.rng.sample(pool, len(pool)))
            return self.fill(deck.pop())

        while length < target:
            paragraph = [draw() for _ in range(self.rng.randint(2, 4))]
            if sentences:
                paragraph.append(sentences.pop())
            text = " ".join(paragraph)
            out.append(text)
            length += len(text) + 2
        return "\n\n".join(out)


def _clamp(body: str) -> str:
    """Cut at a line or sentence end so that the body is at most MAX_BODY characters."""
    if len(body) <= MAX_BODY:
        return body
    cut = body[:MAX_BODY]
    end = max(cut.rfind("\n"), cut.rfind(". ") + 1)
    return cut[:end].rstrip() if end > MIN_BODY else cut.rstrip()


def _quote(parent: Mail, lines: int) -> str:
    when = parent.date.strftime("%a, %d %b %Y at %H:%M")
    name = parent.sender.split(" <")[0].strip('"')
    quoted = [f"> {line}" if line else ">" for line in parent.body.splitlines()[:lines]]
    return f"On {when}, {name} wrote:\n" + "\n".join(quoted)


def _invoice_body(rng: random.Random, vendor: tuple[str, str, str, str], number: str,
                  due: date) -> tuple[str, str]:
    _, _, company, currency = vendor
    lines = [(item, rng.randint(40, 1800) + rng.randint(0, 99) / 100) for item in rng.sample(
        ["Compute (standard-4, 720 h)", "Managed Postgres", "Object storage", "Network egress",
         "Support plan", "Seats (monthly)", "Log retention (30 days)", "Phone lines",
         "Design retainer", "Analytics events (10M)"], rng.randint(2, 5))]
    total = sum(amount for _, amount in lines)
    table = "\n".join(f"  {item:<32} {amount:>10,.2f}" for item, amount in lines)
    body = (
        f"Hi Alex,\n\nYour invoice from {company} for November 2026 is attached.\n\n"
        f"  Invoice number:  {number}\n  Account:         Northwind Labs\n"
        f"  Amount due:      {currency} {total:,.2f}\n"
        f"  Due date:        {due.day} {due.strftime('%b %Y')}\n\n{table}\n"
        f"  {'-' * 43}\n  {'Total':<32} {total:>10,.2f}\n\n"
        "Payment is due by bank transfer within 14 days; please quote the invoice number.\n"
        "Questions about this invoice? Reply to this email.\n\n"
        f"{company}, Accounts receivable"
    )
    return body, f"{currency} {total:,.2f}"


def _notes_body(writer: _Writer, rng: random.Random, meeting: str) -> str:
    owners = rng.sample([c[0].split()[0] for c in COLLEAGUES], 3)
    actions = [
        f"- {owners[0]}: send the revised {rng.choice(ARTIFACTS)} by {rng.choice(DAYS)}",
        f"- {owners[1]}: share the {rng.choice(ARTIFACTS)} with the {rng.choice(TEAMS)} team "
        f"by {rng.choice(DAYS)}",
        f"- {owners[2]}: book a follow-up on {rng.choice(TOPICS)}",
    ]
    intro = f"Hi all,\n\nNotes from today's {meeting}.\n\n"
    middle = writer.paragraphs(TEAM_SENTENCES, rng.randint(300, 1400))
    return (f"{intro}{middle}\n\nAction items:\n" + "\n".join(actions)
            + f"\nAction: Alex to approve the {rng.choice(ARTIFACTS)} by {rng.choice(DAYS)}.")


def generate(count: int = 200, seed: int = 1, day: date = date(2026, 11, 23)) -> list[Mail]:
    """The day's mail, oldest first (nothing is written)."""
    rng = random.Random(seed)
    writer = _Writer(rng)
    start = datetime.combine(day, time(6, 30), tzinfo=UTC)
    seconds = sorted(rng.sample(range(0, 14 * 3600), count))  # 06:30 to 20:30 UTC
    invoices = max(1, round(count * 0.025))
    notes = max(1, round(count * 0.03))
    kinds = (["invoice"] * invoices + ["notes"] * notes
             + rng.choices(["team", "customer", "notification", "newsletter"],
                           weights=[58, 14, 18, 10], k=count - invoices - notes))
    rng.shuffle(kinds)
    threads: list[_Thread] = []
    mails: list[Mail] = []

    for index, (offset, kind) in enumerate(zip(seconds, kinds, strict=True)):
        when = start + timedelta(seconds=offset)
        message_id = f"<{day:%Y%m%d}.{index:04d}.{seed}@{DOMAIN}>"
        key = f"{int(when.timestamp())}.M{index + 1}P{seed}.bench"
        target = rng.randint(MIN_BODY, MAX_BODY)
        references: list[str] = []
        root = message_id

        if kind == "team":
            open_threads = [t for t in threads if t.people]
            if open_threads and rng.random() < 0.6:  # a reply in a thread of today
                thread = rng.choice(open_threads[-25:])
                parent = thread.messages[-1]
                others = [p for p in thread.people if _address(*p) != parent.sender]
                if len(others) > 1 and rng.random() < 0.7:  # the user answers now and then
                    others = [p for p in others if p != ME]
                sender_pair = rng.choice(others or thread.people)
                subject = "Re: " + thread.subject
                references = [thread.root] + ([parent.message_id]
                                              if parent.message_id != thread.root else [])
                root = thread.root
                quote = _quote(parent, rng.randint(2, 6))
                greeting = rng.choice(["Hi all,", "Thanks!", "Agreed.", "Hi,", "Good points."])
                sign = sender_pair[0].split()[0]
                text = writer.paragraphs(TEAM_SENTENCES, max(120, target - len(quote) - 60),
                                         asks=int(rng.random() < 0.25))
                body = f"{greeting}\n\n{text}\n\n{sign}\n\n{quote}"
            else:
                who = rng.choice(COLLEAGUES)
                sender_pair = (who[0], _colleague_email(who[0]))
                subject = rng.choice([
                    "{project}: status update", "Question about the {artifact}",
                    "Draft {artifact} for review", "{topic} follow-up",
                    "Notes on {topic}", "Heads-up: {project} timeline",
                ])
                subject = writer.fill(subject)
                subject = subject[0].upper() + subject[1:]
                text = writer.paragraphs(TEAM_SENTENCES, target - 120,
                                         asks=int(rng.random() < 0.35))
                body = (f"Hi Alex,\n\n{text}\n\nThanks,\n{who[0].split()[0]}\n\n-- \n"
                        f"{who[0]} | {who[1]} | Northwind Labs")
                cc = rng.sample(COLLEAGUES, rng.randint(0, 3))
                people = [sender_pair, ME, *((c[0], _colleague_email(c[0])) for c in cc)]
                threads.append(_Thread(message_id, subject, people))
        elif kind == "customer":
            name, company, domain = rng.choice(CUSTOMERS)
            sender_pair = (name, f"{name.split()[0].lower()}@{domain}")
            subject = writer.fill(rng.choice([
                "{company}: question about {topic}", "Renewal and {topic}",
                "Issue with {topic} since {day}", "Feedback on {project}",
            ]).replace("{company}", company))
            text = writer.paragraphs(CUSTOMER_SENTENCES, target - 140,
                                     asks=int(rng.random() < 0.4))
            body = f"Hello Alex,\n\n{text}\n\nBest regards,\n{name}\n{company}"
        elif kind == "notification":
            label, address = rng.choice(NOTIFIERS)
            sender_pair = (label, address)
            build = rng.randint(4000, 9999)
            subject = rng.choice([
                f"[CI] Build #{build} failed on main", f"[CI] Build #{build} fixed on main",
                f"[Tracker] NW-{build} assigned to you", f"[Review] Changes requested on #{build}",
                f"Invitation: {rng.choice(TOPICS)} sync @ {rng.choice(DAYS)} "
                f"{rng.randint(9, 17)}:00",
            ])
            lines = [f"{label} notification for Alex Morgan.", "", subject, ""]
            text = writer.paragraphs(TEAM_SENTENCES, min(target, rng.randint(200, 700)))
            body = ("\n".join(lines) + text + "\n\nYou are receiving this because you are "
                    "subscribed to this project. Manage notifications in your settings.")
        elif kind == "newsletter":
            title, address = rng.choice(NEWSLETTERS)
            sender_pair = (title, address)
            subject = f"{title} #{rng.randint(100, 400)}: {rng.choice(TOPICS)} and more"
            text = writer.paragraphs(NEWS_SENTENCES, max(target, 1500) - 200)
            body = (f"View it in your browser: https://{address.split('@')[1]}/issues/latest\n\n"
                    f"{text}\n\nYou received this newsletter because you subscribed at "
                    f"{address.split('@')[1]}. Unsubscribe: https://{address.split('@')[1]}"
                    "/unsubscribe")
        elif kind == "notes":
            who = rng.choice(COLLEAGUES)
            sender_pair = (who[0], _colleague_email(who[0]))
            meeting = rng.choice(["weekly sync", "budget review", "launch go/no-go",
                                  "platform planning", "customer escalation call"])
            subject = f"Notes and action items: {meeting}"
            body = _notes_body(writer, rng, meeting)
        else:  # invoice
            vendor = rng.choice(VENDORS)
            sender_pair = (vendor[0], vendor[1])
            number = f"INV-2026-{rng.randint(1000, 9999)}"
            due_day = day + timedelta(days=rng.randint(7, 30))
            body, amount = _invoice_body(rng, vendor, number, due_day)
            subject = f"Invoice {number} from {vendor[2]}: {amount} due"

        body = _clamp(body)
        if len(body) < MIN_BODY:
            pad = writer.paragraphs(TEAM_SENTENCES, MIN_BODY - len(body))
            body = _clamp(f"{body}\n\n{pad}")
        mail = Mail(key, message_id, root, _address(*sender_pair), subject, when, body, kind,
                    references)
        mails.append(mail)
        if kind == "team":
            for thread in threads:
                if thread.root == root:
                    thread.messages.append(mail)
    return mails


def _message(mail: Mail, rng: random.Random, to: list[str], cc: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["Date"] = format_datetime(mail.date)
    msg["From"] = mail.sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = mail.subject
    msg["Message-ID"] = mail.message_id
    if mail.references:
        msg["In-Reply-To"] = mail.references[-1]
        msg["References"] = " ".join(mail.references)
    msg.set_content(mail.body)
    if mail.kind == "invoice":
        number = mail.subject.split()[1]
        pdf = b"%PDF-1.4\n% bench invoice\n" + bytes(rng.randrange(256) for _ in range(2048))
        msg.add_attachment(pdf, maintype="application", subtype="pdf",
                           filename=f"{number}.pdf")
    return msg


def write_day(root: Path, count: int = 200, seed: int = 1,
              day: date = date(2026, 11, 23)) -> list[Mail]:
    """Write the day's mail as a Maildir under `root` (plus an empty docs folder)."""
    mails = generate(count, seed, day)
    rng = random.Random(seed + 1)
    for sub in ("cur", "new", "tmp"):
        (root / "maildir" / sub).mkdir(parents=True, exist_ok=True)
    (root / "docs").mkdir(parents=True, exist_ok=True)
    me = _address(*ME)

    def pick(k: int) -> list[str]:
        return [_address(c[0], _colleague_email(c[0])) for c in rng.sample(COLLEAGUES, k)]

    for mail in mails:
        if mail.kind in ("team", "notes") and rng.random() < 0.5:
            to, cc = pick(rng.randint(1, 3)), [me]
        else:
            to, cc = [me], (pick(rng.randint(1, 2)) if rng.random() < 0.2 else [])
        flags = "S" if mail.date.hour < 12 else ""  # read in the morning, unread since
        path = root / "maildir" / "cur" / f"{mail.key}:2,{flags}"
        path.write_bytes(bytes(_message(mail, rng, to, cc)))
    return mails
