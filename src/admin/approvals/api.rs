//! The approvals JSON API (docs/approvals-api.yaml): tickets, votes,
//! grants. Every answer is JSON; a refusal is `{"error": "..."}` with a
//! status that says which kind (400 bad input, 403 not yours to decide,
//! 404 unknown, 409 decided or voted already, 503 store unavailable).

use super::auth::Approver;
use super::desk::{reason, ApiError};
use crate::admin::AdminState;
use crate::approvals::model::{now_ms, Grant, GrantScope, GrantSubject, Ticket, TicketState};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

/// The most tickets or grants one listing returns.
pub const MAX_LIST: usize = 500;

/// A JSON error answer.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

/// A ticket as approvers see it: the record, plus how long it has waited
/// (pending ones; `null` once it ended),
/// its approvals so far, whether the caller may vote, and its page.
pub fn ticket_view(gw: &crate::gateway::Gateway, t: &Ticket, who: &Approver, now: u64) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    let may_vote = t.state == TicketState::Pending
        && now < t.expires_at
        && t.requester.user != who.identity.user
        && who.in_any(&t.approvers)
        && !t.votes.iter().any(|v| v.approver == who.identity.user);
    if let Value::Object(map) = &mut v {
        // Only a pending ticket is still waiting.
        let waiting =
            (t.state == TicketState::Pending).then(|| now.saturating_sub(t.created_at) / 1000);
        map.insert("waiting_seconds".into(), json!(waiting));
        map.insert("approvals_count".into(), json!(t.approvals()));
        map.insert("created".into(), json!(utc_ms(t.created_at)));
        map.insert("expires".into(), json!(utc_ms(t.expires_at)));
        map.insert("may_vote".into(), json!(may_vote));
        map.insert("page".into(), json!(page_link(gw, &t.id)));
    }
    v
}

/// A grant with its times in RFC 3339 and whether it is in force.
pub fn grant_view(g: &Grant, now: u64) -> Value {
    let mut v = serde_json::to_value(g).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("active".into(), json!(g.active(now)));
        map.insert("created".into(), json!(utc_ms(g.created_at)));
        map.insert("expires".into(), json!(utc_ms(g.expires_at)));
    }
    v
}

fn utc_ms(ms: u64) -> String {
    crate::auth::token::utc(i64::try_from(ms / 1000).unwrap_or(i64::MAX))
}

/// The ticket's page, under `[approvals] public_url` when it is known.
fn page_link(gw: &crate::gateway::Gateway, id: &str) -> String {
    gw.approvals()
        .ticket_url(id)
        .unwrap_or_else(|| format!("/approvals/{id}"))
}

/// `?state=...&limit=...` of a listing: only the `pending` tickets or
/// `active` grants (the default), or `all`; at most `limit` (default and
/// maximum [`MAX_LIST`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Listing {
    /// Only pending tickets, or active grants.
    pub only: bool,
    /// At most this many.
    pub limit: usize,
}

impl Listing {
    /// Parses a query string where `word` (`pending` or `active`) is the
    /// default state. Names and values are plain words: no
    /// percent-decoding is needed or done.
    pub fn parse(query: Option<&str>, word: &str) -> Result<Self, ApiError> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
        let mut listing = Self {
            only: true,
            limit: MAX_LIST,
        };
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "state" if value == word => listing.only = true,
                "state" if value == "all" => listing.only = false,
                "state" => {
                    return Err(bad(format!(
                        "state {:?} is not one of {word}, all",
                        shown(value)
                    )))
                }
                "limit" => {
                    let n: usize = value
                        .parse()
                        .map_err(|_| bad("limit is not a number".into()))?;
                    listing.limit = n.min(MAX_LIST);
                }
                other => return Err(bad(format!("unknown query parameter {:?}", shown(other)))),
            }
        }
        Ok(listing)
    }
}

/// What a caller sent, shortened for an error message.
fn shown(s: &str) -> String {
    s.chars().take(40).collect()
}

/// `GET /api/approvals`.
pub async fn list_tickets(
    State(state): State<AdminState>,
    Extension(who): Extension<Approver>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let Listing {
        only: pending,
        limit,
    } = Listing::parse(query.as_deref(), "pending")?;
    let now = now_ms();
    let tickets = state.gw.approvals().tickets(pending, limit).await?;
    let views: Vec<Value> = tickets
        .iter()
        .filter(|t| !pending || (t.state == TicketState::Pending && now < t.expires_at))
        .map(|t| ticket_view(&state.gw, t, &who, now))
        .collect();
    Ok(Json(json!({ "tickets": views })))
}

