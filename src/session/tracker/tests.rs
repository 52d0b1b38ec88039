//! The tracker alone: requests as they go out, answers as they come back,
//! and what it then says a name is.

use super::Projected;
use super::*;
use crate::wire::frontend::bind_view;

/// A backend (or frontend) frame: tag, length, body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut raw = vec![tag];
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    raw.extend_from_slice(&len.to_be_bytes());
    raw.extend_from_slice(body);
    raw
}

/// The server's answer with this tag (and body).
fn answer(t: &mut Tracker, tag: u8, body: &[u8]) -> Result<Event, OutOfStep> {
    let raw = frame(tag, body);
    let frame = FrameRef::new(&raw).expect("a whole frame");
    t.answer(frame)
}

fn ok(t: &mut Tracker, tag: u8, body: &[u8]) -> Event {
    answer(t, tag, body).expect("an answer in step")
}

fn ready(t: &mut Tracker, status: u8) {
    ok(t, b'Z', &[status]);
}

fn error(t: &mut Tracker) -> Event {
    ok(t, b'E', b"SERROR\0C42P01\0Mno\0\0")
}

/// A Bind of `portal` from `statement`, with no parameters, as the core
/// sends it (with the projected statement).
fn bind(t: &mut Tracker, portal: &str, statement: &str) {
    let mut body = Vec::new();
    for name in [portal, statement] {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
    }
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let raw = frame(b'B', &body);
    let view = bind_view(FrameRef::new(&raw).expect("a whole frame")).expect("a Bind");
    let projected = t.projected_statement(view.statement).known();
    t.bind(&view, projected);
}

fn parse(t: &mut Tracker, name: &str, sql: &str) {
    t.parse(name.as_bytes(), sql.as_bytes(), b"");
}

/// The text of the statement the portal runs, as the tracker projects it
/// (with nothing queued: as the server has it).
fn portal_text(t: &Tracker, portal: &str) -> Option<Option<String>> {
    t.projected_portal(portal.as_bytes())
        .known()
        .map(|s| s.map(|s| String::from_utf8_lossy(&s.text).into_owned()))
}

fn text(sql: &str) -> Option<Option<String>> {
    Some(Some(sql.to_owned()))
}

/// Two statements, parsed and answered.
fn with_statements() -> Tracker {
    let mut t = Tracker::new(false);
    parse(&mut t, "s1", "SELECT 1");
    parse(&mut t, "s2", "SELECT 2");
    t.sync();
    ok(&mut t, b'1', b"");
    ok(&mut t, b'1', b"");
    ready(&mut t, b'I');
    t
}

#[test]
fn the_unnamed_portal_is_replaced_by_the_next_bind() {
    let mut t = with_statements();
    bind(&mut t, "", "s1");
    assert_eq!(portal_text(&t, ""), text("SELECT 1"));
    bind(&mut t, "", "s2");
    assert_eq!(portal_text(&t, ""), text("SELECT 2"), "projected");
    t.execute(b"");
    ok(&mut t, b'2', b"");
    ok(&mut t, b'2', b"");
    assert!(t.queue.len() == 1 && t.busy());
    // Confirmed: the second Bind's portal.
    assert_eq!(
        t.portals
            .get(b"")
            .and_then(|p| p.statement.as_ref())
            .map(|s| &s.text[..]),
        Some(&b"SELECT 2"[..])
    );
    assert_eq!(ok(&mut t, b'D', b"\0\0"), Event::Row { first: true });
    assert_eq!(ok(&mut t, b'C', b"SELECT 1\0"), Event::ResultEnd);
}

#[test]
fn named_and_unnamed_portals_of_one_statement_are_apart() {
    let mut t = with_statements();
    bind(&mut t, "", "s1");
    bind(&mut t, "p", "s1");
    t.sync();
    ok(&mut t, b'2', b"");
    ok(&mut t, b'2', b"");
    ready(&mut t, b'T');
    assert_eq!(portal_text(&t, ""), text("SELECT 1"));
    assert_eq!(portal_text(&t, "p"), text("SELECT 1"));
    // Closing the unnamed portal leaves the named one, and the reverse.
    t.close(Target::Portal(b""));
    assert_eq!(portal_text(&t, ""), None, "projected closed");
    assert_eq!(portal_text(&t, "p"), text("SELECT 1"));
    ok(&mut t, b'3', b"");
    assert_eq!(portal_text(&t, ""), None, "closed");
    assert_eq!(portal_text(&t, "p"), text("SELECT 1"));
    bind(&mut t, "", "s2");
    t.close(Target::Portal(b"p"));
    ok(&mut t, b'2', b"");
    ok(&mut t, b'3', b"");
    assert_eq!(portal_text(&t, ""), text("SELECT 2"));
    assert_eq!(portal_text(&t, "p"), None);
}

