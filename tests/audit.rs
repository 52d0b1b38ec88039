//! The audit trail end to end: records from tokio-postgres and psql
//! sessions (allowed, refused, error, COPY, multi-statement Query,
//! pipelined Executes, parameters), and the verifier against each kind of
//! tampering, also through the binary's exit status.

mod support;

use pgward::record::chain::{generate_key, PublicKey};
use pgward::record::verify::{verify_paths, Tamper};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{sqlstate, Backend, Pgward, DB, PASSWORD, USER};

const BIN: &str = env!("CARGO_BIN_EXE_pgward");

/// A directory with a key pair and the trail's directory.
struct Trail {
    dir: tempfile::TempDir,
}

impl Trail {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let (private, public) = generate_key();
        std::fs::write(dir.path().join("audit.key"), private).expect("key");
        std::fs::write(dir.path().join("audit.key.pub"), public).expect("pub");
        Self { dir }
    }

    fn files(&self) -> PathBuf {
        self.dir.path().join("trail")
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("audit.key.pub")
    }

    fn key(&self) -> PublicKey {
        PublicKey::load(&self.public()).expect("public key")
    }

    /// The `[audit]` section (and a deny rule) appended to the usual config.
    fn config(&self, backend: &Backend, extra: &str) -> String {
        format!(
            "{}\n[policy]\n[[policy.rules]]\nname = \"no-sleeping\"\naction = \"deny\"\nfunctions = [\"pg_sleep\"]\n\n[audit]\nenabled = true\ndirectory = \"{}\"\nsigning_key_file = \"{}\"\n{extra}\n",
            backend.config("", ""),
            self.files().display(),
            self.dir.path().join("audit.key").display(),
        )
    }

    /// Every line of the trail, in file order.
    fn lines(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.files())
            .expect("trail dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        names
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .expect("read")
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn statements(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v["type"] == "statement")
            .collect()
    }
}

