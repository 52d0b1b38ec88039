//! Elevation grants end to end: an active role grant makes the identity's
//! new sessions on that database log in as the granted role; the sessions
//! it elevated end with a FATAL naming the grant when it expires or is
//! revoked; sessions it did not elevate are untouched; a masked identity's
//! elevated role must still be least-privilege.
//!
//! Tests read the ended sessions to their end (the FATAL), never sleep
//! and hope.

mod support;

use pgward::approvals::model::{Grant, GrantScope, GrantSubject};
use pgward::policy::rules::Identity;
use std::time::Duration;
use support::raw::RawClient;
use support::{message, sqlstate, Backend, Pgward, APP_ROLE, DB, MASKED_ROLE, PASSWORD, USER};

/// Every identity maps to the masked role; approvers are `ops`; `extra`
/// is appended.
fn config(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "{}\n[approvals]\npath = \"{}\"\napprovers = [\"ops\"]\nmax_grant = \"1h\"\n{extra}",
        Backend::shared().config(
            "",
            &format!("role_map = [{{ users = [\"*\"], role = \"{MASKED_ROLE}\" }}]")
        ),
        dir.join("approvals.jsonl").display()
    )
}

async fn start(extra: &str) -> (Pgward, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let pw = Pgward::start_in(&config(dir.path(), extra), Backend::shared().cluster.dir()).await;
    (pw, dir)
}

fn carol() -> Identity {
    Identity::new("carol", ["ops"])
}

/// Grants `subject` the app role on `appdb` for `duration`, made by carol.
async fn elevate(pw: &Pgward, subject: GrantSubject, duration: Duration) -> Grant {
    pw.gateway
        .approvals()
        .create_grant(
            subject,
            GrantScope::Role {
                database: DB.into(),
                role: APP_ROLE.into(),
            },
            duration,
            &carol(),
            Some("incident 7".into()),
        )
        .await
        .expect("grant")
}

/// A session as alice and its connection's end (`Err` with the server's
/// FATAL when pgward ends it).
async fn session(
    pw: &Pgward,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = pw
        .client_config(USER, PASSWORD)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    (client, tokio::spawn(connection))
}

async fn current_user(c: &tokio_postgres::Client) -> String {
    c.query_one("SELECT current_user::text", &[])
        .await
        .expect("current_user")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_grant_elevates_new_sessions_and_its_expiry_ends_them() {
    let (pw, _dir) = start("").await;
    let (plain, plain_end) = session(&pw).await;
    assert_eq!(current_user(&plain).await, MASKED_ROLE);

    let grant = elevate(&pw, GrantSubject::User(USER.into()), Duration::from_secs(2)).await;
    let (elevated, _end) = session(&pw).await;
    assert_eq!(current_user(&elevated).await, APP_ROLE);
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let who = raw.simple("SELECT current_user").await;
    assert!(
        who.iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(APP_ROLE.as_bytes())),
        "{who:?}"
    );

    assert_eq!(
        raw.fatal_at_end().await,
        format!(
            "terminating connection: the grant {} that elevated this session to role {APP_ROLE} \
             expired",
            grant.id
        )
    );
    // The other elevated session ends too (each session is told on its
    // own: poll until it is gone).
    let started = std::time::Instant::now();
    while elevated.simple_query("SELECT 1").await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "both elevated sessions ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The session it did not elevate is untouched, and a new one maps as
    // before.
    assert_eq!(current_user(&plain).await, MASKED_ROLE);
    assert!(!plain_end.is_finished());
    let (after, _end) = session(&pw).await;
    assert_eq!(current_user(&after).await, MASKED_ROLE);
}

/// Waits until `n` of pgward's sessions are running a statement.
async fn wait_running(pw: &Pgward, n: usize) {
    for _ in 0..1000 {
        let running = pw
            .gateway
            .registry
            .list()
            .iter()
            .filter(|s| s.state == pgward::session::registry::SessionState::Running)
            .count();
        if running >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} sessions running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_group_grant_ends_the_sessions_it_elevated() {
    let (pw, _dir) = start("").await;
    let (plain, plain_end) = session(&pw).await;
    // alice is in group dev.
    let grant = elevate(
        &pw,
        GrantSubject::Group("dev".into()),
        Duration::from_secs(600),
    )
    .await;
    // One session read byte by byte, to see every message up to its end.
    let (mut one, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let who = one.simple("SELECT current_user").await;
    assert!(
        who.iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(APP_ROLE.as_bytes())),
        "{who:?}"
    );
    // A statement running at the revocation is stopped with its session.
    let (mut two, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    two.send(&support::raw::query("SELECT pg_sleep(60)")).await;
    wait_running(&pw, 1).await;
    pw.gateway
        .approvals()
        .revoke_grant(&grant.id, &carol(), Some("incident closed".into()))
        .await
        .expect("revoke");
    let expected = format!(
        "terminating connection: the grant {} that elevated this session to role {APP_ROLE} was revoked by carol: \
         incident closed",
        grant.id
    );
    assert_eq!(one.fatal_at_end().await, expected);
    // The running statement's cancellation may be answered first; the
    // FATAL is last.
    assert_eq!(two.fatal_at_end().await, expected);
    assert_eq!(current_user(&plain).await, MASKED_ROLE);
    assert!(!plain_end.is_finished());
    let (after, _end) = session(&pw).await;
    assert_eq!(current_user(&after).await, MASKED_ROLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_identity_is_not_elevated_to_a_role_that_is_not_least_privilege() {
    let backend = Backend::shared();
    backend.admin_sql(
        "CREATE TABLE IF NOT EXISTS grants_people (id int PRIMARY KEY, ssn text); \
         ALTER TABLE grants_people OWNER TO app",
    );
    let (pw, _dir) = start(
        "[masking]\nrefresh = \"1h\"\n[[masking.rules]]\nname = \"ssn\"\n\
         columns = [\"grants_people.ssn\"]\nstrategy = \"null\"\ngroups = [\"dev\"]\n",
    )
    .await;
    let (plain, _plain_end) = session(&pw).await;
    assert_eq!(current_user(&plain).await, MASKED_ROLE);
    elevate(
        &pw,
        GrantSubject::User(USER.into()),
        Duration::from_secs(600),
    )
    .await;
    let e = support::connect_with(&pw.client_config(USER, PASSWORD))
        .await
        .expect_err("the owner role is refused to a masked identity");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert!(
        message(&e).starts_with(&format!(
            "pgward refuses to log in as role \"{APP_ROLE}\" for an identity with masked columns"
        )),
        "{}",
        message(&e)
    );
}
