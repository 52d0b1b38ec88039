//! The one test suite every approval store passes (the file store and the
//! PostgreSQL store, `tests/approval_store.rs`). Each case gets a fresh
//! [`Stores`]: two store objects on the same data (two instances, or two
//! processes on one file) and a way to open a third later (a restart).
#![allow(dead_code)]

use futures::future::BoxFuture;
use pgward::approvals::model::{
    binding, new_id, now_ms, ApprovalMode, Grant, GrantScope, GrantSubject, Requester, Revocation,
    Ticket, TicketState, Vote, VoteError,
};
use pgward::approvals::store::{ApprovalStore, ApprovalStoreError, Change};
use std::sync::Arc;
use std::time::Duration;

/// Two store objects on the same data, and how to open another.
pub struct Stores {
    /// The first instance.
    pub a: Arc<dyn ApprovalStore>,
    /// The second.
    pub b: Arc<dyn ApprovalStore>,
    /// Opens a new store object on the same data (after the others are
    /// dropped: a restart).
    pub reopen: Box<dyn Fn() -> BoxFuture<'static, Arc<dyn ApprovalStore>> + Send + Sync>,
}

/// How long a change may take to reach another instance's subscriber.
const CHANGE_WITHIN: Duration = Duration::from_secs(10);

/// A pending ticket of `user`'s in `mode`, approvable by group `ops`,
/// created at `created_at`, pending for a minute from now.
pub fn ticket(user: &str, mode: ApprovalMode, threshold: u32, created_at: u64) -> Ticket {
    let statement = format!("UPDATE t SET x = 1 -- {}", new_id());
    Ticket {
        id: new_id(),
        mode,
        state: TicketState::Pending,
        created_at,
        expires_at: now_ms() + 60_000,
        valid_until: None,
        requester: Requester {
            user: user.into(),
            groups: vec!["dev".into()],
            client: Some("127.0.0.1:5000".into()),
            database: "db".into(),
            upstream: "main".into(),
            role: "app".into(),
            application_name: Some("psql".into()),
            session: 7,
            instance: "a".into(),
        },
        binding: binding(user, "db", "UTF8", statement.as_bytes(), &[]),
        statement,
        params: Vec::new(),
        transaction: "idle".into(),
        rule: "approve-updates".into(),
        rule_message: Some("updates need approval".into()),
        justification: None,
        approvers: vec!["ops".into()],
        threshold,
        votes: Vec::new(),
        break_glass: false,
        end_reason: None,
        token: None,
    }
}

/// A grant to `user` of rule `rule`, created at `created_at`, ending at
/// `expires_at`.
pub fn grant(user: &str, rule: &str, created_at: u64, expires_at: u64) -> Grant {
    Grant {
        id: new_id(),
        subject: GrantSubject::User(user.into()),
        scope: GrantScope::Rule(rule.into()),
        created_by: "boss".into(),
        created_at,
        expires_at,
        reason: Some("on call".into()),
        revoked: None,
    }
}

/// `approver` (in group `ops`) votes on ticket `id` through `store`.
pub async fn vote(
    store: &dyn ApprovalStore,
    id: &str,
    approver: &str,
    approve: bool,
) -> Result<Ticket, ApprovalStoreError> {
    vote_valid_for(store, id, approver, approve, 3_600_000).await
}

/// [`vote`], with a ticket-mode approval valid for `validity_ms`.
pub async fn vote_valid_for(
    store: &dyn ApprovalStore,
    id: &str,
    approver: &str,
    approve: bool,
    validity_ms: u64,
) -> Result<Ticket, ApprovalStoreError> {
    let approver = approver.to_owned();
    store
        .update_ticket(id, &move |t| {
            let vote = Vote {
                approver: approver.clone(),
                approve,
                reason: (!approve).then(|| "too risky".to_owned()),
                at: now_ms(),
            };
            t.apply_vote(vote, &["ops".to_owned()], validity_ms)
                .map_err(|e| e.to_string())
        })
        .await
}