fn find<'a>(records: &'a [Value], statement: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["statement"].as_str() == Some(statement))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_statements_are_recorded_and_the_trail_verifies() {
    let backend = Backend::shared();
    let trail = Trail::new();
    let pw = Pgward::start_in(&trail.config(backend, ""), backend.cluster.dir()).await;
    let client = pw.connect().await;

    client
        .simple_query("SELECT 1 AS a; SELECT 2 AS b")
        .await
        .expect("multi-statement");
    let e = client
        .simple_query("SELECT pg_sleep(0)")
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&e), "42501");
    let e = client
        .simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&e), "22012");
    {
        use futures::TryStreamExt;
        let rows: Vec<_> = client
            .copy_out("COPY (SELECT generate_series(1, 3)) TO STDOUT")
            .await
            .expect("copy out")
            .try_collect()
            .await
            .expect("copy data");
        assert_eq!(rows.len(), 3);
    }
    // Pipelined extended protocol: three Executes in flight at once.
    let s = client.prepare("SELECT $1::int + 1").await.expect("prepare");
    let (a, b, c) = tokio::join!(
        client.query_one(&s, &[&1i32]),
        client.query_one(&s, &[&2i32]),
        client.query_one(&s, &[&3i32]),
    );
    assert_eq!(
        a.unwrap().get::<_, i32>(0) + b.unwrap().get::<_, i32>(0) + c.unwrap().get::<_, i32>(0),
        9
    );
    drop(client);

    // psql, with its application_name.
    let out = Command::new("psql")
        .arg(pw.dsn())
        .args(["-X", "-A", "-t", "-c", "SELECT 'from psql'"])
        .env("PGPASSWORD", PASSWORD)
        .env("PGAPPNAME", "audit-test")
        .output()
        .expect("psql");
    assert!(out.status.success(), "{out:?}");
    pw.shutdown().await;

    let records = trail.statements();
    let first = find(&records, "SELECT 1 AS a");
    let second = find(&records, "SELECT 2 AS b");
    assert_eq!((first.len(), second.len()), (1, 1), "{records:#?}");
    assert_eq!(first[0]["message"], "query");
    assert_eq!(first[0]["index"], 0);
    assert_eq!(second[0]["index"], 1);
    assert_eq!(second[0]["tag"], "SELECT 1");
    assert_eq!(first[0]["user"], USER);
    assert_eq!(first[0]["database"], DB);
    assert_eq!(first[0]["role"], support::APP_ROLE);
    assert_eq!(first[0]["groups"], serde_json::json!(["dev"]));
    assert_eq!(first[0]["rules_version"], 1);
    assert!(first[0]["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:")));

    let refused = find(&records, "SELECT pg_sleep(0)");
    assert_eq!(refused.len(), 1, "{records:#?}");
    assert_eq!(refused[0]["decision"], "refused");
    assert_eq!(refused[0]["rule"], "no-sleeping");
    assert_eq!(refused[0]["refused_by"], "rules");
    assert_eq!(refused[0]["sqlstate"], "42501");

    let failed = find(&records, "SELECT 1/0");
    assert_eq!(failed[0]["decision"], "allowed");
    assert_eq!(failed[0]["sqlstate"], "22012");

    let copy: Vec<&Value> = find(&records, "COPY (SELECT generate_series(1, 3)) TO STDOUT")
        .into_iter()
        .filter(|r| r["message"] == "execute")
        .collect();
    assert_eq!(copy[0]["tag"], "COPY 3");
    assert_eq!(copy[0]["rows"], 3);

    let executes: Vec<&Value> = find(&records, "SELECT $1::int + 1")
        .into_iter()
        .filter(|r| r["message"] == "execute")
        .collect();
    assert_eq!(executes.len(), 3, "one record per Execute: {records:#?}");
    for e in &executes {
        assert_eq!(e["tag"], "SELECT 1");
        assert_eq!(e["params"], serde_json::json!(["<redacted>"]));
        assert!(e["duration_us"].as_u64().is_some());
        assert!(e["bytes_sent"].as_u64().is_some_and(|b| b > 0));
    }

    let psql = find(&records, "SELECT 'from psql'");
    assert_eq!(psql[0]["application_name"], "audit-test");

    let lines = trail.lines();
    let starts = lines
        .iter()
        .filter(|v| v["type"] == "session_start")
        .count();
    let ends: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "session_end")
        .collect();
    assert_eq!((starts, ends.len()), (2, 2));
    assert!(ends.iter().all(|e| e["reason"].as_str().is_some()));
    assert_eq!(lines.last().unwrap()["reason"], "close");

    let verified = verify_paths(&[trail.files()], &trail.key(), false)
        .expect("readable")
        .expect("an untouched trail verifies");
    assert!(verified.checkpoints >= 1);

    // OCSF export: one event per session and statement record.
    let out = Command::new(BIN)
        .args(["audit", "export", "--format", "ocsf"])
        .arg(trail.files())
        .output()
        .expect("export");
    assert!(out.status.success(), "{out:?}");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(events.len(), records.len() + starts + ends.len());
    assert!(events.iter().all(|e| e["class_uid"] == 6005));
    let refused_event = events
        .iter()
        .find(|e| e["query_info"]["query_string"] == "SELECT pg_sleep(0)")
        .expect("refused statement exported");
    assert_eq!(refused_event["status_id"], 2);
    assert_eq!(refused_event["unmapped"]["rule"], "no-sleeping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_written_in_full_or_as_keyed_hashes() {
    let backend = Backend::shared();
    for (mode, expect_clear) in [("full", true), ("hash", false)] {
        let trail = Trail::new();
        let key_file = trail.dir.path().join("param.key");
        std::fs::write(&key_file, "k3y\n").expect("key");
        let extra = format!(
            "parameters = \"{mode}\"\nparameter_key_file = \"{}\"\n",
            key_file.display()
        );
        let pw = Pgward::start_in(&trail.config(backend, &extra), backend.cluster.dir()).await;
        let client = pw.connect().await;
        client
            .query_one(
                "SELECT $1::text, $2::text",
                &[&"secret-value", &None::<String>],
            )
            .await
            .expect("query");
        drop(client);
        pw.shutdown().await;
        let records = trail.statements();
        let exec = find(&records, "SELECT $1::text, $2::text")
            .into_iter()
            .find(|r| r["message"] == "execute")
            .cloned()
            .expect("execute record");
        let first = exec["params"][0].as_str().expect("a value");
        assert_eq!(exec["params"][1], Value::Null);
        if expect_clear {
            // tokio-postgres sends text in binary format: written as hex.
            assert_eq!(first, "\\x7365637265742d76616c7565");
        } else {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k3y").unwrap();
            mac.update(b"secret-value");
            let hex: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(first, format!("hmac-sha256:{hex}"));
        }
    }
}

