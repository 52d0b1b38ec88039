//! What the store keeps of a ticket or a grant: the whole record as
//! ASCII-only JSON (`schema.rs` says why) and the columns queries filter
//! and order on, as SQL literals; and the checks on what comes back.

use super::pool::unavailable;
use crate::approvals::model::{
    Grant, GrantScope, GrantSubject, Ticket, TicketState, TokenRevocation,
};
pub(crate) use crate::approvals::store::{check_id, valid_id};
use crate::approvals::store::{ApprovalStoreError, Change, MAX_RECORD_BYTES};
use crate::upstream::query::dollar_quoted as literal;

/// A time in milliseconds as a `bigint` column (times past `i64::MAX` are
/// "never"; the record keeps the exact value).
pub(crate) fn column_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// `record` as ASCII-only JSON within the size limit (see `schema.rs`).
pub(super) fn encode<T: serde::Serialize>(
    kind: &str,
    id: &str,
    record: &T,
) -> Result<String, ApprovalStoreError> {
    let json = serde_json::to_string(record).map_err(unavailable)?;
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
        if out.len() > MAX_RECORD_BYTES {
            return Err(crate::approvals::store::too_large(kind, id));
        }
    }
    Ok(out)
}

/// Reads a record the server returned; checks it is the one asked for.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    kind: &str,
    cell: Option<&Option<String>>,
) -> Result<T, ApprovalStoreError> {
    let text = cell
        .and_then(Option::as_deref)
        .ok_or_else(|| unavailable(format!("a stored {kind} has no record")))?;
    serde_json::from_str(text)
        .map_err(|e| unavailable(format!("a stored {kind} is not a valid record: {e}")))
}

fn state_name(state: TicketState) -> &'static str {
    match state {
        TicketState::Pending => "pending",
        TicketState::Approved => "approved",
        TicketState::Used => "used",
        TicketState::Denied => "denied",
        TicketState::Expired => "expired",
        TicketState::Withdrawn => "withdrawn",
    }
}

/// `record` if it is the one with `id`.
pub(super) fn checked<R: Record>(record: R, id: &str) -> Result<R, ApprovalStoreError> {
    if record.id() == id {
        Ok(record)
    } else {
        Err(unavailable(format!(
            "the stored {} {id} holds the record of {}",
            R::KIND,
            record.id()
        )))
    }
}

/// What the generic operations need of a record type.
pub(super) trait Record:
    serde::Serialize + serde::de::DeserializeOwned + Clone + PartialEq + Send + Sync
{
    /// `ticket` or `grant`.
    const KIND: &'static str;
    /// Its table.
    const TABLE: &'static str;
    fn id(&self) -> &str;
    /// The indexed columns besides `id` and `record`, as SQL literals.
    fn columns(&self) -> Vec<(&'static str, String)>;
    fn change(id: String) -> Change;
    /// The record as of `now` (a lapsed ticket reads as expired, as in the
    /// file store); reads and updates see this.
    fn refresh(&mut self, _now: u64) {}
}

fn ms_or_null(ms: Option<u64>) -> String {
    ms.map_or_else(|| "NULL".to_owned(), |v| column_ms(v).to_string())
}

impl Record for Ticket {
    const KIND: &'static str = "ticket";
    const TABLE: &'static str = "tickets";
    fn id(&self) -> &str {
        &self.id
    }
    fn columns(&self) -> Vec<(&'static str, String)> {
        let mode = match self.mode {
            crate::approvals::model::ApprovalMode::Hold => "hold",
            crate::approvals::model::ApprovalMode::Ticket => "ticket",
        };
        vec![
            ("state", literal(state_name(self.state))),
            ("mode", literal(mode)),
            ("binding", literal(&self.binding)),
            ("created_at", column_ms(self.created_at).to_string()),
            ("expires_at", column_ms(self.expires_at).to_string()),
            ("valid_until", ms_or_null(self.valid_until)),
        ]
    }
    fn change(id: String) -> Change {
        Change::Ticket(id)
    }
    fn refresh(&mut self, now: u64) {
        self.expire(now);
    }
}

impl Record for TokenRevocation {
    const KIND: &'static str = "revocation";
    const TABLE: &'static str = "revocations";
    fn id(&self) -> &str {
        &self.id
    }
    fn columns(&self) -> Vec<(&'static str, String)> {
        vec![("created_at", column_ms(self.at).to_string())]
    }
    fn change(id: String) -> Change {
        Change::Revocation(id)
    }
}

impl Record for Grant {
    const KIND: &'static str = "grant";
    const TABLE: &'static str = "grants";
    fn id(&self) -> &str {
        &self.id
    }
    fn columns(&self) -> Vec<(&'static str, String)> {
        let subject = match &self.subject {
            GrantSubject::User(u) => format!("user:{u}"),
            GrantSubject::Group(g) => format!("group:{g}"),
        };
        let scope = match &self.scope {
            GrantScope::Rule(r) => format!("rule:{r}"),
            GrantScope::Role { database, role } => format!("role:{database}/{role}"),
        };
        vec![
            ("subject", literal(&subject)),
            ("scope", literal(&scope)),
            ("created_at", column_ms(self.created_at).to_string()),
            ("expires_at", column_ms(self.expires_at).to_string()),
            ("revoked", self.revoked.is_some().to_string()),
        ]
    }
    fn change(id: String) -> Change {
        Change::Grant(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_ascii_json_that_reads_back_the_same() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct R {
            text: String,
        }
        let r = R {
            text: "caf\u{e9} \u{1f600} nul:\0 quote:' dollar:$$".into(),
        };
        let json = encode("ticket", "x", &r).unwrap();
        assert!(json.is_ascii(), "{json}");
        let back: R = decode("ticket", Some(&Some(json))).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn oversized_records_are_refused_clearly() {
        let big = "\u{e9}".repeat(MAX_RECORD_BYTES / 4);
        let err = encode("ticket", "abc", &big).unwrap_err();
        assert!(
            matches!(&err, ApprovalStoreError::Refused(m) if m.contains("ticket abc") && m.contains("MiB")),
            "{err}"
        );
    }

    #[test]
    fn ids_are_bounded_and_plain() {
        assert!(valid_id("00ff00ff00ff00ff") && valid_id("a-b_c"));
        for bad in ["", "a b", "a'b", "a:b", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert_eq!(column_ms(u64::MAX), i64::MAX);
        assert!(decode::<Ticket>("ticket", Some(&Some("{".into()))).is_err());
        assert!(decode::<Ticket>("ticket", Some(&None)).is_err());
        assert!(decode::<Ticket>("ticket", None).is_err());
    }
}
