//! pgward against a hostile or broken upstream, played by the scripted fake
//! backend in tests/support/fake_backend.rs.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::fake_backend::{
    auth_message, error_response, parameter_status, ready_for_query, Auth, FakeBackend, Reply,
    ServerFinal, FAKE_PASSWORD,
};
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

/// pgward with the real cluster as `appdb` (healthy) and `fake` as upstream
/// `hostile` behind database `hostiledb`; `hostile_extra` goes into that
/// upstream's section.
async fn beside_healthy(fake: &FakeBackend, hostile_extra: &str) -> Pgward {
    let backend = support::Backend::shared();
    let config = format!(
        "{}\n{}",
        backend
            .config("", "")
            .replace("[databases]\n", "[databases]\nhostiledb = \"hostile\"\n"),
        fake.upstream_section("hostile", hostile_extra)
    );
    Pgward::start_in(&config, backend.cluster.dir()).await
}

/// Median and 99th percentile of `SELECT 1` on the healthy upstream while
/// `hostile` clients log in to the hostile one in a loop; returns them with
/// the SQLSTATEs the hostile logins got.
async fn healthy_latency_under_hostile_logins(
    pw: &Pgward,
    fake: &FakeBackend,
    hostile: usize,
) -> (Duration, Duration, Vec<String>) {
    let healthy = pw.connect().await;
    healthy.simple_query("SELECT 1").await.expect("warm up");
    let stop = Arc::new(AtomicBool::new(false));
    // The hostile clients run on a runtime of their own: their side of the
    // client SCRAM exchange with pgward must not slow the measuring runtime.
    let hostile_clients = std::thread::spawn({
        let (stop, mut config) = (Arc::clone(&stop), pw.client_config(USER, PASSWORD));
        config.dbname("hostiledb");
        move || {
            let rt = tokio::runtime::Runtime::new().expect("hostile runtime");
            rt.block_on(async move {
                let tasks: Vec<_> = (0..hostile)
                    .map(|_| {
                        let (stop, config) = (Arc::clone(&stop), config.clone());
                        tokio::spawn(async move {
                            let mut codes = Vec::new();
                            while !stop.load(Ordering::Relaxed) {
                                match support::connect_with(&config).await {
                                    Ok(_) => codes.push("connected".to_owned()),
                                    Err(e) => codes.push(support::sqlstate(&e)),
                                }
                            }
                            codes
                        })
                    })
                    .collect();
                let mut codes = Vec::new();
                for t in tasks {
                    codes.extend(t.await.expect("hostile task"));
                }
                codes
            })
        }
    });
    // Measured once the hostile logins reach the fake, for at least 200
    // queries and 3 s, at most 20 s (the point of the test is what fails, not
    // how fast; the numbers are printed for the record).
    for _ in 0..200 {
        if fake.seen().connections > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = Vec::new();
    let started = Instant::now();
    while (latencies.len() < 200 || started.elapsed() < Duration::from_secs(3))
        && started.elapsed() < Duration::from_secs(20)
    {
        let t = Instant::now();
        healthy
            .simple_query("SELECT 1")
            .await
            .expect("healthy upstream serves");
        latencies.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let codes = tokio::task::spawn_blocking(move || hostile_clients.join().expect("hostile"))
        .await
        .expect("join");
    latencies.sort();
    let at = |q: usize| latencies[(latencies.len() - 1) * q / 100];
    eprintln!(
        "{} healthy queries in {:?}, slowest {:?}",
        latencies.len(),
        started.elapsed(),
        latencies.last()
    );
    (at(50), at(99), codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_iteration_count_fails_cleanly_and_spares_other_upstreams() {
    // A fresh salt per login defeats any cache; no server-final (the fake
    // does not spend the CPU itself).
    let fake = FakeBackend::builder()
        .auth(
            Auth::scram(FAKE_PASSWORD)
                .iterations(1_000_000)
                .server_final(ServerFinal::Missing),
        )
        .start()
        .await;
    let pw = beside_healthy(&fake, "").await;
    let (median, p99, codes) = healthy_latency_under_hostile_logins(&pw, &fake, 4).await;
    eprintln!(
        "healthy SELECT 1 beside 1,000,000-iteration logins: median {median:?}, p99 {p99:?}, \
         {} hostile logins: {:?}",
        codes.len(),
        &codes[..codes.len().min(8)]
    );
    assert!(!codes.is_empty());
    assert!(codes.iter().all(|c| c == "08001"), "{codes:?}");

    // Within the limit, with a fresh salt each time (no cache can help): the
    // derivations run on the blocking pool, and the healthy upstream serves.
    let fake = FakeBackend::builder()
        .auth(
            Auth::scram(FAKE_PASSWORD)
                .iterations(100_000)
                .server_final(ServerFinal::Missing),
        )
        .start()
        .await;
    let pw = beside_healthy(&fake, "").await;
    let (median, p99, codes) = healthy_latency_under_hostile_logins(&pw, &fake, 4).await;
    eprintln!(
        "healthy SELECT 1 beside 100,000-iteration logins: median {median:?}, p99 {p99:?}, \
         {} hostile logins: {codes:?}",
        codes.len()
    );
    assert!(fake.seen().connections > 0);
    // And refused: the fake sends no server signature.
    assert!(codes.iter().all(|c| c == "08001"), "{codes:?}");
}

/// Connects as alice and runs `SELECT 1`.
async fn select_one_works(pw: &Pgward) {
    let client = pw.connect().await;
    client.simple_query("SELECT 1").await.expect("query");
}

/// Connects as alice and returns the SQLSTATE of the failure; panics if the
/// login succeeds or does not end (a hang is the bug these tests look for).
async fn login_refused(pw: &Pgward) -> String {
    let config = pw.client_config(USER, PASSWORD);
    let login = tokio::time::timeout(Duration::from_secs(60), support::connect_with(&config));
    match login.await.expect("the login ends") {
        Ok(_) => panic!("the login succeeded"),
        Err(e) => support::sqlstate(&e),
    }
}

#[tokio::test]
async fn login_messages_beyond_the_byte_budget_end_the_login() {
    // Many small messages: each is tiny, their sum is not.
    let flood = FakeBackend::builder()
        .login_message(parameter_status("p", "v").repeat(10_000))
        .start()
        .await;
    let pw = Pgward::start_in(&flood.config(""), flood.dir()).await;
    assert_eq!(login_refused(&pw).await, "08001");

    // One large message.
    let mut notice = error_response(&[(b'S', "NOTICE"), (b'M', &"x".repeat(100_000))]);
    notice[0] = b'N';
    let big = FakeBackend::builder().login_message(notice).start().await;
    let pw = Pgward::start_in(&big.config(""), big.dir()).await;
    assert_eq!(login_refused(&pw).await, "08001");

    // The budget is configurable, and under it the login goes through.
    let pw = Pgward::start_in(&flood.config("login_max_bytes = \"1MiB\""), flood.dir()).await;
    select_one_works(&pw).await;
}

#[tokio::test]
async fn a_login_that_never_finishes_is_cut_off() {
    // Authentication succeeds, then nothing: no BackendKeyData, no
    // ReadyForQuery.
    let fake = FakeBackend::builder()
        .raw_login(vec![parameter_status("a", "b")])
        .start()
        .await;
    let pw = Pgward::start_in(&fake.config("connect_timeout = \"1s\""), fake.dir()).await;
    assert_eq!(login_refused(&pw).await, "08001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_logins_are_refused_when_the_catalog_read_stalls() {
    // The catalog connection's first query never gets an answer.
    let fake = FakeBackend::builder()
        .respond(|req| {
            if req.query().starts_with("BEGIN") {
                Reply::Hang
            } else {
                Reply::Default
            }
        })
        .start()
        .await;
    let config = format!(
        "{}\n[masking]\ncatalog_timeout = \"1s\"\n[[masking.rules]]\nname = \"ssn\"\n\
         columns = [\"ssn\"]\nstrategy = \"null\"\n",
        fake.config("")
    );
    let pw = Pgward::start_in(&config, fake.dir()).await;
    // Several at once: the later ones wait for the first read, within the
    // same deadline, and are refused too.
    let logins: Vec<_> = (0..3).map(|_| login_refused(&pw)).collect();
    for code in futures::future::join_all(logins).await {
        assert_eq!(code, "08001");
    }
    // And again later: no login is left waiting behind the stalled read.
    assert_eq!(login_refused(&pw).await, "08001");
    assert!(fake.seen().startups.iter().any(|s| s
        .iter()
        .any(|(k, v)| k == "application_name" && v == "pgward-catalog")));
}

#[tokio::test]
async fn malformed_login_errors_reach_the_client_well_formed() {
    let garbled = support::raw::message(b'E', b"SFATAL");
    let cases = [
        // After authentication: no SQLSTATE, no message.
        (
            FakeBackend::builder().raw_login(vec![error_response(&[(b'S', "FATAL")])]),
            "08P01",
            "malformed error from the server",
        ),
        // In place of authentication: fields without terminators.
        (
            FakeBackend::builder().auth(Auth::Raw(garbled)),
            "08P01",
            "malformed error from the server",
        ),
        // A well-formed one passes as it is.
        (
            FakeBackend::builder().raw_login(vec![error_response(&[
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "53300"),
                (b'M', "sorry, too many clients already"),
            ])]),
            "53300",
            "sorry, too many clients already",
        ),
    ];
    for (builder, code, text) in cases {
        let fake = builder.start().await;
        let pw = Pgward::start_in(&fake.config(""), fake.dir()).await;
        let e = support::connect_with(&pw.client_config(USER, PASSWORD))
            .await
            .expect_err("login refused");
        assert_eq!(support::sqlstate(&e), code, "{e:?}");
        assert_eq!(support::message(&e), text);
    }
}

#[tokio::test]
async fn upstream_authentication_follows_require_auth() {
    // Refused by default, and the password never leaves pgward.
    for auth in [Auth::Cleartext, Auth::Md5(*b"salt"), Auth::Trust] {
        let fake = FakeBackend::builder().auth(auth.clone()).start().await;
        let pw = Pgward::start_in(&fake.config(""), fake.dir()).await;
        assert_eq!(login_refused(&pw).await, "08001", "{auth:?}");
        let seen = fake.seen();
        assert!(seen.passwords.is_empty(), "{auth:?}: {seen:?}");
        assert!(
            seen.messages.is_empty(),
            "{auth:?}: no statement reached it"
        );
    }
    // Named in require_auth, they work.
    for (auth, allow) in [
        (Auth::Cleartext, "password"),
        (Auth::Md5(*b"salt"), "md5"),
        (Auth::Trust, "none"),
    ] {
        let fake = FakeBackend::builder().auth(auth.clone()).start().await;
        let extra = format!("require_auth = [\"scram-sha-256\", \"{allow}\"]");
        let pw = Pgward::start_in(&fake.config(&extra), fake.dir()).await;
        select_one_works(&pw).await;
        let seen = fake.seen().passwords;
        match auth {
            Auth::Cleartext => assert_eq!(seen, [FAKE_PASSWORD]),
            Auth::Md5(_) => assert!(seen[0].starts_with("md5"), "{seen:?}"),
            _ => assert!(seen.is_empty()),
        }
    }
}

#[tokio::test]
async fn the_server_scram_signature_is_always_verified() {
    for server_final in [ServerFinal::Missing, ServerFinal::Wrong] {
        let fake = FakeBackend::builder()
            .auth(Auth::scram(FAKE_PASSWORD).server_final(server_final.clone()))
            .start()
            .await;
        // Even with every method allowed.
        let extra = "require_auth = [\"scram-sha-256\", \"md5\", \"password\", \"none\"]";
        let pw = Pgward::start_in(&fake.config(extra), fake.dir()).await;
        assert_eq!(login_refused(&pw).await, "08001", "{server_final:?}");
        assert!(fake.seen().messages.is_empty(), "{server_final:?}");
    }
}

#[tokio::test]
async fn required_channel_binding_is_not_given_up_without_tls() {
    // sslmode prefer, and the server declines TLS: SCRAM cannot be bound.
    let fake = FakeBackend::builder().start().await;
    let extra = "sslmode = \"prefer\"\nchannel_binding = \"require\"";
    let pw = Pgward::start_in(&fake.config(extra), fake.dir()).await;
    assert_eq!(login_refused(&pw).await, "08001");
    assert_eq!(fake.seen().logins_completed, 0);
    // Without the requirement the same server is accepted.
    let pw = Pgward::start_in(&fake.config("sslmode = \"prefer\""), fake.dir()).await;
    select_one_works(&pw).await;
}

#[tokio::test]
async fn authentication_out_of_place_ends_the_login() {
    let cases = [
        // BackendKeyData and ReadyForQuery without any authentication.
        FakeBackend::builder().auth(Auth::Raw(
            [
                support::raw::message(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]),
                ready_for_query(b'I'),
            ]
            .concat(),
        )),
        // A second authentication request after AuthenticationOk.
        FakeBackend::builder().raw_login(vec![auth_message(3, &[]), ready_for_query(b'I')]),
        // SASLFinal out of the blue.
        FakeBackend::builder().auth(Auth::Raw(auth_message(12, b"v=AAAA"))),
        // An unknown authentication kind.
        FakeBackend::builder().auth(Auth::Raw(auth_message(99, &[]))),
    ];
    for builder in cases {
        let fake = builder.start().await;
        let pw = Pgward::start_in(&fake.config(""), fake.dir()).await;
        assert_eq!(login_refused(&pw).await, "08001");
        assert!(fake.seen().passwords.is_empty());
    }
}

#[tokio::test]
async fn over_tls_scram_must_be_channel_bound_unless_configured_otherwise() {
    // A server (or a man in the middle terminating TLS) that offers only
    // unbound SCRAM over TLS.
    let pki_dir = tempfile::tempdir().expect("dir");
    let pki = support::certs::TestPki::new(pki_dir.path(), "fake CA");
    let unbound = FakeBackend::builder()
        .tls(&pki)
        .auth(Auth::scram(FAKE_PASSWORD).mechanisms(&["SCRAM-SHA-256"]))
        .start()
        .await;
    let pw = Pgward::start_in(&unbound.config("sslmode = \"require\""), unbound.dir()).await;
    assert_eq!(login_refused(&pw).await, "08001");
    assert_eq!(unbound.seen().logins_completed, 0);
    let relaxed = "sslmode = \"require\"\nchannel_binding = \"prefer\"";
    let pw = Pgward::start_in(&unbound.config(relaxed), unbound.dir()).await;
    select_one_works(&pw).await;

    // Offering SCRAM-SHA-256-PLUS, the default works over TLS.
    let bound = FakeBackend::builder()
        .tls(&pki)
        .auth(Auth::scram(FAKE_PASSWORD).mechanisms(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]))
        .start()
        .await;
    let pw = Pgward::start_in(&bound.config("sslmode = \"require\""), bound.dir()).await;
    select_one_works(&pw).await;
    assert_eq!(bound.seen().logins_completed, 1);
}
