//! The store's listener: one dedicated connection that LISTENs on the
//! store's channel and turns every NotificationResponse from another
//! instance into a [`Change`] on the store's broadcast. It may start before
//! any operation: it migrates the schema first (once per store).
//!
//! When the connection drops it reconnects with a growing backoff, and on
//! every (re)connect, once LISTEN is in force, it announces every ticket
//! still pending or within its lifetime and every grant not yet expired as
//! changed: whatever was notified while it was away, subscribers re-read. An idle connection is probed with an empty
//! query every `KEEPALIVE`; no answer by the next probe counts as dropped,
//! so a silently vanished server is noticed.

use super::pool::login_params;
use super::schema::ident;
use super::Timeouts;
use crate::approvals::store::Change;
use crate::auth::backend::Upstream;
use crate::io::FramedStream;
use crate::wire::backend::{notice_field, notification};
use crate::wire::{encode, Framer};
use bytes::BytesMut;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How long the connection may be idle before it is probed.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// The first and the longest wait between reconnects.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Largest message accepted on this connection: notifications are at most
/// 8000 bytes of payload, the resync rows are ids.
const MAX_FRAME: usize = 64 << 10;
/// Most records announced after a reconnect (each kind).
const RESYNC_LIMIT: usize = 10_000;

/// What the listener needs; the store keeps none of it.
pub(super) struct Listener {
    pub(super) upstream: Upstream,
    pub(super) schema: String,
    pub(super) timeouts: Timeouts,
    pub(super) changes: broadcast::Sender<Change>,
    /// This instance's pool connections: their notifications were already
    /// announced locally.
    pub(super) own_pids: Arc<Mutex<HashSet<i32>>>,
    /// Counts the sessions in which LISTEN took effect.
    pub(super) listening: watch::Sender<u64>,
    /// The schema is migrated before the first read.
    pub(super) migration: super::Migration,
}

/// The channel's payload for a change: `ticket:<id>` or `grant:<id>`.
pub(super) fn payload(change: &Change) -> String {
    match change {
        Change::Ticket(id) => format!("ticket:{id}"),
        Change::Grant(id) => format!("grant:{id}"),
        Change::Revocation(id) => format!("revocation:{id}"),
    }
}

/// Reads a payload; anything else on the channel (anyone who can connect
/// may NOTIFY it) is ignored. At worst, a forged one makes subscribers
/// re-read a record.
pub(super) fn parse_payload(payload: &[u8]) -> Option<Change> {
    let text = std::str::from_utf8(payload).ok()?;
    let (kind, id) = text.split_once(':')?;
    if !super::valid_id(id) {
        return None;
    }
    match kind {
        "ticket" => Some(Change::Ticket(id.to_owned())),
        "grant" => Some(Change::Grant(id.to_owned())),
        "revocation" => Some(Change::Revocation(id.to_owned())),
        _ => None,
    }
}

