//! Webhooks: each new pending ticket asked for by a session of THIS
//! instance is POSTed to every `[[approvals.webhooks]]` URL (a shared
//! store tells every instance of every ticket, and only the one holding
//! the session posts), as pgward's JSON or as a Slack-compatible message.
//!
//! Nothing here runs on a session's path: a task follows the store's
//! changes, puts tickets on a bounded queue (full: the ticket is dropped
//! with a warning) and delivers each with the webhook's timeout per
//! attempt and its retries, with exponential backoff, a bounded number at
//! once.

use super::model::{Ticket, TicketState};
use super::store::{ApprovalStore, Change};
use crate::config::approvals::{WebhookConfig, WebhookFormat};
use crate::http_client::{Client, Request, Url};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, Semaphore};

/// Tickets waiting to be posted, at most.
const QUEUE: usize = 256;
/// Deliveries (one ticket to one URL, with its retries) at once, at most.
const IN_FLIGHT: usize = 16;
/// Ticket ids remembered as posted (a ticket changes several times).
const REMEMBERED: usize = 4096;
/// The most bytes read of a receiver's answer.
const MAX_ANSWER: usize = 64 * 1024;
/// The first retry's delay; each next one doubles, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest delay between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Statement text shown in a Slack message, at most (characters).
const SLACK_STATEMENT: usize = 600;

/// One configured webhook, ready to post.
#[derive(Debug, Clone)]
struct Hook {
    url: Url,
    shown: String,
    format: WebhookFormat,
    retries: u32,
    client: Client,
}

/// Starts posting new tickets of `instance` from `store` to `hooks`;
/// `page_url` is the approvals page (`[approvals] public_url`), linked in
/// payloads. `None` when no webhook is configured. The task ends with the
/// store (it holds it weakly).
pub fn start(
    hooks: &[WebhookConfig],
    page_url: Option<String>,
    store: &Arc<dyn ApprovalStore>,
    instance: String,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    if hooks.is_empty() {
        return Ok(None);
    }
    let tls = crate::http_client::client_config(None)?;
    let hooks = hooks
        .iter()
        .map(|h| {
            Ok(Hook {
                url: Url::parse(&h.url)?,
                shown: shown_url(&h.url),
                format: h.format,
                retries: h.retries,
                client: Client::with_tls(Arc::clone(&tls), h.timeout, MAX_ANSWER),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let changes = store.subscribe();
    tokio::spawn(deliver_all(rx, Arc::new(hooks), page_url));
    Ok(Some(tokio::spawn(watch(
        Arc::downgrade(store),
        changes,
        instance,
        tx,
    ))))
}

/// Follows the store: queues each new pending ticket of `instance` once.
async fn watch(
    store: std::sync::Weak<dyn ApprovalStore>,
    mut changes: broadcast::Receiver<Change>,
    instance: String,
    tx: mpsc::Sender<Ticket>,
) {
    let mut posted = Remembered::default();
    loop {
        let change = changes.recv().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        let ids = match change {
            Ok(Change::Ticket(id)) if !posted.contains(&id) => vec![id],
            Ok(_) => continue,
            // Changes were missed: the pending tickets say what is new.
            Err(broadcast::error::RecvError::Lagged(_)) => match store.tickets(true, QUEUE).await {
                Ok(tickets) => tickets.into_iter().map(|t| t.id).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: cannot read pending tickets");
                    continue;
                }
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for id in ids {
            if posted.contains(&id) {
                continue;
            }
            let ticket = match store.ticket(&id).await {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(ticket = id, error = %e, "webhooks: cannot read the ticket");
                    continue;
                }
            };
            if ticket.requester.instance != instance {
                continue;
            }
            // Whatever its state, it was new when first seen: never again.
            posted.insert(id.clone());
            if ticket.state != TicketState::Pending || ticket.break_glass {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(t)) = tx.try_send(ticket) {
                tracing::warn!(
                    ticket = t.id,
                    queue = QUEUE,
                    "webhooks: queue full, the ticket is not posted"
                );
            }
        }
    }
}

/// Posts queued tickets, each to every hook, a bounded number at once.
async fn deliver_all(
    mut rx: mpsc::Receiver<Ticket>,
    hooks: Arc<Vec<Hook>>,
    page_url: Option<String>,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(ticket) = rx.recv().await {
        let link = page_url.as_ref().map(|u| format!("{u}/{}", ticket.id));
        for hook in hooks.iter() {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let body = payload(hook.format, &ticket, link.as_deref());
            let (hook, id) = (hook.clone(), ticket.id.clone());
            tokio::spawn(async move {
                deliver(&hook, &body, &id).await;
                drop(permit);
            });
        }
    }
}

/// One ticket to one hook, with its retries; the outcome is logged.
async fn deliver(hook: &Hook, body: &[u8], id: &str) {
    for attempt in 0..=hook.retries {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let sent = hook
            .client
            .send(&Request {
                method: "POST",
                url: &hook.url,
                headers: &[],
                json: Some(body),
            })
            .await;
        let why = match sent {
            Ok(r) if r.is_success() => {
                tracing::info!(ticket = id, url = hook.shown, attempt, "webhook delivered");
                return;
            }
            Ok(r) => format!("the receiver answered {}", r.status),
            Err(e) => e.to_string(),
        };
        tracing::warn!(
            ticket = id,
            url = hook.shown,
            attempt,
            error = why,
            "webhook attempt failed"
        );
    }
    tracing::error!(
        ticket = id,
        url = hook.shown,
        attempts = hook.retries + 1,
        "webhook not delivered"
    );
}

/// The delay before retry `attempt` (1, 2, ...).
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// The body posted for `ticket`.
fn payload(format: WebhookFormat, ticket: &Ticket, link: Option<&str>) -> Vec<u8> {
    let value = match format {
        WebhookFormat::Json => serde_json::json!({
            "event": "ticket_pending",
            "url": link,
            "ticket": ticket,
        }),
        WebhookFormat::Slack => serde_json::json!({ "text": slack_text(ticket, link) }),
    };
    value.to_string().into_bytes()
}

/// A Slack message: who asks for what, where to decide. What the requester
/// controls is escaped, so a statement cannot forge links or mentions.
fn slack_text(t: &Ticket, link: Option<&str>) -> String {
    let r = &t.requester;
    let mut statement: String = t.statement.chars().take(SLACK_STATEMENT).collect();
    if statement.len() < t.statement.len() {
        statement.push('…');
    }
    let mut text = format!(
        "*pgward: approval needed* (ticket `{}`)\n*{}* wants to run on *{}* as *{}* (rule *{}*, {} approval{} needed):\n```{}```",
        t.id,
        slack_escape(&r.user),
        slack_escape(&r.database),
        slack_escape(&r.role),
        slack_escape(&t.rule),
        t.threshold,
        if t.threshold == 1 { "" } else { "s" },
        slack_escape(&statement).replace("```", "'''"),
    );
    if let Some(j) = &t.justification {
        text.push_str(&format!("\nJustification: {}", slack_escape(j)));
    }
    if let Some(link) = link {
        text.push_str(&format!("\n<{link}|Approve or deny>"));
    }
    text.push_str(&format!("\nCLI: `pgward approvals show {}`", t.id));
    text
}

/// Slack's three control characters in message text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A URL for logs: scheme, host and port only (a webhook's path is often
/// its secret).
fn shown_url(url: &str) -> String {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find(['/', '?']) {
        Some(i) => url[..after + i].to_owned(),
        None => url.to_owned(),
    }
}

/// Ids seen, the oldest forgotten first.
#[derive(Default)]
struct Remembered {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Remembered {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
