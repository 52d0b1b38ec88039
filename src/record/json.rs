//! A record's JSON, written by hand straight into the writer's line buffer.
//!
//! Every statement costs one record, so this is on the audit trail's hot
//! path: serde's derive with `flatten` builds the object through a map
//! serializer and a fresh `String` per record, and the session's own fields
//! (identity, groups, role, client, ...) were serialized again for every
//! statement. Here they are written once per session
//! ([`SessionRecord::new`]) and copied in as bytes, numbers go through
//! `itoa`, and the line is built in a buffer the writer reuses. The bytes
//! are exactly what serde_json writes for the derived `Serialize` of
//! [`Line`] (same member order, same escaping): the tests hold the two
//! equal, so the derive stays the format's definition.

use super::event::{Event, Record, SessionFields, StatementFields, Text};
use crate::approvals::note::ApprovalFields;
use serde::Serialize;
use std::time::SystemTime;

/// A session's fields and their JSON members, written once: every record of
/// the session repeats them.
#[derive(Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// The fields.
    pub fields: SessionFields,
    /// `"session":7,"user":"alice",...`: the members without braces.
    members: Box<str>,
}

impl SessionRecord {
    /// The fields with their members written.
    pub fn new(fields: SessionFields) -> Self {
        let mut out = Vec::with_capacity(160);
        session_members(&mut out, &fields);
        Self {
            fields,
            // Only strings and numbers went in: UTF-8 by construction.
            members: String::from_utf8_lossy(&out).into(),
        }
    }
}

impl Serialize for SessionRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.fields.serialize(s)
    }
}

/// One line's object before chaining: the time, then the event's members
/// (what [`write_record`] writes).
#[cfg(test)]
#[derive(Serialize)]
pub(crate) struct Line<'a> {
    pub(crate) time: String,
    #[serde(flatten)]
    pub(crate) event: &'a Event,
}

/// Appends `record`'s JSON object (`{"time":...}`) to `out`.
#[cfg(test)]
pub(crate) fn write_record(out: &mut Vec<u8>, record: &Record) {
    out.push(b'{');
    write_members(out, record);
}

/// Appends `record`'s JSON object without its opening brace
/// (`"time":...}`): what follows a chained line's `seq` and `prev`.
pub(crate) fn write_members(out: &mut Vec<u8>, record: &Record) {
    out.extend_from_slice(b"\"time\":\"");
    rfc3339_into(out, record.time);
    out.push(b'"');
    match &record.event {
        Event::SessionStart { session } => {
            kind(out, "session_start");
            members(out, &session.0);
        }
        Event::SessionEnd {
            session,
            reason,
            statements,
            bytes_sent,
            duration_ms,
        } => {
            kind(out, "session_end");
            members(out, &session.0);
            key(out, "reason");
            string(out, reason);
            number_member(out, "statements", *statements);
            number_member(out, "bytes_sent", *bytes_sent);
            number_member(out, "duration_ms", *duration_ms);
        }
        Event::Statement { session, statement } => {
            kind(out, "statement");
            members(out, &session.0);
            statement_members(out, statement);
        }
        Event::Reload { rules_version } => {
            kind(out, "reload");
            number_member(out, "rules_version", *rules_version);
        }
    }
    out.push(b'}');
}

fn kind(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
}

fn members(out: &mut Vec<u8>, session: &SessionRecord) {
    out.push(b',');
    out.extend_from_slice(session.members.as_bytes());
}

fn session_members(out: &mut Vec<u8>, f: &SessionFields) {
    out.extend_from_slice(b"\"session\":");
    number(out, f.session);
    key(out, "user");
    string(out, &f.user);
    key(out, "groups");
    strings(out, &f.groups);
    key(out, "role");
    string(out, &f.role);
    optional_string(out, "client", f.client.as_deref());
    key(out, "database");
    string(out, &f.database);
    key(out, "upstream");
    string(out, &f.upstream);
    optional_string(out, "application_name", f.application_name.as_deref());
    if let Some(t) = &f.token {
        key(out, "token");
        out.extend_from_slice(b"{\"issuer\":");
        string(out, &t.issuer);
        optional_string(out, "subject", t.subject.as_deref());
        optional_string(out, "jti", t.jti.as_deref());
        out.push(b'}');
    }
}

