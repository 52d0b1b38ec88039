//! A full audit queue, with the real binary: its stdout sink writes into a
//! pipe nobody reads until the test says so, so the writer blocks and the
//! queue fills. A fail-closed identity's statements then wait and are
//! refused (53000); a shed identity's run, and the drops are logged. Once
//! the pipe is read again, every statement that ran has its record.

mod support;

use std::io::{BufRead, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use support::{connect_eventually, Backend, DB};

const BIN: &str = env!("CARGO_BIN_EXE_pgward");

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(port: u16, user: &str, password: &str, db: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_fails_closed_or_sheds_per_group() {
    let backend = Backend::shared();
    let dir = tempfile::tempdir().expect("dir");
    let (private, public) = pgward::record::chain::generate_key();
    std::fs::write(dir.path().join("k"), private).expect("key");
    std::fs::write(dir.path().join("k.pub"), public).expect("pub");
    let port = pgward::cluster::free_port().expect("port");
    let config = format!(
        "{}\n[audit]\nenabled = true\nsink = \"stdout\"\nsigning_key_file = \"{}\"\nqueue_capacity = 4\nfull_timeout = \"300ms\"\non_full = \"shed\"\nfail_closed_groups = [\"dev\"]\n",
        backend.config("", "").replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\"")
        ),
        dir.path().join("k").display()
    );
    let path = dir.path().join("pgward.toml");
    std::fs::write(&path, config).expect("config");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pgward run");
    let mut stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let log_writer = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            log_writer.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let child = Running(child);

    // alice is in "dev": fail closed. Long statements fill the pipe soon.
    let alice = connect_eventually(&client(port, support::USER, support::PASSWORD, DB), false)
        .await
        .expect("alice connects");
    let padding = "x".repeat(4000);
    let mut ran = 0u32;
    let refused = loop {
        match alice
            .simple_query(&format!("SELECT '{padding}' AS n{ran}"))
            .await
        {
            Ok(_) => ran += 1,
            Err(e) => break e,
        }
        assert!(ran < 1000, "the queue never filled");
    };
    assert_eq!(support::sqlstate(&refused), "53000", "{refused:?}");
    assert!(
        support::message(&refused).contains("audit queue is full"),
        "{refused:?}"
    );

    // bob (no group, on_full = shed) runs; his records are dropped and logged.
    let bob = connect_eventually(&client(port, "bob", "bob-secret", "otherdb"), false)
        .await
        .expect("bob connects");
    for _ in 0..5 {
        bob.simple_query("SELECT 'bob'")
            .await
            .expect("shed identity runs");
    }
    for _ in 0..200 {
        if log
            .lock()
            .unwrap()
            .contains("audit queue full: record dropped")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        log.lock()
            .unwrap()
            .contains("audit queue full: record dropped"),
        "{}",
        log.lock().unwrap()
    );

    // Read the pipe: the writer catches up and alice runs again.
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all);
        all
    });
    let mut again = false;
    for _ in 0..100 {
        if alice
            .simple_query(&format!("SELECT '{padding}' AS n{ran}"))
            .await
            .is_ok()
        {
            ran += 1;
            again = true;
            break;
        }
    }
    assert!(again, "alice never ran again once the sink drained");
    drop((alice, bob));
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let trail = reader.join().expect("reader");

    // Every statement alice ran has its record; the output verifies.
    let text = String::from_utf8(trail).expect("utf-8");
    let recorded = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "statement" && v["user"] == "alice" && v["decision"] == "allowed")
        .count();
    assert_eq!(
        recorded as u32, ran,
        "a fail-closed statement ran without its record"
    );
    let file = dir.path().join("pgward-audit-00000001.jsonl");
    std::fs::write(&file, &text).expect("write");
    let key = pgward::record::chain::PublicKey::load(&dir.path().join("k.pub")).expect("key");
    pgward::record::verify::verify_paths(&[file], &key, false)
        .expect("readable")
        .expect("the stdout trail verifies");
}
