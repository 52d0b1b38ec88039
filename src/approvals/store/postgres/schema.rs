//! The store's schema and its migrations. Each migration runs once, in
//! order, in one transaction with the version it brings recorded in
//! `<schema>.migrations`; instances starting together serialise on an
//! advisory lock, so exactly one applies each migration.
//!
//! Records are kept whole as JSON text (`record`; `record::jsonb` for ad-hoc
//! queries), written ASCII-only: every non-ASCII character is a `\u` escape,
//! so they read back identical whatever the database's encoding, and a NUL
//! in an approver's reason (which `jsonb` cannot hold) is stored like any
//! other character. The other columns are copies the queries filter and
//! order on, written in the same statement as the record.

use super::pool::{unavailable, Lease};
use crate::approvals::store::ApprovalStoreError;

/// `(version, statements)`; `{s}` is the quoted schema name. Never edit a
/// released migration: add the next one.
const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        "CREATE TABLE {s}.tickets (
        id text PRIMARY KEY,
        state text NOT NULL,
        mode text NOT NULL,
        binding text NOT NULL,
        created_at bigint NOT NULL,
        expires_at bigint NOT NULL,
        valid_until bigint,
        record text NOT NULL
    );
    CREATE INDEX tickets_newest ON {s}.tickets (created_at DESC, id DESC);
    CREATE INDEX tickets_pending ON {s}.tickets (created_at DESC, id DESC)
        WHERE state = 'pending';
    CREATE INDEX tickets_approved ON {s}.tickets (binding) WHERE state = 'approved';
    CREATE TABLE {s}.grants (
        id text PRIMARY KEY,
        subject text NOT NULL,
        scope text NOT NULL,
        created_at bigint NOT NULL,
        expires_at bigint NOT NULL,
        revoked boolean NOT NULL,
        record text NOT NULL
    );
    CREATE INDEX grants_newest ON {s}.grants (created_at DESC, id DESC);
    CREATE INDEX grants_active ON {s}.grants (expires_at) WHERE NOT revoked;",
    ),
    (
        2,
        "CREATE TABLE {s}.revocations (
        id text PRIMARY KEY,
        created_at bigint NOT NULL,
        record text NOT NULL
    );",
    ),
];

/// The newest schema version this pgward knows.
pub const SCHEMA_VERSION: u32 = 2;

/// `name` as a quoted identifier (the config allows only `[a-z0-9_]`, so
/// this is belt and braces).
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A lock key for `schema`'s migrations: the same in every instance, and
/// different for different schemas (FNV-1a, 64 bits).
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"pgward-approvals-migrations/"
        .iter()
        .chain(schema.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_be_bytes(h.to_be_bytes())
}

/// Creates the schema if needed and applies the migrations it lacks.
pub(super) async fn migrate(conn: &mut Lease<'_>, schema: &str) -> Result<(), ApprovalStoreError> {
    let s = ident(schema);
    conn.run(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({}); \
         CREATE SCHEMA IF NOT EXISTS {s}; \
         CREATE TABLE IF NOT EXISTS {s}.migrations \
           (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        lock_key(schema)
    ))
    .await?;
    let rows = conn
        .run(&format!(
            "SELECT coalesce(max(version), 0) FROM {s}.migrations"
        ))
        .await?;
    let current: u32 = match rows.as_slice() {
        [row] => match row.as_slice() {
            [Some(v)] => v
                .parse()
                .map_err(|_| unavailable(format!("schema {schema}: bad version {v:?}")))?,
            _ => return Err(unavailable("unexpected reply reading the schema version")),
        },
        _ => return Err(unavailable("unexpected reply reading the schema version")),
    };
    if current > SCHEMA_VERSION {
        return Err(unavailable(format!(
            "schema {schema} is at version {current}, newer than this pgward's {SCHEMA_VERSION}: \
             upgrade pgward"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        conn.run(&sql.replace("{s}", &s)).await?;
        conn.run(&format!(
            "INSERT INTO {s}.migrations (version) VALUES ({version})"
        ))
        .await?;
    }
    conn.run("COMMIT").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_version() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        let expected: Vec<u32> = (1..=SCHEMA_VERSION).collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn lock_keys_differ_per_schema() {
        assert_ne!(lock_key("a"), lock_key("b"));
        assert_eq!(lock_key("pgward_approvals"), lock_key("pgward_approvals"));
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