/// `GET /api/approvals/{id}`.
pub async fn show_ticket(
    State(state): State<AdminState>,
    Extension(who): Extension<Approver>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.gw.approvals().ticket(&id).await? {
        Some(t) => Ok(Json(ticket_view(&state.gw, &t, &who, now_ms()))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no ticket {id}"),
        )),
    }
}

/// A vote's or revocation's body: `{"reason": "..."}`, optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why.
    pub reason: Option<String>,
}

/// Parses a JSON body; an empty body is `T::default()`.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

/// `POST /api/approvals/{id}/approve`.
pub async fn approve(
    state: State<AdminState>,
    who: Extension<Approver>,
    id: Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    vote(state, who, id, bytes, true).await
}

/// `POST /api/approvals/{id}/deny` (a reason is required).
pub async fn deny(
    state: State<AdminState>,
    who: Extension<Approver>,
    id: Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    vote(state, who, id, bytes, false).await
}

async fn vote(
    State(state): State<AdminState>,
    Extension(who): Extension<Approver>,
    Path(id): Path<String>,
    bytes: Bytes,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    let b: ReasonBody = body(&bytes)?;
    let why = reason(b.reason.as_deref(), !approve)?;
    let t = state
        .gw
        .approvals()
        .vote(&id, &who.identity, approve, why)
        .await?;
    Ok(Json(ticket_view(&state.gw, &t, &who, now_ms())))
}

/// `GET /api/grants`.
pub async fn list_grants(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let Listing {
        only: active,
        limit,
    } = Listing::parse(query.as_deref(), "active")?;
    let grants = state.gw.approvals().grants(active, limit).await?;
    let views: Vec<Value> = grants.iter().map(|g| grant_view(g, now)).collect();
    Ok(Json(json!({ "grants": views })))
}

/// `POST /api/grants`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// `{"user": "name"}` or `{"group": "name"}`.
    pub subject: GrantSubject,
    /// `{"rule": "name"}` or `{"role": {"database": "...", "role": "..."}}`.
    pub scope: GrantScope,
    /// How long, as in the config (`"30m"`, `"2h"`).
    pub duration: String,
    /// Why.
    pub reason: Option<String>,
}

impl Default for GrantBody {
    fn default() -> Self {
        Self {
            subject: GrantSubject::User(String::new()),
            scope: GrantScope::Rule(String::new()),
            duration: String::new(),
            reason: None,
        }
    }
}

/// `POST /api/grants`.
pub async fn create_grant(
    State(state): State<AdminState>,
    Extension(who): Extension<Approver>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b: GrantBody = body(&bytes)?;
    let duration = crate::config::units::parse_duration(&b.duration)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("duration: {e}")))?;
    let why = reason(b.reason.as_deref(), true)?;
    let g = super::desk::create_grant(&state.gw, &who, b.subject, b.scope, duration, why).await?;
    Ok((StatusCode::CREATED, Json(grant_view(&g, now_ms()))).into_response())
}

/// `POST /api/grants/{id}/revoke`.
pub async fn revoke_grant(
    State(state): State<AdminState>,
    Extension(who): Extension<Approver>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: ReasonBody = body(&bytes)?;
    let why = reason(b.reason.as_deref(), false)?;
    let g = super::desk::revoke_grant(&state.gw, &who, &id, why).await?;
    Ok(Json(grant_view(&g, now_ms())))
}

/// `GET /api/whoami`: the caller, for the page's header and the CLI.
pub async fn whoami(Extension(who): Extension<Approver>) -> Json<Value> {
    Json(json!({
        "user": who.identity.user,
        "groups": who.identity.groups,
        "admin": who.admin,
    }))
}

#[cfg(test)]
mod tests {
    use super::Listing;

    #[test]
    fn listings() {
        let parse = |q: Option<&str>| Listing::parse(q, "pending").map_err(|e| e.status.as_u16());
        assert_eq!(
            parse(None),
            Ok(Listing {
                only: true,
                limit: 500
            })
        );
        assert_eq!(
            parse(Some("state=all&limit=3")),
            Ok(Listing {
                only: false,
                limit: 3
            })
        );
        assert_eq!(parse(Some("limit=99999")).map(|l| l.limit), Ok(500));
        for bad in ["state=active", "limit=-1", "limit=x", "bogus=1", "state"] {
            assert_eq!(parse(Some(bad)), Err(400), "{bad}");
        }
    }
}
