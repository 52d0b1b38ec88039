//! `GET /api/approvals/events`: changes as server-sent events, for the
//! page to update live. `ticket` carries the ticket as the API shows it,
//! `grant` the grant's id, `resync` says changes were missed (re-read
//! everything).

use super::api::ticket_view;
use super::auth::Approver;
use crate::admin::AdminState;
use crate::approvals::model::now_ms;
use crate::approvals::store::Change;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The stream.
pub async fn events(
    State(state): State<AdminState>,
    Extension(who): Extension<Approver>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let changes = state.gw.approvals().subscribe();
    let hello = Event::default().event("resync").data("{}");
    let stream = futures::stream::unfold(
        (changes, state, who, Some(hello)),
        |(mut changes, state, who, first)| async move {
            if let Some(first) = first {
                return Some((Ok(first), (changes, state, who, None)));
            }
            let event = loop {
                break match changes.recv().await {
                    Ok(Change::Ticket(id)) => match state.gw.approvals().ticket(&id).await {
                        Ok(Some(t)) => Event::default()
                            .event("ticket")
                            .data(ticket_view(&state.gw, &t, &who, now_ms()).to_string()),
                        _ => Event::default()
                            .event("ticket")
                            .data(serde_json::json!({ "id": id }).to_string()),
                    },
                    Ok(Change::Grant(id)) => Event::default()
                        .event("grant")
                        .data(serde_json::json!({ "id": id }).to_string()),
                    // Not an approver's business: the token side applies it.
                    Ok(Change::Revocation(_)) => continue,
                    Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
                    Err(RecvError::Closed) => return None,
                };
            };
            Some((Ok(event), (changes, state, who, None)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