/// A trail of several files (small rotation size), closed cleanly.
async fn rotated_trail(backend: &Backend) -> Trail {
    let trail = Trail::new();
    let pw = Pgward::start_in(
        &trail.config(backend, "rotate_size = \"4KiB\"\n"),
        backend.cluster.dir(),
    )
    .await;
    let client = pw.connect().await;
    for i in 0..40 {
        client
            .simple_query(&format!("SELECT {i} AS n"))
            .await
            .expect("select");
    }
    drop(client);
    pw.shutdown().await;
    trail
}

/// A copy of the trail's files to tamper with.
fn copy_of(trail: &Trail) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("dir");
    for e in std::fs::read_dir(trail.files()).expect("dir") {
        let p = e.expect("entry").path();
        std::fs::copy(&p, copy.path().join(p.file_name().unwrap())).expect("copy");
    }
    copy
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn edit_lines(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn check(trail: &Trail, dir: &Path) -> Result<(), (Tamper, PathBuf, usize, String)> {
    match verify_paths(&[dir.to_owned()], &trail.key(), false).expect("readable") {
        Ok(_) => Ok(()),
        Err(p) => Err((p.kind, p.file, p.line, p.message)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_pinpoints_each_kind_of_tampering() {
    let backend = Backend::shared();
    let trail = rotated_trail(backend).await;
    let files = files_in(&trail.files());
    assert!(files.len() >= 3, "rotation made several files: {files:?}");
    assert_eq!(check(&trail, &trail.files()), Ok(()));

    // One byte of a record changed: the record is named.
    let copy = copy_of(&trail);
    let target = files_in(copy.path())[1].clone();
    edit_lines(&target, |l| l[3] = l[3].replacen("AS n", "AS m", 1));
    let (kind, file, line, _) = check(&trail, copy.path()).unwrap_err();
    assert_eq!((kind, file, line), (Tamper::Modified, target.clone(), 4));

    // A record deleted.
    let copy = copy_of(&trail);
    let target = files_in(copy.path())[1].clone();
    edit_lines(&target, |l| {
        l.remove(3);
    });
    let (kind, file, line, message) = check(&trail, copy.path()).unwrap_err();
    assert_eq!(
        (kind, file, line),
        (Tamper::Removed, target.clone(), 4),
        "{message}"
    );

    // Two records swapped.
    let copy = copy_of(&trail);
    let target = files_in(copy.path())[1].clone();
    edit_lines(&target, |l| l.swap(3, 4));
    let (kind, file, line, message) = check(&trail, copy.path()).unwrap_err();
    assert_eq!(
        (kind, file, line),
        (Tamper::Reordered, target.clone(), 4),
        "{message}"
    );

    // The last file cut in the middle of a line, or after whole lines.
    let copy = copy_of(&trail);
    let last = files_in(copy.path()).last().unwrap().clone();
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() - 10]).unwrap();
    let (kind, file, _, _) = check(&trail, copy.path()).unwrap_err();
    assert_eq!((kind, file), (Tamper::Truncated, last.clone()));
    let copy = copy_of(&trail);
    let last = files_in(copy.path()).last().unwrap().clone();
    edit_lines(&last, |l| l.truncate(l.len() - 2));
    let (kind, file, _, _) = check(&trail, copy.path()).unwrap_err();
    assert_eq!((kind, file), (Tamper::Truncated, last.clone()));

    // A whole file removed from the middle, or the oldest one.
    let copy = copy_of(&trail);
    let all = files_in(copy.path());
    std::fs::remove_file(&all[1]).unwrap();
    let (kind, file, _, _) = check(&trail, copy.path()).unwrap_err();
    assert_eq!((kind, file), (Tamper::Removed, all[2].clone()));
    let copy = copy_of(&trail);
    std::fs::remove_file(&files_in(copy.path())[0]).unwrap();
    let (kind, _, _, _) = check(&trail, copy.path()).unwrap_err();
    assert_eq!(kind, Tamper::Removed);

    // A checkpoint re-chained by hand without the key: its signature fails.
    let copy = copy_of(&trail);
    let target = files_in(copy.path())[0].clone();
    edit_lines(&target, |l| {
        let n = l.len() - 1;
        l[n] = l[n].replacen("\"reason\":\"rotate\"", "\"reason\":\"rotatE\"", 1);
    });
    let (kind, file, _, message) = check(&trail, copy.path()).unwrap_err();
    assert_eq!((kind, file), (Tamper::Modified, target), "{message}");

    // The binary: success on the original, exit status 1 naming the line.
    let ok = Command::new(BIN)
        .args(["audit", "verify", "--public-key"])
        .arg(trail.public())
        .arg(trail.files())
        .output()
        .expect("verify");
    assert!(ok.status.success(), "{ok:?}");
    let copy = copy_of(&trail);
    let target = files_in(copy.path())[1].clone();
    edit_lines(&target, |l| l[2] = l[2].replacen("SELECT", "SELECt", 1));
    let bad = Command::new(BIN)
        .args(["audit", "verify", "--public-key"])
        .arg(trail.public())
        .arg(copy.path())
        .output()
        .expect("verify");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains(&format!("{}:3: modified", target.display())),
        "{stderr}"
    );
}

/// After a restart the trail goes on in a new file, so the file before it
/// ends with a closing checkpoint: removing the newest files leaves a trail
/// that is whole by itself. Checked against the seq the trail had reached
/// (pgward logs it at every checkpoint), the removal shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_files_after_a_restart_shows_against_the_seq_reached() {
    let backend = Backend::shared();
    let trail = Trail::new();
    for run in 0..2 {
        let pw = Pgward::start_in(&trail.config(backend, ""), backend.cluster.dir()).await;
        let client = pw.connect().await;
        client
            .simple_query(&format!("SELECT {run} AS run"))
            .await
            .expect("select");
        drop(client);
        pw.shutdown().await;
    }
    let files = files_in(&trail.files());
    assert_eq!(files.len(), 2, "one file per run: {files:?}");
    assert_eq!(check(&trail, &trail.files()), Ok(()));
    let reached = trail.lines().last().expect("lines")["seq"]
        .as_u64()
        .expect("seq");

    let reaching = |dir: &Path, reached| {
        pgward::record::verify::verify_paths_reaching(
            &[dir.to_owned()],
            &trail.key(),
            false,
            Some(reached),
        )
        .expect("readable")
    };
    assert!(reaching(&trail.files(), reached).is_ok());

    let copy = copy_of(&trail);
    let all = files_in(copy.path());
    std::fs::remove_file(&all[1]).unwrap();
    // By itself, what is left is a whole trail (pgward stopped there once).
    assert_eq!(check(&trail, copy.path()), Ok(()));
    let problem = reaching(copy.path(), reached).expect_err("the second run's file was removed");
    assert_eq!(problem.kind, Tamper::Truncated, "{problem}");
    assert!(
        problem.message.contains(&format!("seq {reached}")),
        "{problem}"
    );
    // The binary, with the seq from the log.
    let bad = Command::new(BIN)
        .args(["audit", "verify", "--public-key"])
        .arg(trail.public())
        .args(["--reached", &reached.to_string()])
        .arg(copy.path())
        .output()
        .expect("verify");
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("truncated"),
        "{bad:?}"
    );
}

#[test]
fn keygen_writes_a_key_pair_the_verifier_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["audit", "keygen", "--out"])
        .arg(dir.path().join("k"))
        .output()
        .expect("keygen");
    assert!(out.status.success(), "{out:?}");
    assert!(pgward::record::chain::Signer::load(&dir.path().join("k")).is_ok());
    assert!(PublicKey::load(&dir.path().join("k.pub")).is_ok());
    // Never overwrites a key.
    let again = Command::new(BIN)
        .args(["audit", "keygen", "--out"])
        .arg(dir.path().join("k"))
        .output()
        .expect("keygen");
    assert_eq!(again.status.code(), Some(1));
}
