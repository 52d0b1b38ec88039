//! Past sessions on the admin listener (admins only): the recordings of
//! `[audit] record_groups` sessions, listed newest first, and one replayed
//! as a transcript (the sessions page shows both).

use super::AdminState;
use crate::record::{recordings, replay};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::io::BufRead;

/// Most recordings one listing returns.
const MAX_LIST: usize = 200;

/// The routes (merged under the admin-only layer).
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/recordings", get(list))
        .route("/recordings/{session}/{started_ms}", get(show))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The directory, when sessions are recorded.
fn directory(state: &AdminState) -> Option<std::path::PathBuf> {
    let audit = state.gw.config.audit.as_ref()?;
    (!audit.record_groups.is_empty()).then(|| audit.recordings_directory.clone())
}

/// The first event of a recording (who, where, when), read alone.
fn start_event(path: &std::path::Path) -> Option<Value> {
    let file = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(std::io::Read::take(file, 64 * 1024))
        .read_line(&mut line)
        .ok()?;
    serde_json::from_str(&line).ok()
}

/// `GET /recordings`.
async fn list(State(state): State<AdminState>) -> Response {
    let Some(dir) = directory(&state) else {
        return Json(json!({ "recordings": [] })).into_response();
    };
    let listed = tokio::task::spawn_blocking(move || {
        let files = recordings::list(&dir, MAX_LIST)?;
        Ok::<_, std::io::Error>(
            files
                .into_iter()
                .map(|r| {
                    let start = start_event(&r.path).unwrap_or(Value::Null);
                    json!({
                        "session": r.session,
                        "started_ms": r.started_ms,
                        "started": start["time"],
                        "user": start["user"],
                        "database": start["database"],
                        "client": start["client"],
                        "bytes": r.bytes,
                    })
                })
                .collect::<Vec<_>>(),
        )
    })
    .await;
    match listed {
        Ok(Ok(items)) => Json(json!({ "recordings": items })).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, format!("recordings: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /recordings/{session}/{started_ms}`: the transcript.
async fn show(
    State(state): State<AdminState>,
    Path((session, started_ms)): Path<(u64, u64)>,
) -> Response {
    let Some(dir) = directory(&state) else {
        return error(StatusCode::NOT_FOUND, "sessions are not recorded");
    };
    let read = tokio::task::spawn_blocking(move || {
        let found = recordings::find(&dir, session, Some(started_ms)).map_err(|e| e.to_string())?;
        let Some(file) = found else {
            return Ok(None);
        };
        let events = recordings::load(&file.path)?;
        Ok::<_, String>(Some((events.len(), replay::render(&events))))
    })
    .await;
    match read {
        Ok(Ok(Some((events, transcript)))) => Json(json!({
            "session": session,
            "started_ms": started_ms,
            "events": events,
            "transcript": transcript,
        }))
        .into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such recording"),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
