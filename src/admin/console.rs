//! The admin console over the PostgreSQL protocol (PgBouncer's
//! convention): connecting to the virtual database `pgward` as an identity
//! in an `[admin] groups` group gives `SHOW SESSIONS`, `SHOW STATS`,
//! `SHOW RULES`, `SHOW APPROVALS`, `SHOW GRANTS`, `KILL <session id>`,
//! `RELOAD` and `SHOW HELP`, answered as ordinary result sets (psql shows
//! them as tables). Simple queries only; no upstream is involved.
//!
//! The commands are a pure function of the gateway ([`answer`]); the loop
//! around them only frames messages.

use crate::error::SessionError;
use crate::gateway::Gateway;
use crate::io::FramedStream;
use crate::sqlstate::Sqlstate;
use crate::wire::backend::TransactionStatus;
use crate::wire::encode::{self, Severity};
use crate::wire::frontend::query_text;
use crate::wire::startup::StartupMessage;
use crate::wire::Framer;
use bytes::BytesMut;
use std::sync::atomic::Ordering;

/// The virtual database name.
pub const DATABASE: &str = "pgward";

/// Largest console message read (commands are short).
const MAX_MESSAGE: usize = 64 * 1024;

/// A result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Column names.
    pub columns: Vec<&'static str>,
    /// Rows of text values.
    pub rows: Vec<Vec<Option<String>>>,
    /// The command tag.
    pub tag: String,
}

/// A command that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleError {
    /// SQLSTATE.
    pub code: Sqlstate,
    /// Message.
    pub message: String,
}

fn err(code: Sqlstate, message: impl Into<String>) -> ConsoleError {
    ConsoleError {
        code,
        message: message.into(),
    }
}

/// Whether this startup asks for the console (and the console is on).
pub(crate) fn wanted(gw: &Gateway, startup: &StartupMessage) -> bool {
    gw.config.admin.is_some() && startup.param("database") == Some(DATABASE)
}

fn table(columns: Vec<&'static str>, rows: Vec<Vec<Option<String>>>, tag: &str) -> Table {
    Table {
        columns,
        rows,
        tag: tag.to_owned(),
    }
}

/// Runs one console command.
pub fn answer(gw: &Gateway, command: &str) -> Result<Table, ConsoleError> {
    let command = command.trim().trim_end_matches(';').trim();
    let words: Vec<String> = command.split_whitespace().map(str::to_uppercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["SHOW", "SESSIONS"] => Ok(sessions(gw)),
        ["SHOW", "STATS"] => Ok(stats(gw)),
        ["SHOW", "RULES"] => Ok(rules(gw)),
        ["SHOW", "APPROVALS" | "GRANTS"] => Err(err(
            Sqlstate::from_code("55000"),
            "approvals are not configured",
        )),
        ["SHOW", "HELP"] | ["HELP"] => Ok(table(
            vec!["command", "what"],
            [
                ("SHOW SESSIONS", "live sessions"),
                ("SHOW STATS", "counters (as /metrics)"),
                ("SHOW RULES", "statement and mask rules in force"),
                ("SHOW APPROVALS", "pending approvals"),
                ("SHOW GRANTS", "active grants"),
                ("KILL <session id>", "end a session"),
                ("RELOAD", "re-read [policy] and [masking]"),
            ]
            .iter()
            .map(|(c, w)| vec![Some((*c).to_owned()), Some((*w).to_owned())])
            .collect(),
            "SHOW",
        )),
        ["KILL", id] => {
            let id: u64 = id
                .parse()
                .map_err(|_| err(Sqlstate::SYNTAX_ERROR, "KILL takes a session id"))?;
            if gw
                .registry
                .terminate(id, "terminated by an administrator (KILL)")
            {
                Ok(table(vec![], vec![], "KILL"))
            } else {
                Err(err(
                    Sqlstate::from_code("42704"),
                    format!("no session {id}"),
                ))
            }
        }
        ["RELOAD"] => {
            let path = gw.config_path.get().ok_or_else(|| {
                err(
                    Sqlstate::from_code("55000"),
                    "pgward was not started from a config file",
                )
            })?;
            let r = gw
                .reload(path)
                .map_err(|e| err(Sqlstate::from_code("F0000"), e.to_string()))?;
            Ok(table(
                vec!["version", "rules", "mask_rules"],
                vec![vec![
                    Some(r.version.to_string()),
                    Some(r.rules.to_string()),
                    Some(r.mask_rules.to_string()),
                ]],
                "RELOAD",
            ))
        }
        _ => Err(err(
            Sqlstate::SYNTAX_ERROR,
            format!("unknown admin console command {command:?}; try SHOW HELP"),
        )),
    }
}

fn sessions(gw: &Gateway) -> Table {
    let rows = gw
        .registry
        .list()
        .into_iter()
        .map(|s| {
            vec![
                Some(s.id.to_string()),
                Some(s.user),
                Some(s.groups.join(",")),
                s.client.map(|c| c.to_string()),
                Some(s.database),
                Some(format!("{:?}", s.state).to_lowercase()),
                Some(crate::record::event::rfc3339(s.started)),
                Some(s.process_id.to_string()),
            ]
        })
        .collect();
    table(
        vec![
            "id",
            "user",
            "groups",
            "client",
            "database",
            "state",
            "started",
            "backend_pid",
        ],
        rows,
        "SHOW",
    )
}

