//! A malformed or hostile server, played by the scripted fake backend:
//! whatever it sends after login, its client gets one clean FATAL (08P01)
//! and pgward goes on serving everyone else; never a panic or a hang.

mod support;

use support::fake_backend::{data_row, ready_for_query, FakeBackend, Reply};
use support::raw::{message, query, RawClient};
use support::{Pgward, DB, PASSWORD, USER};

/// What the fake answers `SELECT 'hostile'` with, per case.
fn hostile(case: &str) -> Vec<u8> {
    let mut v = Vec::new();
    match case {
        "truncated ReadyForQuery" => v.extend(message(b'Z', b"")),
        "ReadyForQuery with a bad status" => v.extend(message(b'Z', b"X")),
        "absurd length" => v.extend_from_slice(b"C\x7f\xff\xff\xff"),
        "negative length" => v.extend_from_slice(b"D\xff\xff\xff\xf0"),
        "unknown message type" => v.extend(message(b'?', b"boo")),
        "authentication out of place" => v.extend(message(b'R', &0i32.to_be_bytes())),
        "BackendKeyData out of place" => v.extend(message(b'K', b"\0\0\0\x01\0\0\0\x02")),
        "DataRow without a result" => v.extend(data_row(&[Some("x")])),
        "two ReadyForQuery" => {
            v.extend(ready_for_query(b'I'));
            v.extend(ready_for_query(b'I'));
        }
        "ParseComplete nobody asked for" => {
            v.extend(message(b'1', b""));
        }
        _ => unreachable!(),
    }
    v
}

const CASES: &[&str] = &[
    "truncated ReadyForQuery",
    "ReadyForQuery with a bad status",
    "absurd length",
    "negative length",
    "unknown message type",
    "authentication out of place",
    "BackendKeyData out of place",
    "DataRow without a result",
    "two ReadyForQuery",
    "ParseComplete nobody asked for",
];

async fn fake_for(case: &'static str) -> FakeBackend {
    FakeBackend::builder()
        .respond(move |req| match req.query().as_str() {
            "SELECT 'hostile'" => Reply::Send(hostile(case)),
            _ => Reply::Default,
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_server_messages_end_the_session_with_one_fatal() {
    for case in CASES {
        let fake = fake_for(case).await;
        let pw = Pgward::start_in(&fake.config(""), fake.dir()).await;
        let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
        c.send(&query("SELECT 'hostile'")).await;
        let mut fatal = None;
        while let Some(m) = c.recv().await {
            if m.tag == b'E' && m.field(b'S').as_deref() == Some("FATAL") {
                assert!(fatal.is_none(), "{case}: a second FATAL");
                fatal = Some(m);
            }
        }
        let fatal = fatal.unwrap_or_else(|| panic!("{case}: no FATAL"));
        assert_eq!(fatal.sqlstate(), "08P01", "{case}: {fatal:?}");
        assert!(c.closed().await, "{case}: the session ended");
        // pgward itself is fine: a new session works.
        let (mut other, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
        let answer = other.simple("SELECT 1").await;
        assert!(answer.iter().any(|m| m.tag == b'D'), "{case}: {answer:?}");
    }
}
