//! Session recording and `pgward replay`: a recorded tokio-postgres
//! session replays as a transcript (statements, result tables, errors,
//! notices, timings); identities outside `record_groups` are not recorded;
//! the per-session cap marks the recording truncated.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{Backend, Pgward};

const BIN: &str = env!("CARGO_BIN_EXE_pgward");

fn config(backend: &Backend, dir: &Path, cap: &str) -> String {
    let (private, _) = pgward::record::chain::generate_key();
    std::fs::write(dir.join("k"), private).expect("key");
    format!(
        "{}\n[audit]\nenabled = true\ndirectory = \"{d}/trail\"\nsigning_key_file = \"{d}/k\"\nrecord_groups = [\"dev\"]\nrecordings_directory = \"{d}/rec\"\nrecord_max_bytes = \"{cap}\"\n",
        backend.config("", ""),
        d = dir.display()
    )
}

/// Waits (polling) until session `id`'s recording has ended; its path.
async fn recording(dir: &Path, id: u64) -> PathBuf {
    for _ in 0..500 {
        if let Ok(entries) = std::fs::read_dir(dir.join("rec")) {
            for e in entries.flatten() {
                let name = e.file_name().into_string().unwrap_or_default();
                if name.starts_with(&format!("session-{id}-")) {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    if text.lines().any(|l| l.contains("\"kind\":\"end\"")) {
                        return e.path();
                    }
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no finished recording of session {id}");
}

fn replay(dir: &Path, id: u64) -> String {
    let out = Command::new(BIN)
        .args(["replay", &id.to_string(), "--dir"])
        .arg(dir.join("rec"))
        .output()
        .expect("replay");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_replays_as_a_transcript() {
    let backend = Backend::shared();
    let dir = tempfile::tempdir().expect("dir");
    let pw = Pgward::start_in(&config(backend, dir.path(), "16MiB"), dir.path()).await;
    let client = pw.connect().await;
    let id = pw.gateway.registry.list()[0].id;
    client
        .simple_query("SELECT 1 AS a, 'x' AS b UNION ALL SELECT 22, 'yy'")
        .await
        .expect("select");
    client.simple_query("SELECT 1/0").await.expect_err("error");
    client
        .simple_query("DO $$BEGIN RAISE NOTICE 'hi'; END$$")
        .await
        .expect_err("refused by a built-in rule");
    client
        .simple_query(
            "CREATE TEMP TABLE rec_t (i int); CREATE TEMP TABLE IF NOT EXISTS rec_t (i int)",
        )
        .await
        .expect("notice");
    let n: i32 = client
        .query_one("SELECT $1::int + 1 AS n", &[&41i32])
        .await
        .expect("extended")
        .get(0);
    assert_eq!(n, 42);
    drop(client);

    // bob is in no recorded group.
    let bob = support::connect_with(pw.client_config("bob", "bob-secret").dbname("otherdb"))
        .await
        .expect("bob");
    let bob_id = pw
        .gateway
        .registry
        .list()
        .iter()
        .find(|s| s.user == "bob")
        .map(|s| s.id)
        .expect("bob's session");
    bob.simple_query("SELECT 'not recorded'")
        .await
        .expect("select");
    drop(bob);

    recording(dir.path(), id).await;
    let transcript = replay(dir.path(), id);
    for expected in [
        "=> SELECT 1 AS a, 'x' AS b UNION ALL SELECT 22, 'yy'",
        " a  | b",
        "----+----",
        " 1  | x",
        " 22 | yy",
        "(2 rows)",
        "=> SELECT 1/0",
        "ERROR:  division by zero (22012)",
        "ERROR:  statement denied by pgward rule \"no-do-blocks\"",
        "NOTICE:  relation \"rec_t\" already exists, skipping (42P07)",
        "CREATE TABLE",
        "-- prepare: SELECT $1::int + 1 AS n",
        "=> SELECT $1::int + 1 AS n",
        " 42\n(1 row)",
        "Time: ",
        "-- session ended after",
    ] {
        assert!(
            transcript.contains(expected),
            "missing {expected:?} in:\n{transcript}"
        );
    }
    pw.shutdown().await;
    let recorded: Vec<String> = std::fs::read_dir(dir.path().join("rec"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().unwrap())
        .collect();
    assert!(
        !recorded
            .iter()
            .any(|n| n.starts_with(&format!("session-{bob_id}-"))),
        "{recorded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_past_its_cap_is_marked_truncated() {
    let backend = Backend::shared();
    let dir = tempfile::tempdir().expect("dir");
    let pw = Pgward::start_in(&config(backend, dir.path(), "2KiB"), dir.path()).await;
    let client = pw.connect().await;
    let id = pw.gateway.registry.list()[0].id;
    client
        .simple_query("SELECT repeat('z', 100) FROM generate_series(1, 100)")
        .await
        .expect("select");
    drop(client);
    recording(dir.path(), id).await;
    let transcript = replay(dir.path(), id);
    assert!(
        transcript
            .contains("[recording truncated: the recording reached record_max_bytes (2048 bytes)]"),
        "{transcript}"
    );
    pw.shutdown().await;
}
