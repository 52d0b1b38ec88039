//! Token requests on the admin listener (`pgward token request`): an
//! identity in a `[[tokens.requests]]` requester group asks for a token,
//! approvers decide the ticket as any other, and the requester collects the
//! token once.
//!
//! - `POST /api/tokens/requests` `{subject, database, ttl, reason}`: 201
//!   with the ticket.
//! - `GET /api/tokens/requests/{id}`: the requester's ticket.
//! - `POST /api/tokens/requests/{id}/collect`: once approved, the token
//!   (`{token, jti, expires}`), exactly once.

use super::api::ticket_view;
use super::auth::{authenticate, same_origin, Approver, CSRF_HEADER};
use super::desk::{reason, ApiError};
use crate::admin::AdminState;
use crate::approvals::model::{now_ms, TokenAsk};
use crate::auth::token::mint::{mint, MintRequest};
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// The token request routes, with their own login check (requesters are
/// not approvers).
pub fn routes(state: &AdminState) -> Router<AdminState> {
    Router::new()
        .route("/api/tokens/requests", post(request))
        .route("/api/tokens/requests/{id}", get(show))
        .route("/api/tokens/requests/{id}/collect", post(collect))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_requester,
        ))
}

/// Lets in identities of a `[[tokens.requests]]` requester group; POSTs
/// must also be same-origin (browsers send basic credentials by themselves).
async fn require_requester(
    State(state): State<AdminState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(identity) = authenticate(&state.gw, req.headers()).await else {
        return crate::admin::unauthorized();
    };
    let tokens = state.gw.tokens.load_full();
    let requester = tokens
        .config
        .requests
        .iter()
        .any(|p| identity.groups.iter().any(|g| p.requesters.contains(g)));
    if !requester {
        return super::api::error(
            StatusCode::FORBIDDEN,
            format!(
                "{} is in no [[tokens.requests]] requester group",
                identity.user
            ),
        );
    }
    if req.method() != Method::GET && !same_origin(req.headers()) {
        return super::api::error(
            StatusCode::FORBIDDEN,
            format!("a cross-site request, or one without the {CSRF_HEADER} header"),
        );
    }
    req.extensions_mut().insert(Approver {
        identity,
        admin: false,
    });
    next.run(req).await.into_response()
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    subject: String,
    database: String,
    ttl: String,
    reason: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// `POST /api/tokens/requests`.
async fn request(
    State(state): State<AdminState>,
    Extension(who): Extension<Approver>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b: RequestBody =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("bad JSON body: {e}")))?;
    let gw = &state.gw;
    let tokens = gw.tokens.load_full();
    let policy = tokens
        .config
        .requests
        .iter()
        .find(|p| p.allows(&b.subject, &who.identity.groups))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "no [[tokens.requests]] entry lets {} ask for a token for {:?}",
                    who.identity.user, b.subject
                ),
            )
        })?;
    if !tokens.config.is_token_user(&b.subject) {
        return Err(bad(format!("{:?} does not match tokens.users", b.subject)));
    }
    // Named exactly (a token names its databases; the catch-all is not one).
    let upstream = gw
        .config
        .databases
        .get(&b.database)
        .ok_or_else(|| bad(format!("database {:?} is not in [databases]", b.database)))?
        .clone();
    let ttl = crate::config::units::parse_duration(&b.ttl).map_err(|e| bad(format!("ttl: {e}")))?;
    if ttl.is_zero() || ttl > policy.max_ttl {
        return Err(bad(format!(
            "ttl must be above 0 and at most {}s",
            policy.max_ttl.as_secs()
        )));
    }
    let why = reason(b.reason.as_deref(), true)?;
    let ask = TokenAsk {
        subject: b.subject,
        groups: policy.groups.clone(),
        database: b.database,
        ttl_secs: ttl.as_secs().max(1),
    };
    let ticket = gw
        .approvals()
        .request_token(&who.identity, None, &upstream, policy, ask, why)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ticket_view(gw, &ticket, &who, now_ms())),
    )
        .into_response())
}

/// `GET /api/tokens/requests/{id}`.
async fn show(
    State(state): State<AdminState>,
    Extension(who): Extension<Approver>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = state
        .gw
        .approvals()
        .token_request(&who.identity, &id)
        .await?;
    Ok(Json(ticket_view(&state.gw, &t, &who, now_ms())))
}

/// `POST /api/tokens/requests/{id}/collect`.
async fn collect(
    State(state): State<AdminState>,
    Extension(who): Extension<Approver>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let gw = &state.gw;
    let t = gw.approvals().token_request(&who.identity, &id).await?;
    let Some(ask) = t.token.clone() else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not a token request"));
    };
    // Minted first: a mint that fails (no signing key here) leaves the
    // approval unused; the token leaves this process only once the
    // approval is spent.
    let minted = mint(
        &gw.config,
        &MintRequest {
            user: ask.subject.clone(),
            groups: ask.groups.clone(),
            databases: vec![ask.database.clone()],
            ttl: std::time::Duration::from_secs(ask.ttl_secs),
            reason: Some(format!("token request {} by {}", t.id, t.requester.user)),
        },
        std::time::SystemTime::now(),
    )
    .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let issued = format!("token {} issued to {}", minted.jti, who.identity.user);
    gw.approvals()
        .collect_token(&who.identity, &id, &issued)
        .await?;
    tracing::info!(
        ticket = %id,
        requester = %who.identity.user,
        subject = ?ask.subject,
        jti = %minted.jti,
        "token request collected"
    );
    Ok(Json(json!({
        "token": minted.token,
        "jti": minted.jti,
        "expires": crate::auth::token::utc(minted.expires),
    })))
}
