// Pilotlight dashboard: a little progressive enhancement over server-rendered pages.
// Everything works without this file except the live parts (feed, questions, run status,
// schedule as you type, web push). Text from the server is only ever set with textContent.
"use strict";

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

async function postJSON(url, body) {
  return fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body),
  });
}

// A moment as the server writes it (render.py `when`): in the user's time zone, not the
// browser's, "Wed 25 Nov 06:16", with the year when it is not this year's there.
function formatWhen(iso) {
  if (!iso) return "";
  const zone = document.body.dataset.timezone || "UTC";
  const parts = (d) => Object.fromEntries(new Intl.DateTimeFormat("en-GB", {
    timeZone: zone, weekday: "short", day: "2-digit", month: "short", year: "numeric",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).formatToParts(d).map((p) => [p.type, p.value]));
  const p = parts(new Date(iso));
  const year = p.year === parts(new Date()).year ? "" : ` ${p.year}`;
  return `${p.weekday} ${p.day} ${p.month}${year} ${p.hour}:${p.minute}`;
}

// --- Editor: the schedule in words as you type ---------------------------------------
function setupSchedule() {
  const out = document.getElementById("schedule-readable");
  const form = document.getElementById("editor");
  if (!out || !form) return;
  const next = document.getElementById("schedule-next");
  let timer = null;
  let seq = 0;
  const showRows = () => {
    const type = form.querySelector('input[name="trigger_type"]:checked')?.value || "cron";
    form.querySelectorAll("[data-trigger]").forEach((row) => {
      row.hidden = row.dataset.trigger !== type;
    });
    return type;
  };
  const refresh = async () => {
    const type = showRows();
    const params = new URLSearchParams({
      trigger_type: type,
      cron: form.elements.cron.value,
      timezone: form.elements.timezone.value,
      interval_minutes: form.elements.interval_minutes.value,
      gmail_query: form.elements.gmail_query?.value || "",
      drive_folder_id: form.elements.drive_folder_id?.value || "",
    });
    // An instruction's own editor: its interval counts from its creation, as it will run.
    if (out.dataset.instruction) params.set("instruction_id", out.dataset.instruction);
    const mine = ++seq;
    try {
      const response = await fetch(`${out.dataset.endpoint}?${params}`, { credentials: "same-origin" });
      const data = await response.json();
      if (mine !== seq) return; // an older answer arriving late
      if (response.ok) {
        out.textContent = data.schedule;
        out.classList.remove("problem");
        next.textContent = data.next.length ? `Next: ${data.next.join(" · ")}` : "";
      } else {
        out.textContent = data.detail || "Not a valid schedule";
        out.classList.add("problem");
        next.textContent = "";
      }
    } catch (err) {
      if (mine === seq) next.textContent = "Could not check the schedule (offline?)";
    }
  };
  const soon = () => { clearTimeout(timer); timer = setTimeout(refresh, 150); };
  form.addEventListener("input", (e) => {
    if (["cron", "timezone", "interval_minutes", "trigger_type", "gmail_query",
         "drive_folder_id"].includes(e.target.name)) soon();
  });
  form.addEventListener("change", (e) => { if (e.target.name === "trigger_type") soon(); });
  refresh();
}

// --- Live events: one stream per page, over the app's SSE endpoint -------------------
function openStream(handlers, onState) {
  const source = new EventSource("/api/v1/events", { withCredentials: true });
  source.onopen = () => onState && onState("Live");
  // The browser reconnects by itself, unless the server refused the stream (signed out:
  // the stream ends and the reconnect gets 401); then it gives up, and so do we.
  source.onerror = () => onState && onState(
    source.readyState === EventSource.CLOSED ? "Signed out: reload the page" : "Reconnecting…");
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
  }
  window.addEventListener("pagehide", () => source.close());
  return source;
}

function hiddenInput(name, value) {
  const input = document.createElement("input");
  input.type = "hidden";
  input.name = name;
  input.value = value;
  return input;
}

