//! The admin HTTP listener (`[admin]`, localhost by default): Prometheus
//! metrics, health and readiness, the live sessions (list, terminate) and
//! reload, as JSON.
//!
//! `/health` and `/ready` answer anyone (they say nothing but "up");
//! everything else needs HTTP basic authentication as a pgward identity in
//! one of `[admin] groups`, checked against its SCRAM verifier. Other
//! features add their routes with [`router_with`]: they are authenticated
//! the same way.
//!
//! The approvals' routes authenticate and authorise by themselves (their
//! users are approvers, not admins).
//! A state-changing request a browser marks as cross-site is refused
//! everywhere (the pages make browsers send credentials by themselves).
//!
//! - `metrics`: the counters and their text format.
//! - `console`: the same over the PostgreSQL protocol (database `pgward`).
//! - `approvals`: the approvals API, its event stream and the web pages.

pub mod approvals;
pub mod console;
pub mod metrics;
mod recordings;
mod tls;

use crate::gateway::Gateway;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use metrics::Metrics;

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// The config file reloads read (none: reload is refused).
    pub config_path: Option<PathBuf>,
    /// False once shutdown began (`/ready` then answers 503).
    pub ready: Arc<AtomicBool>,
}

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    router_with(state, Router::new())
}

/// The admin API's routes plus `extra` (authenticated like the rest), and
/// the approvals' routes (which authenticate approvers themselves).
pub fn router_with(state: AdminState, extra: Router<AdminState>) -> Router {
    let approvals = approvals::routes(&state);
    let authenticated = Router::new()
        .merge(approvals::admin_routes())
        .merge(recordings::routes())
        .route("/metrics", get(metrics_text))
        .route("/sessions", get(sessions))
        .route("/sessions/{id}/terminate", post(terminate))
        .route("/reload", post(reload))
        .route("/tokens/{jti}/revoke", post(revoke_token))
        .merge(extra)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .merge(authenticated)
        .merge(approvals)
        .with_state(state)
}

/// Binds `listen` (port 0: any free port) and serves the admin API there
/// in a task, over TLS when `[admin]` has a certificate; returns the
/// address bound.
pub async fn start(
    state: AdminState,
    listen: std::net::SocketAddr,
    extra: Router<AdminState>,
) -> std::io::Result<std::net::SocketAddr> {
    let tls = match state.gw.config.admin.as_ref().and_then(|a| a.tls.as_ref()) {
        Some(files) => Some(
            crate::tls::server_config(files)
                .map_err(std::io::Error::other)?
                .0,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router_with(state, extra);
    match tls {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config)?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "admin API stopped");
                }
            });
        }
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "admin API stopped");
                }
            });
        }
    }
    Ok(addr)
}

/// Serves `router` on `listener` until `stop` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

/// The identity an admin request authenticated as.
#[derive(Debug, Clone)]
pub struct AdminIdentity(pub String);

pub(crate) fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"pgward\"")],
        "authentication required\n",
    )
        .into_response()
}

/// `user:password` from an `Authorization: Basic` header.
pub(crate) fn basic_credentials(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Whether `user` / `password` is an admin identity.
pub async fn is_admin(gw: &Gateway, user: &str, password: String) -> bool {
    let Some(admin) = &gw.config.admin else {
        return false;
    };
    password_identity(gw, user, password)
        .await
        .is_some_and(|id| id.groups.iter().any(|g| admin.groups.contains(g)))
}

/// The configured identity `user` when `password` matches its SCRAM
/// verifier. Unknown users are checked against a fixed verifier, so timing
/// does not tell who exists.
pub(crate) async fn password_identity(
    gw: &Gateway,
    user: &str,
    password: String,
) -> Option<crate::auth::identity::Identity> {
    static DECOY: std::sync::OnceLock<crate::auth::verifier::ScramVerifier> =
        std::sync::OnceLock::new();
    let identity = gw.config.users.get(user);
    let verifier = match identity {
        Some(u) => u.verifier.clone(),
        None => DECOY
            .get_or_init(|| {
                let text = crate::auth::verifier::ScramVerifier::generate("pgward-decoy");
                crate::auth::verifier::ScramVerifier::parse(&text).expect("a fresh verifier")
            })
            .clone(),
    };
    // PBKDF2 runs on the blocking pool, never on the async workers.
    let matched = tokio::task::spawn_blocking(move || verifier.matches_password(&password))
        .await
        .unwrap_or(false);
    let u = identity.filter(|_| matched)?;
    Some(crate::auth::identity::Identity::new(
        u.name.clone(),
        u.groups.clone(),
    ))
}

async fn require_admin(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    let Some((user, password)) = basic_credentials(req.headers()) else {
        return unauthorized();
    };
    if !is_admin(&state.gw, &user, password).await {
        tracing::warn!(user, path = %req.uri().path(), "admin API: authentication failed");
        return unauthorized();
    }
    if req.method() != axum::http::Method::GET && approvals::auth::cross_site(req.headers()) {
        tracing::warn!(user, path = %req.uri().path(), "admin API: cross-site request refused");
        return (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response();
    }
    req.extensions_mut().insert(AdminIdentity(user));
    next.run(req).await
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics_text(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&state.gw),
    )
        .into_response()
}

/// The live sessions as JSON values (also used by the SHOW console).
pub fn session_list(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.registry
        .list()
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "user": s.user,
                "groups": s.groups,
                "client": s.client.map(|c| c.to_string()),
                "database": s.database,
                "started": crate::record::event::rfc3339(s.started),
                "state": format!("{:?}", s.state).to_lowercase(),
                "backend_pid": s.process_id,
            })
        })
        .collect()
}

