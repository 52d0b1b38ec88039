// The sessions page: live sessions from the registry, refreshed every few
// seconds; an admin may terminate one.
"use strict";

async function load() {
  let sessions;
  try {
    const r = await fetch("/sessions", { credentials: "same-origin", headers: { accept: "application/json" } });
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    sessions = await r.json();
  } catch (e) {
    say("Sessions: " + e.message, true);
    return;
  }
  const body = document.querySelector("#sessions tbody");
  body.replaceChildren(...sessions.map(s => {
    const end = el("button", { type: "button", "data-action": "terminate", "data-session": String(s.id) }, "Terminate");
    end.addEventListener("click", async () => {
      try { await api("POST", "/sessions/" + s.id + "/terminate"); say("Session " + s.id + " terminated.", false); }
      catch (e) { say("Session " + s.id + ": " + e.message, true); }
      load();
    });
    return el("tr", { "data-session": String(s.id) },
      el("td", {}, s.id), el("td", {}, s.user), el("td", {}, (s.groups || []).join(", ")),
      el("td", {}, s.client || ""), el("td", {}, s.database), el("td", {}, s.started),
      el("td", {}, s.state), el("td", {}, s.backend_pid === null ? "" : s.backend_pid), el("td", {}, end));
  }));
  if (!sessions.length) say("No live sessions.", false);
}

load();
setInterval(load, 3000);
