//! Frames that go to the server as they are may be left at the front of the
//! input for the loop to write from there (`client_input_direct`): only
//! judged, whole frames, only while nothing is queued before them, and
//! never reordered against a stand-in, a hold or a full outgoing buffer.

use super::*;

/// A phase that refuses every request whose text contains "deny".
struct DenyPhase;

impl Phase for DenyPhase {
    fn name(&self) -> &'static str {
        "test-deny"
    }
    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        if ctx.text.is_some_and(|t| t.windows(4).any(|w| w == b"deny")) {
            return Decision::Refuse(Refusal::new(
                crate::sqlstate::Sqlstate::INSUFFICIENT_PRIVILEGE,
                "denied by a test",
            ));
        }
        Decision::Forward
    }
}

fn direct(core: &mut Core, input: &mut BytesMut, to_server: &mut BytesMut) -> (ClientStep, usize) {
    core.client_input_direct(input, to_server)
        .expect("client bytes")
}

#[test]
fn forwarded_frames_stay_in_the_input_when_nothing_is_queued() {
    let mut c = core();
    let batch = concat(&[parse("", "select 1"), bind("", ""), execute(""), sync()]);
    // A partial frame behind the batch is neither judged nor counted.
    let mut input = BytesMut::from(&batch[..]);
    input.extend_from_slice(&query("select 2")[..3]);
    let mut to_server = BytesMut::new();
    let (step, n) = direct(&mut c, &mut input, &mut to_server);
    assert!(matches!(step, ClientStep::NeedMore));
    assert_eq!(n, batch.len(), "the whole frames, not the partial one");
    assert_eq!(&input[..n], &batch[..]);
    assert!(
        to_server.is_empty() && to_server.capacity() == 0,
        "no buffer taken"
    );
    assert_eq!(c.bytes_from_client, batch.len() as u64);
}

#[test]
fn nothing_is_left_in_the_input_behind_queued_bytes() {
    let mut c = core();
    let mut input = BytesMut::from(&query("select 1")[..]);
    let mut to_server = BytesMut::from(&b"queued"[..]);
    let (_, n) = direct(&mut c, &mut input, &mut to_server);
    assert_eq!(n, 0);
    assert!(input.is_empty());
    assert_eq!(
        &to_server[..],
        &concat(&[BytesMut::from(&b"queued"[..]), query("select 1")])[..]
    );
}

#[test]
fn a_stand_in_follows_the_frames_forwarded_before_it() {
    let mut c = core_with(vec![Box::new(DenyPhase)], false);
    let batch = concat(&[query("select 1"), query("select 'deny'"), query("select 3")]);
    let mut input = BytesMut::from(&batch[..]);
    let mut to_server = BytesMut::new();
    let (step, n) = direct(&mut c, &mut input, &mut to_server);
    assert!(matches!(step, ClientStep::NeedMore));
    assert_eq!(
        n, 0,
        "a stand-in is queued: everything goes through the buffer"
    );
    assert!(input.is_empty());
    let first = query("select 1");
    assert_eq!(&to_server[..first.len()], &first[..], "in order");
    let rest = &to_server[first.len()..];
    assert_eq!(rest[0], b'Q');
    assert!(rest.windows(15).any(|w| w == b"pgward-refusal-"));
    assert!(to_server.ends_with(&query("select 3")));
    assert!(
        !to_server.windows(6).any(|w| w == b"'deny'"),
        "the refused text never goes"
    );
}

#[test]
fn a_refused_bind_in_a_batch_keeps_its_place() {
    let mut c = core();
    // The Parse goes; the Bind names a statement that does not exist.
    let batch = concat(&[parse("s1", "select 1"), bind("", "nope"), sync()]);
    let mut input = BytesMut::from(&batch[..]);
    let mut to_server = BytesMut::new();
    let (_, n) = direct(&mut c, &mut input, &mut to_server);
    assert_eq!(n, 0);
    let parse = parse("s1", "select 1");
    assert!(to_server.starts_with(&parse));
    assert_eq!(
        to_server[parse.len()],
        b'P',
        "the stand-in, after the Parse"
    );
    assert!(to_server.ends_with(&sync()));
}

