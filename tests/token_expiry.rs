//! Credentials end inside live sessions: a 2-second token ends its idle and
//! its busy session per the configured mode, a revoked jti ends its live
//! session and is refused from then on, and the maximum session lifetime
//! applies to password users too.

mod support;

use std::time::Duration;
use support::tokens::{wait_until_unix, TokenGateway};
use support::{message, sqlstate, Backend, Pgward};

const BIN: &str = env!("CARGO_BIN_EXE_pgward");

/// `strict` ends sessions at once; `patient` lets the transaction finish
/// within 1 s; the default waits for the transaction for up to 60 s.
const EXPIRY: &str = "expiry_grace = \"60s\"\n\
    [tokens.groups.strict]\non_expiry = \"immediate\"\n\
    [tokens.groups.patient]\nexpiry_grace = \"1s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_mode_ends_idle_and_busy_sessions_at_expiry() {
    let tg = TokenGateway::start(EXPIRY, "").await;
    let ttl = Duration::from_secs(2);
    let idle = tg.mint("ci-idle", &["strict"], ttl);
    let busy = tg.mint("ci-busy", &["strict"], ttl);
    let idle_client = tg.connect_tls("ci-idle", &idle.token).await.expect("idle");
    let busy_client = tg.connect_tls("ci-busy", &busy.token).await.expect("busy");
    assert_eq!(tg.sessions_of("ci-idle").len(), 1);
    // Busy: a statement that would run far past the expiry.
    let statement = "SELECT pg_sleep(61) /* immediate */";
    let running = tokio::spawn(async move { busy_client.simple_query(statement).await });
    wait_until_unix(idle.expires).await;
    assert!(
        tg.wait_gone("ci-idle", Duration::from_secs(10)).await,
        "idle session still there"
    );
    assert!(idle_client.simple_query("SELECT 1").await.is_err());
    let e = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the busy session ended before its statement")
        .expect("task")
        .expect_err("ended by expiry");
    assert_eq!(sqlstate(&e), "57P01", "{}", message(&e));
    assert!(
        message(&e).contains("credential expired: the token expired at"),
        "{}",
        message(&e)
    );
    assert!(tg.wait_gone("ci-busy", Duration::from_secs(10)).await);
    // The server stopped the statement too.
    let backend = Backend::shared();
    let count = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query = '{}'",
        statement.replace('\'', "''")
    );
    let mut stopped = false;
    for _ in 0..200 {
        if backend.admin_sql(&count).trim() == "0" {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stopped,
        "the server still runs the expired session's statement"
    );
    // The expired token no longer logs in.
    tg.refused("ci-idle", &idle.token, "the token expired at")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_transaction_mode_waits_for_commit_up_to_the_hard_limit() {
    let tg = TokenGateway::start(EXPIRY, "").await;
    let ttl = Duration::from_secs(2);
    let txn = tg.mint("ci-txn", &["default"], ttl);
    let slow = tg.mint("ci-slow", &["patient"], ttl);
    let idle = tg.mint("ci-quiet", &[], ttl);
    let txn_client = tg.connect_tls("ci-txn", &txn.token).await.expect("txn");
    let slow_client = tg.connect_tls("ci-slow", &slow.token).await.expect("slow");
    let _idle_client = tg
        .connect_tls("ci-quiet", &idle.token)
        .await
        .expect("quiet");
    txn_client.simple_query("BEGIN").await.expect("begin");
    slow_client.simple_query("BEGIN").await.expect("begin");
    wait_until_unix(txn.expires.max(slow.expires)).await;
    // Idle outside a transaction: ends once expired.
    assert!(tg.wait_gone("ci-quiet", Duration::from_secs(10)).await);
    // The patient group's hard limit (1 s) ends the open transaction.
    assert!(tg.wait_gone("ci-slow", Duration::from_secs(10)).await);
    // The default group's open transaction goes on (60 s limit) and ends
    // at its COMMIT.
    assert_eq!(tg.sessions_of("ci-txn").len(), 1);
    txn_client
        .simple_query("SELECT 1")
        .await
        .expect("still in its transaction");
    txn_client.simple_query("COMMIT").await.expect("commit");
    assert!(tg.wait_gone("ci-txn", Duration::from_secs(10)).await);
    assert!(txn_client.simple_query("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_jti_ends_its_live_session_and_is_refused() {
    let tg = TokenGateway::start("", "").await;
    let minted = tg.mint("ci-revoked", &["dev"], Duration::from_secs(300));
    let other = tg.mint("ci-kept", &["dev"], Duration::from_secs(300));
    let client = tg
        .connect_tls("ci-revoked", &minted.token)
        .await
        .expect("login");
    let kept = tg
        .connect_tls("ci-kept", &other.token)
        .await
        .expect("login");
    client.simple_query("SELECT 1").await.expect("works");
    let out = std::process::Command::new(BIN)
        .args(["token", "revoke", "--config"])
        .arg(&tg.config_file)
        .arg(&minted.jti)
        .args(["--reason", "laptop lost"])
        .output()
        .expect("revoke");
    assert!(out.status.success(), "{out:?}");
    assert!(
        tg.wait_gone("ci-revoked", Duration::from_secs(10)).await,
        "session survived revocation"
    );
    let e = client.simple_query("SELECT 1").await.expect_err("ended");
    assert!(
        e.is_closed() || message(&e).contains("credential revoked"),
        "{e}"
    );
    tg.refused("ci-revoked", &minted.token, "was revoked").await;
    // Other tokens are untouched.
    kept.simple_query("SELECT 1")
        .await
        .expect("other token still works");
    assert!(std::fs::read_to_string(&tg.revocations)
        .expect("store")
        .contains("laptop lost"));
}

/// The admin API of `tg`'s gateway on a free port.
async fn admin_api(tg: &TokenGateway) -> std::net::SocketAddr {
    let state = pgward::admin::AdminState {
        gw: std::sync::Arc::clone(&tg.pw.gateway),
        config_path: None,
        ready: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    pgward::admin::start(
        state,
        "127.0.0.1:0".parse().expect("addr"),
        Default::default(),
    )
    .await
    .expect("admin listener")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_revokes_a_token_and_ends_its_session() {
    let root = pgward::auth::verifier::ScramVerifier::generate("root-secret");
    let tg = TokenGateway::start(
        "",
        &format!(
            "[users.root]\nscram_verifier = \"{root}\"\ngroups = [\"admin\"]\n\
             [admin]\nenabled = true\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .await;
    let addr = admin_api(&tg).await;
    let minted = tg.mint("ci-api", &["dev"], Duration::from_secs(300));
    let client = tg
        .connect_tls("ci-api", &minted.token)
        .await
        .expect("login");
    client.simple_query("SELECT 1").await.expect("works");
    let path = format!("/tokens/{}/revoke", minted.jti);
    // Only admin identities may revoke.
    let (status, _) = support::http::http(addr, "POST", &path, None).await;
    assert_eq!(status, 401);
    let (status, body) =
        support::http::http(addr, "POST", &path, Some(("root", "root-secret"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&minted.jti), "{body}");
    assert!(
        tg.wait_gone("ci-api", Duration::from_secs(10)).await,
        "session survived revocation"
    );
    tg.refused("ci-api", &minted.token, "was revoked").await;
    assert!(std::fs::read_to_string(&tg.revocations)
        .expect("store")
        .contains("revoked by administrator root"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_session_lifetime_applies_to_password_users() {
    let backend = Backend::shared();
    let config = format!(
        "{}\n[tokens]\nmax_session_lifetime = \"2s\"\non_expiry = \"immediate\"\n",
        backend.config("", "")
    );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let client = pw.connect().await;
    let running = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    let e = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("ended by the lifetime")
        .expect("task")
        .expect_err("ended");
    assert!(
        message(&e).contains("maximum lifetime (2s)"),
        "{}",
        message(&e)
    );
}

/// With `revocation_store = "approvals"` the list lives in the approvals
/// store, here PostgreSQL (shared by every instance on it): the admin API
/// records the revocation there, the live session ends, the token is
/// refused, and the CLI's file-only command says where to revoke instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_in_the_postgres_approvals_store_end_sessions() {
    let root = pgward::auth::verifier::ScramVerifier::generate("root-secret");
    let schema = format!("rev_{:016x}", rand::random::<u64>());
    let tg = TokenGateway::start_revoking_in_store(
        "",
        &format!(
            "[users.root]\nscram_verifier = \"{root}\"\ngroups = [\"admin\"]\n\
             [admin]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
             [approvals]\nstore = \"postgres\"\npostgres_upstream = \"{}\"\npostgres_schema = \"{schema}\"\n",
            support::DB
        ),
    )
    .await;
    let addr = admin_api(&tg).await;
    let minted = tg.mint("ci-store", &["dev"], Duration::from_secs(300));
    let other = tg.mint("ci-other", &["dev"], Duration::from_secs(300));
    let client = tg
        .connect_tls("ci-store", &minted.token)
        .await
        .expect("login");
    client.simple_query("SELECT 1").await.expect("works");
    let path = format!("/tokens/{}/revoke", minted.jti);
    let (status, body) =
        support::http::http(addr, "POST", &path, Some(("root", "root-secret"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        tg.wait_gone("ci-store", Duration::from_secs(10)).await,
        "session survived revocation"
    );
    tg.refused("ci-store", &minted.token, "was revoked").await;
    tg.connect_tls("ci-other", &other.token)
        .await
        .expect("another token still works");
    // The record is in the store's table, for every instance on it.
    let stored = Backend::shared().admin_sql(&format!(
        "SELECT record::jsonb ->> 'by' FROM {schema}.revocations WHERE record::jsonb ->> 'jti' = '{}'",
        minted.jti
    ));
    assert_eq!(stored.trim(), "root");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(["token", "revoke", "--config"])
        .arg(&tg.config_file)
        .arg(&other.jti)
        .output()
        .expect("cli");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("POST /tokens/{jti}/revoke"),
        "{out:?}"
    );
}
