//! Least-privilege reports, cached per (upstream, role): read again after
//! `masking.refresh`, when the column map they were checked against
//! changes, on reload, and after statements that may change privileges.

use super::{check_role, Report};
use crate::auth::backend::Upstream;
use crate::mask::catalog::MaskMap;
use crate::upstream::query::CatalogError;
use crate::wire::encode;
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cache, shared by every session of a gateway.
#[derive(Debug, Default)]
pub struct RoleChecks {
    entries: Mutex<HashMap<(String, String), Entry>>,
    /// The findings last logged as warnings per (upstream, role): a report
    /// made again (after every GRANT, say) logs only what changed.
    warned: Mutex<HashMap<(String, String), Vec<super::Finding>>>,
    /// (upstream, role) pairs a background check is reading now: a burst
    /// of logins starts one catalog read, not one each.
    in_flight: Mutex<std::collections::HashSet<(String, String)>>,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    /// The column map the report was made against (its masked tables).
    map: Option<Arc<MaskMap>>,
    report: Arc<Report>,
}

/// A report, and whether it was just made (not taken from the cache).
#[derive(Debug, Clone)]
pub struct Checked {
    /// The report.
    pub report: Arc<Report>,
    /// Made by this call.
    pub fresh: bool,
}

impl RoleChecks {
    /// The report for `role` on `upstream`, checked against `map`'s masked
    /// tables; read from the catalog (over the upstream's catalog role)
    /// when not cached, older than `max_age`, or made against another map.
    pub async fn report(
        &self,
        upstream: &Upstream,
        role: &str,
        map: Option<&Arc<MaskMap>>,
        max_age: Duration,
    ) -> Result<Checked, CatalogError> {
        let key = (upstream.config.name.clone(), role.to_owned());
        if let Some(report) = self.cached(&key, map, max_age) {
            return Ok(Checked {
                report,
                fresh: false,
            });
        }
        let report = Arc::new(read(upstream, role, map).await?);
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                key,
                Entry {
                    at: Instant::now(),
                    map: map.cloned(),
                    report: Arc::clone(&report),
                },
            );
        }
        Ok(Checked {
            report,
            fresh: true,
        })
    }

    fn cached(
        &self,
        key: &(String, String),
        map: Option<&Arc<MaskMap>>,
        max_age: Duration,
    ) -> Option<Arc<Report>> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(key)?;
        let same_map = match (&entry.map, map) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        (same_map && entry.at.elapsed() < max_age).then(|| Arc::clone(&entry.report))
    }

    /// Checks `role` in the background (at most one read per role at a
    /// time, within `limit`) and logs its findings as warnings when they
    /// changed: for identities the check does not refuse.
    pub fn warn_in_background(
        self: &Arc<Self>,
        upstream: &Upstream,
        role: &str,
        map: Option<Arc<MaskMap>>,
        max_age: Duration,
        limit: Duration,
    ) {
        let key = (upstream.config.name.clone(), role.to_owned());
        if self.cached(&key, map.as_ref(), max_age).is_some() {
            return;
        }
        let started = self
            .in_flight
            .lock()
            .is_ok_and(|mut running| running.insert(key.clone()));
        if !started {
            return;
        }
        let checks = Arc::clone(self);
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let (name, role) = (&key.0, &key.1);
            let read =
                tokio::time::timeout(limit, checks.report(&upstream, role, map.as_ref(), max_age))
                    .await;
            if let Ok(mut running) = checks.in_flight.lock() {
                running.remove(&key);
            }
            match read {
                Ok(Ok(c)) if checks.should_warn(name, &c.report) => {
                    for f in &c.report.findings {
                        tracing::warn!(
                            upstream = %name,
                            role,
                            finding = %f.what,
                            "mapped role is not least-privilege (pgward doctor prints the fix)"
                        );
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(upstream = %name, role, "role check failed: {e}"),
                Err(_) => tracing::warn!(upstream = %name, role, "role check timed out"),
            }
        });
    }

    /// Whether `report`'s findings differ from those last warned about for
    /// its role on `upstream` (and records them as warned).
    fn should_warn(&self, upstream: &str, report: &Report) -> bool {
        let Ok(mut warned) = self.warned.lock() else {
            return true;
        };
        let key = (upstream.to_owned(), report.role.clone());
        if warned.get(&key) == Some(&report.findings) {
            return false;
        }
        warned.insert(key, report.findings.clone());
        true
    }

    /// Forgets every report: the next login of each role checks again.
    pub fn invalidate(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

/// The tables with masked columns in `map`.
pub fn masked_tables(map: Option<&Arc<MaskMap>>) -> Vec<u32> {
    let mut tables: Vec<u32> = map
        .map(|m| m.columns.keys().map(|(table, _)| *table).collect())
        .unwrap_or_default();
    tables.sort_unstable();
    tables.dedup();
    tables
}

async fn read(
    upstream: &Upstream,
    role: &str,
    map: Option<&Arc<MaskMap>>,
) -> Result<Report, CatalogError> {
    let params = [("application_name".to_owned(), "pgward-catalog".to_owned())];
    let mut login = upstream
        .login_catalog(&params)
        .await
        .map_err(|e| CatalogError::Io(e.to_string()))?;
    let report = check_role(&mut login.conn, role, &masked_tables(map)).await;
    let mut bye = BytesMut::new();
    encode::terminate(&mut bye);
    let _ = login.conn.send(&bye).await;
    report
}

/// Whether a statement may change roles, memberships, ownership or
/// grants: a word scan that errs towards yes (a false yes costs one
/// catalog read at the next login).
pub(crate) fn may_change_privileges(sql: &[u8]) -> bool {
    // This runs on every statement: two tight loops (over the bytes
    // between words, then over a word's) instead of a split iterator,
    // which cost twice as much; a word is compared only when its length is
    // one of the words' lengths, and then only with the words of that
    // length.
    let in_word = |b: u8| IN_WORD[usize::from(b)];
    let mut rest = sql;
    loop {
        let start = rest.iter().position(|b| in_word(*b)).unwrap_or(rest.len());
        rest = &rest[start..];
        if rest.is_empty() {
            return false;
        }
        let len = rest.iter().position(|b| !in_word(*b)).unwrap_or(rest.len());
        if is_privilege_word(&rest[..len]) {
            return true;
        }
        rest = &rest[len..];
    }
}

/// Whether `word` is one of the words [`may_change_privileges`] looks for.
/// Most words are told apart by their length and first letter alone.
fn is_privilege_word(word: &[u8]) -> bool {
    let any = |words: &[&[u8]]| words.iter().any(|w| word.eq_ignore_ascii_case(w));
    let Some(&first) = word.first() else {
        return false;
    };
    match (word.len(), first | 0x20) {
        (4, b'r') => any(&[b"ROLE"]),
        (4, b'u') => any(&[b"USER"]),
        (5, b'g') => any(&[b"GRANT"]),
        (5, b'o') => any(&[b"OWNER", b"OWNED"]),
        (6, b'r') => any(&[b"REVOKE"]),
        (6, b's') => any(&[b"SCHEMA"]),
        (8, b'd') => any(&[b"DATABASE"]),
        (10, b'p') => any(&[b"PRIVILEGES"]),
        _ => false,
    }
}

/// Bytes of a word: ASCII letters, digits and `_`.
static IN_WORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::may_change_privileges;
    use proptest::prelude::*;

    proptest! {
        /// The same answer as the plain word split it replaced.
        #[test]
        fn same_as_a_word_split(sql in "[a-zA-Z_0-9 ;,.()'\u{e9}-]{0,40}|(.*(GRANT|revoke|Role|user|OWNER|owned|schema|DATABASE|privileges).*)") {
            let words = sql
                .as_bytes()
                .split(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                .any(|word| {
                    ["GRANT", "REVOKE", "ROLE", "USER", "OWNER", "OWNED", "SCHEMA", "DATABASE", "PRIVILEGES"]
                        .iter()
                        .any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
                });
            prop_assert_eq!(may_change_privileges(sql.as_bytes()), words);
        }
    }

    #[test]
    fn privilege_statements_are_noticed() {
        for sql in [
            "GRANT pg_read_all_stats TO support",
            "revoke create on schema public from public",
            "ALTER TABLE t OWNER TO x",
            "alter user app nosuperuser",
            "CREATE SCHEMA s",
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r",
            "select 1; drop owned by x",
        ] {
            assert!(may_change_privileges(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT * FROM roles_table",
            "UPDATE t SET owner_id = 1 WHERE id = 2",
        ] {
            assert!(!may_change_privileges(sql.as_bytes()), "{sql}");
        }
    }
}