fn ids<T>(records: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    records.iter().map(|r| id(r).to_owned()).collect()
}

/// Records are found by id, listed newest first within the limit, and
/// `pending_only` leaves out decided, ended and lapsed tickets.
pub async fn create_get_list(s: Stores) {
    let base = now_ms() - 10_000;
    let mut made = Vec::new();
    for i in 0..5 {
        let t = ticket("alice", ApprovalMode::Hold, 1, base + i);
        s.a.create_ticket(&t).await.expect("create");
        made.push(t);
    }
    for t in &made {
        assert_eq!(s.b.ticket(&t.id).await.expect("get").as_ref(), Some(t));
    }
    assert_eq!(s.a.ticket(&new_id()).await.expect("get unknown"), None);
    let err = s.b.create_ticket(&made[0]).await.expect_err("duplicate");
    assert!(
        matches!(&err, ApprovalStoreError::Exists { kind: "ticket", id } if *id == made[0].id),
        "{err}"
    );

    let newest: Vec<String> = made.iter().rev().map(|t| t.id.clone()).collect();
    let all = s.a.tickets(false, 100).await.expect("list");
    assert_eq!(ids(&all, |t| &t.id), newest);
    let three = s.b.tickets(false, 3).await.expect("list");
    assert_eq!(ids(&three, |t| &t.id), newest[..3]);
    assert!(s.a.tickets(false, 0).await.expect("list").is_empty());

    // Decided, withdrawn and lapsed tickets are not pending.
    vote(&*s.a, &made[0].id, "olga", true)
        .await
        .expect("approve");
    s.b.update_ticket(&made[1].id, &|t| {
        t.end(TicketState::Withdrawn, "the client disconnected");
        Ok(())
    })
    .await
    .expect("withdraw");
    let mut lapsed = ticket("alice", ApprovalMode::Hold, 1, base + 10);
    lapsed.expires_at = now_ms() - 1;
    s.a.create_ticket(&lapsed).await.expect("create lapsed");
    let read = s.b.ticket(&lapsed.id).await.expect("get").expect("found");
    assert_eq!(
        read.state,
        TicketState::Expired,
        "a lapsed ticket reads expired"
    );

    let pending = s.b.tickets(true, 100).await.expect("pending");
    assert_eq!(ids(&pending, |t| &t.id), newest[..3]);
    let pending = s.a.tickets(true, 2).await.expect("pending");
    assert_eq!(ids(&pending, |t| &t.id), newest[..2]);
    assert_eq!(s.a.tickets(false, 100).await.expect("all").len(), 6);
}

/// Text that could end a quoted literal, odd characters and a NUL come back
/// byte for byte.
pub async fn hostile_text_round_trips(s: Stores) {
    let mut t = ticket("alice", ApprovalMode::Ticket, 1, now_ms());
    t.statement =
        "UPDATE t SET x = $pgward_0000000000000000$'); DROP TABLE t; -- \\' \" $$ $q$".to_owned();
    t.justification = Some("caf\u{e9} \u{1f600} \u{0}nul \u{202e}rtl \r\n tab\t".into());
    t.requester.user = "o'brien\\".into();
    t.binding = binding(
        "o'brien\\",
        "db",
        "UTF8",
        t.statement.as_bytes(),
        &[(1, 0, None)],
    );
    s.a.create_ticket(&t).await.expect("create");
    assert_eq!(s.b.ticket(&t.id).await.expect("get").as_ref(), Some(&t));
    let reason = "deny \u{0} '; DROP SCHEMA x; --".to_owned();
    let voted =
        s.b.update_ticket(&t.id, &move |t| {
            t.apply_vote(
                Vote {
                    approver: "olga".into(),
                    approve: false,
                    reason: Some(reason.clone()),
                    at: now_ms(),
                },
                &["ops".to_owned()],
                1000,
            )
            .map_err(|e| e.to_string())
        })
        .await
        .expect("deny");
    assert_eq!(voted.state, TicketState::Denied);
    assert_eq!(s.a.ticket(&t.id).await.expect("get").as_ref(), Some(&voted));
}

