//! The relay core driven without sockets: client and server byte streams
//! in, bytes and decisions out.

use super::*;
use crate::session::phases::{
    Decision, Hold, Phase, Refusal, Release, RequestContext, RequestKind, SessionInfo,
};
use crate::wire::backend::notice_field;
use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend as fe;
use std::time::{Duration, Instant};

/// A phase that holds every Query whose text contains "hold".
struct HoldPhase {
    senders: std::sync::Arc<std::sync::Mutex<Vec<oneshot::Sender<Release>>>>,
}

impl Phase for HoldPhase {
    fn name(&self) -> &'static str {
        "test-hold"
    }
    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        let held = ctx.kind == RequestKind::Query
            && ctx.text.is_some_and(|t| t.windows(4).any(|w| w == b"hold"));
        if !held {
            return Decision::Forward;
        }
        let (tx, rx) = oneshot::channel();
        self.senders.lock().unwrap().push(tx);
        Decision::Hold(Hold {
            notice: Some("held for a test".into()),
            ..Hold::new(Instant::now() + Duration::from_secs(60), rx)
        })
    }
}

fn core_with(phases: Vec<Box<dyn Phase>>, keep: bool) -> Core {
    let rules = Arc::new(arc_swap::ArcSwap::from_pointee(RuleSnapshot::inert()));
    core_under(phases, &rules, keep)
}

/// A core whose requests are judged under what `rules` holds.
fn core_under(
    phases: Vec<Box<dyn Phase>>,
    rules: &Arc<arc_swap::ArcSwap<RuleSnapshot>>,
    keep: bool,
) -> Core {
    let info = SessionInfo::detached("alice");
    Core::new(info, phases, Arc::clone(rules), keep, 1 << 20)
}

fn core() -> Core {
    core_with(Vec::new(), false)
}

fn msg(tag: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(tag);
    b.put_i32(i32::try_from(body.len()).unwrap() + 4);
    b.extend_from_slice(body);
    b
}

fn query(sql: &str) -> BytesMut {
    let mut b = BytesMut::new();
    fe::query(sql, &mut b).unwrap();
    b
}

fn parse(name: &str, sql: &str) -> BytesMut {
    let mut b = BytesMut::new();
    fe::parse(name, sql, std::iter::empty(), &mut b).unwrap();
    b
}

fn bind(portal: &str, statement: &str) -> BytesMut {
    let mut b = BytesMut::new();
    fe::bind(
        portal,
        statement,
        std::iter::empty::<i16>(),
        std::iter::empty::<i32>(),
        |_: i32, _: &mut BytesMut| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(postgres_protocol::IsNull::No)
        },
        std::iter::empty::<i16>(),
        &mut b,
    )
    .map_err(|_| ())
    .unwrap();
    b
}

fn execute(portal: &str) -> BytesMut {
    let mut b = BytesMut::new();
    fe::execute(portal, 0, &mut b).unwrap();
    b
}

fn close_statement(name: &str) -> BytesMut {
    let mut b = BytesMut::new();
    fe::close(b'S', name, &mut b).unwrap();
    b
}

fn sync() -> BytesMut {
    let mut b = BytesMut::new();
    fe::sync(&mut b);
    b
}

fn ready(status: u8) -> BytesMut {
    msg(b'Z', &[status])
}

fn error(code: &str, message: &str) -> BytesMut {
    let mut body = Vec::new();
    for (f, v) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(f);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    msg(b'E', &body)
}

fn command_complete(tag: &str) -> BytesMut {
    let mut body = tag.as_bytes().to_vec();
    body.push(0);
    msg(b'C', &body)
}

/// Feeds client bytes; returns what went to the server.
fn client(core: &mut Core, bytes: &[u8]) -> (BytesMut, ClientStep) {
    let mut input = BytesMut::from(bytes);
    let mut out = BytesMut::new();
    let step = core
        .client_input(&mut input, &mut out)
        .expect("client bytes");
    (out, step)
}

/// Feeds server bytes; returns what went to the client.
fn server(core: &mut Core, bytes: &[u8]) -> Result<BytesMut, CoreError> {
    let mut input = BytesMut::from(bytes);
    let mut out = BytesMut::new();
    loop {
        match core.server_input(&mut input, &mut out)? {
            ServerStep::Direct(n) => {
                out.extend_from_slice(&input[..n]);
                bytes::Buf::advance(&mut input, n);
            }
            ServerStep::Full => continue,
            ServerStep::NeedMore | ServerStep::Fatal => return Ok(out),
        }
    }
}

