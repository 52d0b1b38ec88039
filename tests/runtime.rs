//! `[server] runtime = "per-core"` (the default): sessions on several
//! single-threaded runtimes, each accepting on its own `SO_REUSEPORT`
//! listener. What crosses them must still work: a cancel request arrives on
//! a connection of its own (so on any thread) and must reach its session; a
//! reload and a shutdown reach every thread's sessions. And the same under
//! `runtime = "shared"`, which the rest of the suite no longer runs, and
//! under `relay = "runtime"` (plain-TCP relays on tokio instead of the
//! relay loops the rest of the suite uses).

mod support;

use std::time::Duration;
use support::raw::RawClient;
use support::{sqlstate, Backend, Pgward, PASSWORD, USER};

const THREADS: usize = 4;

async fn start() -> Pgward {
    start_with("per-core").await
}

async fn start_with(runtime: &str) -> Pgward {
    start_with_lines(&format!("runtime = \"{runtime}\"\nthreads = {THREADS}")).await
}

async fn start_with_lines(server: &str) -> Pgward {
    let backend = Backend::shared();
    let text = backend.config(server, "");
    Pgward::start_in(&text, backend.cluster.dir()).await
}

/// Per-core threads whose plain-TCP relays stay on tokio.
async fn start_relaying_on_the_runtime() -> Pgward {
    start_with_lines(&format!(
        "runtime = \"per-core\"\nthreads = {THREADS}\nrelay = \"runtime\""
    ))
    .await
}

/// This process's threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_relayed_on_the_runtime() {
    let pw = start_relaying_on_the_runtime().await;
    many_sessions(&pw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_relayed_on_the_runtime() {
    cancel_requests(&start_relaying_on_the_runtime().await).await;
}

/// One relay loop per session thread (other tests of this binary may run
/// servers of their own at the same time: at least this one's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_thread_has_a_relay_loop() {
    let pw = start().await;
    let client = pw.connect().await;
    client.simple_query("SELECT 1").await.expect("relayed");
    assert!(
        threads_named("pgward-relay-") >= THREADS,
        "the relay loops run"
    );
    drop(client);
    pw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_over_the_threads() {
    many_sessions(&start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_on_the_shared_runtime() {
    many_sessions(&start_with("shared").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_reach_sessions_on_other_threads() {
    cancel_requests(&start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_on_the_shared_runtime() {
    cancel_requests(&start_with("shared").await).await;
}

async fn many_sessions(pw: &Pgward) {
    let mut clients = Vec::new();
    for _ in 0..4 * THREADS {
        clients.push(pw.connect().await);
    }
    assert_eq!(pw.gateway.registry.list().len(), 4 * THREADS);
    let runs = clients.iter().enumerate().map(|(i, c)| async move {
        for n in 0..20 {
            let row = c
                .query_one("SELECT $1::int + $2::int", &[&(i as i32), &n])
                .await
                .expect("extended query");
            assert_eq!(row.get::<_, i32>(0), i as i32 + n);
            c.simple_query("SELECT 1").await.expect("simple query");
        }
    });
    futures::future::join_all(runs).await;
}

async fn cancel_requests(pw: &Pgward) {
    // Several sessions, each cancelled by a request on a connection of its
    // own: with the kernel spreading connections over the threads, most of
    // them land on a thread other than their session's.
    for _ in 0..THREADS {
        let client = pw.connect().await;
        let bystander = pw.connect().await;
        let token = client.cancel_token();
        let pid = {
            let row = client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .expect("pid");
            row.get::<_, i32>(0)
        };
        let slow = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
        // Cancelled only once the server runs it (a cancel that arrives
        // earlier finds nothing to cancel).
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let row = bystander
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep(30)%'",
                        &[&pid],
                    )
                    .await
                    .expect("pg_stat_activity");
                if row.get::<_, i64>(0) == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the query runs");
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("send cancel");
        let result = tokio::time::timeout(Duration::from_secs(20), slow)
            .await
            .expect("cancel took effect")
            .expect("task");
        assert_eq!(sqlstate(&result.expect_err("query cancelled")), "57014");
        bystander
            .simple_query("SELECT 1")
            .await
            .expect("bystander fine");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_every_thread() {
    let pw = start().await;
    let mut clients = Vec::new();
    for _ in 0..2 * THREADS {
        clients.push(pw.connect().await);
    }
    for c in &clients {
        c.simple_query("SELECT 1")
            .await
            .expect("allowed before the reload");
    }
    pw.reload_with(
        "[policy]\n[[policy.rules]]\nname = \"no-selects\"\naction = \"deny\"\nkinds = [\"select\"]\n",
    )
    .expect("reload");
    for c in &clients {
        let e = c
            .simple_query("SELECT 1")
            .await
            .expect_err("denied after the reload");
        assert_eq!(sqlstate(&e), "42501");
    }
}

/// The drain itself (busy sessions finish first) is `tests/lifecycle.rs`'s,
/// under the default runtime; here: every thread's sessions hear of it, and
/// every thread's listener closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_reaches_every_thread() {
    let pw = start().await;
    let addr = pw.addr;
    let mut idle = Vec::new();
    for _ in 0..4 * THREADS {
        idle.push(RawClient::login(addr, USER, PASSWORD, support::DB).await.0);
    }
    let shutdown = tokio::spawn(pw.shutdown());
    for c in &mut idle {
        let first = c.recv().await.expect("shutdown notice");
        assert_eq!(first.sqlstate(), "57P01");
        assert!(c.closed().await);
    }
    tokio::time::timeout(Duration::from_secs(20), shutdown)
        .await
        .expect("shutdown finishes")
        .expect("task");
    for _ in 0..4 * THREADS {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "every listener closed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_port_is_refused() {
    let backend = Backend::shared();
    let pw = start().await;
    // The same config on the port the first one holds: without the check,
    // SO_REUSEPORT would let both share it.
    let text = backend
        .config(&format!("runtime = \"per-core\"\nthreads = {THREADS}"), "")
        .replace("127.0.0.1:0", &pw.addr.to_string());
    let config = pgward::config::Config::parse(&text, &backend.cluster.dir().join("pgward.toml"))
        .expect("config");
    let second =
        pgward::server::Server::bind(pgward::gateway::Gateway::new(config).expect("gateway")).await;
    let e = second.err().expect("the port is taken");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    // The first still serves.
    pw.connect()
        .await
        .simple_query("SELECT 1")
        .await
        .expect("first serves");
}