#[test]
fn a_close_of_a_missing_unnamed_portal_is_no_error() {
    let mut t = with_statements();
    t.close(Target::Portal(b""));
    t.close(Target::Statement(b""));
    ok(&mut t, b'3', b"");
    ok(&mut t, b'3', b"");
    assert!(!t.busy());
    assert_eq!(portal_text(&t, ""), None);
    assert!(t.projected_statement(b"").known().is_none());
}

#[test]
fn a_simple_query_drops_the_unnamed_statement_and_portal() {
    let mut t = Tracker::new(false);
    parse(&mut t, "", "SELECT 1");
    parse(&mut t, "named", "SELECT 2");
    bind(&mut t, "", "");
    bind(&mut t, "p", "");
    t.sync();
    for tag in [b'1', b'1', b'2', b'2'] {
        ok(&mut t, tag, b"");
    }
    ready(&mut t, b'T');
    assert_eq!(portal_text(&t, ""), text("SELECT 1"));
    t.query(b"SELECT 3", None);
    // Projected at once; confirmed at the Query's first answer.
    assert_eq!(portal_text(&t, ""), None);
    assert!(t.projected_statement(b"").known().is_none());
    assert!(t.portals.get(b"").is_some());
    assert_eq!(ok(&mut t, b'T', &[0, 0]), Event::ResultStart);
    assert!(t.portals.get(b"").is_none() && t.statements.get(b"").is_none());
    ok(&mut t, b'C', b"SELECT 1\0");
    ready(&mut t, b'T');
    // The named ones, and a portal bound from the unnamed statement, stay.
    assert_eq!(portal_text(&t, "p"), text("SELECT 1"));
    assert!(t.projected_statement(b"named").known().is_some());
    // An Execute of the unnamed portal now finds none.
    t.execute(b"");
    assert_eq!(
        answer(&mut t, b'D', b"\0\0"),
        Err(out_of_step("DataRow", "for a portal that does not exist"))
    );
}

#[test]
fn portals_end_with_the_transaction_unless_held() {
    let mut t = with_statements();
    t.query(b"BEGIN", None);
    ok(&mut t, b'C', b"BEGIN\0");
    ready(&mut t, b'T');
    t.query(b"DECLARE c CURSOR WITH HOLD FOR SELECT 1", None);
    ok(&mut t, b'C', b"DECLARE CURSOR\0");
    ready(&mut t, b'T');
    bind(&mut t, "", "s1");
    bind(&mut t, "p", "s2");
    t.sync();
    ok(&mut t, b'2', b"");
    ok(&mut t, b'2', b"");
    ready(&mut t, b'T');
    assert!(t.portals.get(b"").is_some() && t.portals.get(b"p").is_some());
    t.query(b"COMMIT", None);
    ok(&mut t, b'C', b"COMMIT\0");
    ready(&mut t, b'I');
    assert_eq!(portal_text(&t, ""), None);
    assert_eq!(portal_text(&t, "p"), None);
    assert_eq!(portal_text(&t, "c"), Some(None), "a held cursor stays");
    // Outside a transaction block an unnamed portal ends at the Sync.
    bind(&mut t, "", "s1");
    t.sync();
    ok(&mut t, b'2', b"");
    assert!(t.portals.get(b"").is_some());
    ready(&mut t, b'I');
    assert!(t.portals.get(b"").is_none());
    bind(&mut t, "", "s1");
    t.sync();
    ok(&mut t, b'2', b"");
    ready(&mut t, b'E');
    assert!(
        t.portals.get(b"").is_none(),
        "a failed transaction drops it"
    );
}

#[test]
fn an_error_in_a_batch_skips_to_sync_and_drops_a_failed_unnamed_bind() {
    let mut t = with_statements();
    bind(&mut t, "", "s1");
    t.sync();
    ok(&mut t, b'2', b"");
    ready(&mut t, b'T');
    assert_eq!(portal_text(&t, ""), text("SELECT 1"));
    // Bind fails: the old unnamed portal may be gone already, and the
    // server skips the Describe and Execute.
    bind(&mut t, "", "s2");
    t.describe(Target::Portal(b""));
    t.execute(b"");
    t.sync();
    assert!(matches!(error(&mut t), Event::Error { refusal: None }));
    assert_eq!(t.queue.len(), 1, "only the Sync is answered");
    assert!(t.portals.get(b"").is_none());
    assert_eq!(
        ok(&mut t, b'Z', b"E"),
        Event::Ready(TransactionStatus::Failed)
    );
    assert!(!t.busy());
    // An error at the Execute keeps the unnamed statement, drops nothing
    // else, and what follows the error (before a Sync) is never answered.
    parse(&mut t, "", "SELECT 1/0");
    bind(&mut t, "", "");
    t.execute(b"");
    ok(&mut t, b'1', b"");
    ok(&mut t, b'2', b"");
    error(&mut t);
    assert!(t.skipping && !t.busy());
    t.describe(Target::Portal(b""));
    t.execute(b"");
    assert!(!t.busy(), "skipped by the server");
    t.sync();
    ready(&mut t, b'I');
    assert!(t.projected_statement(b"").known().is_some());
    assert_eq!(portal_text(&t, ""), None);
}

