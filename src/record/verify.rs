//! `pgward audit verify`: checks a trail's chain and checkpoint signatures
//! and names the first record that was modified, removed, reordered or
//! truncated.
//!
//! The files are put in order by the number in their own `file` header.
//! Each line must carry the next `seq` and the hash of the line before it
//! (across files); every checkpoint's signature must verify with the public
//! key; every file but the last must end with a `rotate` checkpoint, and the
//! last with a `close` one (unless `open` is allowed: the file pgward is
//! writing now, whose records after its last checkpoint are not yet
//! signed); no file the newest header says was kept may be missing.

use super::chain::{hash_line, hex, Hash, PublicKey, GENESIS};
use std::path::{Path, PathBuf};

/// What was found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// A record's bytes changed.
    Modified,
    /// Records (or whole files) are missing.
    Removed,
    /// Records are out of order.
    Reordered,
    /// A file ends early.
    Truncated,
}

/// The first problem in a trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind.
    pub kind: Tamper,
    /// The file.
    pub file: PathBuf,
    /// The line (1-based).
    pub line: usize,
    /// What exactly.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Tamper::Modified => "modified",
            Tamper::Removed => "removed",
            Tamper::Reordered => "reordered",
            Tamper::Truncated => "truncated",
        };
        write!(
            f,
            "{}:{}: {kind}: {}",
            self.file.display(),
            self.line,
            self.message
        )
    }
}

/// A trail that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Files checked.
    pub files: usize,
    /// Lines checked (records, headers and checkpoints).
    pub lines: u64,
    /// Checkpoint signatures verified.
    pub checkpoints: u64,
    /// Lines after the last checkpoint (only with `open`): chained but not
    /// yet signed.
    pub unsigned_tail: u64,
}

/// The verifier could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Nothing to verify.
    #[error("no audit files found")]
    Empty,
}

struct Line<'a> {
    raw: &'a [u8],
    value: Option<serde_json::Value>,
}

impl Line<'_> {
    fn seq(&self) -> Option<u64> {
        self.value.as_ref()?.get("seq")?.as_u64()
    }
    fn str(&self, key: &str) -> Option<&str> {
        self.value.as_ref()?.get(key)?.as_str()
    }
    fn u64(&self, key: &str) -> Option<u64> {
        self.value.as_ref()?.get(key)?.as_u64()
    }
}

struct File<'a> {
    path: PathBuf,
    lines: Vec<Line<'a>>,
    /// Bytes after the last newline (a partial line).
    partial: bool,
    number: Option<u64>,
}

/// The files named (a directory stands for its audit files).
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let files = super::files::list(p).map_err(|source| VerifyError::Read {
                path: p.clone(),
                source,
            })?;
            out.extend(files.into_iter().map(|(_, f)| f));
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> File<'a> {
    let mut chunks: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // After the last newline: empty for a complete file.
    let tail = chunks.pop().unwrap_or_default();
    let lines: Vec<Line<'_>> = chunks
        .into_iter()
        .map(|raw| Line {
            raw,
            value: serde_json::from_slice(raw)
                .ok()
                .filter(|v: &serde_json::Value| v.is_object()),
        })
        .collect();
    let number = lines
        .first()
        .filter(|l| l.str("type") == Some("file"))
        .and_then(|l| l.u64("file"));
    File {
        path: path.to_owned(),
        lines,
        partial: !tail.is_empty(),
        number,
    }
}

/// Verifies the trail in `paths` (files, or directories of them).
pub fn verify_paths(
    paths: &[PathBuf],
    key: &PublicKey,
    open: bool,
) -> Result<Result<Verified, Problem>, VerifyError> {
    verify_paths_reaching(paths, key, open, None)
}

