//! An embedded store: an append-only log of JSON records in one file,
//! written by short-lived commands (`pgward token revoke`) and followed by
//! every running instance. Token revocations use it, and the approvals'
//! file store (snapshots of tickets and grants, updated under the lock by
//! [`AppendLog::transact`]).
//!
//! Durability and concurrency, which is why it is this simple:
//! - One record is one line, written with one `write` under an exclusive
//!   file lock, then `fsync`ed before `append` returns; a new file's
//!   directory is `fsync`ed too, so an acknowledged record survives a crash.
//! - A crash can leave a torn last line (no newline). Readers ignore an
//!   unterminated tail until it is complete, and the next writer first ends
//!   it with a newline, so a torn record never swallows the next one; a
//!   complete line that is not valid JSON is reported and skipped.
//! - Readers keep an offset and read only what was appended since; a file
//!   that shrank or was replaced is read again from the start.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The longest record accepted, by writers and readers.
pub const MAX_RECORD: usize = 64 * 1024;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The list lives in the approvals store, which failed or is not
    /// connected yet.
    #[error("the approvals store: {0}")]
    Approvals(String),
    /// The file could not be opened, read, written or synced.
    #[error("{path}: {source}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A record to write is too large or does not serialise.
    #[error("{path}: {message}")]
    Record {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// An append-only record log in `path`.
#[derive(Debug, Clone)]
pub struct AppendLog {
    path: PathBuf,
}

impl AppendLog {
    /// The log in this file (created on first append).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one record and syncs it to disk before returning.
    pub fn append<T: Serialize>(&self, record: &T) -> Result<(), StoreError> {
        let line = self.line(record)?;
        let existed = self.path.exists();
        let mut file = self.open_locked()?;
        self.write_locked(&mut file, line, existed)
    }

    /// A locked read-modify-write: under the exclusive file lock (so no
    /// other writer, in any process, appends in between), `follower`
    /// catches up with the log and `apply` gets what it read; the record
    /// `apply` returns, if any, is appended and synced before the lock is
    /// released. `apply`'s error leaves the log unchanged. Blocking: call it
    /// from `spawn_blocking`.
    pub fn transact<T, W, R, E>(
        &self,
        follower: &mut Follower,
        apply: impl FnOnce(Poll<T>) -> Result<(Option<W>, R), E>,
    ) -> Result<Result<R, E>, StoreError>
    where
        T: DeserializeOwned,
        W: Serialize,
    {
        let existed = self.path.exists();
        let mut file = self.open_locked()?;
        let caught_up = follower.poll::<T>()?;
        let (record, result) = match apply(caught_up) {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(record) = record {
            let line = self.line(&record)?;
            self.write_locked(&mut file, line, existed)?;
        }
        Ok(Ok(result))
    }

    /// One record as a line, refused past [`MAX_RECORD`].
    fn line<T: Serialize>(&self, record: &T) -> Result<Vec<u8>, StoreError> {
        let mut line = serde_json::to_vec(record).map_err(|e| StoreError::Record {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        if line.len() >= MAX_RECORD {
            return Err(StoreError::Record {
                path: self.path.clone(),
                message: "record larger than 64 KiB".into(),
            });
        }
        line.push(b'\n');
        Ok(line)
    }

    /// The file, opened for appending (created if missing) and locked
    /// exclusively; the lock ends when it is dropped.
    fn open_locked(&self) -> Result<File, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        Ok(file)
    }

    /// Writes `line` to the locked `file` and syncs it (and the directory,
    /// for a file that did not exist before).
    fn write_locked(
        &self,
        file: &mut File,
        mut line: Vec<u8>,
        existed: bool,
    ) -> Result<(), StoreError> {
        // A torn last record from a crash is ended first, so it stays one
        // (bad) line instead of swallowing this one.
        let len = file.metadata().map_err(|e| self.io(e))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(|e| self.io(e))?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        file.write_all(&line).map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        if !existed {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| self.io(e))?;
            }
        }
        Ok(())
    }

    /// A reader from the start of the log.
    pub fn follower(&self) -> Follower {
        Follower {
            log: self.clone(),
            offset: 0,
            identity: None,
        }
    }
}

/// Reads a log's records as they are appended.
#[derive(Debug)]
pub struct Follower {
    log: AppendLog,
    offset: u64,
    /// (device, inode) of the file read so far, to notice a replacement.
    identity: Option<(u64, u64)>,
}

/// What one poll found.
#[derive(Debug)]
pub struct Poll<T> {
    /// The file was replaced or shrank: `records` are the whole log again.
    pub reset: bool,
    /// Complete records appended since the last poll.
    pub records: Vec<T>,
}

#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn identity(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl Follower {
    /// Reads what was appended since the last call. A missing file is an
    /// empty log. Blocking: call it from `spawn_blocking`.
    pub fn poll<T: DeserializeOwned>(&mut self) -> Result<Poll<T>, StoreError> {
        let mut file = match File::open(&self.log.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let reset = self.offset > 0;
                self.offset = 0;
                self.identity = None;
                return Ok(Poll {
                    reset,
                    records: Vec::new(),
                });
            }
            Err(e) => return Err(self.log.io(e)),
        };
        let meta = file.metadata().map_err(|e| self.log.io(e))?;
        let id = identity(&meta);
        let reset = (self.identity.is_some() && self.identity != id) || meta.len() < self.offset;
        if reset {
            self.offset = 0;
        }
        self.identity = id;
        let mut records = Vec::new();
        while self.offset < meta.len() {
            file.seek(SeekFrom::Start(self.offset))
                .map_err(|e| self.log.io(e))?;
            let mut chunk = Vec::new();
            (&mut file)
                .take(4 * MAX_RECORD as u64)
                .read_to_end(&mut chunk)
                .map_err(|e| self.log.io(e))?;
            if chunk.is_empty() {
                break;
            }
            let Some(last_newline) = memchr::memrchr(b'\n', &chunk) else {
                if chunk.len() > MAX_RECORD {
                    // A line longer than any record: skip past it.
                    tracing::error!(path = %self.log.path.display(), "oversized record skipped");
                    self.offset += chunk.len() as u64;
                    continue;
                }
                break; // an unterminated tail: not complete yet
            };
            for line in chunk[..last_newline].split(|b| *b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice(line) {
                    Ok(r) => records.push(r),
                    Err(e) => tracing::error!(
                        path = %self.log.path.display(),
                        error = %e,
                        "unreadable record skipped"
                    ),
                }
            }
            self.offset += last_newline as u64 + 1;
        }
        Ok(Poll { reset, records })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        n: u32,
    }

    #[test]
    fn appended_records_are_followed_and_torn_tails_wait() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        let log = AppendLog::new(&path);
        let mut f = log.follower();
        assert!(f.poll::<R>().expect("empty").records.is_empty());
        log.append(&R { n: 1 }).expect("append");
        log.append(&R { n: 2 }).expect("append");
        assert_eq!(
            f.poll::<R>().expect("poll").records,
            [R { n: 1 }, R { n: 2 }]
        );
        assert!(f.poll::<R>().expect("poll").records.is_empty());
        // A torn write (a crash mid-line): not read until complete...
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut w| w.write_all(b"{\"n\":"))
            .expect("torn");
        assert!(f.poll::<R>().expect("poll").records.is_empty());
        // ...and the next append ends it, so only the torn line is lost.
        log.append(&R { n: 3 }).expect("append");
        assert_eq!(f.poll::<R>().expect("poll").records, [R { n: 3 }]);
        // A replaced file is read again from the start.
        std::fs::remove_file(&path).expect("rm");
        log.append(&R { n: 4 }).expect("append");
        let p = f.poll::<R>().expect("poll");
        assert!(p.reset);
        assert_eq!(p.records, [R { n: 4 }]);
        // An oversized record is refused.
        #[derive(serde::Serialize)]
        struct Big(String);
        assert!(log.append(&Big("x".repeat(MAX_RECORD))).is_err());
    }
}
