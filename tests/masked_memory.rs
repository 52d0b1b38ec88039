//! Bounded memory for masked identities: whether rows are inspected is
//! decided per result from its plan, so a result with no masked column
//! streams like any other, whatever its size.
//!
//! Alone in its own test binary, so the memory readings see no other test;
//! the client reads raw bytes without keeping them.

mod support;

use std::time::Duration;
use support::raw::{query, RawClient};
use support::{Backend, Pgward, DB, PASSWORD, USER};

/// Resident memory of this process (pgward runs in-process), in bytes:
/// `VmRSS` now, or `VmHWM`, its peak so far.
fn memory(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .expect("memory field")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_identity_streams_results_without_masked_columns() {
    let backend = Backend::shared();
    // alice's identity is masked (a rule on a table she reads); the big
    // results below hold no masked column.
    let config = format!(
        "{}\n[masking]\nhash_key_env = \"PGWARD_TEST_HASH_KEY\"\n\
         [[masking.rules]]\nname = \"ssn\"\ncolumns = [\"mm_people.ssn\"]\nstrategy = \"redact\"\n",
        backend.masked_config("", "")
    );
    std::env::set_var("PGWARD_TEST_HASH_KEY", "test-key");
    backend.admin_sql(
        "CREATE TABLE IF NOT EXISTS mm_people (id int, ssn text); \
         GRANT ALL ON mm_people TO app, app_masked",
    );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    // Masking is on for this session: a masked column is masked.
    backend.admin_sql("INSERT INTO mm_people VALUES (1, '123-45-6789')");
    let reply = raw.simple("SELECT id, ssn FROM mm_people").await;
    let row = reply.iter().find(|m| m.tag == b'D').expect("row");
    assert!(!String::from_utf8_lossy(&row.body).contains("6789"));

    let before = memory("VmRSS:");
    // One 200 MB row, then a 1 GB result read slowly.
    raw.send(&query("SELECT repeat('x', 200 * 1024 * 1024)"))
        .await;
    let (tags, bytes) = raw.skim_until_ready(Duration::from_millis(50)).await;
    assert_eq!(tags, b"TDCZ");
    assert!(bytes > 200 << 20);
    let peak_row = memory("VmHWM:").saturating_sub(before);
    raw.send(&query(
        "SELECT repeat(md5(g::text), 32) FROM generate_series(1, 1000000) g",
    ))
    .await;
    let (tags, bytes) = raw.skim_until_ready(Duration::from_millis(50)).await;
    assert_eq!(tags, b"TDCZ");
    assert!(bytes > 1_000_000_000);
    let peak_result = memory("VmHWM:").saturating_sub(before);
    assert!(
        peak_row < 32 << 20 && peak_result < 32 << 20,
        "memory grew by {peak_row} bytes for a 200 MB row and {peak_result} for a 1 GB result"
    );
}