// As feed.html renders an item: unread ones are marked and have a "Mark read" form.
function feedItem(n, { unreadOnly = false } = {}) {
  const li = document.createElement("li");
  const unread = !n.read_at;
  li.className = `card feed-item kind-${n.kind}${unread ? " unread" : ""} fresh`;
  if (n.id) li.id = `n-${n.id}`;
  const meta = document.createElement("p");
  meta.className = "muted";
  if (unread) {
    const mark = document.createElement("span");
    mark.className = "badge unread-mark";
    mark.textContent = "unread";
    meta.append(mark, " ");
  }
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = n.kind;
  const time = document.createElement("time");
  time.dateTime = n.created_at || "";
  time.textContent = formatWhen(n.created_at);
  meta.append(badge, " ", time);
  const h = document.createElement("h2");
  const questionId = n.data && n.data.question_id;
  const href = n.kind === "question" && questionId ? `/questions/${encodeURIComponent(questionId)}`
    : n.run_id ? `/runs/${encodeURIComponent(n.run_id)}` : null;
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = n.title;
    h.append(a);
  } else {
    h.textContent = n.title;
  }
  const body = document.createElement("p");
  body.className = "body";
  body.textContent = n.body || "";
  li.append(meta, h, body);
  if (unread && n.id) {
    const form = document.createElement("form");
    form.method = "post";
    form.action = `/feed/${encodeURIComponent(n.id)}/read`;
    form.className = "inline";
    form.append(hiddenInput("csrf_token", csrfToken()));
    if (unreadOnly) form.append(hiddenInput("unread", "1"));
    const button = document.createElement("button");
    button.type = "submit";
    button.className = "link";
    button.textContent = "Mark read";
    button.setAttribute("aria-label", `Mark read: ${n.title}`);
    form.append(button);
    li.append(form);
  }
  return li;
}

function setupFeed() {
  const list = document.getElementById("feed");
  // An older page of the feed is not live: newer items do not belong on it.
  if (!list || !list.dataset.stream) return;
  const state = document.getElementById("feed-state");
  const empty = document.getElementById("feed-empty");
  const unreadOnly = list.dataset.unread === "1";
  const add = (n) => {
    if (unreadOnly && n.read_at) return;
    list.prepend(feedItem(n, { unreadOnly }));
    if (empty) empty.hidden = true;
  };
  openStream({ notification: add, question: add }, (text) => { state.textContent = text; });
}

// --- Questions: a question asked while the list is open arrives on it ------------------
// As questions.html renders an open one: the instruction's title and when it was asked,
// the question, its choices as buttons and a field for an answer in words.
function questionCard(q, title) {
  const section = document.createElement("section");
  section.className = "card question fresh";
  section.setAttribute("aria-labelledby", `q-${q.id}`);
  section.dataset.questionId = q.id;
  const meta = document.createElement("p");
  meta.className = "muted";
  meta.textContent = `${title} · asked ${formatWhen(q.created_at)}`
    + (q.expires_at ? ` · open until ${formatWhen(q.expires_at)}` : "");
  const h = document.createElement("h2");
  h.id = `q-${q.id}`;
  h.textContent = q.text;
  section.append(meta, h);
  const action = `/questions/${encodeURIComponent(q.id)}/answer`;
  const answerForm = (className) => {
    const form = document.createElement("form");
    form.method = "post";
    form.action = action;
    form.className = className;
    form.append(hiddenInput("csrf_token", csrfToken()));
    return form;
  };
  const choices = q.choices || [];
  if (choices.length) {
    const form = answerForm("choices-form");
    const group = document.createElement("div");
    group.className = "actions";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Choices");
    for (const choice of choices) {
      const button = document.createElement("button");
      button.type = "submit";
      button.name = "answer";
      button.value = choice;
      button.textContent = choice;
      group.append(button);
    }
    form.append(group);
    section.append(form);
  }
  const form = answerForm("free-answer");
  const label = document.createElement("label");
  label.htmlFor = `answer-${q.id}`;
  label.textContent = choices.length ? "Or answer in your own words" : "Your answer";
  const row = document.createElement("div");
  row.className = "inline";
  const input = document.createElement("input");
  input.id = `answer-${q.id}`;
  input.name = "answer";
  input.maxLength = 2000;
  input.required = true;
  const send = document.createElement("button");
  send.type = "submit";
  send.textContent = "Send answer";
  row.append(input, send);
  form.append(label, row);
  section.append(form);
  return section;
}