/// Both stores refuse the same records: an id that is not 1 to 64 of
/// `[A-Za-z0-9_-]`, and a record over the 4 MiB limit (a statement that
/// long cannot be held); nothing is stored, and a normal ticket still is.
pub async fn oversized_and_odd_ids_are_refused_alike(s: Stores) {
    for id in ["", "a b", "t'1", "x".repeat(65).as_str(), "é"] {
        let mut t = ticket("alice", ApprovalMode::Hold, 1, now_ms());
        t.id = id.to_owned();
        let e = s.a.create_ticket(&t).await.expect_err(id);
        assert!(
            matches!(&e, ApprovalStoreError::Refused(m) if m.contains("id")),
            "{id:?}: {e}"
        );
    }
    let mut big = ticket("alice", ApprovalMode::Hold, 1, now_ms());
    big.statement = "x".repeat(5 << 20);
    let e = s.a.create_ticket(&big).await.expect_err("oversized");
    assert!(
        matches!(&e, ApprovalStoreError::Refused(m) if m.contains("MiB")),
        "{e}"
    );
    assert_eq!(s.b.ticket(&big.id).await.expect("get"), None);
    let mut g = grant("alice", "r", now_ms(), now_ms() + 60_000);
    g.id = "g 1".into();
    assert!(matches!(
        s.a.create_grant(&g).await,
        Err(ApprovalStoreError::Refused(_))
    ));
    let fine = ticket("alice", ApprovalMode::Hold, 1, now_ms());
    s.a.create_ticket(&fine).await.expect("a normal ticket");
    assert!(s.b.ticket(&fine.id).await.expect("get").is_some());
}

/// 20 approvers vote at once through two instances on a ticket needing 3:
/// exactly 3 votes count, and the rest are refused as not pending.
pub async fn concurrent_votes_count_exactly(s: Stores) {
    let t = ticket("alice", ApprovalMode::Hold, 3, now_ms());
    s.a.create_ticket(&t).await.expect("create");
    let votes = (0..20).map(|i| {
        let store = if i % 2 == 0 {
            Arc::clone(&s.a)
        } else {
            Arc::clone(&s.b)
        };
        let id = t.id.clone();
        tokio::spawn(async move { vote(&*store, &id, &format!("approver{i}"), true).await })
    });
    let mut counted = 0;
    for done in futures::future::join_all(votes).await {
        match done.expect("task") {
            Ok(_) => counted += 1,
            Err(ApprovalStoreError::Refused(m)) => {
                let expected = VoteError::NotPending {
                    id: t.id.clone(),
                    state: TicketState::Approved,
                }
                .to_string();
                assert_eq!(m, expected);
            }
            Err(e) => panic!("vote failed: {e}"),
        }
    }
    assert_eq!(counted, 3);
    let end = s.b.ticket(&t.id).await.expect("get").expect("found");
    assert_eq!(end.state, TicketState::Approved);
    assert_eq!(end.votes.len(), 3);
    let mut voters: Vec<&str> = end.votes.iter().map(|v| v.approver.as_str()).collect();
    voters.sort_unstable();
    voters.dedup();
    assert_eq!(voters.len(), 3);
}