#[test]
fn a_failed_unnamed_parse_drops_the_unnamed_statement() {
    let mut t = Tracker::new(false);
    parse(&mut t, "", "SELECT 1");
    t.sync();
    ok(&mut t, b'1', b"");
    ready(&mut t, b'I');
    parse(&mut t, "", "SELEC");
    t.sync();
    error(&mut t);
    ready(&mut t, b'I');
    assert!(t.projected_statement(b"").known().is_none());
}

#[test]
fn a_portal_runs_the_statement_it_was_bound_from() {
    // The unnamed statement parsed again (or a name closed) after a Bind
    // does not change what the portal runs.
    let mut t = Tracker::new(false);
    parse(&mut t, "", "SELECT 'first'");
    bind(&mut t, "", "");
    parse(&mut t, "", "SELECT 'second'");
    assert_eq!(portal_text(&t, ""), text("SELECT 'first'"));
    parse(&mut t, "n", "SELECT 'named'");
    bind(&mut t, "p", "n");
    t.close(Target::Statement(b"n"));
    assert_eq!(portal_text(&t, "p"), text("SELECT 'named'"));
    // A Bind of a statement the projection does not know.
    bind(&mut t, "q", "missing");
    assert_eq!(portal_text(&t, "q"), Some(None));
    t.sync();
    for tag in [b'1', b'2', b'1', b'1', b'2', b'3'] {
        ok(&mut t, tag, b"");
    }
    assert_eq!(portal_text(&t, ""), text("SELECT 'first'"));
    assert_eq!(portal_text(&t, "p"), text("SELECT 'named'"));
    assert!(t.projected_statement(b"n").known().is_none());
}

#[test]
fn a_cursor_declared_in_a_queued_query_has_no_statement() {
    let mut t = with_statements();
    t.query(b"BEGIN", None);
    bind(&mut t, "c", "s1");
    t.sync();
    t.query(b"CLOSE c; DECLARE c CURSOR FOR SELECT 3", None);
    // The CLOSE may fail and the DECLARE be skipped: c may still be bound.
    assert!(matches!(t.projected_portal(b"c"), Projected::Uncertain));
    t.query(b"DECLARE d CURSOR FOR SELECT 4", None);
    assert_eq!(portal_text(&t, "d"), Some(None));
    // A pending CLOSE ALL leaves the cursor or none.
    t.query(b"CLOSE ALL", None);
    assert_eq!(portal_text(&t, "d"), Some(None));
}

#[test]
fn descriptions_pair_with_their_portal() {
    let mut t = with_statements();
    t.describe(Target::Portal(b""));
    t.sync();
    assert_eq!(
        answer(&mut t, b'n', b""),
        Err(out_of_step(
            "description",
            "of a portal that does not exist"
        ))
    );
    let mut t = Tracker::new(true);
    parse(&mut t, "s", "SELECT 1");
    bind(&mut t, "", "s");
    t.describe(Target::Portal(b""));
    t.execute(b"");
    t.sync();
    ok(&mut t, b'1', b"");
    ok(&mut t, b'2', b"");
    // One int4 column "a", text format.
    let mut rd = vec![0, 1, b'a', 0];
    rd.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0,
    ]);
    assert_eq!(ok(&mut t, b'T', &rd), Event::Plain);
    assert_eq!(
        ok(&mut t, b'D', b"\0\x01\0\0\0\x011"),
        Event::Row { first: true }
    );
    let result = t.result().expect("a result");
    assert_eq!(result.fields.as_ref().map(|f| f.len()), Some(1));
    assert!(result.formats.is_none(), "the portal's own description");
    ok(&mut t, b'C', b"SELECT 1\0");
    ready(&mut t, b'I');
    assert!(!t.busy());
}