/// The stand-in's marker, from the bytes sent to the server.
fn marker_in(to_server: &[u8]) -> String {
    let text = String::from_utf8_lossy(to_server);
    let start = text.find("pgward-refusal-").expect("a stand-in");
    text[start..].split('\'').next().unwrap().to_owned()
}

fn concat(parts: &[BytesMut]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

#[test]
fn a_simple_query_passes_byte_for_byte() {
    let mut c = core();
    let (out, _) = client(&mut c, &query("select 1"));
    assert_eq!(&out[..], &query("select 1")[..]);
    assert!(c.tracker.busy());
    let answer = concat(&[
        msg(
            b'T',
            b"\0\x01a\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
        ),
        msg(b'D', b"\0\x01\0\0\0\x011"),
        command_complete("SELECT 1"),
        ready(b'I'),
    ]);
    assert_eq!(&server(&mut c, &answer).unwrap()[..], &answer[..]);
    assert!(!c.tracker.busy());
}

#[test]
fn a_bind_of_an_unknown_statement_is_refused_not_guessed() {
    let mut c = core();
    let batch = concat(&[bind("", "nope"), execute(""), sync()]);
    let (out, _) = client(&mut c, &batch);
    assert_eq!(out[0], b'P', "a failing Parse stands in");
    let marker = marker_in(&out);
    assert!(!out.windows(5).any(|w| w == &execute("")[..5]) || out.len() > 5);
    let answer = concat(&[
        error(
            "22P02",
            &format!("invalid input syntax for type integer: \"{marker}\""),
        ),
        ready(b'I'),
    ]);
    let to_client = server(&mut c, &answer).unwrap();
    let frame = crate::wire::FrameRef::new(&to_client[..to_client.len() - 6]).unwrap();
    assert_eq!(notice_field(frame, b'C'), Some(&b"26000"[..]));
    assert!(!c.tracker.busy());
}

#[test]
fn a_close_the_server_skipped_leaves_the_statement() {
    let mut c = core();
    client(&mut c, &concat(&[parse("s1", "select 1"), sync()]));
    server(&mut c, &concat(&[msg(b'1', b""), ready(b'I')])).unwrap();
    // An error, then a Close the server skips, then a Parse it skips.
    client(
        &mut c,
        &concat(&[
            parse("bad", "selec"),
            close_statement("s1"),
            parse("s2", "select 2"),
            sync(),
        ]),
    );
    server(
        &mut c,
        &concat(&[error("42601", "syntax error"), ready(b'I')]),
    )
    .unwrap();
    assert!(
        c.tracker.projected_statement(b"s1").known().is_some(),
        "skipped Close"
    );
    assert!(
        c.tracker.projected_statement(b"s2").known().is_none(),
        "skipped Parse"
    );
    let (out, _) = client(&mut c, &concat(&[bind("", "s2"), sync()]));
    assert_eq!(out[0], b'P', "s2 was never created: refused");
    let (out, _) = client(&mut c, &bind("", "s1"));
    assert_eq!(&out[..], &bind("", "s1")[..], "s1 still exists: forwarded");
}

#[test]
fn messages_after_an_unsynced_error_are_skipped() {
    let mut c = core();
    client(&mut c, &parse("bad", "selec"));
    server(&mut c, &error("42601", "syntax error")).unwrap();
    // The server skips these until the Sync: no answers are expected.
    client(
        &mut c,
        &concat(&[parse("s9", "select 9"), query("select 1")]),
    );
    assert!(!c.tracker.busy(), "nothing the server will answer");
    client(&mut c, &sync());
    server(&mut c, &ready(b'I')).unwrap();
    assert!(c.tracker.projected_statement(b"s9").known().is_none());
}

#[test]
fn an_unsynced_request_makes_the_session_busy() {
    // A SET earlier in the same batch may change lexing: the tracker says
    // the server is busy until the batch's ReadyForQuery.
    let mut c = core();
    client(
        &mut c,
        &concat(&[
            parse("", "set standard_conforming_strings = off"),
            bind("", ""),
            execute(""),
        ]),
    );
    assert!(c.tracker.busy());
}

#[test]
fn hostile_server_messages_end_cleanly() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated ReadyForQuery", msg(b'Z', b"").to_vec()),
        ("ReadyForQuery nobody asked for", ready(b'I').to_vec()),
        ("DataRow outside a result", msg(b'D', b"\0\0").to_vec()),
        ("unknown message type", msg(b'?', b"x").to_vec()),
        (
            "authentication after login",
            msg(b'R', b"\0\0\0\0").to_vec(),
        ),
        (
            "BackendKeyData after login",
            msg(b'K', b"\0\0\0\x01\0\0\0\x02").to_vec(),
        ),
        ("negative length", b"Z\xff\xff\xff\xffI".to_vec()),
        ("ParseComplete without a Parse", msg(b'1', b"").to_vec()),
        ("absurd RowDescription", msg(b'T', &[0xff; 64]).to_vec()),
    ];
    for (what, bytes) in cases {
        let mut c = core();
        client(&mut c, &query("select 1"));
        // A Query is pending, so only the message itself is wrong.
        let r = server(&mut c, &bytes);
        if what == "absurd RowDescription" {
            // Without kept descriptions the body is not read: a later
            // message still has to be in step.
            continue;
        }
        if what == "ReadyForQuery nobody asked for" {
            // It answers the pending Query; a second one is out of step.
            assert!(r.is_ok());
            assert!(server(&mut c, &ready(b'I')).is_err(), "{what}");
            continue;
        }
        assert!(matches!(r, Err(CoreError::Backend(_))), "{what}: {r:?}");
    }
    // With masking's descriptions kept, the absurd RowDescription is caught.
    let mut c = core_with(Vec::new(), true);
    client(&mut c, &query("select 1"));
    assert!(server(&mut c, &msg(b'T', &[0xff; 64])).is_err());
    // An oversized inspected message is refused before it is buffered.
    let mut c = core();
    client(&mut c, &query("select 1"));
    let mut huge = BytesMut::new();
    huge.put_u8(b'C');
    huge.put_i32(i32::MAX);
    assert!(server(&mut c, &huge).is_err());
}

