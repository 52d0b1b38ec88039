//! What an approver uses on the admin listener: the approvals JSON API
//! (docs/approvals-api.yaml), its live event stream, and the web page.
//!
//! Everyone here logs in as a pgward identity (HTTP basic against its
//! SCRAM verifier, or a bearer token pgward minted) in an approver or
//! admin group; what each may decide is checked per ticket and grant.
//!
//! - `auth`: who is asking; cross-site request refusal.
//! - `desk`: grants and revocations through the service; refusals as
//!   HTTP statuses.
//! - `api`: the JSON endpoints.
//! - `events`: server-sent events of changes.
//! - `page`: the embedded HTML, CSS and JS.

pub mod api;
pub mod auth;
pub mod desk;
mod events;
mod page;
mod tokens;

use crate::admin::AdminState;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

/// The largest request body accepted (a reason, a grant).
const MAX_BODY: usize = 64 * 1024;

/// The approvals routes, authenticated and authorised by themselves (the
/// admin router merges them outside its admin-only layer).
pub fn routes(state: &AdminState) -> Router<AdminState> {
    Router::new()
        .route("/approvals", get(page::approvals))
        .route("/approvals/{id}", get(page::approvals))
        .route("/approvals/assets/{name}", get(page::assets))
        .route("/api/whoami", get(api::whoami))
        .route("/api/approvals", get(api::list_tickets))
        .route("/api/approvals/events", get(events::events))
        .route("/api/approvals/{id}", get(api::show_ticket))
        .route("/api/approvals/{id}/approve", post(api::approve))
        .route("/api/approvals/{id}/deny", post(api::deny))
        .route("/api/grants", get(api::list_grants).post(api::create_grant))
        .route("/api/grants/{id}/revoke", post(api::revoke_grant))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_approver,
        ))
        .merge(tokens::routes(state))
}

/// The sessions page (admins only: served with the admin routes).
pub fn admin_routes() -> Router<AdminState> {
    Router::new().route("/sessions.html", get(page::sessions))
}

#[cfg(test)]
mod tests {
    /// Every JSON route is described in docs/approvals-api.yaml.
    #[test]
    fn the_openapi_description_names_every_route() {
        let doc = include_str!("../../../docs/approvals-api.yaml");
        for path in [
            "/api/whoami",
            "/api/approvals",
            "/api/approvals/events",
            "/api/approvals/{id}",
            "/api/approvals/{id}/approve",
            "/api/approvals/{id}/deny",
            "/api/grants",
            "/api/grants/{id}/revoke",
            "/api/tokens/requests",
            "/api/tokens/requests/{id}",
            "/api/tokens/requests/{id}/collect",
        ] {
            assert!(doc.contains(&format!("\n  {path}:\n")), "{path}");
        }
    }
}
