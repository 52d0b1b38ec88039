//! The PostgreSQL sink: the chain's lines as rows of a table on one of the
//! upstreams, `(instance, seq, line)`, one chain per pgward instance (so
//! several instances share the table and each chain stays valid). Lines
//! are inserted in batches, one multi-row INSERT per batch; the table can
//! be queried (`line::jsonb ->> 'user'`) and verified by exporting one
//! instance's lines in `seq` order (docs/audit.md).
//!
//! Values are written as dollar-quoted literals whose tag is chosen at
//! random and checked absent from the value, so no record text can end
//! the literal; JSON has no raw NUL to cut it.

use super::chain::{Head, Signer};
use crate::auth::backend::Upstream;
use crate::io::FramedStream;
use crate::upstream::query::{dollar_quoted as literal, query};

/// The sink's connection and where its rows go.
pub(crate) struct PgSink {
    runtime: tokio::runtime::Runtime,
    upstream: Upstream,
    conn: Option<FramedStream>,
    table: String,
    instance: String,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl PgSink {
    /// Connects, creates the table if needed, and continues this
    /// instance's chain (a new chain starts with a header line).
    pub(crate) fn open(
        upstream: Upstream,
        table: &str,
        instance: &str,
        head: &mut Head,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut sink = Self {
            runtime,
            upstream,
            conn: None,
            table: table.to_owned(),
            instance: instance.to_owned(),
        };
        sink.run(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (instance text NOT NULL, seq bigint NOT NULL, line text NOT NULL, PRIMARY KEY (instance, seq))"
        ))?;
        let last = sink.run(&format!(
            "SELECT seq, line FROM {table} WHERE instance = {} ORDER BY seq DESC LIMIT 1",
            literal(instance)
        ))?;
        match last.first() {
            Some(row) if row.len() == 2 => {
                let seq: u64 = row[0].parse().map_err(io_err)?;
                *head = Head {
                    seq: seq.saturating_add(1),
                    prev: super::chain::hash_line(row[1].as_bytes()),
                };
            }
            _ => {
                let instance = serde_json::Value::String(instance.to_owned());
                let object =
                    super::chain::header_object(1, 1, &format!(",\"instance\":{instance}"));
                let mut next = *head;
                let line = next.chain(&object);
                sink.insert(&[(head.seq, line)])?;
                *head = next;
            }
        }
        Ok(sink)
    }

    /// Runs one statement on the sink's connection (reconnecting first if
    /// the last attempt broke it).
    fn run(&mut self, sql: &str) -> std::io::Result<Vec<Vec<String>>> {
        let Self {
            runtime,
            upstream,
            conn,
            ..
        } = self;
        runtime.block_on(async {
            if conn.is_none() {
                let login = upstream.login_catalog(&[]).await.map_err(io_err)?;
                *conn = Some(login.conn);
            }
            let Some(c) = conn.as_mut() else {
                return Err(io_err("no connection"));
            };
            match query(c, sql).await {
                Ok(rows) => Ok(rows),
                Err(e) => {
                    // A failed statement leaves the connection usable, a
                    // broken one does not: start afresh either way.
                    *conn = None;
                    Err(io_err(e))
                }
            }
        })
    }

    /// Inserts `(seq, line)` rows in one statement.
    pub(crate) fn insert(&mut self, lines: &[(u64, String)]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let instance = literal(&self.instance);
        let values: Vec<String> = lines
            .iter()
            .map(|(seq, line)| format!("({instance}, {seq}, {})", literal(line)))
            .collect();
        let sql = format!(
            "INSERT INTO {} (instance, seq, line) VALUES {}",
            self.table,
            values.join(", ")
        );
        self.run(&sql).map(|_| ())
    }

    /// A checkpoint row.
    pub(crate) fn checkpoint(
        &mut self,
        head: &mut Head,
        signer: &Signer,
        reason: &str,
    ) -> std::io::Result<()> {
        let mut next = *head;
        let line = next.checkpoint(signer, &super::chain::checkpoint_fields(1, reason));
        self.insert(&[(head.seq, line)])?;
        *head = next;
        Ok(())
    }
}
