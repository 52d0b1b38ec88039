//! What only the PostgreSQL store has: its migrations, its listener's
//! reconnect, its size limit, and hostile or stalled servers (a scripted
//! fake). In a binary of its own: terminating listeners must not disturb
//! the shared suite's subscribers.

mod approval_store_suite;
mod support;

use approval_store_suite::{ticket, wait_for_change};
use pgward::approvals::model::{now_ms, ApprovalMode};
use pgward::approvals::store::postgres::{PgStore, Timeouts, SCHEMA_VERSION};
use pgward::approvals::store::{ApprovalStore, ApprovalStoreError, Change};
use pgward::auth::backend::Upstream;
use std::sync::Arc;
use std::time::Duration;
use support::fake_backend::{self, FakeBackend, Reply};
use support::Backend;

fn upstream_of(config_text: &str, dir: &std::path::Path) -> Upstream {
    let config =
        pgward::config::Config::parse(config_text, &dir.join("pgward.toml")).expect("config");
    let kdf = pgward::auth::scram_client::kdf_pool();
    Upstream::new(Arc::clone(&config.upstreams[support::DB]), None, &kdf)
}

fn upstream() -> Upstream {
    let backend = Backend::shared();
    upstream_of(&backend.config("", ""), backend.cluster.dir())
}

fn schema() -> String {
    format!("st_{:016x}", rand::random::<u64>())
}

