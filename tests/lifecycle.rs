//! Authentication outcomes, connection limits, backend failures and graceful
//! shutdown.

mod support;

use pgward::cluster::ClusterOptions;
use std::time::Duration;
use support::raw::message;
use support::raw::{error_of, RawClient};
use support::{connect_eventually, connect_with, sqlstate, Backend, Pgward, PASSWORD, USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_28p01() {
    let pw = Pgward::start(Backend::shared()).await;
    for (user, password) in [(USER, "wrong"), ("mallory", "anything")] {
        let e = connect_with(&pw.client_config(user, password))
            .await
            .expect_err("must be refused");
        assert_eq!(sqlstate(&e), "28P01", "{user}");
        assert_eq!(
            support::message(&e),
            format!("password authentication failed for user \"{user}\"")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_mapping_and_per_user_databases() {
    let pw = Pgward::start(Backend::shared()).await;
    let mut config = pw.client_config(USER, PASSWORD);
    config.dbname("nosuchdb");
    let e = connect_with(&config).await.expect_err("unknown db");
    assert_eq!(sqlstate(&e), "3D000");
    assert_eq!(
        support::message(&e),
        "database \"nosuchdb\" is not configured in pgward"
    );
    // bob may open only `otherdb`, an alias of the same upstream.
    let e = connect_with(&pw.client_config("bob", "bob-secret"))
        .await
        .expect_err("not allowed");
    assert_eq!(sqlstate(&e), "42501");
    let mut config = pw.client_config("bob", "bob-secret");
    config.dbname("otherdb");
    let client = connect_with(&config).await.expect("bob on otherdb");
    let row = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), support::DB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_gives_53300() {
    let backend = Backend::shared();
    let config = backend.config("max_client_connections = 2", "");
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let a = pw.connect().await;
    let b = pw.connect().await;
    let e = connect_with(&pw.client_config(USER, PASSWORD))
        .await
        .expect_err("third client");
    assert_eq!(sqlstate(&e), "53300");
    drop(a);
    // The slot frees once pgward notices the disconnect.
    let third = connect_eventually(&pw.client_config(USER, PASSWORD), false)
        .await
        .expect("a slot frees after a disconnect");
    third.simple_query("SELECT 1").await.expect("works");
    b.simple_query("SELECT 1").await.expect("still works");
}

/// Backend sessions of the `app` role other than the caller's.
fn app_backends(backend: &Backend) -> usize {
    backend
        .admin_sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' AND application_name = 'lifecycle-count'",
            support::APP_ROLE
        ))
        .trim()
        .parse()
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_and_terminate_close_the_backend() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    let mut config = pw.client_config(USER, PASSWORD);
    config.application_name("lifecycle-count");
    let client = connect_with(&config).await.expect("connect");
    client.simple_query("SELECT 1").await.expect("query");
    assert_eq!(app_backends(backend), 1);
    drop(client); // tokio-postgres sends Terminate
    wait_until(|| app_backends(backend) == 0).await;
    // A client that vanishes without Terminate.
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, support::DB).await;
    raw.simple("SET application_name = 'lifecycle-count'").await;
    assert_eq!(app_backends(backend), 1);
    drop(raw);
    wait_until(|| app_backends(backend) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_ends_the_session_without_an_error() {
    // After Terminate the server closes its side: that is the session's
    // clean end, not a lost server connection reported to the client.
    let pw = Pgward::start(Backend::shared()).await;
    for pipelined in [false, true] {
        let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, support::DB).await;
        let mut bytes = Vec::new();
        if pipelined {
            bytes.extend(support::raw::query("SELECT 1"));
        } else {
            raw.simple("SELECT 1").await;
        }
        bytes.extend(message(b'X', &[]));
        raw.send(&bytes).await;
        let mut after = Vec::new();
        while let Some(m) = raw.recv().await {
            after.push(m);
        }
        assert!(
            error_of(&after).is_none(),
            "pipelined {pipelined}: {:?}",
            error_of(&after)
        );
    }
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_reaches_its_client_and_others_go_on() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    let victim = pw.connect().await;
    let bystander = pw.connect().await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let running = tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    backend.admin_sql(&format!("SELECT pg_terminate_backend({pid})"));
    let result = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("client told in time")
        .expect("task");
    let e = result.expect_err("killed mid-query");
    assert_eq!(sqlstate(&e), "57P01", "{e}");
    bystander
        .simple_query("SELECT 1")
        .await
        .expect("others go on");
    pw.connect()
        .await
        .simple_query("SELECT 1")
        .await
        .expect("new clients too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_backend_gives_a_fatal_error_and_pgward_keeps_serving() {
    // A SIGKILLed backend restarts the whole cluster: use a private one.
    let backend = Backend::start(&ClusterOptions::default());
    let pw = Pgward::start(&backend).await;
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, support::DB).await;
    let reply = raw.simple("SELECT pg_backend_pid()").await;
    let row = reply.iter().find(|m| m.tag == b'D').expect("row");
    let pid = String::from_utf8_lossy(&row.body[6..]).into_owned();
    raw.send(&message(b'Q', b"SELECT pg_sleep(30)\0")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let reply = raw.until_ready().await;
    let err = error_of(&reply).expect("an error for the client");
    assert_eq!(err.field(b'S').as_deref(), Some("FATAL"));
    assert_eq!(err.sqlstate(), "08006", "{:?}", err.field(b'M'));
    assert!(raw.closed().await);
    // The cluster recovers from the crash; pgward serves new sessions.
    let serving = connect_eventually(&pw.client_config(USER, PASSWORD), true).await;
    assert!(
        serving.is_some(),
        "pgward serves again after the backend restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_08001_without_details() {
    let backend = Backend::shared();
    let port = pgward::cluster::free_port().expect("port");
    let config = backend.config("", "").replace(
        &format!("port = {}", backend.cluster.port()),
        &format!("port = {port}"),
    );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let e = connect_with(&pw.client_config(USER, PASSWORD))
        .await
        .expect_err("no upstream");
    assert_eq!(sqlstate(&e), "08001");
    assert!(
        !support::message(&e).contains(&port.to_string()),
        "{}",
        support::message(&e)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_busy_sessions() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    let addr = pw.addr;
    let (mut idle, _) = RawClient::login(addr, USER, PASSWORD, support::DB).await;
    let (mut busy, _) = RawClient::login(addr, USER, PASSWORD, support::DB).await;
    busy.send(&message(b'Q', b"SELECT 'done' FROM pg_sleep(1.5)\0"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shutdown = tokio::spawn(pw.shutdown());
    // The idle session is told at once.
    let first = idle.recv().await.expect("shutdown notice");
    assert_eq!(first.sqlstate(), "57P01");
    assert!(idle.closed().await);
    // The busy one gets its result, then the notice.
    let reply = busy.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    assert!(reply
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"done")));
    let next = busy.recv().await.expect("shutdown notice");
    assert_eq!(next.sqlstate(), "57P01");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown finishes")
        .expect("task");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}
