//! The file sink: JSON Lines files `pgward-audit-NNNNNNNN.jsonl` in one
//! directory, rotated by size and age, the oldest deleted beyond a count.
//!
//! Each file starts with a `file` header (its number, the oldest file kept
//! when it was opened, and the chain's `prev` from the file before) and
//! ends, when it is rotated or pgward stops, with a signed checkpoint
//! (`reason` `rotate` or `close`). On start pgward continues the chain from
//! the newest file's last complete line, in a new file.

use super::chain::{hash_line, Head, Signer};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bytes buffered before a write to the file: a batch of records (up to
/// 1,024 lines of a few hundred bytes) goes out in a few writes.
const WRITE_BUFFER: usize = 64 * 1024;

/// The file name of file `n`.
pub(crate) fn file_name(n: u64) -> String {
    format!("pgward-audit-{n:08}.jsonl")
}

/// The number in an audit file's name.
pub(crate) fn file_number(name: &str) -> Option<u64> {
    name.strip_prefix("pgward-audit-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// The audit files in `dir`, by number.
pub(crate) fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = file_number(e.file_name().to_str()?)?;
            Some((n, e.path()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Rotation and retention settings.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    pub(crate) size: u64,
    pub(crate) age: Option<std::time::Duration>,
    pub(crate) retain: Option<usize>,
}

/// The open trail.
pub(crate) struct Trail {
    dir: PathBuf,
    rotation: Rotation,
    number: u64,
    file: std::io::BufWriter<File>,
    written: u64,
    opened: Instant,
    /// Lines in this file since its last checkpoint.
    since_checkpoint: u64,
}

impl Trail {
    /// Opens a new file in `dir`, continuing the chain of the newest one
    /// there (or a new chain).
    pub(crate) fn open(dir: &Path, rotation: Rotation, head: &mut Head) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let files = list(dir)?;
        let number = match files.last() {
            Some((n, path)) => {
                if let Some(continued) = last_head(path)? {
                    *head = continued;
                }
                n + 1
            }
            None => 1,
        };
        let mut trail = Self {
            dir: dir.to_owned(),
            rotation,
            number,
            file: std::io::BufWriter::with_capacity(
                WRITE_BUFFER,
                create(&dir.join(file_name(number)))?,
            ),
            written: 0,
            opened: Instant::now(),
            since_checkpoint: 0,
        };
        trail.header(head)?;
        Ok(trail)
    }

    fn header(&mut self, head: &mut Head) -> std::io::Result<()> {
        self.retain()?;
        let oldest = list(&self.dir)?.first().map_or(self.number, |(n, _)| *n);
        let object = super::chain::header_object(self.number, oldest, "");
        self.line(head.chain(&object).as_bytes())
    }

    /// Appends one line.
    pub(crate) fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.file.write_all(line)?;
        self.file.write_all(b"\n")?;
        self.written += line.len() as u64 + 1;
        self.since_checkpoint += 1;
        Ok(())
    }

    /// Writes buffered lines to the file.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    /// Whether lines were written since the last checkpoint.
    pub(crate) fn dirty(&self) -> bool {
        self.since_checkpoint > 0
    }

    /// A signed checkpoint, flushed and synced to disk.
    pub(crate) fn checkpoint(
        &mut self,
        head: &mut Head,
        signer: &Signer,
        reason: &str,
    ) -> std::io::Result<()> {
        let fields = super::chain::checkpoint_fields(self.number, reason);
        self.line(head.checkpoint(signer, &fields).as_bytes())?;
        self.since_checkpoint = 0;
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }

    /// Whether the file is due for rotation.
    pub(crate) fn due(&self) -> bool {
        self.written >= self.rotation.size
            || self
                .rotation
                .age
                .is_some_and(|a| self.opened.elapsed() >= a)
    }

    /// Closes this file with a checkpoint and opens the next.
    pub(crate) fn rotate(&mut self, head: &mut Head, signer: &Signer) -> std::io::Result<()> {
        self.checkpoint(head, signer, "rotate")?;
        self.number += 1;
        self.file = std::io::BufWriter::with_capacity(
            WRITE_BUFFER,
            create(&self.dir.join(file_name(self.number)))?,
        );
        self.written = 0;
        self.opened = Instant::now();
        self.header(head)
    }

    /// Deletes the oldest files beyond the retention count (never the one
    /// being written).
    fn retain(&self) -> std::io::Result<()> {
        let Some(keep) = self.rotation.retain else {
            return Ok(());
        };
        let files = list(&self.dir)?;
        let excess = files.len().saturating_sub(keep);
        for (n, path) in files.iter().take(excess) {
            if *n != self.number {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

fn create(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create_new(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// The chain head after a file's last complete line (one that ends with a
/// newline and parses), if it has one. A partial line left by a crash is
/// not continued from; the verifier reports it.
fn last_head(path: &Path) -> std::io::Result<Option<Head>> {
    let bytes = std::fs::read(path)?;
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => return Ok(None),
    };
    for line in complete.rsplit(|&b| b == b'\n') {
        let seq = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("seq")?.as_u64());
        if let Some(seq) = seq {
            return Ok(Some(Head {
                seq: seq.saturating_add(1),
                prev: hash_line(line),
            }));
        }
    }
    Ok(None)
}