#[test]
fn a_statement_description_serves_its_portals_where_kept() {
    // One int4 column "a", text format.
    let mut rd = vec![0, 1, b'a', 0];
    rd.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0,
    ]);
    for keep in [true, false] {
        let mut t = Tracker::new(keep);
        parse(&mut t, "s", "SELECT 1");
        t.describe(Target::Statement(b"s"));
        bind(&mut t, "", "s");
        t.execute(b"");
        t.sync();
        ok(&mut t, b'1', b"");
        ok(&mut t, b't', &[0, 1, 0, 0, 0, 23]);
        assert_eq!(ok(&mut t, b'T', &rd), Event::Plain);
        ok(&mut t, b'2', b"");
        assert_eq!(ok(&mut t, b'D', b"\0\0"), Event::Row { first: true });
        let result = t.result().expect("a result");
        assert_eq!(result.fields.as_ref().map(|f| f.len()), keep.then_some(1));
        // Bind's formats where descriptions are kept; without, nothing
        // reads them and none are kept.
        assert_eq!(result.formats.is_some(), keep, "Bind's formats");
        ok(&mut t, b'C', b"SELECT 1\0");
        ready(&mut t, b'I');
        let s = t.projected_statement(b"s").known().expect("kept");
        assert_eq!(s.param_types.of(0), Some(23), "described types kept always");
    }
    // A description of a statement that does not exist is out of step.
    let mut t = Tracker::new(true);
    t.describe(Target::Statement(b"gone"));
    assert_eq!(
        answer(&mut t, b'T', &rd),
        Err(out_of_step(
            "description",
            "of a statement that does not exist"
        ))
    );
}

// ---- projections over requests that may fail ----

/// The text the projection says statement `name` will have: `None` when
/// absent, `Some(None)` when uncertain.
fn statement_text(t: &Tracker, name: &str) -> Option<Option<String>> {
    match t.projected_statement(name.as_bytes()) {
        Projected::Absent => None,
        Projected::Uncertain => Some(None),
        Projected::Known(s) => Some(Some(String::from_utf8_lossy(&s.text).into_owned())),
    }
}

const UNCERTAIN: Option<Option<String>> = Some(None);

#[test]
fn a_parse_over_an_existing_name_leaves_later_batches_uncertain() {
    let mut t = with_statements();
    parse(&mut t, "s1", "SELECT 9");
    // In its own batch a use runs only if the Parse succeeded.
    assert_eq!(statement_text(&t, "s1"), text("SELECT 9"));
    t.sync();
    // After its Sync the Parse may have failed (42P05: s1 exists) and s1
    // kept its old text.
    assert_eq!(statement_text(&t, "s1"), UNCERTAIN);
    assert_eq!(
        statement_text(&t, "s2"),
        text("SELECT 2"),
        "others unchanged"
    );
    error(&mut t);
    ready(&mut t, b'I');
    assert_eq!(
        statement_text(&t, "s1"),
        text("SELECT 1"),
        "the failure known"
    );
}

#[test]
fn a_new_name_is_known_after_its_batch() {
    let mut t = with_statements();
    parse(&mut t, "s3", "SELECT 3");
    t.sync();
    // Whether it succeeds or not, a use runs only the new text.
    assert_eq!(statement_text(&t, "s3"), text("SELECT 3"));
    error(&mut t);
    ready(&mut t, b'I');
    assert_eq!(statement_text(&t, "s3"), None);
}

#[test]
fn close_and_parse_in_one_batch_are_certain_only_within_it() {
    let mut t = with_statements();
    t.close(Target::Statement(b"s1"));
    parse(&mut t, "s1", "SELECT 9");
    assert_eq!(statement_text(&t, "s1"), text("SELECT 9"));
    t.sync();
    // The batch may be cut short before its Close (a cancel, say).
    assert_eq!(statement_text(&t, "s1"), UNCERTAIN);
    ok(&mut t, b'3', b"");
    ok(&mut t, b'1', b"");
    ready(&mut t, b'I');
    assert_eq!(statement_text(&t, "s1"), text("SELECT 9"));
    // Re-creating a name with the same text is certain either way.
    t.close(Target::Statement(b"s1"));
    parse(&mut t, "s1", "SELECT 9");
    t.sync();
    assert_eq!(statement_text(&t, "s1"), text("SELECT 9"));
    // A pending Close alone leaves the old statement or none.
    t.close(Target::Statement(b"s2"));
    t.sync();
    assert_eq!(statement_text(&t, "s2"), text("SELECT 2"));
}

#[test]
fn an_unnamed_parse_skipped_after_an_error_keeps_the_old_statement() {
    let mut t = Tracker::new(false);
    parse(&mut t, "", "SELECT 1");
    t.sync();
    ok(&mut t, b'1', b"");
    ready(&mut t, b'I');
    parse(&mut t, "x", "SELECT 2");
    parse(&mut t, "", "SELECT 3");
    assert_eq!(statement_text(&t, ""), text("SELECT 3"));
    t.sync();
    assert_eq!(statement_text(&t, ""), UNCERTAIN);
    // The first Parse fails: the server skips the second.
    error(&mut t);
    ready(&mut t, b'I');
    assert_eq!(statement_text(&t, ""), text("SELECT 1"));
}

