//! The audit writer: one thread that drains the queue, chains each record,
//! writes it to the sink, and writes signed checkpoints at the configured
//! interval, at rotation and when pgward stops.
//!
//! A thread rather than a task: file writes and `fsync` block, and the
//! relay's workers must never wait on a disk.

use super::chain::{Head, Signer};
use super::files::{Rotation, Trail};
use super::queue::Queue;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where chained lines go.
pub(crate) enum Sink {
    /// Rotated files.
    Files(Trail),
    /// Standard output.
    Stdout,
    /// A table on an upstream.
    Postgres(super::pg::PgSink),
}

impl Sink {
    /// Opens the sink: for files, a new file continuing the directory's
    /// chain; for stdout, a new chain with its header.
    pub(crate) fn open(
        config: &crate::config::audit::AuditConfig,
        head: &mut Head,
        upstreams: &std::collections::BTreeMap<String, crate::auth::backend::Upstream>,
    ) -> std::io::Result<Self> {
        use crate::config::audit::AuditSink;
        match &config.sink {
            AuditSink::Postgres {
                upstream,
                table,
                instance,
            } => {
                let upstream = upstreams
                    .get(upstream)
                    .ok_or_else(|| std::io::Error::other(format!("no upstream {upstream:?}")))?;
                Ok(Self::Postgres(super::pg::PgSink::open(
                    upstream.clone(),
                    table,
                    instance,
                    head,
                )?))
            }
            AuditSink::Files(dir) => {
                let rotation = Rotation {
                    size: config.rotate_size,
                    age: config.rotate_interval,
                    retain: config.retain_files,
                };
                Ok(Self::Files(Trail::open(dir, rotation, head)?))
            }
            AuditSink::Stdout => {
                let object = super::chain::header_object(1, 1, "");
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", head.chain(&object))?;
                out.flush()?;
                Ok(Self::Stdout)
            }
        }
    }
}

/// What the writer has done, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Records written.
    pub(crate) records: AtomicU64,
    /// Failed writes (each logged).
    pub(crate) errors: AtomicU64,
}

/// Runs the writer until the queue is closed and drained.
pub(crate) fn run(
    queue: Arc<Queue>,
    mut sink: Sink,
    mut head: Head,
    signer: Option<Signer>,
    interval: Duration,
    written: Arc<Written>,
) {
    let mut next_checkpoint = Instant::now() + interval;
    let mut dirty = false;
    // One line's bytes, reused for every record.
    let mut line = Vec::with_capacity(1024);
    loop {
        let (batch, closed) = queue.take(next_checkpoint);
        let result: std::io::Result<()> = (|| {
            match &mut sink {
                Sink::Files(trail) => {
                    for record in &batch {
                        chain_record(&mut head, &mut line, record);
                        trail.line(&line)?;
                        if trail.due() {
                            if let Some(signer) = &signer {
                                trail.rotate(&mut head, signer)?;
                            }
                        }
                    }
                    trail.flush()?;
                }
                Sink::Stdout => {
                    let mut out = std::io::stdout().lock();
                    for record in &batch {
                        chain_record(&mut head, &mut line, record);
                        out.write_all(&line)?;
                        out.write_all(b"\n")?;
                    }
                    out.flush()?;
                    dirty |= !batch.is_empty();
                }
                Sink::Postgres(pg) => {
                    insert_until_done(pg, &mut head, &batch, &queue);
                    dirty |= !batch.is_empty();
                }
            }
            written
                .records
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let now = Instant::now();
            if now >= next_checkpoint || closed {
                next_checkpoint = now + interval;
                let reason = if closed { "close" } else { "interval" };
                checkpoint(
                    &mut sink,
                    &mut head,
                    signer.as_ref(),
                    reason,
                    &mut dirty,
                    closed,
                )?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            written.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, records = batch.len(), "audit write failed");
        }
        if closed {
            return;
        }
    }
}

/// Chains `record` into `line` (its bytes without newline) and moves the
/// head past it.
fn chain_record(head: &mut Head, line: &mut Vec<u8>, record: &super::event::Record) {
    head.begin(line);
    super::json::write_members(line, record);
    head.seal(line);
}

/// A checkpoint where one is due: always at close, else only when lines
/// were written since the last one.
fn checkpoint(
    sink: &mut Sink,
    head: &mut Head,
    signer: Option<&Signer>,
    reason: &str,
    dirty: &mut bool,
    closing: bool,
) -> std::io::Result<()> {
    let Some(signer) = signer else { return Ok(()) };
    let before = head.seq;
    match sink {
        Sink::Files(trail) => {
            if trail.dirty() || closing {
                trail.checkpoint(head, signer, reason)?;
            }
        }
        Sink::Postgres(pg) => {
            if *dirty || closing {
                pg.checkpoint(head, signer, reason)?;
                *dirty = false;
            }
        }
        Sink::Stdout => {
            if *dirty || closing {
                let fields = super::chain::checkpoint_fields(1, reason);
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", head.checkpoint(signer, &fields))?;
                out.flush()?;
                *dirty = false;
            }
        }
    }
    if head.seq != before {
        // Kept by the log, elsewhere than the trail: the seq a later
        // `audit verify --reached` holds the trail to, so that removing
        // its newest files shows.
        tracing::info!(
            target: "pgward::audit",
            seq = head.seq.saturating_sub(1),
            reason,
            "audit checkpoint"
        );
    }
    Ok(())
}

/// Inserts a batch into the table, retrying (every second, reconnecting)
/// while the database is unavailable: meanwhile the queue fills and
/// fail-closed statements wait. Once pgward is stopping, it gives up after
/// a few tries (the records are logged as lost).
fn insert_until_done(
    pg: &mut super::pg::PgSink,
    head: &mut Head,
    batch: &[super::event::Record],
    queue: &Queue,
) {
    let mut next = *head;
    let mut line = Vec::new();
    let lines: Vec<(u64, String)> = batch
        .iter()
        .map(|r| {
            let seq = next.seq;
            chain_record(&mut next, &mut line, r);
            (seq, String::from_utf8_lossy(&line).into_owned())
        })
        .collect();
    let mut tries = 0u32;
    loop {
        match pg.insert(&lines) {
            Ok(()) => {
                *head = next;
                return;
            }
            Err(e) => {
                tries += 1;
                tracing::error!(error = %e, records = lines.len(), tries, "audit insert failed; retrying");
                if queue.is_closed() && tries >= 3 {
                    tracing::error!(
                        records = lines.len(),
                        "audit records lost: pgward is stopping and the database is unavailable"
                    );
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