/// A refused update leaves the record as it was; the model's rules hold
/// through the store (self-approval, a second vote by the same approver);
/// an unknown id is not found.
pub async fn refused_updates_change_nothing(s: Stores) {
    let t = ticket("alice", ApprovalMode::Hold, 2, now_ms());
    s.a.create_ticket(&t).await.expect("create");
    let err = vote(&*s.b, &t.id, "alice", true).await.expect_err("self");
    assert!(
        matches!(&err, ApprovalStoreError::Refused(m) if m.contains("cannot approve")),
        "{err}"
    );
    vote(&*s.a, &t.id, "olga", true).await.expect("first vote");
    let err = vote(&*s.b, &t.id, "olga", true).await.expect_err("twice");
    assert!(
        matches!(&err, ApprovalStoreError::Refused(m) if m.contains("voted")),
        "{err}"
    );
    let err =
        s.a.update_ticket(&t.id, &|t| {
            t.threshold = 99;
            Err("no".into())
        })
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ApprovalStoreError::Refused(m) if m == "no"),
        "{err}"
    );
    let now = s.b.ticket(&t.id).await.expect("get").expect("found");
    assert_eq!((now.threshold, now.votes.len()), (2, 1));
    let err = vote(&*s.a, &new_id(), "olga", true)
        .await
        .expect_err("unknown");
    assert!(
        matches!(err, ApprovalStoreError::NotFound { kind: "ticket", .. }),
        "{err}"
    );
}

/// A ticket-mode approval is used exactly once, whichever instance asks,
/// however many ask at once; another binding finds nothing.
pub async fn consume_exactly_once(s: Stores) {
    let t = ticket("alice", ApprovalMode::Ticket, 1, now_ms());
    s.a.create_ticket(&t).await.expect("create");
    assert_eq!(
        s.a.consume(&t.binding, now_ms()).await.expect("consume"),
        None,
        "pending"
    );
    let approved = vote(&*s.b, &t.id, "olga", true).await.expect("approve");
    assert_eq!(approved.state, TicketState::Approved);
    assert!(approved.valid_until.is_some());
    let other = binding("alice", "db", "UTF8", b"UPDATE t SET x = 2", &[]);
    assert_eq!(s.a.consume(&other, now_ms()).await.expect("consume"), None);

    let tries = (0..10).map(|i| {
        let store = if i % 2 == 0 {
            Arc::clone(&s.a)
        } else {
            Arc::clone(&s.b)
        };
        let binding = t.binding.clone();
        tokio::spawn(async move { store.consume(&binding, now_ms()).await })
    });
    let mut used = Vec::new();
    for done in futures::future::join_all(tries).await {
        if let Some(t) = done.expect("task").expect("consume") {
            used.push(t);
        }
    }
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[0].id, t.id);
    assert_eq!(used[0].state, TicketState::Used);
    assert_eq!(
        s.b.consume(&t.binding, now_ms()).await.expect("again"),
        None
    );
    let stored = s.a.ticket(&t.id).await.expect("get").expect("found");
    assert_eq!(stored.state, TicketState::Used);
}

/// Lapsed tickets: a pending one past its lifetime takes no vote; an
/// approval past its validity is not used and reads expired.
pub async fn expiry(s: Stores) {
    let mut t = ticket("alice", ApprovalMode::Hold, 1, now_ms() - 5000);
    t.expires_at = now_ms() - 1000;
    s.a.create_ticket(&t).await.expect("create");
    let err = vote(&*s.b, &t.id, "olga", true).await.expect_err("lapsed");
    let expected = VoteError::NotPending {
        id: t.id.clone(),
        state: TicketState::Expired,
    };
    assert!(
        matches!(&err, ApprovalStoreError::Refused(m) if *m == expected.to_string()),
        "{err}"
    );
    let ended =
        s.a.update_ticket(&t.id, &|_| Ok(()))
            .await
            .expect("an update records the expiry");
    assert_eq!(ended.state, TicketState::Expired);
    assert_eq!(
        s.b.ticket(&t.id).await.expect("get").map(|t| t.state),
        Some(TicketState::Expired)
    );

    let u = ticket("alice", ApprovalMode::Ticket, 1, now_ms());
    s.a.create_ticket(&u).await.expect("create");
    let approved = vote_valid_for(&*s.a, &u.id, "olga", true, 1)
        .await
        .expect("approve");
    let until = approved.valid_until.expect("valid until");
    // Wall-clock time passes the approval's end (a millisecond).
    while now_ms() <= until {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        s.b.consume(&u.binding, now_ms()).await.expect("consume"),
        None,
        "after its end"
    );
    assert_eq!(
        s.a.ticket(&u.id).await.expect("get").map(|t| t.state),
        Some(TicketState::Expired)
    );
    assert_eq!(
        s.a.consume(&u.binding, now_ms()).await.expect("consume"),
        None
    );
}