#[test]
fn a_prepare_in_a_query_may_fail_like_a_parse() {
    let mut t = with_statements();
    t.query(b"PREPARE s1 AS SELECT 7", None);
    assert_eq!(statement_text(&t, "s1"), UNCERTAIN, "s1 exists: may fail");
    t.query(b"PREPARE s4 AS SELECT 4", None);
    assert_eq!(
        statement_text(&t, "s4"),
        text("PREPARE s4 AS SELECT 4"),
        "a new name"
    );
    // A pending DEALLOCATE leaves the statement or none.
    t.query(b"DEALLOCATE s2", None);
    assert_eq!(statement_text(&t, "s2"), text("SELECT 2"));
    // A Query drops the unnamed statement whatever it does.
    assert_eq!(statement_text(&t, ""), None);
}

#[test]
fn a_bind_over_a_held_cursor_leaves_later_batches_uncertain() {
    let mut t = with_statements();
    t.query(b"DECLARE c CURSOR WITH HOLD FOR SELECT 1", None);
    ok(&mut t, b'C', b"DECLARE CURSOR\0");
    ready(&mut t, b'I');
    assert_eq!(portal_text(&t, "c"), Some(None));
    bind(&mut t, "c", "s1");
    assert_eq!(portal_text(&t, "c"), text("SELECT 1"), "in its batch");
    t.sync();
    // The Bind fails (42P03: c exists) and an Execute of c runs the cursor.
    assert!(matches!(t.projected_portal(b"c"), Projected::Uncertain));
    error(&mut t);
    ready(&mut t, b'I');
    assert_eq!(portal_text(&t, "c"), Some(None));
}

/// A tracker with the unnamed statement and portal, and a named statement
/// with a portal of its own, all confirmed (inside a transaction).
fn with_unnamed() -> Tracker {
    let mut t = Tracker::new(false);
    parse(&mut t, "", "SELECT 1");
    parse(&mut t, "named", "SELECT 2");
    bind(&mut t, "", "");
    bind(&mut t, "p", "named");
    t.sync();
    for tag in [b'1', b'1', b'2', b'2'] {
        ok(&mut t, tag, b"");
    }
    ready(&mut t, b'T');
    assert!(t.portals.get(b"").is_some() && t.statements.get(b"").is_some());
    t
}

fn unnamed_gone(t: &Tracker) -> bool {
    t.portals.get(b"").is_none() && t.statements.get(b"").is_none()
}

