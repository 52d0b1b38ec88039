//! Audit records: what one line of the trail says (docs/audit.md lists the
//! fields). Built on the session's task, serialized on the writer's.

use super::json::SessionRecord;
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;

/// Who a session is, as every record of it repeats (built once a session).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionFields {
    /// Registry id of the session.
    pub session: u64,
    /// pgward identity.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// The role the upstream session runs as (mapped role).
    pub role: String,
    /// Client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Client database name.
    pub database: String,
    /// The upstream it maps to.
    pub upstream: String,
    /// The client's `application_name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// For a token identity: the token's issuer, subject and id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenFields>,
}

/// What identifies the token a session logged in with.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenFields {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `jti`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Whether a statement ran.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Every phase let it through.
    Allowed,
    /// A phase (or pgward itself) refused it; it did not run.
    Refused,
    /// Let through, but the server skipped it (an earlier error in the same
    /// extended-protocol batch): it did not run.
    Skipped,
}

/// One statement and what became of it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatementFields {
    /// The protocol message: `query`, `parse`, `bind` or `execute`.
    pub message: &'static str,
    /// For a multi-statement Query, the statement's place in it (0-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The statement text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<Text>,
    /// Bind parameters, as `[audit] parameters` says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Shared<Vec<Option<String>>>>,
    /// When it needed approval: its ticket, how it ended, who approved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approvals::note::ApprovalFields>,
    /// What pgward decided.
    pub decision: Decision,
    /// The phase that refused it (`rules`, `masking`, `audit`, `pgward`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_by: Option<String>,
    /// The rule named in the refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The refusal's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The phase that held it before it was decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// How long it was held, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_ms: Option<u64>,
    /// Command tag (`SELECT 3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Rows, from the command tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes sent to the client since the previous request's end.
    pub bytes_sent: u64,
    /// Microseconds from sending it to the server until its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// SQLSTATE when it failed or was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    /// Transaction status when it was sent: `idle`, `transaction`, `failed`.
    pub tx_status: &'static str,
    /// The rule-set version in force when it was judged.
    pub rules_version: u64,
}

/// A value shared by many records (a session's fields), serialized as
/// the value itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Shared<T>(pub Arc<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (*self.0).serialize(s)
    }
}

/// Statement text: shared with the session's state (no copy per record)
/// and turned into (lossy) UTF-8 only when the writer serializes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// Bytes as the client sent them.
    Shared(Arc<[u8]>),
    /// A text of its own (one statement of a multi-statement Query).
    Owned(String),
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Shared(bytes) => s.serialize_str(&String::from_utf8_lossy(bytes)),
            Self::Owned(text) => s.serialize_str(text),
        }
    }
}

/// What a record is about.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A session started (after login).
    SessionStart {
        /// Who.
        #[serde(flatten)]
        session: Shared<SessionRecord>,
    },
    /// A session ended.
    SessionEnd {
        /// Who.
        #[serde(flatten)]
        session: Shared<SessionRecord>,
        /// Why it ended.
        reason: String,
        /// Statements recorded in it.
        statements: u64,
        /// Bytes sent to the client.
        bytes_sent: u64,
        /// Its length in milliseconds.
        duration_ms: u64,
    },
    /// A statement.
    Statement {
        /// Who.
        #[serde(flatten)]
        session: Shared<SessionRecord>,
        /// What.
        #[serde(flatten)]
        statement: Box<StatementFields>,
    },
    /// A reload was accepted.
    Reload {
        /// The new rule-set version.
        rules_version: u64,
    },
}

/// One record before it is chained.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it happened.
    pub time: SystemTime,
    /// What.
    pub event: Event,
}

impl Record {
    /// A record of `event`, now.
    pub fn now(event: Event) -> Self {
        Self {
            time: SystemTime::now(),
            event,
        }
    }

    /// Its JSON object, time first (the chain adds `seq` and `prev` in
    /// front).
    #[cfg(test)]
    pub(crate) fn to_json(&self) -> String {
        let mut out = Vec::new();
        super::json::write_record(&mut out, self);
        String::from_utf8(out).expect("records are UTF-8")
    }
}

/// `2026-12-01T09:10:16.123456Z` (UTC, microseconds).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = crate::auth::token::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_580_216_123_456);
        assert_eq!(rfc3339(t), "2025-12-01T09:10:16.123456Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn statement_records_flatten_into_one_object() {
        let session = Shared(Arc::new(SessionRecord::new(SessionFields {
            session: 7,
            user: "alice".into(),
            groups: vec!["dev".into()],
            role: "app".into(),
            client: Some("127.0.0.1:5000".into()),
            database: "appdb".into(),
            upstream: "appdb".into(),
            application_name: None,
            token: Some(TokenFields {
                issuer: "pgward-test".into(),
                subject: Some("alice".into()),
                jti: Some("j-1".into()),
            }),
        })));
        let r = Record::now(Event::SessionEnd {
            session,
            reason: "client closed the connection".into(),
            statements: 3,
            bytes_sent: 10,
            duration_ms: 5,
        });
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["type"], "session_end");
        assert_eq!(v["user"], "alice");
        assert_eq!(v["session"], 7);
        assert!(v.get("application_name").is_none());
        assert_eq!(v["token"]["jti"], "j-1");
    }
}