/// [`verify_paths`], and the trail must reach seq `reached` at least (a
/// seq it had, from pgward's `audit checkpoint` log lines or an earlier
/// verification). The files alone cannot show that their newest ones were
/// removed back to a file that ends where pgward once stopped (its closing
/// checkpoint): the seq reached, kept elsewhere, can.
pub fn verify_paths_reaching(
    paths: &[PathBuf],
    key: &PublicKey,
    open: bool,
    reached: Option<u64>,
) -> Result<Result<Verified, Problem>, VerifyError> {
    let paths = expand(paths)?;
    let mut contents = Vec::new();
    for p in &paths {
        let bytes = std::fs::read(p).map_err(|source| VerifyError::Read {
            path: p.clone(),
            source,
        })?;
        contents.push((p.clone(), bytes));
    }
    let mut files: Vec<File<'_>> = contents.iter().map(|(p, b)| parse(p, b)).collect();
    if files.is_empty() {
        return Err(VerifyError::Empty);
    }
    // A file whose header is unreadable sorts by its name's number.
    files.sort_by_key(|f| {
        f.number
            .or_else(|| super::files::file_number(f.path.file_name()?.to_str()?))
    });
    Ok(check(&files, key, open, reached))
}

fn problem(kind: Tamper, file: &File<'_>, line: usize, message: String) -> Problem {
    Problem {
        kind,
        file: file.path.clone(),
        line,
        message,
    }
}

