//! The approvals page and the sessions page: plain HTML, CSS and JS
//! embedded in the binary, under a Content-Security-Policy that allows
//! nothing but this origin's own scripts, styles and requests (no inline
//! script, no framing, no form posts elsewhere).

use axum::http::header;
use axum::response::{IntoResponse, Response};

const APPROVALS_HTML: &str = include_str!("assets/approvals.html");
const SESSIONS_HTML: &str = include_str!("assets/sessions.html");
const COMMON_JS: &str = include_str!("assets/common.js");
const APPROVALS_JS: &str = include_str!("assets/approvals.js");
const SESSIONS_JS: &str = include_str!("assets/sessions.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The policy every page and asset is served with.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `GET /approvals` and `GET /approvals/{id}` (the script reads the id).
pub async fn approvals() -> Response {
    asset("text/html; charset=utf-8", APPROVALS_HTML)
}

/// `GET /sessions.html`.
pub async fn sessions() -> Response {
    asset("text/html; charset=utf-8", SESSIONS_HTML)
}

/// `GET /approvals/assets/{name}`.
pub async fn assets(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match name.as_str() {
        "common.js" => asset("text/javascript; charset=utf-8", COMMON_JS),
        "approvals.js" => asset("text/javascript; charset=utf-8", APPROVALS_JS),
        "sessions.js" => asset("text/javascript; charset=utf-8", SESSIONS_JS),
        "style.css" => asset("text/css; charset=utf-8", STYLE_CSS),
        _ => (axum::http::StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}
