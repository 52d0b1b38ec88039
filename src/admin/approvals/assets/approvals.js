// The approvals page: pending tickets (or the one in the URL) with all an
// approver must see, approve / deny, grants; live over server-sent events.
"use strict";

const only = (location.pathname.match(/^\/approvals\/([0-9a-f]{1,64})$/) || [])[1];
let loadedAt = Date.now();

function field(dl, name, value) {
  if (value === null || value === undefined || value === "") return;
  dl.append(el("dt", {}, name), el("dd", {}, value));
}

function ticketCard(t) {
  const r = t.requester;
  const card = el("article", { class: "ticket " + t.state, "data-ticket": t.id });
  card.append(el("h3", {}, "Ticket " + t.id + " — " + t.state,
    t.break_glass ? el("span", { class: "flag" }, " break-glass (self-approved)") : null));
  const dl = el("dl");
  field(dl, "Identity", r.user + (r.groups.length ? " (groups: " + r.groups.join(", ") + ")" : ""));
  field(dl, "Client", r.client);
  field(dl, "Application", r.application_name);
  field(dl, "Database", r.database);
  field(dl, "Role", r.role + " on upstream " + r.upstream);
  field(dl, "Session", r.session + " on instance " + r.instance);
  field(dl, "Transaction", t.transaction);
  if (t.waiting_seconds !== null) {
    field(dl, "Waiting", el("span", { class: "waiting", "data-waiting": String(t.waiting_seconds) }, since(t.waiting_seconds)));
  }
  field(dl, "Expires", t.expires);
  field(dl, "Rule", t.rule + (t.rule_message ? ": " + t.rule_message : ""));
  field(dl, "Mode", t.mode);
  field(dl, "Justification", t.justification);
  field(dl, "Approvers", t.approvers.join(", ") + " — " + t.approvals_count + " of " + t.threshold + " approvals");
  if (t.votes.length) {
    field(dl, "Votes", t.votes.map(v => v.approver + (v.approve ? " approved" : " denied") + (v.reason ? " (" + v.reason + ")" : "")).join("; "));
  }
  field(dl, "Ended", t.end_reason);
  card.append(dl, el("pre", { class: "statement" }, t.statement));
  if (t.params.length) {
    const body = el("tbody");
    t.params.forEach((p, i) => body.append(el("tr", {},
      el("td", {}, "$" + (i + 1)), el("td", {}, p.type_name || "?"), el("td", {}, p.format),
      el("td", {}, p.value === null ? el("em", {}, "NULL") : p.value))));
    card.append(el("table", { class: "params" },
      el("thead", {}, el("tr", {}, el("th", {}, "Parameter"), el("th", {}, "Type"), el("th", {}, "Format"), el("th", {}, "Value"))), body));
  }
  if (t.may_vote) {
    const reason = el("input", { maxLength: 1000, placeholder: "reason (required to deny)", "data-reason": t.id });
    const approve = el("button", { type: "button", "data-action": "approve", "data-ticket": t.id }, "Approve");
    const deny = el("button", { type: "button", "data-action": "deny", "data-ticket": t.id }, "Deny");
    approve.addEventListener("click", () => vote(t.id, true, reason.value));
    deny.addEventListener("click", () => {
      if (!reason.value.trim()) { say("Say why you deny it.", true); reason.focus(); return; }
      vote(t.id, false, reason.value);
    });
    card.append(el("p", {}, approve, deny, reason));
  }
  return card;
}

async function vote(id, approve, reason) {
  try {
    const t = await api("POST", "/api/approvals/" + id + (approve ? "/approve" : "/deny"),
      { reason: reason.trim() || null });
    say("Ticket " + id + ": " + t.state + ".", false);
  } catch (e) {
    say("Ticket " + id + ": " + e.message, true);
  }
  refresh();
}

async function loadTickets() {
  const box = document.getElementById("tickets");
  let tickets;
  if (only) {
    document.getElementById("tickets-title").textContent = "Ticket " + only;
    tickets = [await api("GET", "/api/approvals/" + only)];
  } else {
    tickets = (await api("GET", "/api/approvals?state=pending")).tickets;
  }
  box.replaceChildren(...(tickets.length ? tickets.map(ticketCard) : [el("p", { class: "muted" }, "Nothing is waiting for approval.")]));
  loadedAt = Date.now();
}

function describeScope(s) {
  if (s.rule !== undefined) return "statements of rule " + s.rule;
  return "role " + s.role.role + " on " + s.role.database;
}

async function loadGrants() {
  const grants = (await api("GET", "/api/grants")).grants;
  const body = document.querySelector("#grants tbody");
  body.replaceChildren(...grants.map(g => {
    const revoke = el("button", { type: "button", "data-action": "revoke", "data-grant": g.id }, "Revoke");
    revoke.addEventListener("click", async () => {
      try { await api("POST", "/api/grants/" + g.id + "/revoke", {}); say("Grant " + g.id + " revoked.", false); }
      catch (e) { say("Grant " + g.id + ": " + e.message, true); }
      refresh();
    });
    const subject = g.subject.user !== undefined ? "user " + g.subject.user : "group " + g.subject.group;
    return el("tr", { "data-grant": g.id }, el("td", {}, g.id), el("td", {}, subject), el("td", {}, describeScope(g.scope)),
      el("td", {}, g.created_by), el("td", {}, g.expires), el("td", {}, g.reason || ""), el("td", {}, revoke));
  }));
}

document.getElementById("grant-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target.elements;
  const subject = { [f.subject_kind.value]: f.subject.value.trim() };
  const scope = f.scope_kind.value === "rule"
    ? { rule: f.rule.value.trim() }
    : { role: { database: f.database.value.trim(), role: f.role.value.trim() } };
  try {
    const g = await api("POST", "/api/grants", { subject, scope, duration: f.duration.value.trim(), reason: f.reason.value });
    say("Grant " + g.id + " made, until " + g.expires + ".", false);
  } catch (e) {
    say("Grant: " + e.message, true);
  }
  refresh();
});

let pending = null;
function refresh() {
  if (pending) return;
  pending = setTimeout(async () => {
    pending = null;
    try { await Promise.all([loadTickets(), loadGrants()]); }
    catch (e) { say(e.message, true); }
  }, 50);
}

// The waiting times tick between updates.
setInterval(() => {
  const extra = (Date.now() - loadedAt) / 1000;
  document.querySelectorAll("[data-waiting]").forEach(n => {
    n.textContent = since(Number(n.getAttribute("data-waiting")) + extra);
  });
}, 1000);

function live() {
  const source = new EventSource("/api/approvals/events");
  const live = document.getElementById("live");
  source.addEventListener("open", () => { live.textContent = "live"; });
  for (const kind of ["ticket", "grant", "resync"]) source.addEventListener(kind, refresh);
  source.addEventListener("error", () => { live.textContent = "reconnecting…"; });
}

api("GET", "/api/whoami").then(w => {
  document.getElementById("who").textContent = "signed in as " + w.user;
}).catch(e => say(e.message, true));
refresh();
live();
// A slow poll as well, should events be cut by a proxy.
setInterval(refresh, 15000);