#[test]
fn the_servers_fatal_is_the_last_word() {
    let mut c = core();
    client(&mut c, &query("select pg_sleep(10)"));
    let mut fatal = Vec::new();
    for (f, v) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "57P01"),
        (b'M', "bye"),
    ] {
        fatal.push(f);
        fatal.extend_from_slice(v.as_bytes());
        fatal.push(0);
    }
    fatal.push(0);
    let fatal = msg(b'E', &fatal);
    let mut input = BytesMut::from(&concat(&[fatal.clone(), ready(b'I')])[..]);
    let mut out = BytesMut::new();
    assert_eq!(c.server_input(&mut input, &mut out), Ok(ServerStep::Fatal));
    assert_eq!(&out[..], &fatal[..]);
}

#[test]
fn malformed_server_errors_are_replaced() {
    let mut c = core();
    client(&mut c, &query("select 1"));
    let out = server(&mut c, &msg(b'E', b"Sx\0\0")).unwrap();
    let frame = crate::wire::FrameRef::new(&out).unwrap();
    assert_eq!(notice_field(frame, b'C'), Some(&b"08P01"[..]));
}

#[test]
fn a_held_query_waits_while_earlier_answers_flow() {
    let senders = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let phase = HoldPhase {
        senders: std::sync::Arc::clone(&senders),
    };
    let mut c = core_with(vec![Box::new(phase)], false);
    let pipeline = concat(&[query("select 1"), query("select 'hold'"), query("select 3")]);
    let mut input = BytesMut::from(&pipeline[..]);
    let mut to_server = BytesMut::new();
    let step = c.client_input(&mut input, &mut to_server).unwrap();
    assert!(matches!(step, ClientStep::Hold(_)));
    assert_eq!(
        &to_server[..],
        &query("select 1")[..],
        "only the first went out"
    );
    // The first query's answer still reaches the client, and the notice.
    let answer = concat(&[command_complete("SELECT 1"), ready(b'I')]);
    let mut to_client = server(&mut c, &answer).unwrap();
    c.own_notices_into(&mut to_client);
    assert!(to_client.starts_with(&answer));
    assert_eq!(to_client[answer.len()], b'N');
    // Released: the held query and the one behind it go out.
    c.release(Release::Run);
    let step = c.client_input(&mut input, &mut to_server).unwrap();
    assert!(matches!(step, ClientStep::NeedMore));
    assert_eq!(
        &to_server[..],
        &concat(&[query("select 1"), query("select 'hold'"), query("select 3")])[..]
    );
    // A second hold, refused: a stand-in goes in its place.
    let mut input = BytesMut::from(&query("select 'hold again'")[..]);
    let mut to_server = BytesMut::new();
    assert!(matches!(
        c.client_input(&mut input, &mut to_server).unwrap(),
        ClientStep::Hold(_)
    ));
    c.release(Release::Refuse(Refusal::new(
        crate::sqlstate::Sqlstate::INSUFFICIENT_PRIVILEGE,
        "denied by a person",
    )));
    c.client_input(&mut input, &mut to_server).unwrap();
    assert!(input.is_empty());
    assert_eq!(to_server[0], b'Q');
    assert!(to_server.windows(15).any(|w| w == b"pgward-refusal-"));
}