#[test]
fn a_query_that_names_nothing_keeps_no_text_and_pairs_its_answers() {
    let mut t = with_unnamed();
    t.query(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1", None);
    assert!(matches!(
        t.queue.front().map(|e| &e.req),
        Some(Req::Query { names: None, .. })
    ));
    assert!(!unnamed_gone(&t), "dropped by the answer, not the request");
    assert_eq!(ok(&mut t, b'T', &[0, 0]), Event::ResultStart);
    assert!(unnamed_gone(&t));
    assert!(t.result().is_some());
    assert_eq!(ok(&mut t, b'D', b"\0\0"), Event::Row { first: false });
    assert_eq!(ok(&mut t, b'C', b"SELECT 1\0"), Event::ResultEnd);
    assert!(t.result().is_none() && t.busy());
    assert_eq!(
        ok(&mut t, b'Z', b"T"),
        Event::Ready(TransactionStatus::InTransaction)
    );
    assert!(!t.busy());
    // The named statement and its portal stay (the transaction is open).
    assert!(t.statements.get(b"named").is_some() && t.portals.get(b"p").is_some());
}

#[test]
fn every_first_answer_of_a_query_drops_the_unnamed_ones() {
    // CommandComplete first (no rows), EmptyQueryResponse, an error, a
    // ReadyForQuery alone: each is the Query's first answer.
    let first_answers: [&[(u8, &[u8])]; 4] = [
        &[(b'C', b"SET\0")],
        &[(b'I', b"")],
        &[(b'E', b"SERROR\0C42601\0Mno\0\0")],
        &[],
    ];
    for answers in first_answers {
        let mut t = with_unnamed();
        t.query(b"whatever", None);
        for (tag, body) in answers {
            ok(&mut t, *tag, body);
            assert!(unnamed_gone(&t), "after {:?}", char::from(*tag));
        }
        ok(&mut t, b'Z', b"T");
        assert!(unnamed_gone(&t) && !t.busy());
        assert!(t.portals.get(b"p").is_some(), "named ones stay");
    }
    // A Sync's ReadyForQuery drops nothing.
    let mut t = with_unnamed();
    t.sync();
    ok(&mut t, b'Z', b"T");
    assert!(!unnamed_gone(&t));
}

#[test]
fn pipelined_queries_pair_their_answers_in_order() {
    let mut t = with_statements();
    t.query(b"SELECT 1", None);
    t.query(b"PREPARE s9 AS SELECT 9", None);
    t.query(b"SELECT 2; DEALLOCATE s1", None);
    assert_eq!(t.ready_pending(), 3);
    // The first Query: a result.
    assert_eq!(ok(&mut t, b'T', &[0, 0]), Event::ResultStart);
    assert_eq!(ok(&mut t, b'D', b"\0\0"), Event::Row { first: false });
    assert_eq!(ok(&mut t, b'C', b"SELECT 1\0"), Event::ResultEnd);
    ok(&mut t, b'Z', b"I");
    assert!(t.statements.get(b"s9").is_none(), "not yet answered");
    // The second: the PREPARE completes.
    assert_eq!(ok(&mut t, b'C', b"PREPARE\0"), Event::ResultEnd);
    assert_eq!(statement_text(&t, "s9"), text("PREPARE s9 AS SELECT 9"));
    assert!(t.statements.get(b"s9").is_some_and(|s| s.sql_prepare));
    ok(&mut t, b'Z', b"I");
    // The third: its DEALLOCATE is its second statement.
    assert_eq!(ok(&mut t, b'T', &[0, 0]), Event::ResultStart);
    assert_eq!(ok(&mut t, b'C', b"SELECT 1\0"), Event::ResultEnd);
    assert!(t.statements.get(b"s1").is_some(), "only at its own end");
    assert_eq!(ok(&mut t, b'C', b"DEALLOCATE\0"), Event::ResultEnd);
    assert!(t.statements.get(b"s1").is_none());
    ok(&mut t, b'Z', b"I");
    assert!(!t.busy());
    // An answer with nothing to pair ends the session.
    assert!(answer(&mut t, b'C', b"SELECT 1\0").is_err());
    assert!(answer(&mut t, b'Z', b"I").is_err());
    assert!(answer(&mut t, b'T', &[0, 0]).is_err());
}

#[test]
fn a_query_error_mid_batch_skips_its_later_statements() {
    let mut t = with_statements();
    // The PREPARE is the Query's second statement; the first fails, so
    // the server never runs it.
    t.query(b"SELECT 1/0; PREPARE s9 AS SELECT 9", None);
    t.query(b"SELECT 3", None);
    error(&mut t);
    ok(&mut t, b'Z', b"I");
    assert!(t.statements.get(b"s9").is_none());
    // The next Query pairs as usual.
    assert_eq!(ok(&mut t, b'C', b"SELECT 1\0"), Event::ResultEnd);
    ok(&mut t, b'Z', b"I");
    assert!(!t.busy() && t.statements.get(b"s9").is_none());
}

#[test]
fn a_stand_in_errors_refusal_comes_back_once() {
    let mut t = with_statements();
    let refusal = StandInAnswer {
        marker: "pgward-marker".into(),
        error: Bytes::from_static(b"E\0\0\0\x04"),
    };
    t.stand_in(true, refusal.clone());
    t.query(b"SELECT 1", None);
    match error(&mut t) {
        Event::Error { refusal: Some(r) } => assert_eq!(*r, refusal),
        other => panic!("expected the refusal, got {other:?}"),
    }
    ok(&mut t, b'Z', b"I");
    // The next Query's error is the server's own.
    assert!(matches!(error(&mut t), Event::Error { refusal: None }));
    ok(&mut t, b'Z', b"I");
    // An extended one's stand-in: the server skips to the Sync.
    t.stand_in(false, refusal.clone());
    t.execute(b"");
    t.sync();
    assert!(matches!(error(&mut t), Event::Error { refusal: Some(_) }));
    assert_eq!(t.queue.len(), 1, "only the Sync is answered");
    ok(&mut t, b'Z', b"I");
    assert!(!t.busy());
}

#[test]
fn the_direct_answer_methods_match_answer() {
    // What the core calls for RowDescription, CommandComplete, ErrorResponse
    // and ReadyForQuery.
    let rd = frame(b'T', &[0, 0]);
    let rfq = frame(b'Z', b"T");
    let bad_rfq = frame(b'Z', b"");
    fn f(raw: &[u8]) -> FrameRef<'_> {
        FrameRef::new(raw).expect("a whole frame")
    }
    let mut t = with_statements();
    t.query(b"SELECT 1", None);
    assert_eq!(t.row_description(f(&rd)), Ok(true));
    assert_eq!(t.result_end(b'C'), Ok(()));
    assert!(t.ready(f(&bad_rfq)).is_err(), "malformed");
    assert_eq!(t.ready(f(&rfq)), Ok(TransactionStatus::InTransaction));
    // A Describe's RowDescription starts no result.
    bind(&mut t, "", "s1");
    t.describe(Target::Portal(b""));
    t.sync();
    ok(&mut t, b'2', b"");
    assert_eq!(t.row_description(f(&rd)), Ok(false));
    assert!(t.result().is_none());
    // A result's end with no statement running does not pair.
    assert!(t.result_end(b'C').is_err());
    // An error while the Sync waits: the Sync is still answered.
    assert_eq!(t.error(), None);
    assert_eq!(t.queue.len(), 1);
    assert_eq!(t.ready(f(&rfq)), Ok(TransactionStatus::InTransaction));
    assert!(!t.busy());
}