impl Listener {
    /// Runs until the store is dropped (which aborts it).
    pub(super) async fn run(self) {
        let mut backoff = BACKOFF.0;
        loop {
            let established = self.listening.borrow().to_owned();
            let error = self.session().await;
            if *self.listening.borrow() != established {
                backoff = BACKOFF.0;
            }
            tracing::warn!(schema = %self.schema, error = %error, retry_in = ?backoff,
                "approval store listener lost its connection");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// One connection's life; returns why it ended.
    async fn session(&self) -> String {
        let limit = self.timeouts.operation;
        match tokio::time::timeout(limit, self.migration.ensure()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return format!("the schema was not migrated within {limit:?}"),
        }
        let params = login_params(&self.timeouts, "pgward-approvals-listener");
        let mut conn = match self.upstream.login_catalog(&params).await {
            Ok(login) => login.conn,
            Err(e) => return e.to_string(),
        };
        let framer = Framer::new(MAX_FRAME);
        let s = ident(&self.schema);
        let listen = format!("LISTEN {s}");
        if let Err(e) = self.bounded(&mut conn, &framer, &listen).await {
            return e;
        }
        self.listening.send_modify(|n| *n += 1);
        // After LISTEN: a change committed from now on is notified, and
        // everything before it is in this read.
        // Tickets still in their lifetime, whatever their state (one
        // decided meanwhile must wake the statement held for it), and grants
        // not yet expired, revoked or not (a revocation meanwhile must end
        // the sessions it elevated).
        let resync = format!(
            "SELECT 't', id FROM (SELECT id FROM {s}.tickets \
               WHERE state = 'pending' OR expires_at > {now} \
               ORDER BY created_at DESC LIMIT {RESYNC_LIMIT}) t \
             UNION ALL SELECT 'g', id FROM (SELECT id FROM {s}.grants WHERE expires_at > {now} \
               ORDER BY created_at DESC LIMIT {RESYNC_LIMIT}) g",
            now = super::column_ms(crate::approvals::model::now_ms()),
        );
        match self.bounded(&mut conn, &framer, &resync).await {
            Ok(rows) => {
                for (kind, id) in rows {
                    let change = match kind.as_str() {
                        "t" => Change::Ticket(id),
                        _ => Change::Grant(id),
                    };
                    let _ = self.changes.send(change);
                }
            }
            Err(e) => return e,
        }
        let mut probing = false;
        loop {
            match tokio::time::timeout(KEEPALIVE, conn.read_frame(&framer)).await {
                Ok(Ok(frame)) => match frame.tag() {
                    b'A' => self.notified(&frame),
                    b'Z' => probing = false,
                    b'E' => return server_error(&frame),
                    _ => {}
                },
                Ok(Err(e)) => return e.to_string(),
                Err(_) if probing => return format!("no answer within {KEEPALIVE:?}"),
                Err(_) => {
                    let mut out = BytesMut::new();
                    encode::query(&mut out, "");
                    if let Err(e) = conn.send(&out).await {
                        return e.to_string();
                    }
                    probing = true;
                }
            }
        }
    }

    fn notified(&self, frame: &crate::wire::Frame) {
        let Ok((pid, _, payload)) = notification(frame.view()) else {
            return;
        };
        let own = self
            .own_pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&pid);
        if let (false, Some(change)) = (own, parse_payload(payload)) {
            let _ = self.changes.send(change);
        }
    }

    /// Runs one query within the operation timeout, announcing the
    /// notifications that arrive meanwhile; rows of two text columns.
    async fn bounded(
        &self,
        conn: &mut FramedStream,
        framer: &Framer,
        sql: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let limit = self.timeouts.operation;
        tokio::time::timeout(limit, self.exchange(conn, framer, sql))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
    }

    async fn exchange(
        &self,
        conn: &mut FramedStream,
        framer: &Framer,
        sql: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let mut out = BytesMut::new();
        encode::query(&mut out, sql);
        conn.send(&out).await.map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = conn.read_frame(framer).await.map_err(|e| e.to_string())?;
            match frame.tag() {
                b'A' => self.notified(&frame),
                b'D' => {
                    if rows.len() >= 2 * RESYNC_LIMIT {
                        return Err("more rows than asked for".into());
                    }
                    rows.push(two_cells(frame.body()).ok_or("malformed DataRow")?);
                }
                b'E' => error = Some(server_error(&frame)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }
}

fn server_error(frame: &crate::wire::Frame) -> String {
    let message = notice_field(frame.view(), b'M')
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    format!("server error: {message}")
}

/// A DataRow of two non-NULL text cells, the second a valid id.
fn two_cells(body: &[u8]) -> Option<(String, String)> {
    let mut body = body;
    let count = crate::wire::frame::read_i16(&mut body)?;
    if count != 2 {
        return None;
    }
    let mut cell = || -> Option<String> {
        let len = usize::try_from(crate::wire::frame::read_i32(&mut body)?).ok()?;
        let bytes = body.get(..len)?;
        body = &body[len..];
        String::from_utf8(bytes.to_vec()).ok()
    };
    let kind = cell()?;
    let id = cell()?;
    (body.is_empty() && super::valid_id(&id)).then_some((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_junk_is_ignored() {
        for change in [Change::Ticket("00ff".into()), Change::Grant("a1".into())] {
            assert_eq!(parse_payload(payload(&change).as_bytes()), Some(change));
        }
        for junk in [
            &b""[..],
            b"ticket",
            b"ticket:",
            b"vote:00ff",
            b"ticket:a b",
            b"ticket:\xff",
            b"grant:x;DROP",
        ] {
            assert_eq!(parse_payload(junk), None, "{junk:?}");
        }
        let long = format!("ticket:{}", "a".repeat(65));
        assert_eq!(parse_payload(long.as_bytes()), None);
    }

    #[test]
    fn resync_rows_are_checked() {
        let row = |cells: &[Option<&[u8]>]| {
            let mut b = (cells.len() as i16).to_be_bytes().to_vec();
            for c in cells {
                match c {
                    Some(v) => {
                        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        b.extend_from_slice(v);
                    }
                    None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
            b
        };
        let ok = row(&[Some(b"t"), Some(b"0a")]);
        assert_eq!(two_cells(&ok), Some(("t".into(), "0a".into())));
        assert_eq!(two_cells(&row(&[Some(b"t"), None])), None);
        assert_eq!(two_cells(&row(&[Some(b"t")])), None);
        assert_eq!(two_cells(&row(&[Some(b"t"), Some(b"bad id")])), None);
        assert_eq!(two_cells(&ok[..ok.len() - 1]), None);
        let mut long = row(&[Some(b"t"), Some(b"0a")]);
        long.push(0);
        assert_eq!(two_cells(&long), None);
    }
}