#[test]
fn sql_prepare_and_cursors_share_the_protocol_namespaces() {
    let mut c = core();
    client(
        &mut c,
        &query("PREPARE p1 AS SELECT 1; DECLARE c1 CURSOR WITH HOLD FOR SELECT 1"),
    );
    assert!(
        c.tracker.projected_statement(b"p1").known().is_some(),
        "projected"
    );
    server(
        &mut c,
        &concat(&[
            command_complete("PREPARE"),
            command_complete("DECLARE CURSOR"),
            ready(b'I'),
        ]),
    )
    .unwrap();
    let (out, _) = client(&mut c, &concat(&[bind("", "p1"), execute("c1"), sync()]));
    assert_eq!(&out[..5], &bind("", "p1")[..5], "p1 is known: forwarded");
    server(
        &mut c,
        &concat(&[msg(b'2', b""), command_complete("SELECT 1"), ready(b'I')]),
    )
    .unwrap();
    client(&mut c, &query("DEALLOCATE p1"));
    server(
        &mut c,
        &concat(&[command_complete("DEALLOCATE"), ready(b'I')]),
    )
    .unwrap();
    let (out, _) = client(&mut c, &bind("", "p1"));
    assert_eq!(out[0], b'P', "deallocated: refused");
}

#[test]
fn texts_that_differ_in_their_numbers_are_still_read_for_names() {
    let mut c = core();
    // Digit twins of each other: the names they make still count.
    for (i, sql) in [
        "SELECT 1 FROM t WHERE id = 7",
        "SELECT 1 FROM t WHERE id = 4711",
        "PREPARE p1 AS SELECT 1",
        "PREPARE p22 AS SELECT 1",
    ]
    .into_iter()
    .enumerate()
    {
        client(&mut c, &query(sql));
        let tag = if i < 2 { "SELECT 1" } else { "PREPARE" };
        server(&mut c, &concat(&[command_complete(tag), ready(b'I')])).unwrap();
    }
    assert!(c.tracker.projected_statement(b"p1").known().is_some());
    assert!(c.tracker.projected_statement(b"p22").known().is_some());
    client(&mut c, &query("DEALLOCATE p1"));
    server(
        &mut c,
        &concat(&[command_complete("DEALLOCATE"), ready(b'I')]),
    )
    .unwrap();
    client(&mut c, &query("DEALLOCATE p22"));
    server(
        &mut c,
        &concat(&[command_complete("DEALLOCATE"), ready(b'I')]),
    )
    .unwrap();
    assert!(c.tracker.projected_statement(b"p1").known().is_none());
    assert!(c.tracker.projected_statement(b"p22").known().is_none());
}

#[test]
fn portals_end_with_their_transaction() {
    let mut c = core();
    client(
        &mut c,
        &concat(&[parse("s", "select 1"), bind("p", "s"), sync()]),
    );
    server(
        &mut c,
        &concat(&[msg(b'1', b""), msg(b'2', b""), ready(b'I')]),
    )
    .unwrap();
    let (out, _) = client(&mut c, &execute("p"));
    assert_eq!(out[0], b'P', "the implicit transaction ended: portal gone");
}

#[test]
fn copy_in_ignores_the_syncs_sent_into_it() {
    let mut c = core();
    let batch = concat(&[
        parse("", "copy t from stdin"),
        bind("", ""),
        execute(""),
        sync(),
    ]);
    client(&mut c, &batch);
    server(
        &mut c,
        &concat(&[msg(b'1', b""), msg(b'2', b""), msg(b'G', b"\0\0\0")]),
    )
    .unwrap();
    let data = concat(&[msg(b'd', b"1\n"), msg(b'c', b""), sync()]);
    let (out, _) = client(&mut c, &data);
    assert_eq!(&out[..], &data[..]);
    server(&mut c, &concat(&[command_complete("COPY 1"), ready(b'I')])).unwrap();
    assert!(!c.tracker.busy(), "one ReadyForQuery answered both Syncs");
}

