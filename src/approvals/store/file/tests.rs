use super::*;
use crate::approvals::model::{ApprovalMode, Revocation, Vote};
use crate::approvals::testkit::{grant, ticket};

fn vote(approver: &str, approve: bool) -> Vote {
    Vote {
        approver: approver.into(),
        approve,
        reason: Some("why".into()),
        at: now_ms(),
    }
}

fn ops() -> Vec<String> {
    vec!["ops".into()]
}

#[tokio::test]
async fn tickets_and_grants_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("approvals.jsonl");
    let store = FileStore::open(&path).await.expect("open");
    store
        .create_ticket(&ticket("t1", "alice", ApprovalMode::Ticket, 1))
        .await
        .expect("create");
    assert!(matches!(
        store
            .create_ticket(&ticket("t1", "alice", ApprovalMode::Ticket, 1))
            .await,
        Err(ApprovalStoreError::Exists { .. })
    ));
    let voted = store
        .update_ticket("t1", &|t| {
            t.apply_vote(vote("bob", true), &ops(), 60_000)
                .map_err(|e| e.to_string())
        })
        .await
        .expect("vote");
    assert_eq!(voted.state, TicketState::Approved);
    // A refused update changes nothing.
    let refused = store
        .update_ticket("t1", &|t| {
            t.apply_vote(vote("carol", true), &ops(), 60_000)
                .map_err(|e| e.to_string())
        })
        .await;
    assert!(matches!(refused, Err(ApprovalStoreError::Refused(_))));
    store
        .create_grant(&grant("g1", "alice", "r"))
        .await
        .expect("grant");
    drop(store);

    let again = FileStore::open(&path).await.expect("reopen");
    let t = again.ticket("t1").await.expect("read").expect("there");
    assert_eq!(t.state, TicketState::Approved);
    assert_eq!(t.votes.len(), 1);
    assert_eq!(
        again
            .grants(Some(now_ms()), 10)
            .await
            .expect("grants")
            .len(),
        1
    );
    // Used once, then never again.
    let binding = t.binding.clone();
    assert!(again
        .consume(&binding, now_ms())
        .await
        .expect("consume")
        .is_some());
    assert!(again
        .consume(&binding, now_ms())
        .await
        .expect("consume")
        .is_none());
    drop(again);
    let third = FileStore::open(&path).await.expect("reopen");
    assert_eq!(
        third
            .ticket("t1")
            .await
            .expect("read")
            .expect("there")
            .state,
        TicketState::Used
    );
    assert!(third
        .consume(&binding, now_ms())
        .await
        .expect("consume")
        .is_none());
}

#[tokio::test]
async fn two_stores_on_one_file_use_an_approval_once_and_see_each_other() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("approvals.jsonl");
    let a = FileStore::open(&path).await.expect("open a");
    let b = FileStore::open(&path).await.expect("open b");
    let mut changes = b.subscribe();
    let mut t = ticket("t2", "alice", ApprovalMode::Ticket, 1);
    t.apply_vote(vote("bob", true), &ops(), 60_000)
        .expect("vote");
    a.create_ticket(&t).await.expect("create");
    // b's follower reports a's record.
    let change = tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv())
        .await
        .expect("in time")
        .expect("change");
    assert_eq!(change, Change::Ticket("t2".into()));
    let binding = t.binding.clone();
    let (x, y) = tokio::join!(a.consume(&binding, now_ms()), b.consume(&binding, now_ms()));
    let used = [x.expect("a"), y.expect("b")]
        .into_iter()
        .filter(Option::is_some)
        .count();
    assert_eq!(used, 1, "an approval is used exactly once across processes");
}

#[tokio::test]
async fn votes_from_two_stores_are_both_counted() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("approvals.jsonl");
    let a = FileStore::open(&path).await.expect("open a");
    let b = FileStore::open(&path).await.expect("open b");
    a.create_ticket(&ticket("t3", "alice", ApprovalMode::Hold, 2))
        .await
        .expect("create");
    let va = a.update_ticket("t3", &|t| {
        t.apply_vote(vote("bob", true), &ops(), 0)
            .map_err(|e| e.to_string())
    });
    let vb = b.update_ticket("t3", &|t| {
        t.apply_vote(vote("carol", true), &ops(), 0)
            .map_err(|e| e.to_string())
    });
    let (va, vb) = tokio::join!(va, vb);
    va.expect("bob");
    vb.expect("carol");
    let t = a.ticket("t3").await.expect("read").expect("there");
    assert_eq!(t.votes.len(), 2, "no vote lost to a race");
    assert_eq!(t.state, TicketState::Approved);
}

#[tokio::test]
async fn pending_lists_expire_lazily_and_grants_revoke() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FileStore::open(&dir.path().join("a.jsonl"))
        .await
        .expect("open");
    let mut old = ticket("t4", "alice", ApprovalMode::Hold, 1);
    old.expires_at = now_ms() - 1;
    store.create_ticket(&old).await.expect("create");
    store
        .create_ticket(&ticket("t5", "alice", ApprovalMode::Hold, 1))
        .await
        .expect("create");
    let pending = store.tickets(true, 10).await.expect("list");
    assert_eq!(
        pending.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t5"]
    );
    assert_eq!(store.tickets(false, 10).await.expect("all").len(), 2);
    assert_eq!(store.tickets(false, 1).await.expect("limited").len(), 1);
    store
        .create_grant(&grant("g2", "alice", "r"))
        .await
        .expect("grant");
    let revoked = store
        .update_grant("g2", &|g| {
            g.revoked = Some(Revocation {
                by: "boss".into(),
                at: now_ms(),
                reason: None,
            });
            Ok(())
        })
        .await
        .expect("revoke");
    assert!(!revoked.active(now_ms()));
    assert!(store
        .grants(Some(now_ms()), 10)
        .await
        .expect("active")
        .is_empty());
    assert!(matches!(
        store.update_grant("nope", &|_| Ok(())).await,
        Err(ApprovalStoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn finished_records_leave_memory_after_a_day() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("a.jsonl");
    let store = FileStore::open(&path).await.expect("open");
    let mut old = ticket("t6", "alice", ApprovalMode::Hold, 1);
    old.created_at = now_ms() - 3 * KEEP_FINISHED;
    old.expires_at = now_ms() - 2 * KEEP_FINISHED;
    old.state = TicketState::Withdrawn;
    store.create_ticket(&old).await.expect("create");
    // A hold-mode approval a day old ended too (its statement ran).
    let mut ran = ticket("t8", "alice", ApprovalMode::Hold, 1);
    ran.created_at = old.created_at;
    ran.expires_at = old.expires_at;
    ran.state = TicketState::Approved;
    store.create_ticket(&ran).await.expect("create");
    // Pruning runs at most once a minute: as if the last run were long ago.
    store.inner.state.lock().expect("state").pruned_at = 0;
    store
        .create_ticket(&ticket("t9", "alice", ApprovalMode::Hold, 1))
        .await
        .expect("create");
    assert!(store.ticket("t6").await.expect("read").is_none());
    assert!(store.ticket("t8").await.expect("read").is_none());
    assert!(store.ticket("t9").await.expect("read").is_some());
    // A torn line in the file is skipped; the rest is read.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"record\":"))
        .expect("torn");
    store
        .create_ticket(&ticket("t7", "alice", ApprovalMode::Hold, 1))
        .await
        .expect("create after a torn line");
    drop(store);
    let again = FileStore::open(&path).await.expect("reopen");
    assert!(again.ticket("t7").await.expect("read").is_some());
}
