//! SCRAM logins towards clients and what they tell about user names: an
//! unknown name goes through the same exchange as a known one, with a
//! salt and iteration count that do not set it apart, before and after a
//! restart.

mod support;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::SCRAM_SHA_256;
use postgres_protocol::message::frontend;
use support::raw::RawClient;
use support::{Backend, Pgward, DB, USER};

/// The salt and iteration count pgward's server-first message gives `user`.
async fn server_first(pw: &Pgward, user: &str) -> (String, String) {
    let mut c = RawClient::open(pw.addr).await;
    let mut out = BytesMut::new();
    frontend::startup_message([("user", user), ("database", DB)], &mut out).expect("startup");
    c.send(&out).await;
    let sasl = c.recv().await.expect("auth request");
    assert_eq!(sasl.tag, b'R', "{sasl:?}");
    out.clear();
    frontend::sasl_initial_response(SCRAM_SHA_256, b"n,,n=,r=abcdefghijklmnop", &mut out)
        .expect("sasl");
    c.send(&out).await;
    let cont = c.recv().await.expect("sasl continue");
    assert_eq!(cont.tag, b'R', "{cont:?}");
    let text = String::from_utf8(cont.body[4..].to_vec()).expect("utf-8");
    let field = |name: &str| {
        text.split(',')
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };
    (field("s="), field("i="))
}

/// A name pgward does not know gets the same salt after a restart, as a
/// known name does: a salt that changes at every start would tell an
/// observer which names exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_users_salt_does_not_change_across_restarts() {
    let backend = Backend::shared();
    let text = backend.config("", "");
    let first = Pgward::start_in(&text, backend.cluster.dir()).await;
    let known = server_first(&first, USER).await;
    let ghost = server_first(&first, "ghost").await;
    assert_eq!(
        server_first(&first, "ghost").await,
        ghost,
        "stable within one run"
    );
    assert_eq!(ghost.1, known.1, "the iteration count of the known users");
    first.shutdown().await;

    let second = Pgward::start_in(&text, backend.cluster.dir()).await;
    assert_eq!(server_first(&second, USER).await, known);
    assert_eq!(
        server_first(&second, "ghost").await,
        ghost,
        "an unknown name's salt changed at the restart, unlike a known one's"
    );
    second.shutdown().await;
}

/// Where every configured user has a verifier of another iteration count
/// than pgward's own default, an unknown name gets that count too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_gets_the_iteration_count_the_known_ones_have() {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let verifier = format!(
        "SCRAM-SHA-256$10000:{}${}:{}",
        b64(b"sixteen byte sal"),
        b64(&[1; 32]),
        b64(&[2; 32])
    );
    let backend = Backend::shared();
    let text: String = backend
        .config("", "")
        .lines()
        .map(|l| {
            if l.starts_with("scram_verifier") {
                format!("scram_verifier = \"{verifier}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let pw = Pgward::start_in(&text, backend.cluster.dir()).await;
    let known = server_first(&pw, USER).await;
    assert_eq!(known.1, "10000");
    assert_eq!(server_first(&pw, "ghost").await.1, "10000");
    pw.shutdown().await;
}