#[test]
fn bind_counts_are_read_unsigned() {
    // 40,000 result formats: a valid Bind the server accepts, tracked.
    let mut c = core();
    client(&mut c, &concat(&[parse("s", "select 1"), sync()]));
    server(&mut c, &concat(&[msg(b'1', b""), ready(b'I')])).unwrap();
    let mut body = b"p\0s\0\0\0\0\0".to_vec();
    body.extend_from_slice(&40_000u16.to_be_bytes());
    for _ in 0..40_000 {
        body.extend_from_slice(&0i16.to_be_bytes());
    }
    let (out, _) = client(&mut c, &msg(b'B', &body));
    assert_eq!(out[0], b'B');
    assert!(c.tracker.projected_portal(b"p").known().is_some());
}

#[test]
fn large_uninspected_rows_stream_in_pieces() {
    let mut c = core();
    client(&mut c, &query("select big"));
    server(
        &mut c,
        &msg(
            b'T',
            b"\0\x01a\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0",
        ),
    )
    .unwrap();
    // A 1 MiB row arrives in 64 KiB pieces: each piece leaves at once.
    let mut row = BytesMut::new();
    row.put_u8(b'D');
    row.put_i32(4 + 2 + 4 + (1 << 20));
    row.put_i16(1);
    row.put_i32(1 << 20);
    row.extend(std::iter::repeat_n(b'x', 1 << 20));
    let mut sent = 0;
    let mut input = BytesMut::new();
    for piece in row.chunks(64 * 1024) {
        input.extend_from_slice(piece);
        let mut out = BytesMut::new();
        loop {
            match c.server_input(&mut input, &mut out).unwrap() {
                ServerStep::Direct(n) => {
                    sent += n;
                    bytes::Buf::advance(&mut input, n);
                }
                ServerStep::Full => {}
                _ => break,
            }
        }
        sent += out.len();
        assert!(input.len() < 64 * 1024, "nothing is held back whole");
    }
    assert_eq!(sent, row.len());
}

mod arbitrary {
    use proptest::prelude::*;

    /// Chunks built from real message headers and random bodies, so the
    /// random walk reaches deep states (not only framing errors).
    fn chunk() -> impl Strategy<Value = Vec<u8>> {
        let tags = prop::sample::select(&b"QPBDECSHdcfXF123tTnDCIsEZGHdcSNA?RKv"[..]);
        (any::<u8>(), tags, prop::collection::vec(any::<u8>(), 0..24)).prop_map(
            |(header, tag, body)| {
                let mut msg = vec![tag];
                msg.extend_from_slice(&(u32::try_from(body.len()).unwrap() + 4).to_be_bytes());
                msg.extend_from_slice(&body);
                let mut out = vec![header, u8::try_from(msg.len()).unwrap()];
                out.extend_from_slice(&msg);
                out
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_core_never_panics(mode: u8, chunks in prop::collection::vec(chunk(), 0..40)) {
            let mut data = vec![mode];
            for c in chunks {
                data.extend_from_slice(&c);
            }
            crate::session::fuzzing::drive_core(&data);
        }

        #[test]
        fn the_core_never_panics_on_raw_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
            crate::session::fuzzing::drive_core(&data);
        }
    }
}

mod direct;
mod snapshots;

/// What a [`Recorder`] saw: each request's kind and text.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(RequestKind, Option<String>)>>>;

/// A phase that writes down what each request was judged as.
struct Recorder {
    seen: Seen,
}

impl Phase for Recorder {
    fn name(&self) -> &'static str {
        "test-recorder"
    }
    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        let text = ctx.text.map(|t| String::from_utf8_lossy(t).into_owned());
        self.seen.lock().unwrap().push((ctx.kind, text));
        Decision::Forward
    }
}

#[test]
fn an_execute_is_judged_by_the_statement_its_portal_was_bound_from() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let phase = Recorder {
        seen: std::sync::Arc::clone(&seen),
    };
    let mut c = core_with(vec![Box::new(phase)], false);
    // The unnamed statement is parsed again after the Bind: the portal
    // still runs the first text, and the Execute is judged by it.
    let batch = concat(&[
        parse("", "SELECT 'first'"),
        bind("", ""),
        parse("", "SELECT 'second'"),
        execute(""),
        sync(),
    ]);
    let (to_server, _) = client(&mut c, &batch);
    assert_eq!(&to_server[..], &batch[..]);
    let first = Some("SELECT 'first'".to_owned());
    let second = Some("SELECT 'second'".to_owned());
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (RequestKind::Parse, first.clone()),
            (RequestKind::Bind, first.clone()),
            (RequestKind::Parse, second),
            (RequestKind::Execute, first),
        ]
    );
    // An Execute of a portal nothing bound is refused, not forwarded.
    let (to_server, _) = client(&mut c, &execute("nowhere"));
    assert_eq!(to_server[0], b'P', "a failing Parse in its place");
}
