// The sessions page: live sessions from the registry, refreshed every few
// seconds (an admin may terminate one); past sessions from the recordings,
// each replayed as a transcript on request.
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

async function replay(r) {
  try {
    const t = await api("GET", "/recordings/" + r.session + "/" + r.started_ms);
    document.getElementById("replay-title").textContent =
      "Session " + r.session + " of " + (r.user || "?") + ", started " + (r.started || r.started_ms);
    document.getElementById("transcript").textContent = t.transcript;
    document.getElementById("replay").hidden = false;
  } catch (e) {
    say("Replay of session " + r.session + ": " + e.message, true);
  }
}

async function past() {
  let list;
  try { list = (await api("GET", "/recordings")).recordings || []; }
  catch (e) { say("Recordings: " + e.message, true); return; }
  const body = document.querySelector("#recordings tbody");
  body.replaceChildren(...list.map(r => {
    const key = r.session + "-" + r.started_ms;
    const show = el("button", { type: "button", "data-action": "replay", "data-recording": key }, "Replay");
    show.addEventListener("click", () => replay(r));
    return el("tr", { "data-recording": key },
      el("td", {}, r.session), el("td", {}, r.user || ""), el("td", {}, r.database || ""),
      el("td", {}, r.client || ""), el("td", {}, r.started || ""), el("td", {}, r.bytes), el("td", {}, show));
  }));
}

load();
past();
setInterval(load, 3000);
setInterval(past, 10000);
