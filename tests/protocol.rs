//! Bad or unusual input from a client: pgward answers with a clear error and
//! the right SQLSTATE, never a panic or a hang, and keeps serving.

mod support;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use support::raw::{error_of, message, RawClient};
use support::{Backend, Pgward, DB, PASSWORD, USER};

async fn login(pw: &Pgward) -> RawClient {
    RawClient::login(pw.addr, USER, PASSWORD, DB).await.0
}

/// A startup packet with an arbitrary protocol code and parameters.
fn startup_packet(code: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i32(code);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::new();
    out.put_i32(4 + body.len() as i32);
    out.put_slice(&body);
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_is_refused_and_the_session_goes_on() {
    let pw = Pgward::start(Backend::shared()).await;
    let mut c = login(&pw).await;
    // FunctionCall for oid 1 (whatever it is) with no arguments.
    let mut body = BytesMut::new();
    body.put_i32(1);
    body.put_i16(0);
    body.put_i16(0);
    body.put_i16(0);
    c.send(&message(b'F', &body)).await;
    let reply = c.until_ready().await;
    let err = error_of(&reply).expect("an error");
    assert_eq!(err.sqlstate(), "0A000");
    assert!(err.field(b'M').unwrap_or_default().contains("FunctionCall"));
    assert_eq!(reply.last().map(|m| m.tag), Some(b'Z'));
    // Only pgward's error reaches the client, not the stand-in's marker.
    assert_eq!(reply.iter().filter(|m| m.tag == b'E').count(), 1);
    assert!(reply.iter().all(|m| m.tag != b'D'));
    let again = c.simple("SELECT 41 + 1").await;
    let row = again.iter().find(|m| m.tag == b'D').expect("row");
    assert!(row.body.ends_with(b"42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_client_message_is_fatal_before_buffering() {
    let backend = Backend::shared();
    let config = backend.config("max_message_size = \"64KiB\"", "");
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let mut c = login(&pw).await;
    // Declares 1 GiB; pgward must refuse from the header alone.
    let mut header = BytesMut::new();
    header.put_u8(b'Q');
    header.put_i32(1 << 30);
    c.send(&header).await;
    let reply = c.until_ready().await;
    let err = error_of(&reply).expect("an error");
    assert_eq!(err.sqlstate(), "08P01");
    assert_eq!(err.field(b'S').as_deref(), Some("FATAL"));
    assert!(c.closed().await);
    // A query just under the limit still works on a new connection.
    let mut c = login(&pw).await;
    let sql = format!("SELECT length('{}')", "x".repeat(60_000));
    let reply = c.simple(&sql).await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_and_bad_lengths_are_protocol_violations() {
    let pw = Pgward::start(Backend::shared()).await;
    for bad in [
        message(b'!', b"junk"),
        // A length below the 4 bytes of the length itself.
        vec![b'Q', 0, 0, 0, 2],
    ] {
        let mut c = login(&pw).await;
        c.send(&bad).await;
        let reply = c.until_ready().await;
        let err = error_of(&reply).expect("an error");
        assert_eq!(err.sqlstate(), "08P01", "{bad:?}: {err:?}");
        assert!(c.closed().await);
    }
    // A Query without its terminating NUL is well framed and forwarded;
    // PostgreSQL rejects it and the session ends cleanly.
    let mut c = login(&pw).await;
    c.send(&message(b'Q', b"SELECT 1")).await;
    let reply = c.until_ready().await;
    assert_eq!(
        error_of(&reply).map(|e| e.sqlstate()).as_deref(),
        Some("08P01")
    );
    // pgward itself still serves.
    let mut c = login(&pw).await;
    assert!(error_of(&c.simple("SELECT 1").await).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_startup_packets_get_a_fatal_error() {
    let pw = Pgward::start(Backend::shared()).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Protocol 2.0 and 4.0.
        (startup_packet(2 << 16, &[("user", USER)]), "08P01"),
        (startup_packet(4 << 16, &[("user", USER)]), "08P01"),
        // Missing user.
        (startup_packet(3 << 16, &[("database", DB)]), "28000"),
        // Parameter without a value / terminator.
        (
            {
                let mut p = startup_packet(3 << 16, &[]);
                p.pop();
                p.extend_from_slice(b"user");
                let len = p.len() as i32;
                p[..4].copy_from_slice(&len.to_be_bytes());
                p
            },
            "08P01",
        ),
        // Replication connections, command-line switches other than
        // settings, identity changes and unknown keys are refused before
        // authentication.
        (
            startup_packet(3 << 16, &[("user", USER), ("replication", "true")]),
            "0A000",
        ),
        (
            startup_packet(3 << 16, &[("user", USER), ("options", "-d 5")]),
            "0A000",
        ),
        (
            startup_packet(3 << 16, &[("user", USER), ("options", "-c role=postgres")]),
            "42501",
        ),
        (
            startup_packet(3 << 16, &[("user", USER), ("role", "postgres")]),
            "42501",
        ),
        (
            startup_packet(3 << 16, &[("user", USER), ("work_mem", "1GB")]),
            "0A000",
        ),
    ];
    for (packet, code) in cases {
        let mut c = RawClient::open(pw.addr).await;
        let _ = c.try_send(&packet).await;
        let first = c.recv().await.expect("an answer, not a silent close");
        assert_eq!(first.tag, b'E', "{packet:?}");
        assert_eq!(
            first.sqlstate(),
            code,
            "{packet:?}: {:?}",
            first.field(b'M')
        );
        assert_eq!(first.field(b'S').as_deref(), Some("FATAL"));
        assert!(c.closed().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unframeable_startup_packets_are_closed_without_a_reply() {
    let pw = Pgward::start(Backend::shared()).await;
    let mut ssl = BytesMut::new();
    frontend::ssl_request(&mut ssl);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length below the minimum", vec![0, 0, 0, 4]),
        ("negative length", (-8i32).to_be_bytes().to_vec()),
        // Longer than PostgreSQL's 10,000-byte startup limit.
        ("length above the limit", 20_000i32.to_be_bytes().to_vec()),
        // node-postgres: client.connect(); client.end() writes this first.
        ("Terminate before startup", message(b'X', &[])),
        ("incomplete packet", {
            let mut p = startup_packet(3 << 16, &[("user", USER)]);
            p.truncate(p.len() / 2);
            p
        }),
        ("a partial length", vec![0, 0]),
        ("nothing at all", Vec::new()),
    ];
    for (what, packet) in cases {
        let mut c = RawClient::open(pw.addr).await;
        c.send(&packet).await;
        c.finish_sending().await;
        assert!(c.recv().await.is_none(), "{what}: no reply, only a close");
    }
    // After an SSLRequest was answered, the same.
    let mut c = RawClient::open(pw.addr).await;
    c.send(&ssl).await;
    assert_eq!(c.recv_byte().await, b'N');
    c.send(&[0, 0, 0, 1]).await;
    assert!(c.recv().await.is_none(), "no reply after the SSL answer");
    // pgward itself still serves.
    let mut c = login(&pw).await;
    assert!(error_of(&c.simple("SELECT 1").await).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_minor_version_gets_negotiate_protocol_version() {
    let pw = Pgward::start(Backend::shared()).await;
    let mut c = RawClient::open(pw.addr).await;
    let packet = startup_packet(
        (3 << 16) | 2,
        &[("user", USER), ("database", DB), ("_pq_.future", "1")],
    );
    c.send(&packet).await;
    let first = c.recv().await.expect("answer");
    assert_eq!(first.tag, b'v', "NegotiateProtocolVersion: {first:?}");
    let newest = i32::from_be_bytes([first.body[0], first.body[1], first.body[2], first.body[3]]);
    assert_eq!(newest, 3 << 16);
    let count = i32::from_be_bytes([first.body[4], first.body[5], first.body[6], first.body[7]]);
    assert_eq!(count, 1);
    assert!(first.body[8..].starts_with(b"_pq_.future\0"));
    let next = c.recv().await.expect("authentication request");
    assert_eq!(next.tag, b'R');
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gss_requests_are_declined_without_tls() {
    let pw = Pgward::start(Backend::shared()).await;
    let mut c = RawClient::open(pw.addr).await;
    let mut out = BytesMut::new();
    out.put_i32(8);
    out.put_i32(80_877_104); // GSSENCRequest
    c.send(&out).await;
    assert_eq!(c.recv_byte().await, b'N');
    out.clear();
    frontend::ssl_request(&mut out);
    c.send(&out).await;
    assert_eq!(c.recv_byte().await, b'N');
    // The client may go on in clear text.
    out.clear();
    frontend::startup_message([("user", USER), ("database", DB)], &mut out).expect("startup");
    c.send(&out).await;
    assert_eq!(c.recv().await.expect("auth request").tag, b'R');
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_after_the_startup_timeout() {
    let backend = Backend::shared();
    let config = backend.config("startup_timeout = \"1s\"", "");
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let mut c = RawClient::open(pw.addr).await;
    let mut out = BytesMut::new();
    frontend::startup_message([("user", USER), ("database", DB)], &mut out).expect("startup");
    c.send(&out).await;
    assert_eq!(c.recv().await.expect("auth request").tag, b'R');
    // ...and never answers the SASL request.
    let next = c.recv().await.expect("timeout error");
    assert_eq!(next.sqlstate(), "57014", "{:?}", next.field(b'M'));
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_end_after_the_idle_timeout() {
    let backend = Backend::shared();
    let config = backend.config("idle_timeout = \"1s\"", "");
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let mut c = login(&pw).await;
    assert!(error_of(&c.simple("SELECT 1").await).is_none());
    let next = c.recv().await.expect("idle timeout error");
    assert_eq!(next.sqlstate(), "57P05", "{:?}", next.field(b'M'));
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_refuse_bad_bytes_and_keep_the_extended_protocol_in_step() {
    let pw = Pgward::start(Backend::shared()).await;
    let mut c = login(&pw).await;
    // Invalid UTF-8 in a Query: refused (fail closed), one error, ready again.
    c.send(&message(b'Q', b"SELECT '\xff'\0")).await;
    let reply = c.until_ready().await;
    assert_eq!(error_of(&reply).expect("error").sqlstate(), "22021");
    assert_eq!(reply.iter().filter(|m| m.tag == b'E').count(), 1);
    // A refused Parse in a batch: the server skips to Sync itself, so the
    // client sees exactly one error and one ReadyForQuery, then the next
    // batch runs normally.
    let mut batch = Vec::new();
    let mut parse = BytesMut::new();
    parse.put_slice(b"\0TRUNCATE pgbench_nothing\0");
    parse.put_i16(0);
    batch.extend(message(b'P', &parse));
    let mut bind = BytesMut::new();
    bind.put_slice(b"\0\0");
    bind.put_i16(0);
    bind.put_i16(0);
    bind.put_i16(0);
    batch.extend(message(b'B', &bind));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    let mut good = BytesMut::new();
    good.put_slice(b"\0SELECT 7\0");
    good.put_i16(0);
    batch.extend(message(b'P', &good));
    batch.extend(message(b'B', &bind));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    c.send(&batch).await;
    let first = c.until_ready().await;
    let err = error_of(&first).expect("refused");
    assert_eq!(err.sqlstate(), "42501");
    assert!(err.field(b'M').unwrap_or_default().contains("no-truncate"));
    assert!(
        first.iter().all(|m| m.tag != b'2' && m.tag != b'D'),
        "nothing after the refusal ran"
    );
    let second = c.until_ready().await;
    assert!(error_of(&second).is_none(), "{second:?}");
    let row = second.iter().find(|m| m.tag == b'D').expect("row");
    assert!(row.body.ends_with(b"7"));
}

/// A pipeline longer than pgward's outgoing limit, in one write and with a
/// single Sync at its end: what the relay forwards straight from its read
/// buffer stops at whole frames, and the rest follows without waiting for
/// another read (the server answers nothing it has not been sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_past_the_outgoing_limit_runs_whole() {
    let pw = Pgward::start(Backend::shared()).await;
    let mut c = login(&pw).await;
    const N: usize = 4000;
    let mut batch = Vec::new();
    let mut bind = BytesMut::new();
    bind.put_slice(b"\0\0");
    bind.put_i16(0);
    bind.put_i16(0);
    bind.put_i16(0);
    for i in 0..N {
        let mut parse = BytesMut::new();
        parse.put_slice(format!("\0SELECT {i}\0").as_bytes());
        parse.put_i16(0);
        batch.extend(message(b'P', &parse));
        batch.extend(message(b'B', &bind));
        batch.extend(message(b'E', b"\0\0\0\0\0"));
    }
    batch.extend(message(b'S', b""));
    assert!(batch.len() > 2 * 64 * 1024);
    c.send(&batch).await;
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{:?}", error_of(&reply));
    let rows: Vec<_> = reply.iter().filter(|m| m.tag == b'D').collect();
    assert_eq!(rows.len(), N);
    for (i, row) in rows.iter().enumerate() {
        assert!(
            row.body.ends_with(i.to_string().as_bytes()),
            "row {i} in order"
        );
    }
    // And the session goes on.
    c.send(&message(b'Q', b"SELECT 42\0")).await;
    let reply = c.until_ready().await;
    assert!(reply
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"42")));
}
