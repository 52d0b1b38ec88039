//! The session core through real clients: a test phase that holds
//! statements (released, refused, cancelled, abandoned, inside a pipeline),
//! the session registry, cancellation routed through it (also over TLS),
//! and the server's real process id in BackendKeyData.

mod support;

use pgward::session::phases::{
    Decision, Hold, Phase, Refusal, Release, RequestContext, RequestKind,
};
use pgward::session::registry::SessionState;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::raw::{query, RawClient};
use support::{connect_with_messages, sqlstate, Backend, Pgward, DB, PASSWORD, USER};
use tokio::sync::oneshot;

/// Holds every request whose statement text contains `pgward_hold`; the
/// test takes the decision senders from `pending`.
#[derive(Clone, Default)]
struct Holds {
    pending: Arc<Mutex<Vec<oneshot::Sender<Release>>>>,
}

struct HoldPhase(Holds);

impl Phase for HoldPhase {
    fn name(&self) -> &'static str {
        "test-hold"
    }

    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        // Statements are held where their text arrives (Query, Parse), not
        // again at Bind and Execute.
        let wanted = matches!(ctx.kind, RequestKind::Query | RequestKind::Parse)
            && ctx
                .text
                .is_some_and(|t| t.windows(11).any(|w| w == b"pgward_hold"));
        if !wanted {
            return Decision::Forward;
        }
        let (tx, rx) = oneshot::channel();
        self.0.pending.lock().unwrap().push(tx);
        Decision::Hold(Hold {
            notice: Some("statement held by the test phase".into()),
            ..Hold::new(Instant::now() + Duration::from_secs(30), rx)
        })
    }
}

async fn pgward_with_holds() -> (Pgward, Holds) {
    let pw = Pgward::start(Backend::shared()).await;
    let holds = Holds::default();
    let for_sessions = holds.clone();
    pw.gateway
        .add_phase(Arc::new(move |_| Box::new(HoldPhase(for_sessions.clone()))));
    (pw, holds)
}