#[test]
fn a_portal_suspended_ends_an_execute_not_a_query() {
    let mut t = with_statements();
    bind(&mut t, "", "s1");
    t.execute(b"");
    t.sync();
    ok(&mut t, b'2', b"");
    assert_eq!(ok(&mut t, b'D', b"\0\0"), Event::Row { first: true });
    assert_eq!(ok(&mut t, b's', b""), Event::ResultEnd);
    ok(&mut t, b'Z', b"I");
    t.query(b"SELECT 1", None);
    assert!(answer(&mut t, b's', b"").is_err());
}

#[test]
fn copy_in_answers_pair_with_the_query() {
    let mut t = with_statements();
    t.query(b"COPY t FROM STDIN", None);
    ok(&mut t, b'G', &[0, 0, 0]);
    assert!(t.in_copy());
    t.sync();
    t.copy_end();
    assert!(!t.in_copy());
    assert_eq!(ok(&mut t, b'C', b"COPY 1\0"), Event::ResultEnd);
    assert_eq!(t.queue.len(), 1, "the CopyDone was consumed by the copy");
    ok(&mut t, b'Z', b"I");
    assert!(!t.busy());
}

#[test]
fn a_bound_portal_holds_the_servers_statement_not_the_projection() {
    let mut t = with_statements();
    // A PREPARE still queued is projected as a statement made for the look.
    t.query(b"PREPARE s9 AS SELECT 9", None);
    bind(&mut t, "", "s9");
    bind(&mut t, "p", "s1");
    t.sync();
    let projected: Vec<Arc<Statement>> = t
        .queue
        .iter()
        .filter_map(|e| match &e.req {
            Req::Bind { bound, .. } => bound.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(projected.len(), 2);
    ok(&mut t, b'C', b"PREPARE\0");
    ok(&mut t, b'Z', b"T");
    ok(&mut t, b'2', b"");
    ok(&mut t, b'2', b"");
    let statement_of = |t: &Tracker, portal: &[u8]| {
        t.portals
            .get(portal)
            .and_then(|p| p.statement.clone())
            .expect("a bound portal")
    };
    let s9 = t.statements.get(b"s9").cloned().expect("prepared");
    assert!(Arc::ptr_eq(&statement_of(&t, b""), &s9));
    assert!(!Arc::ptr_eq(&projected[0], &s9), "not the projection's");
    // Where the projection was the server's statement, it is that one.
    let s1 = t.statements.get(b"s1").cloned().expect("parsed");
    assert!(Arc::ptr_eq(&statement_of(&t, b"p"), &s1));
    assert!(Arc::ptr_eq(&projected[1], &s1));
    ready(&mut t, b'T');
}

#[test]
fn a_description_that_repeats_the_last_shares_its_fields() {
    fn f(raw: &[u8]) -> FrameRef<'_> {
        FrameRef::new(raw).expect("a whole frame")
    }
    // One column named `name`: table 64, attribute `attnum`, int4, text.
    let column = |name: &[u8], attnum: u8| {
        let mut body = vec![0, 1];
        body.extend_from_slice(name);
        body.extend_from_slice(&[
            0, 0, 0, 0x40, 0, attnum, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ]);
        frame(b'T', &body)
    };
    let mut t = Tracker::new(true);
    let fields_of = |t: &mut Tracker, rd: &[u8]| {
        t.query(b"SELECT a FROM t", None);
        assert_eq!(t.row_description(f(rd)), Ok(true));
        let fields = t.result().and_then(|r| r.fields.clone()).expect("kept");
        assert_eq!(t.result_end(b'C'), Ok(()));
        t.ready(f(&frame(b'Z', b"I"))).expect("ready");
        fields
    };
    let first = fields_of(&mut t, &column(b"a\0", 1));
    let again = fields_of(&mut t, &column(b"a\0", 1));
    assert!(Arc::ptr_eq(&first, &again), "the same bytes: shared");
    let other = fields_of(&mut t, &column(b"a\0", 2));
    assert!(!Arc::ptr_eq(&first, &other));
    assert_eq!((first[0].attnum, other[0].attnum), (1, 2), "read afresh");
    let renamed = fields_of(&mut t, &column(b"b\0", 2));
    assert!(
        !Arc::ptr_eq(&other, &renamed),
        "any byte differs: read again"
    );
    // A malformed description is refused whatever came before.
    t.query(b"SELECT a FROM t", None);
    let mut bad = column(b"a\0", 2);
    bad.push(0);
    let len = bad.len() as u32 - 1;
    bad[1..5].copy_from_slice(&len.to_be_bytes());
    assert!(t.row_description(f(&bad)).is_err());
}

/// The statement `name` as the tracker has it now.
fn statement_arc(t: &Tracker, name: &str) -> Arc<Statement> {
    Arc::clone(t.statements.get(name.as_bytes()).expect("the statement"))
}

#[test]
fn answered_requests_keep_no_reference_and_the_portal_keeps_one() {
    // Short names (kept inline, the entry forgotten once answered) and
    // long ones (on the heap, the entry dropped): either way, once every
    // answer is in, the statement is held by its name and the portals
    // bound from it, and by nothing the queue left behind.
    let long = "a_portal_name_longer_than_thirty_bytes";
    let mut t = with_statements();
    let s1 = statement_arc(&t, "s1");
    let base = Arc::strong_count(&s1);
    for portal in ["", "p", long] {
        bind(&mut t, portal, "s1");
        t.execute(portal.as_bytes());
    }
    t.sync();
    for _ in 0..3 {
        ok(&mut t, b'2', b"");
        ok(&mut t, b'C', b"SELECT 1\0");
    }
    ready(&mut t, b'T');
    assert!(!t.busy());
    assert_eq!(Arc::strong_count(&s1), base + 3, "one per portal");
    for portal in ["", "p", long] {
        assert_eq!(portal_text(&t, portal), text("SELECT 1"));
    }
    // Rebinding the portals from s2 lets s1's references go.
    for portal in ["", "p", long] {
        bind(&mut t, portal, "s2");
    }
    t.sync();
    for _ in 0..3 {
        ok(&mut t, b'2', b"");
    }
    ready(&mut t, b'T');
    assert_eq!(Arc::strong_count(&s1), base);
    assert_eq!(portal_text(&t, long), text("SELECT 2"));
}

#[test]
fn a_portal_is_bound_at_its_binds_number_or_the_earliest_it_may_be() {
    let mut t = with_statements();
    assert_eq!(t.portal_bound_at(b"p"), None);
    let first = t.next_request_id();
    bind(&mut t, "p", "s1");
    // Queued in this batch: certainly the Bind that makes it.
    assert_eq!(t.portal_bound_at(b"p"), Some(first));
    t.sync();
    ok(&mut t, b'2', b"");
    ready(&mut t, b'T');
    assert_eq!(t.portal_bound_at(b"p"), Some(first), "confirmed");
    // A Bind of another batch may fail: the older portal may be the one.
    let second = t.next_request_id();
    bind(&mut t, "p", "s2");
    t.sync();
    let later = t.next_request_id();
    t.execute(b"p");
    assert!(first < second && second < later);
    assert_eq!(t.portal_bound_at(b"p"), Some(first));
    // Within the Bind's own batch it is certain.
    let third = t.next_request_id();
    bind(&mut t, "q", "s1");
    assert_eq!(t.portal_bound_at(b"q"), Some(third));
    // A SQL cursor has no Bind: the earliest number there is.
    let mut t = with_statements();
    t.query(b"DECLARE c CURSOR WITH HOLD FOR SELECT 1", None);
    ok(&mut t, b'C', b"DECLARE CURSOR\0");
    ready(&mut t, b'I');
    assert_eq!(t.portal_bound_at(b"c"), Some(0));
}

/// The server reports changed settings only just before ReadyForQuery: a
/// request answered without one after it may have changed a setting that
/// is not reported yet.
#[test]
fn settings_are_reported_only_by_the_next_ready_for_query() {
    let mut t = Tracker::new(false);
    assert!(!t.settings_unreported(), "after login");
    parse(&mut t, "", "SET standard_conforming_strings = off");
    bind(&mut t, "", "");
    t.execute(b"");
    assert!(t.settings_unreported());
    ok(&mut t, b'1', b"");
    ok(&mut t, b'2', b"");
    ok(&mut t, b'C', b"SET\0");
    assert!(!t.busy(), "everything sent is answered");
    assert!(t.settings_unreported(), "but not reported: no Sync yet");
    t.sync();
    ready(&mut t, b'I');
    assert!(!t.settings_unreported());
    // A ReadyForQuery with requests behind it reports only what ran
    // before it.
    t.sync();
    parse(&mut t, "", "SELECT 1");
    ready(&mut t, b'I');
    assert!(t.settings_unreported());
    ok(&mut t, b'1', b"");
    assert!(t.settings_unreported());
}
