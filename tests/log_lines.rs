//! pgward's own log (stderr) keeps what clients send inside the line that
//! reports it: a statement, a user name or a token request's subject with
//! a newline cannot start a line of its own that reads as pgward's (a
//! forged `token accepted` or `audit checkpoint` line).

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use support::{Backend, Pgward};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const FORGED: &str = "2026-12-04T00:00:00.000000Z  INFO pgward::audit: audit checkpoint seq=99999";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cannot_write_a_log_line_of_its_own() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("pgward=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let backend = Backend::shared();
    let text = format!(
        "{}\n[policy]\n[[policy.rules]]\nname = \"no-sleeping\"\naction = \"deny\"\nfunctions = [\"pg_sleep\"]\n",
        backend.config("", "")
    );
    let pw = Pgward::start_in(&text, backend.cluster.dir()).await;
    let client = pw.connect().await;
    let sql = format!("SELECT pg_sleep(0) AS \"x\n{FORGED}\"");
    client.simple_query(&sql).await.expect_err("denied");
    let log = String::from_utf8_lossy(&captured.0.lock().expect("log")).into_owned();
    assert!(log.contains("statement refused"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with(FORGED)),
        "a client wrote a line of pgward's log:\n{log}"
    );
}