fn statement_members(out: &mut Vec<u8>, s: &StatementFields) {
    key(out, "message");
    string(out, s.message);
    if let Some(i) = s.index {
        number_member(out, "index", u64::from(i));
    }
    match &s.statement {
        Some(Text::Shared(bytes)) => {
            key(out, "statement");
            string(out, &String::from_utf8_lossy(bytes));
        }
        Some(Text::Owned(text)) => {
            key(out, "statement");
            string(out, text);
        }
        None => {}
    }
    if let Some(params) = &s.params {
        key(out, "params");
        out.push(b'[');
        for (i, p) in params.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match p {
                Some(v) => string(out, v),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b']');
    }
    if let Some(a) = &s.approval {
        key(out, "approval");
        approval(out, a);
    }
    key(out, "decision");
    string(
        out,
        match s.decision {
            super::event::Decision::Allowed => "allowed",
            super::event::Decision::Refused => "refused",
            super::event::Decision::Skipped => "skipped",
        },
    );
    optional_string(out, "refused_by", s.refused_by.as_deref());
    optional_string(out, "rule", s.rule.as_deref());
    optional_string(out, "reason", s.reason.as_deref());
    optional_string(out, "held_by", s.held_by.as_deref());
    optional_number(out, "held_ms", s.held_ms);
    optional_string(out, "tag", s.tag.as_deref());
    optional_number(out, "rows", s.rows);
    number_member(out, "bytes_sent", s.bytes_sent);
    optional_number(out, "duration_us", s.duration_us);
    optional_string(out, "sqlstate", s.sqlstate.as_deref());
    key(out, "tx_status");
    string(out, s.tx_status);
    number_member(out, "rules_version", s.rules_version);
}

fn approval(out: &mut Vec<u8>, a: &ApprovalFields) {
    out.extend_from_slice(b"{\"ticket\":");
    string(out, &a.ticket);
    key(out, "outcome");
    string(out, a.outcome);
    if !a.approvers.is_empty() {
        key(out, "approvers");
        strings(out, &a.approvers);
    }
    optional_string(out, "grant", a.grant.as_deref());
    out.push(b'}');
}

/// `,"name":`
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn optional_string(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        key(out, name);
        string(out, v);
    }
}

fn optional_number(out: &mut Vec<u8>, name: &str, value: Option<u64>) {
    if let Some(v) = value {
        number_member(out, name, v);
    }
}

fn number_member(out: &mut Vec<u8>, name: &str, value: u64) {
    key(out, name);
    number(out, value);
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn strings(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, s);
    }
    out.push(b']');
}

/// A JSON string, escaped as serde_json escapes: `"` and `\`, the short
/// forms of backspace, form feed, newline, return and tab, `\u00XX` for the
/// other control characters; everything else as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most values need no escape: one branch-free pass (which the compiler
    // vectorizes) and one copy.
    let clean = !bytes.iter().fold(false, |dirty, &b| {
        dirty | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if clean {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x00..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short == 0 {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// [`super::event::rfc3339`], appended without a `format!`.
fn rfc3339_into(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = crate::auth::token::civil_from_days(days as i64);
    // Never negative: the time is at or after 1970.
    digits(out, y.max(0) as u64, 4);
    out.push(b'-');
    digits(out, m as u64, 2);
    out.push(b'-');
    digits(out, day as u64, 2);
    out.push(b'T');
    digits(out, rem / 3600, 2);
    out.push(b':');
    digits(out, rem / 60 % 60, 2);
    out.push(b':');
    digits(out, rem % 60, 2);
    out.push(b'.');
    digits(out, u64::from(d.subsec_micros()), 6);
    out.push(b'Z');
}

#[cfg(test)]
mod tests;

/// `n` in decimal, zero-padded to `width` digits.
fn digits(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let text = buf.format(n).as_bytes();
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(text.len())));
    out.extend_from_slice(text);
}