#[test]
fn frames_before_a_hold_go_out_and_the_held_one_stays() {
    let senders = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let phase = HoldPhase {
        senders: std::sync::Arc::clone(&senders),
    };
    let mut c = core_with(vec![Box::new(phase)], false);
    let held = query("select 'hold'");
    let mut input = BytesMut::from(&concat(&[query("select 1"), held.clone()])[..]);
    let mut to_server = BytesMut::new();
    let (step, n) = direct(&mut c, &mut input, &mut to_server);
    assert!(matches!(step, ClientStep::Hold(_)));
    assert_eq!(n, 0);
    assert_eq!(&to_server[..], &query("select 1")[..]);
    assert_eq!(&input[..], &held[..], "the held frame is at the front");
}

#[test]
fn terminate_goes_through_the_buffer() {
    let mut c = core();
    let mut terminate = BytesMut::new();
    fe::terminate(&mut terminate);
    let mut input = BytesMut::from(&concat(&[query("select 1"), terminate.clone()])[..]);
    let mut to_server = BytesMut::new();
    let (step, n) = direct(&mut c, &mut input, &mut to_server);
    assert!(matches!(step, ClientStep::Terminate));
    assert_eq!(n, 0);
    assert!(input.is_empty());
    assert_eq!(&to_server[..], &concat(&[query("select 1"), terminate])[..]);
}

#[test]
fn a_long_run_stops_at_the_outgoing_limit() {
    let mut c = core();
    let one = query("select 1");
    let count = OUTGOING_HIGH / one.len() + 10;
    let all: Vec<BytesMut> = (0..count).map(|_| one.clone()).collect();
    let mut input = BytesMut::from(&concat(&all)[..]);
    let mut to_server = BytesMut::new();
    let (step, n) = direct(&mut c, &mut input, &mut to_server);
    assert!(matches!(step, ClientStep::NeedMore));
    assert!(n >= OUTGOING_HIGH && n < OUTGOING_HIGH + one.len());
    assert_eq!(n % one.len(), 0, "whole frames");
    assert!(input.len() > n, "the rest waits for room");
}

/// Records the kinds it is asked about; judges only `kinds`.
struct KindsPhase {
    kinds: &'static [RequestKind],
    asked: std::sync::Arc<std::sync::Mutex<Vec<RequestKind>>>,
}

impl Phase for KindsPhase {
    fn name(&self) -> &'static str {
        "test-kinds"
    }
    fn judges(&self, kind: RequestKind) -> bool {
        self.kinds.contains(&kind)
    }
    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        self.asked.lock().unwrap().push(ctx.kind);
        Decision::Forward
    }
}

#[test]
fn a_phase_is_asked_only_about_the_kinds_it_judges() {
    let texts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let every = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut c = core_with(
        vec![
            Box::new(KindsPhase {
                kinds: &[RequestKind::Query, RequestKind::Parse],
                asked: texts.clone(),
            }),
            // After one that skips a kind, a phase that judges it is still
            // asked, and one that refuses still refuses.
            Box::new(KindsPhase {
                kinds: &[
                    RequestKind::Query,
                    RequestKind::Parse,
                    RequestKind::Bind,
                    RequestKind::Execute,
                ],
                asked: every.clone(),
            }),
            Box::new(DenyPhase),
        ],
        false,
    );
    let batch = concat(&[
        query("select 1"),
        parse("", "select 2"),
        bind("", ""),
        execute(""),
        sync(),
    ]);
    let mut input = BytesMut::from(&batch[..]);
    let mut to_server = BytesMut::new();
    direct(&mut c, &mut input, &mut to_server);
    use RequestKind::*;
    assert_eq!(*texts.lock().unwrap(), [Query, Parse]);
    assert_eq!(*every.lock().unwrap(), [Query, Parse, Bind, Execute]);
    let mut input = BytesMut::from(&query("select 'deny'")[..]);
    let mut to_server = BytesMut::new();
    direct(&mut c, &mut input, &mut to_server);
    assert!(
        !marker_in(&to_server).is_empty(),
        "refused: a stand-in goes out"
    );
}