async fn open(schema: &str) -> PgStore {
    PgStore::open(upstream(), schema, Timeouts::default())
        .await
        .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let schema = schema();
    let opens = (0..5).map(|_| {
        let schema = schema.clone();
        tokio::spawn(async move { open(&schema).await })
    });
    let stores: Vec<PgStore> = futures::future::join_all(opens)
        .await
        .into_iter()
        .map(|s| s.expect("task"))
        .collect();
    let t = ticket("alice", ApprovalMode::Hold, 1, now_ms());
    stores[0].create_ticket(&t).await.expect("create");
    assert!(stores[4].ticket(&t.id).await.expect("get").is_some());
    let backend = Backend::shared();
    let versions = backend.admin_sql(&format!(
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM {schema}.migrations"
    ));
    let every: Vec<String> = (1..=SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(
        versions.trim(),
        every.join(","),
        "each migration once, in order"
    );
    // Opening again changes nothing.
    drop(open(&schema).await);
    let versions = backend.admin_sql(&format!("SELECT count(*) FROM {schema}.migrations"));
    assert_eq!(versions.trim(), SCHEMA_VERSION.to_string());

    backend.admin_sql(&format!(
        "INSERT INTO {schema}.migrations (version) VALUES ({})",
        SCHEMA_VERSION + 1
    ));
    let err = PgStore::open(upstream(), &schema, Timeouts::default())
        .await
        .expect_err("newer schema");
    assert!(err.to_string().contains("newer than this pgward"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listener_reconnects_and_announces_pending_tickets() {
    let schema = schema();
    let (a, b) = (open(&schema).await, open(&schema).await);
    let mut on_b = b.subscribe();
    let pending = ticket("alice", ApprovalMode::Hold, 1, now_ms());
    a.create_ticket(&pending).await.expect("create");
    wait_for_change(&mut on_b, &Change::Ticket(pending.id.clone())).await;

    // Every listener of the cluster is cut off (b's among them).
    let backend = Backend::shared();
    let killed = backend.admin_sql(
        "WITH l AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
           WHERE application_name = 'pgward-approvals-listener') \
         SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM l",
    );
    assert_ne!(killed.trim(), "0", "no listener to terminate");
    for _ in 0..1000 {
        if b.listener_sessions() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.listener_sessions(), 2, "b's listener reconnected once");
    // After reconnecting, b announces what is pending (it may have missed
    // a change meanwhile), and hears new changes again.
    wait_for_change(&mut on_b, &Change::Ticket(pending.id.clone())).await;
    let later = ticket("alice", ApprovalMode::Hold, 1, now_ms());
    a.create_ticket(&later).await.expect("create");
    wait_for_change(&mut on_b, &Change::Ticket(later.id.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_limit_is_refused_and_the_store_stays_usable() {
    let store = open(&schema()).await;
    let mut t = ticket("alice", ApprovalMode::Hold, 1, now_ms());
    t.statement = format!("SELECT '{}'", "x".repeat(5 << 20));
    let err = store.create_ticket(&t).await.expect_err("too large");
    assert!(
        matches!(&err, ApprovalStoreError::Refused(m) if m.contains("limit of 4 MiB")),
        "{err}"
    );
    assert_eq!(store.ticket(&t.id).await.expect("get"), None);
    let small = ticket("alice", ApprovalMode::Hold, 1, now_ms());
    store.create_ticket(&small).await.expect("create");
    // An id that is not an id is refused, never sent.
    let mut odd = ticket("alice", ApprovalMode::Hold, 1, now_ms());
    odd.id = "x'; DROP TABLE t; --".into();
    let err = store.create_ticket(&odd).await.expect_err("odd id");
    assert!(matches!(err, ApprovalStoreError::Refused(_)), "{err}");
    assert_eq!(store.ticket(&odd.id).await.expect("get"), None);
}

/// A fake upstream answering the migration like an up-to-date schema and
/// the store's other queries with `reply`.
async fn fake(reply: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static) -> FakeBackend {
    FakeBackend::builder()
        .respond(move |req| {
            let sql = req.query();
            if sql.contains("max(version)") {
                let mut out = fake_backend::row_description(&["version"]);
                out.extend(fake_backend::data_row(&[Some(&SCHEMA_VERSION.to_string())]));
                out.extend(fake_backend::command_complete("SELECT 1"));
                out.extend(fake_backend::ready_for_query(b'T'));
                return Reply::Send(out);
            }
            reply(&sql).unwrap_or(Reply::Default)
        })
        .start()
        .await
}

fn fake_store(fake: &FakeBackend, operation: Duration) -> PgStore {
    let upstream = upstream_of(&fake.config(""), fake.dir());
    PgStore::new(upstream, "fake", Timeouts { operation })
}

fn rows(values: &[Option<&str>]) -> Reply {
    let mut out = fake_backend::row_description(&["record"]);
    out.extend(fake_backend::data_row(values));
    out.extend(fake_backend::command_complete("SELECT 1"));
    out.extend(fake_backend::ready_for_query(b'I'));
    Reply::Send(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_replies_are_clean_errors() {
    let other = ticket("mallory", ApprovalMode::Hold, 1, now_ms());
    let other_json = serde_json::to_string(&other).expect("json");
    let fake = fake(move |sql| {
        if !sql.starts_with("SELECT record") && !sql.starts_with("BEGIN; SELECT record") {
            return None;
        }
        Some(if sql.contains("'garbage'") || sql.contains("garbage$") {
            rows(&[Some("{\"id\": ")])
        } else if sql.contains("null") {
            rows(&[None])
        } else if sql.contains("two") {
            rows(&[Some("a"), Some("b")])
        } else {
            rows(&[Some(&other_json)])
        })
    })
    .await;
    let store = fake_store(&fake, Duration::from_secs(5));
    let expect_unavailable =
        |r: Result<Option<pgward::approvals::model::Ticket>, ApprovalStoreError>, what: &str| {
            let err = r.expect_err(what);
            assert!(
                matches!(err, ApprovalStoreError::Unavailable(_)),
                "{what}: {err}"
            );
            err.to_string()
        };
    let e = expect_unavailable(store.ticket("garbage").await, "garbage");
    assert!(e.contains("not a valid record"), "{e}");
    let e = expect_unavailable(store.ticket("null").await, "null");
    assert!(e.contains("no record"), "{e}");
    expect_unavailable(store.ticket("two").await, "two cells");
    let e = expect_unavailable(store.ticket("abc").await, "another record");
    assert!(e.contains("holds the record of"), "{e}");
    let err = store
        .update_ticket("abc", &|_| Ok(()))
        .await
        .expect_err("update of another record");
    assert!(err.to_string().contains("holds the record of"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_times_out_and_the_next_operation_reconnects() {
    let fake = fake(|sql| sql.contains("stall").then_some(Reply::Hang)).await;
    let store = fake_store(&fake, Duration::from_secs(3));
    let err = store.ticket("stall").await.expect_err("stalled");
    assert!(
        matches!(&err, ApprovalStoreError::Unavailable(m) if m.contains("within")),
        "{err}"
    );
    // The stalled connection is not reused: the next read gets an answer
    // (the fake's default one row, not a record) on a fresh connection.
    let err = store.ticket("next").await.expect_err("not a record");
    assert!(err.to_string().contains("not a valid record"), "{err}");
    let logins = fake.seen().logins_completed;
    assert!(logins >= 2, "{logins}");
}