/// Waits (polling the registry) until a session is held, then takes the
/// decision sender.
async fn held(pw: &Pgward, holds: &Holds) -> oneshot::Sender<Release> {
    for _ in 0..500 {
        let is_held = pw
            .gateway
            .registry
            .list()
            .iter()
            .any(|s| s.state == SessionState::Held);
        if is_held {
            if let Some(tx) = holds.pending.lock().unwrap().pop() {
                return tx;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no session was held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_statement_in_a_pipeline_is_released_in_order() {
    let (pw, holds) = pgward_with_holds().await;
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let mut batch = query("SELECT 1 AS first");
    batch.extend(query("SELECT 'pgward_hold' AS second"));
    batch.extend(query("SELECT 3 AS third"));
    raw.send(&batch).await;
    // The earlier request's answer arrives while the next one is held, and
    // the client is told about the hold.
    let first = raw.until_ready().await;
    assert!(first
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"1")));
    let notice = first.iter().find(|m| m.tag == b'N').expect("notice");
    assert!(notice.field(b'M').unwrap().contains("held"));
    let tx = held(&pw, &holds).await;
    tx.send(Release::Run).expect("session waits");
    let second = raw.until_ready().await;
    assert!(second
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"pgward_hold")));
    let third = raw.until_ready().await;
    assert!(third
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"3")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hold_fails_like_any_error_and_the_session_goes_on() {
    let (pw, holds) = pgward_with_holds().await;
    let client = Arc::new(pw.connect().await);
    client
        .batch_execute("CREATE TEMP TABLE t (v int)")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let c2 = Arc::clone(&client);
    let task = tokio::spawn(async move {
        c2.query("INSERT INTO t VALUES (1) RETURNING 'pgward_hold'", &[])
            .await
    });
    let tx = held(&pw, &holds).await;
    tx.send(Release::Refuse(Refusal::new(
        pgward::sqlstate::Sqlstate::INSUFFICIENT_PRIVILEGE,
        "denied by the test",
    )))
    .unwrap();
    let err = task.await.unwrap().expect_err("refused");
    assert_eq!(sqlstate(&err), "42501");
    // As after any error: the transaction is failed until it ends.
    let aborted = client.simple_query("SELECT 1").await.expect_err("aborted");
    assert_eq!(sqlstate(&aborted), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    let rows = client.query("SELECT count(*) FROM t", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_update_in_a_transaction_runs_when_released() {
    let (pw, holds) = pgward_with_holds().await;
    let client = Arc::new(pw.connect().await);
    client
        .batch_execute("CREATE TEMP TABLE u (v int); INSERT INTO u VALUES (1)")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let c2 = Arc::clone(&client);
    let task = tokio::spawn(async move {
        c2.execute("UPDATE u SET v = 2 WHERE 'pgward_hold' <> ''", &[])
            .await
    });
    held(&pw, &holds).await.send(Release::Run).unwrap();
    assert_eq!(task.await.unwrap().unwrap(), 1);
    client.batch_execute("COMMIT").await.unwrap();
    let rows = client.query("SELECT v FROM u", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_withdraws_a_held_statement() {
    let (pw, holds) = pgward_with_holds().await;
    let client = Arc::new(pw.connect().await);
    let token = client.cancel_token();
    let c2 = Arc::clone(&client);
    let task = tokio::spawn(async move { c2.simple_query("SELECT 'pgward_hold'").await });
    let tx = held(&pw, &holds).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    let err = task.await.unwrap().expect_err("cancelled");
    assert_eq!(sqlstate(&err), "57014");
    assert!(tx.is_closed(), "the hold was withdrawn");
    client
        .simple_query("SELECT 1")
        .await
        .expect("session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_abandons_its_held_statement() {
    let (pw, holds) = pgward_with_holds().await;
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    raw.send(&query("DELETE FROM pg_class WHERE 'pgward_hold' = ''"))
        .await;
    let mut tx = held(&pw, &holds).await;
    drop(raw);
    // The session notices the client left: the hold's receiver goes.
    tokio::time::timeout(Duration::from_secs(10), tx.closed())
        .await
        .expect("hold withdrawn when the client left");
    for _ in 0..500 {
        if pw.gateway.registry.list().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the abandoned session stayed in the registry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_lists_and_terminates_sessions() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    client.simple_query("BEGIN").await.unwrap();
    let sessions = pw.gateway.registry.list();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!((s.user.as_str(), s.database.as_str()), (USER, DB));
    assert_eq!(s.state, SessionState::InTransaction);
    assert!(s.client.is_some());
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(s.process_id, pid);
    assert!(pw.gateway.registry.terminate(s.id, "ended by the test"));
    let err = client.simple_query("SELECT 1").await.expect_err("ended");
    assert!(
        err.is_closed() || sqlstate(&err) == "57P01",
        "unexpected: {err}"
    );
    assert!(!pw.gateway.registry.terminate(u64::MAX, "none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_pids_match_the_backend_pid() {
    let pw = Pgward::start(Backend::shared()).await;
    let (client, mut messages) = connect_with_messages(&pw.client_config(USER, PASSWORD)).await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute("LISTEN core_pid; NOTIFY core_pid, 'x'")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(tokio_postgres::AsyncMessage::Notification(n)) = messages.recv().await {
                return n;
            }
        }
    })
    .await
    .expect("notification");
    // Self-notification filtering (`notify.pid == conn.backend_pid`) works.
    assert_eq!(n.process_id(), pid);
}

/// Sends a CancelRequest and waits for the connection to close, as libpq
/// does (`PQcancel` returns when the server has closed it).
async fn cancel_like_libpquery(addr: std::net::SocketAddr, pid: i32, key: i32) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut packet = Vec::new();
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&key.to_be_bytes());
    s.write_all(&packet).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("pgward closes the cancel connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_idle_never_lands_on_the_next_statement() {
    // The cancel connection stays open until the server has taken the
    // request, so once it closes the server has been signalled: a cancel
    // sent while idle is dropped by the server, never applied to the next
    // statement.
    let pw = Pgward::start(Backend::shared()).await;
    let (mut raw, hello) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let key = hello.iter().find(|m| m.tag == b'K').expect("key");
    let pid = i32::from_be_bytes([key.body[0], key.body[1], key.body[2], key.body[3]]);
    let secret = i32::from_be_bytes([key.body[4], key.body[5], key.body[6], key.body[7]]);
    for _ in 0..30 {
        raw.simple("SELECT 1").await;
        cancel_like_libpquery(pw.addr, pid, secret).await;
        let reply = raw.simple("SELECT pg_sleep(0.01)").await;
        assert!(
            support::raw::error_of(&reply).is_none(),
            "the cancel hit the next statement"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_running_statement() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = Arc::new(pw.connect().await);
    let token = client.cancel_token();
    let c2 = Arc::clone(&client);
    let task = tokio::spawn(async move { c2.simple_query("SELECT pg_sleep(30)").await });
    // Wait until the server runs it (pg_stat_activity), then cancel.
    let admin = pw.connect().await;
    for _ in 0..500 {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = task.await.unwrap().expect_err("cancelled");
    assert_eq!(sqlstate(&err), "57014");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_fatal_is_all_the_client_gets() {
    // PostgreSQL ends the session: the client receives exactly its FATAL
    // (57P01), and pgward adds nothing after it.
    let pw = Pgward::start(Backend::shared()).await;
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    raw.send(&query("SELECT pg_terminate_backend(pg_backend_pid())"))
        .await;
    let mut errors = Vec::new();
    while let Some(m) = raw.recv().await {
        if m.tag == b'E' {
            errors.push((m.field(b'S').unwrap_or_default(), m.sqlstate()));
        }
    }
    assert_eq!(errors, vec![("FATAL".to_owned(), "57P01".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_held_statements_at_once() {
    let (pw, holds) = pgward_with_holds().await;
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    raw.send(&query("SELECT 'pgward_hold'")).await;
    let tx = held(&pw, &holds).await;
    let stopping = tokio::spawn(pw.shutdown());
    let mut codes = Vec::new();
    while let Some(m) = raw.recv().await {
        if m.tag == b'E' {
            codes.push(m.sqlstate());
        }
    }
    // The held statement is refused, then the session ends (57P01 both).
    assert_eq!(
        codes.first().map(String::as_str),
        Some("57P01"),
        "{codes:?}"
    );
    assert!(tx.is_closed());
    stopping.await.unwrap();
}