function setupQuestions() {
  const list = document.getElementById("questions");
  if (!list || !list.dataset.stream) return;  // one question's own page is not live
  const state = document.getElementById("questions-state");
  const empty = document.getElementById("questions-empty");
  const titles = new Map();
  const titleOf = async (id) => {
    if (!titles.has(id)) {
      const response = await fetch(`/api/v1/instructions/${encodeURIComponent(id)}`,
        { credentials: "same-origin" });
      titles.set(id, response.ok ? (await response.json()).title : "Deleted instruction");
    }
    return titles.get(id);
  };
  // The open questions as the API lists them (oldest first): those not on the page yet
  // are added after the others, as the page orders them. Read on each question event and
  // once the stream is open (one asked between rendering and then is not missed); one
  // reading at a time, so that none is added twice.
  let reading = Promise.resolve();
  const sync = () => {
    reading = reading.then(async () => {
      const response = await fetch("/api/v1/questions", { credentials: "same-origin" });
      if (!response.ok) return;
      const shown = new Set([...list.querySelectorAll("[data-question-id]")]
        .map((e) => e.dataset.questionId));
      for (const q of await response.json()) {
        if (q.status !== "open" || shown.has(q.id)) continue;
        list.append(questionCard(q, await titleOf(q.instruction_id)));
      }
      if (empty) empty.hidden = list.querySelector("[data-question-id]") !== null;
    }).catch(() => {});  // the next event or reconnect reads again
  };
  openStream({ question: sync }, (text) => {
    state.textContent = text;
    if (text === "Live") sync();
  });
}

// --- A run's page: its status live; the finished run's digest and trace on arrival ----
function setupRun() {
  const holder = document.querySelector("[data-run-id]");
  if (!holder) return;
  const badge = document.getElementById("run-status");
  const runId = holder.dataset.runId;
  // Statuses the server renders more for (a digest, a trace, a question): reload to show it.
  const finals = ["succeeded", "skipped", "failed", "cancelled", "waiting_for_user"];
  let reloading = false;
  const show = (status) => {
    if (reloading) return;
    badge.textContent = status.replace(/_/g, " ");
    badge.className = `badge status-${status}`;
    if (finals.includes(status) && status !== holder.dataset.status) {
      reloading = true; // show the digest, trace and any question, as rendered by the server
      window.location.reload();
    }
  };
  // The stream starts at "now": read the run once it is open, so that a change made
  // between this page's rendering and the stream's start is not missed.
  const sync = async () => {
    const response = await fetch(`/api/v1/runs/${encodeURIComponent(runId)}`, { credentials: "same-origin" });
    if (response.ok) show((await response.json()).status);
  };
  openStream({ run: (r) => { if (r.id === runId) show(r.status); } }, (state) => {
    if (state === "Live") sync();
  });
}

// --- Web push: subscribe this browser through the push subscriptions API --------------
function urlBase64ToBytes(base64) {
  const padded = (base64 + "=".repeat((4 - (base64.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function setupPush() {
  const button = document.getElementById("push-enable");
  if (!button) return;
  const state = document.getElementById("push-state");
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    button.disabled = true;
    state.textContent = "This browser does not support web push.";
    return;
  }
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const permission = await Notification.requestPermission();
      if (permission !== "granted") throw new Error("notifications were not allowed");
      const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
      await navigator.serviceWorker.ready;
      const keyResponse = await fetch(button.dataset.keyUrl, { credentials: "same-origin" });
      if (!keyResponse.ok) throw new Error((await keyResponse.json()).detail);
      const { public_key: key } = await keyResponse.json();
      const subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true, applicationServerKey: urlBase64ToBytes(key),
      });
      const saved = await postJSON(button.dataset.subscribeUrl, subscription.toJSON());
      if (!saved.ok) throw new Error((await saved.json()).detail);
      state.textContent = "Notifications are on for this browser.";
    } catch (err) {
      state.textContent = `Could not turn notifications on: ${err.message || err}`;
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupSchedule();
  setupFeed();
  setupQuestions();
  setupRun();
  setupPush();
});