async fn sessions(State(state): State<AdminState>) -> Json<Vec<serde_json::Value>> {
    Json(session_list(&state.gw))
}

async fn terminate(
    State(state): State<AdminState>,
    Path(id): Path<u64>,
    axum::Extension(who): axum::Extension<AdminIdentity>,
) -> Response {
    let reason = format!("terminated by administrator {}", who.0);
    if state.gw.registry.terminate(id, &reason) {
        tracing::info!(
            session = id,
            admin = who.0,
            "session terminated by the admin API"
        );
        Json(serde_json::json!({ "terminated": id })).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no such session" })),
        )
            .into_response()
    }
}

/// `POST /tokens/{jti}/revoke`: appends the jti to the
/// revocation list (the same record `pgward token revoke` writes); every
/// instance following the list ends that token's sessions and refuses it.
async fn revoke_token(
    State(state): State<AdminState>,
    Path(jti): Path<String>,
    axum::Extension(who): axum::Extension<AdminIdentity>,
) -> Response {
    let tokens = state.gw.tokens.load_full();
    if jti.is_empty() || jti.len() > 256 {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "a jti of 1 to 256 characters" })),
        )
            .into_response();
    }
    let reason = format!("revoked by administrator {} (admin API)", who.0);
    let written = if let Some(store) = tokens.revocations.store() {
        let revocation = crate::approvals::model::TokenRevocation::new(&jti, &who.0, Some(reason));
        store
            .revoke_token(&revocation)
            .await
            .map_err(|e| e.to_string())
    } else if let Some(path) = tokens.config.revocation_file.clone() {
        let jti = jti.clone();
        tokio::task::spawn_blocking(move || {
            crate::auth::token::revocation::revoke(&path, &jti, Some(&reason))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    } else {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "error": "no revocation list: set tokens.revocation_file or tokens.revocation_store"
            })),
        )
            .into_response();
    };
    match written {
        Ok(()) => {
            // Live sessions using it end now, not at the next poll.
            if let Err(e) = tokens.refresh_revocations().await {
                tracing::error!(error = %e, "revocation list unreadable after a revocation");
            }
            tracing::info!(jti, admin = who.0, "token revoked by the admin API");
            Json(serde_json::json!({ "revoked": jti })).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
    }
}

async fn reload(
    State(state): State<AdminState>,
    axum::Extension(who): axum::Extension<AdminIdentity>,
) -> Response {
    let Some(path) = state.config_path.clone() else {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": "pgward was not started from a config file" })),
        )
            .into_response();
    };
    let gw = Arc::clone(&state.gw);
    let result = tokio::task::spawn_blocking(move || gw.reload(&path)).await;
    match result {
        Ok(Ok(r)) => {
            tracing::info!(
                version = r.version,
                admin = who.0,
                "rules reloaded by the admin API"
            );
            Json(serde_json::json!({
                "version": r.version,
                "rules": r.rules,
                "mask_rules": r.mask_rules,
            }))
            .into_response()
        }
        Ok(Err(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": e.to_string(),
                "version": state.gw.rules_version(),
            })),
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "reload failed\n").into_response(),
    }
}