fn check(
    files: &[File<'_>],
    key: &PublicKey,
    open: bool,
    reached: Option<u64>,
) -> Result<Verified, Problem> {
    let all_seqs: Vec<u64> = files
        .iter()
        .flat_map(|f| f.lines.iter().filter_map(Line::seq))
        .collect();
    let mut prev: Option<Hash> = None;
    let mut expected: Option<u64> = None;
    let mut seen = 0usize;
    let mut done = Verified {
        files: files.len(),
        lines: 0,
        checkpoints: 0,
        unsigned_tail: 0,
    };
    let mut last_file: Option<u64> = None;
    for (fi, file) in files.iter().enumerate() {
        let Some(first) = file.lines.first() else {
            return Err(problem(
                Tamper::Truncated,
                file,
                1,
                "the file is empty".into(),
            ));
        };
        let Some(number) = file.number else {
            return Err(problem(
                Tamper::Modified,
                file,
                1,
                "the first line is not the file's header".into(),
            ));
        };
        if let Some(last) = last_file {
            if last.checked_add(1) != Some(number) {
                return Err(problem(
                    Tamper::Removed,
                    file,
                    1,
                    format!(
                        "audit file {} is missing (the trail goes from file {last} to {number})",
                        last.saturating_add(1)
                    ),
                ));
            }
        } else if first.str("prev").is_some_and(|p| p != hex(&GENESIS)) && number == 1 {
            return Err(problem(
                Tamper::Modified,
                file,
                1,
                "the trail's first file does not start a chain".into(),
            ));
        }
        last_file = Some(number);
        for (li, line) in file.lines.iter().enumerate() {
            let at = li + 1;
            let Some(seq) = line.seq() else {
                return Err(problem(
                    Tamper::Modified,
                    file,
                    at,
                    "the line is not a valid audit record".into(),
                ));
            };
            if let Some(want) = expected {
                if seq > want {
                    return Err(if all_seqs[seen..].contains(&want) {
                        problem(
                            Tamper::Reordered,
                            file,
                            at,
                            format!(
                                "record seq {seq} comes before seq {want}, which appears later"
                            ),
                        )
                    } else {
                        problem(
                            Tamper::Removed,
                            file,
                            at,
                            format!(
                                "records seq {want} to {} are missing before seq {seq}",
                                seq - 1
                            ),
                        )
                    });
                }
                if seq < want {
                    return Err(problem(
                        Tamper::Reordered,
                        file,
                        at,
                        format!("record seq {seq} comes after seq {}", want - 1),
                    ));
                }
            }
            if let Some(p) = prev {
                if line.str("prev") != Some(hex(&p).as_str()) {
                    let (where_, what) = if li == 0 {
                        ("the last line of the previous file".to_owned(), "modified")
                    } else {
                        (format!("line {li} (seq {})", seq - 1), "modified")
                    };
                    let before = if li == 0 { &files[fi - 1] } else { file };
                    let line_no = if li == 0 { before.lines.len() } else { li };
                    return Err(problem(
                        Tamper::Modified,
                        before,
                        line_no,
                        format!("{where_} was {what}: seq {seq}'s prev does not match its hash"),
                    ));
                }
            }
            if line.str("type") == Some("file") && li != 0 {
                return Err(problem(
                    Tamper::Reordered,
                    file,
                    at,
                    "a file header in the middle of a file".into(),
                ));
            }
            if line.str("type") == Some("checkpoint") {
                if !key.verify_line(line.raw) {
                    return Err(problem(
                        Tamper::Modified,
                        file,
                        at,
                        format!("checkpoint seq {seq} has no valid signature for this key"),
                    ));
                }
                done.checkpoints += 1;
                done.unsigned_tail = 0;
            } else {
                done.unsigned_tail += 1;
            }
            prev = Some(hash_line(line.raw));
            expected = Some(seq.saturating_add(1));
            seen += 1;
            done.lines += 1;
        }
        let last_line = file.lines.len();
        if file.partial {
            return Err(problem(
                Tamper::Truncated,
                file,
                last_line + 1,
                "the file ends in the middle of a line".into(),
            ));
        }
        let is_last = fi + 1 == files.len();
        let closing = file
            .lines
            .last()
            .filter(|l| l.str("type") == Some("checkpoint"));
        let reason = closing.and_then(|l| l.str("reason"));
        // A file before the last ends where pgward rotated, or where it
        // stopped (a restart goes on in a new file).
        let ok = match (is_last, reason) {
            (false, Some("rotate" | "close")) => true,
            (true, Some("close")) => true,
            (true, _) => open,
            _ => false,
        };
        if !ok {
            return Err(problem(
                Tamper::Truncated,
                file,
                last_line,
                format!(
                    "the file ends after seq {} without its {} checkpoint",
                    expected.unwrap_or(1) - 1,
                    if is_last {
                        "closing"
                    } else {
                        "rotation or closing"
                    }
                ),
            ));
        }
    }
    let last_seq = expected.unwrap_or(1).saturating_sub(1);
    if let (Some(reached), Some(last)) = (reached, files.last()) {
        if last_seq < reached {
            return Err(problem(
                Tamper::Truncated,
                last,
                last.lines.len(),
                format!(
                    "the trail ends at seq {last_seq}, but it had reached seq {reached}: \
                     the records (or files) after it were removed"
                ),
            ));
        }
    }
    // The newest header names the oldest file retention kept.
    let newest = files
        .last()
        .and_then(|f| f.lines.first())
        .and_then(|l| l.u64("oldest"));
    let first = files.first().and_then(|f| f.number);
    if let (Some(oldest), Some(first)) = (newest, first) {
        if first > oldest {
            return Err(problem(
                Tamper::Removed,
                &files[0],
                1,
                format!(
                    "audit files {oldest} to {} are missing (kept by retention)",
                    first - 1
                ),
            ));
        }
    }
    if !open {
        done.unsigned_tail = 0;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile files: the verifier reports, never panics.
    #[test]
    fn garbage_and_extreme_values_are_reported_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let (_, public) = super::super::chain::generate_key();
        std::fs::write(dir.path().join("k.pub"), public).unwrap();
        let key = PublicKey::load(&dir.path().join("k.pub")).unwrap();
        let cases: [&[u8]; 7] = [
            b"",
            b"not json\n",
            b"{\"seq\":18446744073709551615,\"prev\":\"00\",\"type\":\"file\",\"file\":1}\n{\"seq\":0}\n",
            b"{\"seq\":1,\"prev\":\"x\",\"type\":\"file\",\"file\":18446744073709551615,\"oldest\":0}\n",
            b"{\"seq\":1,\"type\":\"checkpoint\",\"sig\":\"!!\"}\n",
            b"[1,2,3]\n{}\n",
            b"{\"seq\":1,\"prev\":\"0000\",\"type\":\"file\",\"file\":1}\n{\"seq\":1}",
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let path = dir.path().join(format!("pgward-audit-{:08}.jsonl", i + 1));
            std::fs::write(&path, bytes).unwrap();
            let result = verify_paths(std::slice::from_ref(&path), &key, false).unwrap();
            assert!(result.is_err(), "case {i} verified");
            std::fs::remove_file(&path).unwrap();
        }
    }
}