fn stats(gw: &Gateway) -> Table {
    let m = &gw.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
    let mut rows = vec![
        ("sessions", gw.registry.list().len().to_string()),
        ("sessions_total", load(&m.sessions_total)),
        ("statements_ok", load(&m.statements_allowed)),
        ("statements_error", load(&m.statements_failed)),
        ("refusals", m.refusal_count().to_string()),
        ("client_bytes_sent", load(&m.bytes_to_clients)),
        (
            "backend_connect_failures",
            load(&m.backend_connect_failures),
        ),
        ("reloads", load(&m.reloads)),
        ("rules_version", gw.rules_version().to_string()),
    ];
    if let Some(a) = &gw.audit {
        let s = a.stats();
        rows.push(("audit_queue_depth", s.queue_depth.to_string()));
        rows.push(("audit_records_written", s.written.to_string()));
        rows.push(("audit_records_dropped", s.dropped.to_string()));
    }
    table(
        vec!["name", "value"],
        rows.into_iter()
            .map(|(n, v)| vec![Some(n.to_owned()), Some(v)])
            .collect(),
        "SHOW",
    )
}

fn rules(gw: &Gateway) -> Table {
    let snapshot = gw.rules.load();
    let who = |users: &[String], groups: &[String]| {
        let mut parts: Vec<String> = users.to_vec();
        parts.extend(groups.iter().map(|g| format!("group {g}")));
        if parts.is_empty() {
            "everyone".to_owned()
        } else {
            parts.join(", ")
        }
    };
    let version = snapshot.version.to_string();
    let mut rows: Vec<Vec<Option<String>>> = snapshot
        .policy
        .rules
        .rules
        .iter()
        .map(|r| {
            vec![
                Some(version.clone()),
                Some("statement".into()),
                Some(r.name.to_string()),
                Some(format!("{:?}", r.action).to_lowercase()),
                Some(who(&r.users, &r.groups)),
            ]
        })
        .collect();
    rows.extend(snapshot.masking.rules.iter().map(|r| {
        vec![
            Some(version.clone()),
            Some("mask".into()),
            Some(r.name.to_string()),
            Some("mask".into()),
            Some(who(&r.users, &r.groups)),
        ]
    }));
    table(
        vec!["version", "kind", "name", "action", "applies_to"],
        rows,
        "SHOW",
    )
}

/// Serves one console connection: SCRAM as for any session, the admin
/// group check, then simple queries until Terminate.
pub(crate) async fn serve(
    mut conn: FramedStream,
    startup: &StartupMessage,
    gw: &Gateway,
    deadline: tokio::time::Instant,
) -> Result<(), SessionError> {
    let user = startup.param("user").unwrap_or_default().to_owned();
    let login = tokio::time::timeout_at(deadline, async {
        let config = gw.config.users.get(&user);
        crate::auth::client::authenticate(&mut conn, &gw.scram, &user, config).await?;
        let groups = gw
            .config
            .admin
            .as_ref()
            .map(|a| a.groups.clone())
            .unwrap_or_default();
        match config {
            Some(u) if u.groups.iter().any(|g| groups.contains(g)) => Ok(()),
            _ => Err(SessionError::DatabaseNotAllowed(DATABASE.into())),
        }
    })
    .await
    .unwrap_or(Err(SessionError::StartupTimeout));
    if let Err(e) = login {
        crate::session::startup::send_fatal(&mut conn, &e).await;
        return Err(e);
    }
    tracing::info!(user, "admin console session");
    let mut out = BytesMut::new();
    encode::authentication_ok(&mut out);
    for (k, v) in [
        ("server_version", "15.0 (pgward admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        encode::parameter_status(&mut out, k.as_bytes(), v.as_bytes());
    }
    encode::backend_key_data(&mut out, 0, rand::random());
    encode::ready_for_query(&mut out, TransactionStatus::Idle);
    conn.send(&out).await?;
    let framer = Framer::new(MAX_MESSAGE);
    let mut skipping = false;
    loop {
        let frame = conn
            .read_frame(&framer)
            .await
            .map_err(SessionError::from_client_read)?;
        let mut out = BytesMut::new();
        match frame.tag() {
            b'Q' => {
                let text =
                    query_text(frame.view()).map_err(|e| SessionError::Protocol(e.to_string()))?;
                let text = String::from_utf8_lossy(text);
                if text.trim().is_empty() {
                    out.extend_from_slice(&[b'I', 0, 0, 0, 4]);
                } else {
                    respond(&mut out, answer(gw, &text));
                }
                encode::ready_for_query(&mut out, TransactionStatus::Idle);
            }
            b'X' => return Ok(()),
            b'S' => {
                skipping = false;
                encode::ready_for_query(&mut out, TransactionStatus::Idle);
            }
            b'H' => {}
            b'P' | b'B' | b'E' | b'D' | b'C' if !skipping => {
                skipping = true;
                encode::error_response(
                    &mut out,
                    Severity::Error,
                    Sqlstate::FEATURE_NOT_SUPPORTED.as_str(),
                    "the pgward admin console takes simple queries only",
                    None,
                );
            }
            b'P' | b'B' | b'E' | b'D' | b'C' => {}
            other => {
                return Err(SessionError::Protocol(format!(
                    "invalid frontend message type {other}"
                )))
            }
        }
        if !out.is_empty() {
            conn.send(&out).await?;
        }
    }
}

fn respond(out: &mut BytesMut, result: Result<Table, ConsoleError>) {
    match result {
        Ok(t) => {
            if !t.columns.is_empty() {
                encode::row_description_text(out, &t.columns);
                for row in &t.rows {
                    let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
                    encode::data_row_text(out, &values);
                }
            }
            let tag = if t.tag == "SHOW" && !t.columns.is_empty() {
                format!("SHOW {}", t.rows.len())
            } else {
                t.tag
            };
            encode::command_complete(out, &tag);
        }
        Err(e) => encode::error_response(out, Severity::Error, e.code.as_str(), &e.message, None),
    }
}
