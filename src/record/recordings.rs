//! The recordings on disk (`recordings_directory/session-<id>-<ms>.jsonl`):
//! listed newest first and read back for `pgward replay` and the admin
//! listener's sessions page.

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest recording read back (the per-session cap defaults to 16 MiB;
/// a file grown past this is refused, not read into memory).
pub const MAX_READ: u64 = 64 << 20;

/// One recording file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingFile {
    /// The session's registry id (ids restart with pgward).
    pub session: u64,
    /// When the session started, milliseconds since the epoch.
    pub started_ms: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// The file.
    pub path: PathBuf,
}

/// `session-<id>-<ms>.jsonl` read as (id, ms).
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("session-")?.strip_suffix(".jsonl")?;
    let (id, ms) = rest.split_once('-')?;
    Some((id.parse().ok()?, ms.parse().ok()?))
}

/// The recordings in `dir`, newest first, at most `limit`.
pub fn list(dir: &Path, limit: usize) -> std::io::Result<Vec<RecordingFile>> {
    let mut out: Vec<RecordingFile> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let (session, started_ms) = parse_name(e.file_name().to_str()?)?;
            let meta = e.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some(RecordingFile {
                session,
                started_ms,
                bytes: meta.len(),
                path: e.path(),
            })
        })
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse((r.started_ms, r.session)));
    out.truncate(limit);
    Ok(out)
}

/// The recording of `session`: the one that started at `started_ms`, or
/// the newest when `None`.
pub fn find(
    dir: &Path,
    session: u64,
    started_ms: Option<u64>,
) -> std::io::Result<Option<RecordingFile>> {
    Ok(list(dir, usize::MAX)?
        .into_iter()
        .find(|r| r.session == session && started_ms.is_none_or(|ms| ms == r.started_ms)))
}

/// A recording's events (one JSON object a line; a torn last line, from a
/// session still being written, is left out).
pub fn load(path: &Path) -> Result<Vec<Value>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_READ + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_READ {
        return Err(format!(
            "{} is larger than {} MiB",
            path.display(),
            MAX_READ >> 20
        ));
    }
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| format!("{} is not a recording: {e}", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_torn_tails_are_left_out() {
        let dir = tempfile::tempdir().expect("dir");
        for (name, body) in [
            ("session-1-1000.jsonl", "{\"kind\":\"start\"}\n"),
            (
                "session-2-3000.jsonl",
                "{\"kind\":\"start\"}\n{\"kind\":\"out\"}\n{\"kin",
            ),
            ("session-1-2000.jsonl", "{\"kind\":\"start\"}\n"),
            ("session-x-1.jsonl", ""),
            ("other.txt", ""),
        ] {
            std::fs::write(dir.path().join(name), body).expect("write");
        }
        let all = list(dir.path(), 10).expect("list");
        let keys: Vec<(u64, u64)> = all.iter().map(|r| (r.session, r.started_ms)).collect();
        assert_eq!(keys, vec![(2, 3000), (1, 2000), (1, 1000)]);
        assert_eq!(list(dir.path(), 1).expect("list").len(), 1);
        let newest = find(dir.path(), 1, None).expect("find").expect("some");
        assert_eq!(newest.started_ms, 2000);
        assert!(find(dir.path(), 1, Some(5)).expect("find").is_none());
        let events = load(&all[0].path).expect("load");
        assert_eq!(events.len(), 2, "the torn tail is left out");
        std::fs::write(dir.path().join("session-3-1.jsonl"), "not json\n").expect("write");
        let bad = find(dir.path(), 3, None).expect("find").expect("some");
        assert!(load(&bad.path).is_err());
    }
}