/// Grants: listed newest first, `active_at` leaves out expired and revoked
/// ones; a revocation is atomic and refused once the grant ended.
pub async fn grants_active_and_revoked(s: Stores) {
    let now = now_ms();
    let active = grant("alice", "approve-updates", now - 3000, now + 60_000);
    let expired = grant("bob", "approve-updates", now - 2000, now - 1000);
    let mut group = grant("x", "approve-updates", now - 1000, now + 60_000);
    group.subject = GrantSubject::Group("oncall".into());
    group.scope = GrantScope::Role {
        database: "db".into(),
        role: "admin".into(),
    };
    for g in [&active, &expired, &group] {
        s.a.create_grant(g).await.expect("create grant");
    }
    let err = s.b.create_grant(&active).await.expect_err("duplicate");
    assert!(
        matches!(err, ApprovalStoreError::Exists { kind: "grant", .. }),
        "{err}"
    );
    let all = s.b.grants(None, 100).await.expect("all");
    assert_eq!(
        ids(&all, |g| &g.id),
        [group.id.clone(), expired.id.clone(), active.id.clone()]
    );
    assert_eq!(all[0], group);
    let two = s.a.grants(None, 2).await.expect("two");
    assert_eq!(ids(&two, |g| &g.id), [group.id.clone(), expired.id.clone()]);
    let live = s.a.grants(Some(now_ms()), 100).await.expect("active");
    assert_eq!(ids(&live, |g| &g.id), [group.id.clone(), active.id.clone()]);

    let revocation = Revocation {
        by: "boss".into(),
        at: now_ms(),
        reason: Some("done".into()),
    };
    let revoke = move |g: &mut Grant| {
        if !g.active(revocation.at) {
            return Err(format!("grant {} has ended", g.id));
        }
        g.revoked = Some(revocation.clone());
        Ok(())
    };
    let revoked = s.b.update_grant(&group.id, &revoke).await.expect("revoke");
    assert!(revoked.revoked.is_some());
    let err =
        s.a.update_grant(&group.id, &revoke)
            .await
            .expect_err("twice");
    assert!(
        matches!(&err, ApprovalStoreError::Refused(m) if m.contains("ended")),
        "{err}"
    );
    let err =
        s.a.update_grant(&expired.id, &revoke)
            .await
            .expect_err("expired");
    assert!(matches!(err, ApprovalStoreError::Refused(_)), "{err}");
    let err =
        s.a.update_grant(&new_id(), &revoke)
            .await
            .expect_err("unknown");
    assert!(
        matches!(err, ApprovalStoreError::NotFound { kind: "grant", .. }),
        "{err}"
    );
    let live = s.b.grants(Some(now_ms()), 100).await.expect("active");
    assert_eq!(ids(&live, |g| &g.id), std::slice::from_ref(&active.id));
    assert_eq!(s.a.grants(None, 100).await.expect("all")[0], revoked);
}

