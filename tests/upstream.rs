//! pgward against a hostile or broken upstream, played by the scripted fake
//! backend in tests/support/fake_backend.rs.

mod support;

use support::fake_backend::{parameter_status, Auth, FakeBackend, Reply, FAKE_PASSWORD};
use support::raw::RawClient;
use support::{Pgward, DB, PASSWORD, USER};

#[tokio::test]
async fn fake_backend_serves_a_scram_login_and_queries_through_pgward() {
    let fake = FakeBackend::builder()
        .auth(Auth::scram(FAKE_PASSWORD).iterations(4096))
        .login_message(parameter_status("server_version", "15.99-fake"))
        .respond(|req| match req.query().as_str() {
            "SELECT 'bye'" => Reply::Close,
            _ => Reply::Default,
        })
        .start()
        .await;
    let pw = Pgward::start_in(&fake.config(""), fake.dir()).await;
    let (mut c, hello) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    assert!(
        hello
            .iter()
            .any(|m| m.tag == b'S' && m.body.starts_with(b"server_version\x0015.99-fake")),
        "{hello:?}"
    );
    let answer = c.simple("SELECT 1").await;
    let tags: Vec<u8> = answer.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"TDCZ", "{answer:?}");
    let seen = fake.seen();
    assert_eq!(seen.logins_completed, 1);
    assert!(seen.passwords.is_empty(), "SCRAM sends no password");
    assert!(seen.startups[0].contains(&("user".into(), support::APP_ROLE.into())));
    assert!(seen
        .messages
        .iter()
        .any(|(t, b)| *t == b'Q' && b.starts_with(b"SELECT 1")));
    // The scripted closure answers too: this one hangs up.
    let answer = c.simple("SELECT 'bye'").await;
    assert!(support::raw::error_of(&answer).is_some(), "{answer:?}");
}

#[tokio::test]
async fn fake_backend_checks_the_scram_proof() {
    // The fake's verifier is for another password: pgward's proof fails and
    // the client gets 08001, not the server's wording.
    let fake = FakeBackend::builder()
        .auth(Auth::scram("not-the-held-password"))
        .start()
        .await;
    let pw = Pgward::start_in(&fake.config(""), fake.dir()).await;
    let e = support::connect_with(&pw.client_config(USER, PASSWORD))
        .await
        .expect_err("login refused");
    assert_eq!(support::sqlstate(&e), "08001", "{e:?}");
    assert_eq!(fake.seen().logins_completed, 0);
}
