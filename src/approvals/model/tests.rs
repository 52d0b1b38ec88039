use super::*;
use crate::approvals::testkit::{grant, ticket};

fn vote(approver: &str, approve: bool, at: u64) -> Vote {
    Vote {
        approver: approver.into(),
        approve,
        reason: None,
        at,
    }
}

fn ops() -> Vec<String> {
    vec!["ops".into()]
}

#[test]
fn votes_are_counted_once_by_approvers_other_than_the_requester() {
    let mut t = ticket("t", "alice", ApprovalMode::Hold, 2);
    let now = t.created_at;
    assert_eq!(
        t.apply_vote(vote("alice", true, now), &ops(), 0),
        Err(VoteError::SelfApproval("alice".into()))
    );
    assert_eq!(
        t.apply_vote(vote("eve", true, now), &["dev".into()], 0),
        Err(VoteError::NotAnApprover("eve".into()))
    );
    t.apply_vote(vote("bob", true, now), &ops(), 0)
        .expect("bob");
    assert_eq!(t.state, TicketState::Pending, "one of two");
    assert_eq!(
        t.apply_vote(vote("bob", true, now), &ops(), 0),
        Err(VoteError::AlreadyVoted("bob".into()))
    );
    t.apply_vote(vote("carol", true, now), &ops(), 0)
        .expect("carol");
    assert_eq!(t.state, TicketState::Approved);
    assert_eq!(t.valid_until, None, "hold mode has no validity");
    assert!(matches!(
        t.apply_vote(vote("dave", false, now), &ops(), 0),
        Err(VoteError::NotPending { .. })
    ));
    assert!(!t.consume(now), "a hold-mode approval is not for reuse");
}

#[test]
fn one_denial_ends_a_ticket_with_its_reason() {
    let mut t = ticket("t", "alice", ApprovalMode::Hold, 3);
    let now = t.created_at;
    t.apply_vote(vote("bob", true, now), &ops(), 0)
        .expect("bob");
    let mut no = vote("carol", false, now);
    no.reason = Some("not now".into());
    t.apply_vote(no, &ops(), 0).expect("carol");
    assert_eq!(t.state, TicketState::Denied);
    assert_eq!(t.end_reason.as_deref(), Some("denied by carol: not now"));
    assert!(!t.end(TicketState::Withdrawn, "late"), "a decision stays");
}

#[test]
fn tickets_expire_and_ticket_mode_approvals_are_used_once_within_validity() {
    let mut t = ticket("t", "alice", ApprovalMode::Ticket, 1);
    let late = t.expires_at;
    assert!(matches!(
        t.clone().apply_vote(vote("bob", true, late), &ops(), 1000),
        Err(VoteError::NotPending {
            state: TicketState::Expired,
            ..
        })
    ));
    let now = t.created_at;
    t.apply_vote(vote("bob", true, now), &ops(), 1000)
        .expect("bob");
    assert_eq!(t.valid_until, Some(now + 1000));
    let mut lapsed = t.clone();
    assert!(!lapsed.consume(now + 1000), "past its validity");
    assert_eq!(lapsed.state, TicketState::Expired);
    assert!(t.consume(now + 999));
    assert_eq!(t.state, TicketState::Used);
    assert!(!t.consume(now + 999), "once");
}

#[test]
fn withdrawing_ends_only_pending_tickets() {
    let mut t = ticket("t", "alice", ApprovalMode::Hold, 1);
    assert!(!t.end(TicketState::Pending, "no"), "not a final state");
    assert!(t.end(TicketState::Withdrawn, "cancelled by the client"));
    assert_eq!(t.end_reason.as_deref(), Some("cancelled by the client"));
    assert!(!t.end(TicketState::Expired, "again"));
}

#[test]
fn bindings_differ_in_every_field_and_never_collide_by_concatenation() {
    let b = |user: &str, db: &str, text: &[u8], params: &[BoundParam<'_>]| {
        binding(user, db, "UTF8", text, params)
    };
    let one: &[BoundParam<'_>] = &[(0, 0, Some(b"1"))];
    let base = b("alice", "db", b"UPDATE t SET v = $1", one);
    assert_eq!(base, b("alice", "db", b"UPDATE t SET v = $1", one));
    for other in [
        b("bob", "db", b"UPDATE t SET v = $1", one),
        b("alice", "db2", b"UPDATE t SET v = $1", one),
        b("alice", "db", b"UPDATE t SET v = $1 ", one),
        b("alice", "db", b"UPDATE t SET v = $1", &[(0, 0, Some(b"2"))]),
        b("alice", "db", b"UPDATE t SET v = $1", &[(1, 0, Some(b"1"))]),
        b(
            "alice",
            "db",
            b"UPDATE t SET v = $1",
            &[(0, 23, Some(b"1"))],
        ),
        b("alice", "db", b"UPDATE t SET v = $1", &[(0, 0, None)]),
        b("alice", "db", b"UPDATE t SET v = $1", &[(0, 0, Some(b""))]),
        b("alice", "db", b"UPDATE t SET v = $1", &[]),
        binding("alice", "db", "LATIN1", b"UPDATE t SET v = $1", one),
    ] {
        assert_ne!(base, other);
    }
    // Moving bytes between fields changes the binding.
    assert_ne!(b("ab", "c", b"", &[]), b("a", "bc", b"", &[]));
    assert_ne!(
        binding("a", "b", "c", b"", &[]),
        binding("a", "", "bc", b"", &[])
    );
    assert_ne!(
        b("alice", "db", b"x", &[(0, 0, None)]),
        b("alice", "db", b"x", &[(0, 0, Some(b"null"))])
    );
    assert_ne!(
        b("alice", "db", b"x", &[(0, 0, Some(b"")), (0, 0, None)]),
        b("alice", "db", b"x", &[(0, 0, None), (0, 0, Some(b""))])
    );
}

#[test]
fn grants_cover_their_subject_until_they_end() {
    let mut g = grant("g", "alice", "r");
    let now = g.created_at;
    assert!(g.active(now) && g.covers("alice", &[]));
    assert!(!g.covers("bob", &["alice".into()]));
    assert!(!g.active(g.expires_at));
    g.subject = GrantSubject::Group("ops".into());
    assert!(g.covers("bob", &ops()) && !g.covers("alice", &[]));
    g.revoked = Some(Revocation {
        by: "boss".into(),
        at: now,
        reason: None,
    });
    assert!(!g.active(now));
}

#[test]
fn tickets_round_trip_through_json() {
    let t = ticket("t", "alice", ApprovalMode::Ticket, 1);
    let text = serde_json::to_string(&t).expect("serialize");
    assert!(text.contains("\"mode\":\"ticket\"") && text.contains("\"state\":\"pending\""));
    assert_eq!(serde_json::from_str::<Ticket>(&text).expect("parse"), t);
}