/// Waits until `rx` yields `want` (other changes may come first).
pub async fn wait_for_change(rx: &mut tokio::sync::broadcast::Receiver<Change>, want: &Change) {
    let seen = tokio::time::timeout(CHANGE_WITHIN, async {
        loop {
            match rx.recv().await {
                Ok(c) if c == *want => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("subscription ended: {e}"),
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "no {want:?} within {CHANGE_WITHIN:?}");
}

/// A subscriber hears of changes made through the other store object, and
/// through its own.
pub async fn changes_reach_other_instances(s: Stores) {
    let mut on_b = s.b.subscribe();
    let mut on_a = s.a.subscribe();
    let t = ticket("alice", ApprovalMode::Hold, 1, now_ms());
    s.a.create_ticket(&t).await.expect("create");
    let change = Change::Ticket(t.id.clone());
    wait_for_change(&mut on_b, &change).await;
    wait_for_change(&mut on_a, &change).await;
    vote(&*s.a, &t.id, "olga", true).await.expect("approve");
    wait_for_change(&mut on_b, &change).await;
    assert_eq!(
        s.b.ticket(&t.id).await.expect("get").map(|t| t.state),
        Some(TicketState::Approved),
        "the change is readable once announced"
    );
    let g = grant("alice", "approve-updates", now_ms(), now_ms() + 60_000);
    s.b.create_grant(&g).await.expect("grant");
    wait_for_change(&mut on_a, &Change::Grant(g.id.clone())).await;
}

/// What was stored is there after a restart (a new store object).
pub async fn survives_restart(s: Stores) {
    let t = ticket("alice", ApprovalMode::Ticket, 1, now_ms());
    s.a.create_ticket(&t).await.expect("create");
    let approved = vote(&*s.b, &t.id, "olga", true).await.expect("approve");
    let g = grant("alice", "approve-updates", now_ms(), now_ms() + 60_000);
    s.a.create_grant(&g).await.expect("grant");
    let Stores { a, b, reopen } = s;
    drop((a, b));
    let again = reopen().await;
    assert_eq!(again.ticket(&t.id).await.expect("get"), Some(approved));
    assert_eq!(
        again.grants(Some(now_ms()), 10).await.expect("grants"),
        vec![g]
    );
    assert!(again
        .consume(&t.binding, now_ms())
        .await
        .expect("consume")
        .is_some());
}

/// Token revocations: recorded once (a second revocation keeps the
/// first), read by the other instance in order, announced to it, and kept
/// across a restart.
pub async fn token_revocations(s: Stores) {
    use pgward::approvals::model::TokenRevocation;
    let mut on_b = s.b.subscribe();
    // An external issuer's jti may hold any characters.
    let first = TokenRevocation {
        at: now_ms(),
        ..TokenRevocation::new(
            "ID.ab:c/d+e=='; DROP TABLE x; --",
            "olga",
            Some("leaked in a CI log; ' \\ $$ \u{1f512}".into()),
        )
    };
    s.a.revoke_token(&first).await.expect("revoke");
    wait_for_change(&mut on_b, &Change::Revocation(first.id.clone())).await;
    let again = TokenRevocation {
        at: first.at + 5,
        ..TokenRevocation::new(&first.jti, "mallory", None)
    };
    s.b.revoke_token(&again)
        .await
        .expect("a second revocation succeeds");
    let second = TokenRevocation {
        at: first.at + 10,
        ..TokenRevocation::new("550e8400-e29b-41d4-a716-446655440000", "olga", None)
    };
    s.b.revoke_token(&second).await.expect("revoke");
    let listed = s.a.token_revocations().await.expect("list");
    assert_eq!(
        listed,
        vec![first.clone(), second.clone()],
        "the first record stands"
    );
    let Stores { a, b, reopen } = s;
    drop((a, b));
    let kept = reopen().await.token_revocations().await.expect("list");
    assert!(kept.contains(&first) && kept.contains(&second), "{kept:?}");
}

/// Every case of the suite, as `#[tokio::test]`s named after them, for one
/// store: `$open` is an async fn returning [`Stores`].
#[macro_export]
macro_rules! approval_store_suite {
    ($open:path) => {
        approval_store_suite!(@cases $open;
            create_get_list, hostile_text_round_trips, concurrent_votes_count_exactly,
            refused_updates_change_nothing, consume_exactly_once, expiry,
            grants_active_and_revoked, changes_reach_other_instances, survives_restart,
            token_revocations, oversized_and_odd_ids_are_refused_alike);
    };
    (@cases $open:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::approval_store_suite::$case($open().await).await;
            }
        )*
    };
}
