//! Session recording: for identities in `[audit] record_groups`, what the
//! client sent (statement texts, not Bind values) and every byte it was
//! sent after every phase (masked values masked), with times, one JSON
//! line an event, in `recordings_directory/session-<id>-<start ms>.jsonl`.
//! `pgward replay` renders one (`replay.rs`).
//!
//! The session's tap only formats events and hands them to the recorder
//! thread through a bounded channel (no disk I/O on the session's task);
//! past `record_max_bytes`, or if the recorder falls behind, the recording
//! ends with a `truncated` event.

use crate::session::phases::{RequestKind, SessionInfo};
use base64::Engine;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

/// Events queued for the recorder thread, at most.
const CHANNEL: usize = 4096;

enum Msg {
    Open { key: u64, path: PathBuf },
    Line { key: u64, line: String },
    Close { key: u64 },
}

/// The recorder: its channel, and what sessions it records.
pub(crate) struct Recorder {
    tx: SyncSender<Msg>,
    dir: PathBuf,
    groups: Vec<String>,
    cap: u64,
}

impl Recorder {
    /// Starts the recorder thread (creating the directory).
    pub(crate) fn start(dir: PathBuf, groups: Vec<String>, cap: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        std::thread::Builder::new()
            .name("pgward-recorder".into())
            .spawn(move || run(rx))?;
        Ok(Self {
            tx,
            dir,
            groups,
            cap,
        })
    }

    /// A tap for this session, if its identity is recorded.
    pub(crate) fn tap(&self, info: &SessionInfo) -> Option<SessionTap> {
        if !info.identity.groups.iter().any(|g| self.groups.contains(g)) {
            return None;
        }
        let started = SystemTime::now();
        let ms = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let key = info.id ^ ((ms as u64) << 20);
        let path = self.dir.join(format!("session-{}-{ms}.jsonl", info.id));
        self.tx.try_send(Msg::Open { key, path }).ok()?;
        let mut tap = SessionTap {
            tx: self.tx.clone(),
            key,
            start: Instant::now(),
            sent: 0,
            cap: self.cap,
            done: false,
        };
        tap.event(serde_json::json!({
            "kind": "start",
            "session": info.id,
            "time": super::event::rfc3339(started),
            "user": info.identity.user,
            "database": info.database,
            "client": info.client.map(|c| c.to_string()),
        }));
        Some(tap)
    }
}

/// One session's recording.
pub(crate) struct SessionTap {
    tx: SyncSender<Msg>,
    key: u64,
    start: Instant,
    sent: u64,
    cap: u64,
    done: bool,
}

impl SessionTap {
    fn event(&mut self, mut value: serde_json::Value) {
        if self.done {
            return;
        }
        value["t_us"] = (self.start.elapsed().as_micros() as u64).into();
        let line = value.to_string();
        match self.tx.try_send(Msg::Line {
            key: self.key,
            line,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // The recorder is behind: say so, best effort, and stop.
                self.done = true;
                let t = self.start.elapsed().as_micros() as u64;
                let _ = self.tx.try_send(Msg::Line {
                    key: self.key,
                    line: format!("{{\"kind\":\"truncated\",\"why\":\"the recorder fell behind\",\"t_us\":{t}}}"),
                });
            }
            Err(TrySendError::Disconnected(_)) => self.done = true,
        }
    }
}

impl crate::session::core::Tap for SessionTap {
    fn request(&mut self, kind: RequestKind, text: &[u8]) {
        let message = match kind {
            RequestKind::Query => "query",
            RequestKind::Parse => "parse",
            RequestKind::Bind => "bind",
            RequestKind::Execute => "execute",
        };
        self.event(serde_json::json!({
            "kind": "request",
            "message": message,
            "text": String::from_utf8_lossy(text),
        }));
    }

    fn bound(&mut self, result_formats: &mut dyn Iterator<Item = i16>) {
        let formats: Vec<i16> = result_formats.collect();
        self.event(serde_json::json!({ "kind": "bind", "result_formats": formats }));
    }

    fn sent(&mut self, bytes: &[u8]) {
        if self.done || bytes.is_empty() {
            return;
        }
        let room = self.cap.saturating_sub(self.sent) as usize;
        let take = bytes.len().min(room);
        if take > 0 {
            self.sent += take as u64;
            self.event(serde_json::json!({
                "kind": "out",
                "data": base64::engine::general_purpose::STANDARD.encode(&bytes[..take]),
            }));
        }
        if take < bytes.len() {
            self.event(serde_json::json!({
                "kind": "truncated",
                "why": format!("the recording reached record_max_bytes ({} bytes)", self.cap),
            }));
            self.done = true;
        }
    }
}

impl Drop for SessionTap {
    fn drop(&mut self) {
        let done = std::mem::replace(&mut self.done, false);
        self.event(serde_json::json!({ "kind": "end" }));
        self.done = done;
        // Close must arrive: block for room if need be (the session is over).
        let _ = self.tx.send(Msg::Close { key: self.key });
    }
}

/// The recorder thread: appends lines to each session's file; flushes
/// every second and when a session closes.
fn run(rx: Receiver<Msg>) {
    let mut files: HashMap<u64, std::io::BufWriter<std::fs::File>> = HashMap::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Msg::Open { key, path }) => {
                let mut o = std::fs::OpenOptions::new();
                o.create_new(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                match o.open(&path) {
                    Ok(f) => {
                        files.insert(key, std::io::BufWriter::new(f));
                    }
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "cannot record session")
                    }
                }
            }
            Ok(Msg::Line { key, line }) => {
                if let Some(f) = files.get_mut(&key) {
                    if let Err(e) = writeln!(f, "{line}") {
                        tracing::error!(error = %e, "session recording write failed");
                        files.remove(&key);
                    }
                }
            }
            Ok(Msg::Close { key }) => {
                if let Some(mut f) = files.remove(&key) {
                    let _ = f.flush();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                for f in files.values_mut() {
                    let _ = f.flush();
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
