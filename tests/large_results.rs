//! Large results with bounded memory: a slow reader applies backpressure
//! through pgward to PostgreSQL instead of filling pgward's memory.
//!
//! Alone in its own test binary, so the memory readings see no other test.

mod support;

use futures::{pin_mut, StreamExt};
use std::time::Duration;
use support::{Backend, Pgward};

/// Resident memory of this process (tests run pgward in-process), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

const ROWS: i32 = 50_000;
const ROW_TEXT: i32 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_read_slowly_and_huge_rows() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    client.simple_query("SELECT 1").await.expect("warm up");
    let before = rss_bytes();

    let sql = format!(
        "SELECT g, repeat(md5(g::text), {ROW_TEXT} / 32) FROM generate_series(1, {ROWS}) g"
    );
    let rows = client
        .query_raw(sql.as_str(), std::iter::empty::<i32>())
        .await
        .expect("query");
    pin_mut!(rows);
    let mut seen = 0i32;
    let mut sum = 0i64;
    let mut peak_growth = 0u64;
    while let Some(row) = rows.next().await {
        let row = row.expect("row");
        let g: i32 = row.get(0);
        let text: &str = row.get(1);
        assert_eq!(text.len(), (ROW_TEXT / 32 * 32) as usize);
        seen += 1;
        sum += i64::from(g);
        if seen % 5_000 == 0 {
            // A slow consumer: pause, letting the server run ahead if it could.
            tokio::time::sleep(Duration::from_millis(200)).await;
            peak_growth = peak_growth.max(rss_bytes().saturating_sub(before));
        }
    }
    assert_eq!(seen, ROWS);
    assert_eq!(sum, i64::from(ROWS) * i64::from(ROWS + 1) / 2);
    // About 52 MB crossed pgward; memory grew by a small bounded amount
    // (socket and read buffers), not by the size of the result.
    assert!(
        peak_growth < 16 << 20,
        "process memory grew by {peak_growth} bytes while streaming 50 MB"
    );

    // Single rows larger than the streaming threshold, in both formats.
    for size in [300 * 1024, 40 << 20] {
        let row = client
            .query_one("SELECT repeat('y', $1)", &[&size])
            .await
            .expect("huge row, extended");
        assert_eq!(row.get::<_, &str>(0).len(), size as usize);
        let msgs = client
            .simple_query(&format!(
                "SELECT length(repeat('z', {size})), repeat('z', {size})"
            ))
            .await
            .expect("huge row, simple");
        let row = msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .expect("row");
        assert_eq!(row.get(0), Some(size.to_string().as_str()));
        assert_eq!(row.get(1).map(str::len), Some(size as usize));
    }
    // A large parameter towards the server (a 20 MB Bind).
    let blob = vec![7u8; 20 << 20];
    let row = client
        .query_one("SELECT length($1::bytea)", &[&blob])
        .await
        .expect("large bind");
    assert_eq!(row.get::<_, i32>(0), 20 << 20);
}
