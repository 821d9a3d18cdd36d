// Pilotlight service worker: shows web push notifications and answers a question from
// one of its action buttons, through the app (with the session's CSRF token).
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (err) {
    data = { title: "Pilotlight", body: event.data ? event.data.text() : "" };
  }
  const actions = (data.actions || []).slice(0, 4);
  event.waitUntil(self.registration.showNotification(data.title || "Pilotlight", {
    body: data.body || "",
    tag: data.notification_id,
    data: { url: data.url || "/", question_id: data.question_id || null, actions },
    actions,
    requireInteraction: data.kind === "question",
  }));
});

// The answer is the clicked action's index into the question's choices: an action's title
// may be cut short to fit a button, and the app answers with the whole choice.
async function answer(questionId, choice) {
  const tokenResponse = await fetch("/session/csrf", { credentials: "same-origin" });
  if (!tokenResponse.ok) return false;
  const { csrf_token: token } = await tokenResponse.json();
  const response = await fetch(`/api/v1/questions/${encodeURIComponent(questionId)}/answer`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
    body: JSON.stringify({ choice }),
  });
  return response.ok;
}

self.addEventListener("notificationclick", (event) => {
  const note = event.notification;
  const data = note.data || {};
  note.close();
  const chosen = /^choice:(\d+)$/.exec(event.action || "");
  event.waitUntil((async () => {
    if (chosen && data.question_id && (await answer(data.question_id, Number(chosen[1])))) {
      return; // answered from the notification: the run resumes, nothing to open
    }
    const url = new URL(data.url || "/", self.location.origin).href;
    const open = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of open) {
      if (client.url === url && "focus" in client) return client.focus();
    }
    return self.clients.openWindow(url);
  })());
});
