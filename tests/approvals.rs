//! Approvals end to end: statements held in live sessions (simple and
//! extended protocol, inside transactions, pipelined), approved or denied
//! in-process through `gateway.approvals().vote(...)`, expiring, withdrawn
//! by cancel, disconnect and shutdown; ticket mode and its exact binding;
//! break-glass; grants; the file store across a restart; psql and pgbench.
//!
//! Tests synchronise by polling the store's pending tickets, never by
//! sleeping for a decision.

mod support;

use pgward::approvals::model::{GrantScope, GrantSubject, Ticket, TicketState, VoteError};
use pgward::approvals::ApprovalError;
use pgward::policy::rules::Identity;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::approvals::ticket_of;
use support::raw::{query, RawClient};
use support::{connect_with_messages, message, sqlstate, Backend, Pgward, DB, PASSWORD, USER};

/// The approvers used throughout: members of `ops`.
fn carol() -> Identity {
    Identity::new("carol", ["ops"])
}

fn dave() -> Identity {
    Identity::new("dave", ["ops"])
}

/// A fresh table of alice's (she acts as its owner), with one row (1, 1).
async fn table(pw: &Pgward, name: &str) {
    let c = pw.connect().await;
    c.batch_execute(&format!(
        "CREATE TABLE {name} (id int PRIMARY KEY, v int, secret text); \
         INSERT INTO {name} VALUES (1, 1, 's')"
    ))
    .await
    .expect("table");
}

/// pgward whose UPDATEs of `table` need approval by `ops`; `rule` and
/// `approvals` are extra lines for the rule and `[approvals]`; the store is
/// a file in `dir`.
fn config(dir: &Path, table: &str, rule: &str, approvals: &str) -> String {
    format!(
        "{}\n[approvals]\npath = \"{}\"\napprovers = [\"ops\"]\npublic_url = \"http://127.0.0.1:9/approvals\"\n{approvals}\n\
         [policy]\n[[policy.rules]]\nname = \"approve-{table}\"\naction = \"require_approval\"\n\
         kinds = [\"update\", \"delete\"]\nrelations = [\"{table}\"]\nmessage = \"changes need a second pair of eyes\"\n{rule}\n",
        Backend::shared().config("", ""),
        dir.join("approvals.jsonl").display()
    )
}

async fn start(table_name: &str, rule: &str, approvals: &str) -> (Pgward, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let text = config(dir.path(), table_name, rule, approvals);
    let pw = Pgward::start_in(&text, Backend::shared().cluster.dir()).await;
    table(&pw, table_name).await;
    (pw, dir)
}

/// Runs `sql` (simple protocol) on `client` in a task of its own.
fn in_background(
    client: &Arc<tokio_postgres::Client>,
    sql: &str,
) -> tokio::task::JoinHandle<Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>>
{
    let (client, sql) = (Arc::clone(client), sql.to_owned());
    tokio::spawn(async move { client.simple_query(&sql).await })
}

/// Waits (polling the store) for a pending ticket other than `except`.
async fn pending(pw: &Pgward, except: &[&str]) -> Ticket {
    for _ in 0..1000 {
        let tickets = pw
            .gateway
            .approvals()
            .tickets(true, 100)
            .await
            .expect("tickets");
        if let Some(t) = tickets
            .into_iter()
            .find(|t| !except.contains(&t.id.as_str()))
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no ticket became pending");
}

/// Waits (polling the store) until ticket `id` is in `state`.
async fn ticket_in(pw: &Pgward, id: &str, state: TicketState) -> Ticket {
    let mut last = None;
    for _ in 0..1000 {
        let t = pw.gateway.approvals().ticket(id).await.expect("ticket");
        if let Some(t) = t {
            if t.state == state {
                return t;
            }
            last = Some(t);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("ticket {id} never became {state:?}: {last:?}");
}

async fn value(pw: &Pgward, table: &str) -> i32 {
    let c = pw.connect().await;
    c.query_one(&format!("SELECT v FROM {table} WHERE id = 1"), &[])
        .await
        .expect("read")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_update_in_a_transaction_is_approved_and_commit_keeps_it() {
    let (pw, _dir) = start("appr_tx", "", "").await;
    let (client, mut notices) = connect_with_messages(&pw.client_config(USER, PASSWORD)).await;
    let client = Arc::new(client);
    client.batch_execute("BEGIN").await.expect("begin");
    let c = Arc::clone(&client);
    let update = tokio::spawn(async move {
        c.execute(
            "/* reason: INC-7 refund */ UPDATE appr_tx SET v = $1 WHERE id = 1",
            &[&2i32],
        )
        .await
    });
    let t = pending(&pw, &[]).await;
    assert_eq!(t.requester.user, USER);
    assert_eq!(t.requester.database, DB);
    assert_eq!(t.transaction, "transaction");
    assert_eq!(t.rule, "approve-appr_tx");
    assert_eq!(
        t.rule_message.as_deref(),
        Some("changes need a second pair of eyes")
    );
    assert_eq!(t.justification.as_deref(), Some("INC-7 refund"));
    assert!(t.statement.contains("UPDATE appr_tx SET v = $1"), "{t:?}");
    // tokio-postgres binds int4 in binary; the Describe gave its type.
    assert_eq!(t.params.len(), 1);
    assert_eq!(t.params[0].value.as_deref(), Some("2"));
    assert_eq!(t.params[0].type_name.as_deref(), Some("int4"));
    // The client was told at once, naming the ticket and its page.
    let notice = loop {
        match notices.recv().await.expect("notice") {
            tokio_postgres::AsyncMessage::Notice(n) => break n,
            _ => continue,
        }
    };
    assert_eq!(
        notice.message(),
        format!(
            "statement held for approval: ticket {} (http://127.0.0.1:9/approvals/{})",
            t.id, t.id
        )
    );
    let voted = pw
        .gateway
        .approvals()
        .vote(&t.id, &carol(), true, Some("looks right".into()))
        .await
        .expect("vote");
    assert_eq!(voted.state, TicketState::Approved);
    assert_eq!(update.await.expect("task").expect("ran"), 1);
    client.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(value(&pw, "appr_tx").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_statement_fails_its_transaction_like_any_error() {
    let (pw, _dir) = start("appr_deny", "", "").await;
    let client = Arc::new(pw.connect().await);
    client.batch_execute("BEGIN").await.expect("begin");
    let update = in_background(&client, "UPDATE appr_deny SET v = 5 WHERE id = 1");
    let t = pending(&pw, &[]).await;
    pw.gateway
        .approvals()
        .vote(&t.id, &carol(), false, Some("not during the freeze".into()))
        .await
        .expect("vote");
    let e = update.await.expect("task").expect_err("denied");
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(
        message(&e),
        "statement denied by carol: not during the freeze"
    );
    let aborted = client.simple_query("SELECT 1").await.expect_err("aborted");
    assert_eq!(sqlstate(&aborted), "25P02");
    client.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(value(&pw, "appr_deny").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_pipelined_results_arrive_before_the_hold() {
    let (pw, _dir) = start("appr_pipe", "", "").await;
    // Simple protocol, pipelined by hand.
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let mut batch = query("SELECT 1 AS first");
    batch.extend(query("UPDATE appr_pipe SET v = 3 WHERE id = 1"));
    batch.extend(query("SELECT 3 AS third"));
    raw.send(&batch).await;
    let first = raw.until_ready().await;
    assert!(first
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"1")));
    let t = pending(&pw, &[]).await;
    pw.gateway
        .approvals()
        .vote(&t.id, &carol(), true, None)
        .await
        .expect("vote");
    let second = raw.until_ready().await;
    assert!(second
        .iter()
        .any(|m| m.tag == b'C' && m.body.starts_with(b"UPDATE 1")));
    let third = raw.until_ready().await;
    assert!(third
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"3")));

    // Extended protocol, pipelined by tokio-postgres: the SELECT's rows
    // come back while the UPDATE sent after it waits.
    let client = pw.connect().await;
    let select_stmt = client.prepare("SELECT 41 + 1").await.expect("prepare");
    let update_stmt = client
        .prepare("UPDATE appr_pipe SET v = $1 WHERE id = $2")
        .await
        .expect("prepare is not held");
    let select = client.query_one(&select_stmt, &[]);
    let update = client.execute(&update_stmt, &[&4i32, &1i32]);
    tokio::pin!(select, update);
    // Polled in this order, the SELECT's messages go out first.
    let row = tokio::select! {
        biased;
        row = &mut select => row.expect("select ran before the hold ended"),
        done = &mut update => panic!("the update was not held: {done:?}"),
    };
    assert_eq!(row.get::<_, i32>(0), 42);
    let t2 = pending(&pw, &[&t.id]).await;
    assert_eq!(t2.params.len(), 2);
    let voting = async {
        pw.gateway
            .approvals()
            .vote(&t2.id, &carol(), true, None)
            .await
            .expect("vote")
    };
    let (ran, _) = tokio::join!(update, voting);
    assert_eq!(ran.map_err(|e| format!("{e:?}")), Ok(1));
    assert_eq!(value(&pw, "appr_pipe").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_times_out_and_its_ticket_expires() {
    let (pw, _dir) = start("appr_timeout", "hold_timeout = \"1s\"", "").await;
    let client = pw.connect().await;
    let e = client
        .simple_query("UPDATE appr_timeout SET v = 9 WHERE id = 1")
        .await
        .expect_err("timed out");
    assert_eq!(sqlstate(&e), "57014");
    assert!(message(&e).contains("no decision on ticket"), "{e:?}");
    let all = pw
        .gateway
        .approvals()
        .tickets(false, 10)
        .await
        .expect("all");
    let t = ticket_in(&pw, &all[0].id, TicketState::Expired).await;
    assert_eq!(t.expires_at - t.created_at, 1000);
    // A late vote is not counted.
    let late = pw
        .gateway
        .approvals()
        .vote(&t.id, &carol(), true, None)
        .await;
    assert!(
        matches!(late, Err(ApprovalError::Vote(VoteError::NotPending { .. }))),
        "{late:?}"
    );
    client
        .simple_query("SELECT 1")
        .await
        .expect("session goes on");
    assert_eq!(value(&pw, "appr_timeout").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_transaction_the_shorter_deadline_applies() {
    let (pw, _dir) = start(
        "appr_txdeadline",
        "",
        "hold_timeout = \"5m\"\nhold_timeout_in_transaction = \"1s\"",
    )
    .await;
    let client = pw.connect().await;
    client.batch_execute("BEGIN").await.expect("begin");
    let e = client
        .simple_query("UPDATE appr_txdeadline SET v = 9 WHERE id = 1")
        .await
        .expect_err("timed out");
    assert_eq!(sqlstate(&e), "57014");
    let all = pw
        .gateway
        .approvals()
        .tickets(false, 10)
        .await
        .expect("all");
    assert_eq!(all[0].expires_at - all[0].created_at, 1000);
    client.batch_execute("ROLLBACK").await.expect("rollback");
    // Outside a transaction, the hold waits longer.
    let client = Arc::new(client);
    let update = in_background(&client, "UPDATE appr_txdeadline SET v = 9 WHERE id = 1");
    let t = pending(&pw, &[&all[0].id]).await;
    assert_eq!(t.expires_at - t.created_at, 300_000);
    pw.gateway
        .approvals()
        .vote(&t.id, &carol(), false, None)
        .await
        .expect("deny");
    assert_eq!(
        sqlstate(&update.await.expect("task").expect_err("denied")),
        "42501"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_withdraws_the_ticket() {
    let (pw, _dir) = start("appr_cancel", "", "").await;
    let client = Arc::new(pw.connect().await);
    let token = client.cancel_token();
    // A few rounds: the server had nothing to stop, so no signal may reach
    // it late and cancel the statement that follows (it did, now and then,
    // when pgward passed the cancel on to the idle server).
    for _ in 0..3 {
        let update = in_background(&client, "UPDATE appr_cancel SET v = 2 WHERE id = 1");
        let t = pending(&pw, &[]).await;
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("cancel");
        let e = update.await.expect("task").expect_err("cancelled");
        assert_eq!(sqlstate(&e), "57014");
        let t = ticket_in(&pw, &t.id, TicketState::Withdrawn).await;
        assert_eq!(t.end_reason.as_deref(), Some("cancelled by the client"));
        client
            .simple_query("SELECT pg_sleep(0.05)")
            .await
            .expect("session goes on");
    }
    assert_eq!(value(&pw, "appr_cancel").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_withdraws_the_ticket() {
    let (pw, _dir) = start("appr_gone", "", "").await;
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    raw.send(&query("UPDATE appr_gone SET v = 2 WHERE id = 1"))
        .await;
    let t = pending(&pw, &[]).await;
    drop(raw);
    let t = ticket_in(&pw, &t.id, TicketState::Withdrawn).await;
    assert_eq!(t.end_reason.as_deref(), Some("the client disconnected"));
    assert_eq!(value(&pw, "appr_gone").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requesters_and_outsiders_cannot_vote() {
    let (pw, _dir) = start("appr_self", "", "").await;
    let client = Arc::new(pw.connect().await);
    let update = in_background(&client, "UPDATE appr_self SET v = 2 WHERE id = 1");
    let t = pending(&pw, &[]).await;
    let approvals = pw.gateway.approvals();
    // Even an approver-group member cannot approve their own statement.
    let own = approvals
        .vote(&t.id, &Identity::new(USER, ["ops"]), true, None)
        .await;
    assert!(
        matches!(own, Err(ApprovalError::Vote(VoteError::SelfApproval(_)))),
        "{own:?}"
    );
    let outsider = approvals
        .vote(&t.id, &Identity::new("eve", ["dev"]), true, None)
        .await;
    assert!(
        matches!(
            outsider,
            Err(ApprovalError::Vote(VoteError::NotAnApprover(_)))
        ),
        "{outsider:?}"
    );
    let none = approvals
        .vote("0000000000000000", &carol(), true, None)
        .await;
    assert!(
        matches!(none, Err(ApprovalError::Vote(VoteError::NotFound(_)))),
        "{none:?}"
    );
    assert_eq!(
        approvals
            .ticket(&t.id)
            .await
            .expect("read")
            .expect("there")
            .state,
        TicketState::Pending
    );
    assert!(!update.is_finished());
    approvals
        .vote(&t.id, &carol(), true, None)
        .await
        .expect("vote");
    update.await.expect("task").expect("ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_run_it_and_one_denial_ends_it() {
    let (pw, _dir) = start("appr_two", "approvals_required = 2", "").await;
    let approvals = Arc::clone(pw.gateway.approvals());
    let client = Arc::new(pw.connect().await);
    let update = in_background(&client, "UPDATE appr_two SET v = 2 WHERE id = 1");
    let t = pending(&pw, &[]).await;
    assert_eq!(t.threshold, 2);
    let once = approvals
        .vote(&t.id, &carol(), true, None)
        .await
        .expect("one");
    assert_eq!(once.state, TicketState::Pending);
    let again = approvals.vote(&t.id, &carol(), true, None).await;
    assert!(
        matches!(again, Err(ApprovalError::Vote(VoteError::AlreadyVoted(_)))),
        "{again:?}"
    );
    assert!(!update.is_finished(), "one approval leaves it held");
    let twice = approvals
        .vote(&t.id, &dave(), true, None)
        .await
        .expect("two");
    assert_eq!(twice.state, TicketState::Approved);
    update.await.expect("task").expect("ran");
    assert_eq!(value(&pw, "appr_two").await, 2);

    let update = in_background(&client, "UPDATE appr_two SET v = 3 WHERE id = 1");
    let t2 = pending(&pw, &[&t.id]).await;
    approvals
        .vote(&t2.id, &carol(), true, None)
        .await
        .expect("one");
    let denied = approvals
        .vote(&t2.id, &dave(), false, None)
        .await
        .expect("deny");
    assert_eq!(denied.state, TicketState::Denied);
    let e = update.await.expect("task").expect_err("denied");
    assert_eq!(
        (sqlstate(&e), message(&e)),
        ("42501".into(), "statement denied by dave".into())
    );
    assert_eq!(value(&pw, "appr_two").await, 2);
}

/// Runs `UPDATE ... SET v = $1` through the extended protocol.
async fn set_v(
    client: &tokio_postgres::Client,
    table: &str,
    v: i32,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(&format!("UPDATE {table} SET v = $1 WHERE id = 1"), &[&v])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_mode_runs_the_identical_statement_once() {
    let (pw, _dir) = start("appr_ticket", "approval_mode = \"ticket\"", "").await;
    let approvals = Arc::clone(pw.gateway.approvals());
    let client = pw.connect().await;
    let e = set_v(&client, "appr_ticket", 7).await.expect_err("refused");
    let id = ticket_of(&e);
    assert!(
        message(&e).contains(&format!("(http://127.0.0.1:9/approvals/{id})")),
        "{e:?}"
    );
    // A retry before the decision names the same ticket.
    let e = set_v(&client, "appr_ticket", 7)
        .await
        .expect_err("still pending");
    assert_eq!(ticket_of(&e), id);
    assert!(message(&e).contains("still pending"), "{e:?}");
    let approved = approvals
        .vote(&id, &carol(), true, None)
        .await
        .expect("vote");
    assert!(approved.valid_until.is_some());
    // Other parameters are another statement: not covered.
    let other = set_v(&client, "appr_ticket", 8)
        .await
        .expect_err("not covered");
    assert_ne!(ticket_of(&other), id);
    assert_eq!(value(&pw, "appr_ticket").await, 1);
    // The identical statement runs, once.
    assert_eq!(set_v(&client, "appr_ticket", 7).await.expect("runs"), 1);
    assert_eq!(value(&pw, "appr_ticket").await, 7);
    ticket_in(&pw, &id, TicketState::Used).await;
    let after = set_v(&client, "appr_ticket", 7).await.expect_err("used up");
    assert_ne!(ticket_of(&after), id);
    // Another identity's identical text is not covered either.
    let c = pw.connect().await;
    let simple = c
        .simple_query("UPDATE appr_ticket SET v = 7 WHERE id = 1")
        .await
        .expect_err("a different binding (no parameters)");
    assert_ne!(ticket_of(&simple), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_runs_at_once_and_is_recorded() {
    let (pw, _dir) = start("appr_glass", "break_glass = [\"dev\"]", "").await;
    let client = pw.connect().await;
    let rows = client
        .execute("UPDATE appr_glass SET v = 6 WHERE id = 1", &[])
        .await
        .expect("ran at once");
    assert_eq!(rows, 1);
    // Recorded before it ran.
    let all = pw
        .gateway
        .approvals()
        .tickets(false, 10)
        .await
        .expect("all");
    assert_eq!(all.len(), 1);
    let t = &all[0];
    assert!(t.break_glass);
    assert_eq!(t.state, TicketState::Approved);
    assert_eq!(t.votes.len(), 1);
    assert_eq!(t.votes[0].approver, USER, "self-approved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_grant_runs_its_statements_until_revoked() {
    let (pw, _dir) = start("appr_grant", "", "max_grant = \"1h\"").await;
    let approvals = Arc::clone(pw.gateway.approvals());
    let scope = GrantScope::Rule("approve-appr_grant".into());
    let subject = GrantSubject::User(USER.into());
    let grant = |d: u64, by: Identity| {
        let (approvals, scope, subject) = (Arc::clone(&approvals), scope.clone(), subject.clone());
        async move {
            approvals
                .create_grant(subject, scope, Duration::from_secs(d), &by, None)
                .await
        }
    };
    assert!(
        matches!(grant(7200, carol()).await, Err(ApprovalError::Grant(_))),
        "over max_grant"
    );
    assert!(matches!(
        grant(60, Identity::new("eve", ["dev"])).await,
        Err(ApprovalError::Grant(_))
    ));
    let own = approvals
        .create_grant(
            subject.clone(),
            scope.clone(),
            Duration::from_secs(60),
            &Identity::new(USER, ["ops"]),
            None,
        )
        .await;
    assert!(matches!(own, Err(ApprovalError::Grant(_))), "no self-grant");
    let bad_role = approvals
        .create_grant(
            subject.clone(),
            GrantScope::Role {
                database: DB.into(),
                role: "postgres".into(),
            },
            Duration::from_secs(60),
            &carol(),
            None,
        )
        .await;
    assert!(
        matches!(bad_role, Err(ApprovalError::Grant(_))),
        "{bad_role:?}"
    );
    let made = grant(600, carol()).await.expect("grant");
    let client = pw.connect().await;
    assert_eq!(
        client
            .execute("UPDATE appr_grant SET v = 4 WHERE id = 1", &[])
            .await
            .expect("granted"),
        1
    );
    approvals
        .revoke_grant(&made.id, &carol(), Some("done".into()))
        .await
        .expect("revoke");
    let revoked_again = approvals.revoke_grant(&made.id, &carol(), None).await;
    assert!(revoked_again.is_err());
    let client = Arc::new(client);
    // The granted run was recorded (before it ran); nothing is pending.
    let recorded = approvals.tickets(false, 10).await.expect("all");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].state, TicketState::Approved);
    assert!(
        recorded[0]
            .end_reason
            .as_deref()
            .is_some_and(|r| r.contains(&made.id)),
        "{recorded:?}"
    );
    let update = in_background(&client, "UPDATE appr_grant SET v = 5 WHERE id = 1");
    let except = [recorded[0].id.as_str()];
    let t = pending(&pw, &except).await;
    approvals
        .vote(&t.id, &carol(), false, None)
        .await
        .expect("deny");
    assert!(update.await.expect("task").is_err());
    assert_eq!(value(&pw, "appr_grant").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_a_held_statement_and_withdraws_it() {
    let (pw, _dir) = start("appr_shutdown", "", "").await;
    let client = Arc::new(pw.connect().await);
    let update = in_background(&client, "UPDATE appr_shutdown SET v = 2 WHERE id = 1");
    let t = pending(&pw, &[]).await;
    let approvals = Arc::clone(pw.gateway.approvals());
    pw.shutdown().await;
    let e = update.await.expect("task").expect_err("refused");
    assert_eq!(sqlstate(&e), "57P01", "{e:?}");
    for _ in 0..1000 {
        let now = approvals.ticket(&t.id).await.expect("read").expect("there");
        if now.state == TicketState::Withdrawn {
            assert_eq!(now.end_reason.as_deref(), Some("pgward shut down"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the ticket was not withdrawn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_store_keeps_approvals_and_grants_across_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let text = config(dir.path(), "appr_restart", "approval_mode = \"ticket\"", "");
    let pw = Pgward::start_in(&text, Backend::shared().cluster.dir()).await;
    table(&pw, "appr_restart").await;
    let client = pw.connect().await;
    let id = ticket_of(&set_v(&client, "appr_restart", 3).await.expect_err("ticket"));
    pw.gateway
        .approvals()
        .vote(&id, &carol(), true, None)
        .await
        .expect("vote");
    let grant = pw
        .gateway
        .approvals()
        .create_grant(
            GrantSubject::Group("support".into()),
            GrantScope::Rule("approve-appr_restart".into()),
            Duration::from_secs(600),
            &carol(),
            Some("on call".into()),
        )
        .await
        .expect("grant");
    drop(client);
    pw.shutdown().await;

    let pw = Pgward::start_in(&text, Backend::shared().cluster.dir()).await;
    let grants = pw
        .gateway
        .approvals()
        .grants(true, 10)
        .await
        .expect("grants");
    assert_eq!(
        grants.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        [grant.id.as_str()]
    );
    let client = pw.connect().await;
    assert_eq!(
        set_v(&client, "appr_restart", 3)
            .await
            .expect("approved before the restart"),
        1
    );
    assert_eq!(value(&pw, "appr_restart").await, 3);
}

/// A task that approves (as carol) the next ticket to be pending other
/// than `except`, and returns its id.
fn approve_next(pw: &Arc<Pgward>, except: Vec<String>) -> tokio::task::JoinHandle<String> {
    let pw = Arc::clone(pw);
    tokio::spawn(async move {
        let except: Vec<&str> = except.iter().map(String::as_str).collect();
        let t = pending(&pw, &except).await;
        pw.gateway
            .approvals()
            .vote(&t.id, &carol(), true, None)
            .await
            .expect("vote");
        t.id
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_waits_for_approval_given_from_another_task() {
    let (pw, _dir) = start("appr_psql", "", "").await;
    let pw = Arc::new(pw);
    let approve = approve_next(&pw, Vec::new());
    let out = pw
        .psql(
            &[],
            "/* reason: psql test */ UPDATE appr_psql SET v = 8 WHERE id = 1",
        )
        .await;
    approve.await.expect("approver");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("UPDATE 1"));
    assert!(
        stderr.contains("NOTICE:  statement held for approval: ticket "),
        "{stderr}"
    );
    assert_eq!(value(&pw, "appr_psql").await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbench_script_statement_is_held_and_approved() {
    let (pw, dir) = start("appr_bench", "", "").await;
    let script = dir.path().join("script.sql");
    std::fs::write(&script, "UPDATE appr_bench SET v = v + 10 WHERE id = 1;\n").expect("script");
    let pw = Arc::new(pw);
    let mut seen: Vec<String> = Vec::new();
    // Every query mode: simple, extended (held at its Bind), prepared.
    for mode in ["simple", "extended", "prepared"] {
        let approve = approve_next(&pw, seen.clone());
        let mut cmd = std::process::Command::new(Backend::shared().cluster.program("pgbench"));
        cmd.env("PGPASSWORD", PASSWORD)
            .args(["-n", "-M", mode, "-f"])
            .arg(&script)
            .args(["-t", "1"])
            .arg(pw.dsn());
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("pgbench"))
            .await
            .expect("pgbench");
        seen.push(approve.await.expect("approver"));
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains("number of transactions actually processed: 1/1"),
            "{mode}: {report}"
        );
    }
    assert_eq!(value(&pw, "appr_bench").await, 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_that_may_be_masked_are_withheld_from_approvers() {
    let (pw, _dir) = start(
        "appr_mask",
        "",
        "[[masking.rules]]\nname = \"m\"\ncolumns = [\"appr_mask.secret\"]\nstrategy = \"redact\"\ngroups = [\"support\"]\n",
    )
    .await;
    let client = Arc::new(pw.connect().await);
    let c = Arc::clone(&client);
    let update = tokio::spawn(async move {
        c.execute(
            "UPDATE appr_mask SET secret = $1 WHERE id = $2",
            &[&"hunter2", &1i32],
        )
        .await
    });
    let t = pending(&pw, &[]).await;
    assert_eq!(t.params.len(), 2);
    assert!(
        t.params
            .iter()
            .all(|p| p.value.as_deref() == Some("<withheld>")),
        "{:?}",
        t.params
    );
    pw.gateway
        .approvals()
        .vote(&t.id, &carol(), true, None)
        .await
        .expect("vote");
    assert_eq!(update.await.expect("task").expect("ran"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_records_tickets_outcomes_and_approvers() {
    let keys = tempfile::tempdir().expect("dir");
    let (private, _) = pgward::record::chain::generate_key();
    std::fs::write(keys.path().join("audit.key"), private).expect("key");
    let trail = keys.path().join("trail");
    let audit = format!(
        "[audit]\nenabled = true\ndirectory = \"{}\"\nsigning_key_file = \"{}\"\n",
        trail.display(),
        keys.path().join("audit.key").display()
    );
    let ticket_rule = "[[policy.rules]]\nname = \"ticket-appr_audit2\"\naction = \"require_approval\"\n\
                       approval_mode = \"ticket\"\nkinds = [\"update\"]\nrelations = [\"appr_audit2\"]\n";
    let (pw, _dir) = start("appr_audit", ticket_rule, &audit).await;
    table(&pw, "appr_audit2").await;
    let approvals = Arc::clone(pw.gateway.approvals());
    let client = Arc::new(pw.connect().await);

    let approved = in_background(&client, "UPDATE appr_audit SET v = 2 WHERE id = 1");
    let t1 = pending(&pw, &[]).await;
    approvals
        .vote(&t1.id, &carol(), true, None)
        .await
        .expect("approve");
    approved.await.expect("task").expect("ran");
    let denied = in_background(&client, "UPDATE appr_audit SET v = 3 WHERE id = 1");
    let t2 = pending(&pw, &[&t1.id]).await;
    approvals
        .vote(&t2.id, &dave(), false, Some("no".into()))
        .await
        .expect("deny");
    assert!(denied.await.expect("task").is_err());
    let t3 = ticket_of(&set_v(&client, "appr_audit2", 5).await.expect_err("ticket"));
    approvals
        .vote(&t3, &carol(), true, None)
        .await
        .expect("approve");
    assert_eq!(set_v(&client, "appr_audit2", 5).await.expect("used"), 1);
    drop(client);
    pw.shutdown().await;

    let mut files: Vec<_> = std::fs::read_dir(&trail)
        .expect("trail")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let records: Vec<serde_json::Value> = files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("read")
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON"))
                .collect::<Vec<serde_json::Value>>()
        })
        .filter(|r: &serde_json::Value| r["type"] == "statement" && r["approval"].is_object())
        .collect();
    let of = |statement: &str, decision: &str| {
        records
            .iter()
            .find(|r| r["statement"] == statement && r["decision"] == decision)
            .unwrap_or_else(|| panic!("no {decision} record of {statement}: {records:#?}"))
            .clone()
    };
    let r = of("UPDATE appr_audit SET v = 2 WHERE id = 1", "allowed");
    assert_eq!(r["approval"]["ticket"], t1.id.as_str());
    assert_eq!(r["approval"]["outcome"], "approved");
    assert_eq!(r["approval"]["approvers"], serde_json::json!(["carol"]));
    assert_eq!(r["held_by"], "rules");
    let r = of("UPDATE appr_audit SET v = 3 WHERE id = 1", "refused");
    assert_eq!(r["approval"]["outcome"], "denied");
    assert_eq!(r["approval"]["approvers"], serde_json::json!(["dave"]));
    assert_eq!(r["sqlstate"], "42501");
    let r = of("UPDATE appr_audit2 SET v = $1 WHERE id = 1", "refused");
    assert_eq!(r["approval"]["outcome"], "ticket_refused");
    assert_eq!(r["approval"]["ticket"], t3.as_str());
    let r = of("UPDATE appr_audit2 SET v = $1 WHERE id = 1", "allowed");
    assert_eq!(r["message"], "execute");
    assert_eq!(r["approval"]["outcome"], "ticket_used");
    assert_eq!(r["approval"]["ticket"], t3.as_str());
    assert_eq!(r["approval"]["approvers"], serde_json::json!(["carol"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_new_is_held_once_shutdown_has_begun() {
    let (pw, _dir) = start("appr_draining", "", "").await;
    let approvals = Arc::clone(pw.gateway.approvals());
    let registry = Arc::clone(&pw.gateway.registry);
    let client = pw.connect().await;
    // A transaction keeps the drain waiting for this session.
    client.batch_execute("BEGIN").await.expect("begin");
    let stopping = tokio::spawn(pw.shutdown());
    for _ in 0..1000 {
        if registry.shutdown_phase() != pgward::session::ShutdownPhase::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = client
        .simple_query("UPDATE appr_draining SET v = 2 WHERE id = 1")
        .await
        .expect_err("refused at once");
    assert_eq!(sqlstate(&e), "57P01", "{e:?}");
    drop(client);
    stopping.await.expect("stopped");
    let all = approvals.tickets(false, 10).await.expect("all");
    assert_eq!(all.len(), 1);
    ticket_in_store(&approvals, &all[0].id, TicketState::Withdrawn).await;
}

/// Waits (polling) until ticket `id` is in `state`, without a running pgward.
async fn ticket_in_store(approvals: &pgward::approvals::Approvals, id: &str, state: TicketState) {
    for _ in 0..1000 {
        if approvals.ticket(id).await.expect("read").map(|t| t.state) == Some(state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("ticket {id} never became {state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_pile_up_pending_tickets() {
    let (pw, _dir) = start("appr_flood", "approval_mode = \"ticket\"", "").await;
    let client = pw.connect().await;
    let max = pgward::approvals::service::MAX_PENDING_PER_IDENTITY;
    for v in 0..max {
        let e = set_v(&client, "appr_flood", i32::try_from(v).expect("small"))
            .await
            .expect_err("ticket");
        ticket_of(&e);
    }
    let e = set_v(&client, "appr_flood", -1).await.expect_err("limited");
    assert_eq!(sqlstate(&e), "53000", "{e:?}");
    assert!(message(&e).contains("tickets pending already"), "{e:?}");
    // A retry of a pending one still names its ticket.
    let again = set_v(&client, "appr_flood", 0).await.expect_err("pending");
    assert!(message(&again).contains("still pending"), "{again:?}");
    assert_eq!(
        pw.gateway
            .approvals()
            .tickets(true, 100)
            .await
            .expect("pending")
            .len(),
        max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_on_one_instance_releases_a_statement_held_on_another() {
    // Two pgward processes' worth of state on one store file: the vote is
    // taken by A, the statement waits in B, whose follower reads A's write.
    let dir = tempfile::tempdir().expect("dir");
    let text = config(dir.path(), "appr_shared", "", "");
    let a = Pgward::start_in(&text, Backend::shared().cluster.dir()).await;
    let b = Pgward::start_in(&text, Backend::shared().cluster.dir()).await;
    table(&a, "appr_shared").await;
    let client = Arc::new(b.connect().await);
    let update = in_background(&client, "UPDATE appr_shared SET v = 2 WHERE id = 1");
    // A sees B's ticket through the file.
    let t = pending(&a, &[]).await;
    assert_eq!(t.requester.instance, b.gateway.approvals().instance());
    a.gateway
        .approvals()
        .vote(&t.id, &carol(), true, None)
        .await
        .expect("vote on A");
    update.await.expect("task").expect("ran on B");
    assert_eq!(value(&a, "appr_shared").await, 2);
}

/// A statement prepared in the extended protocol (whose Parse is not held:
/// approval is asked at Bind) and run by SQL `EXECUTE` in a simple Query
/// (the two share one namespace) is held all the same: EXECUTE inherits
/// the prepared statement's verdict, and a denial keeps it from running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_execute_of_a_protocol_prepared_statement_is_held() {
    use support::raw::error_of;
    let (pw, _dir) = start("appr_exec", "", "").await;
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    // The Parse goes through: approval is asked when it runs.
    let mut parse = bytes::BytesMut::new();
    pgward::wire::encode::parse_named(&mut parse, b"up", "UPDATE appr_exec SET v = 9 WHERE id = 1");
    raw.send(&parse).await;
    raw.send(&support::raw::message(b'S', &[])).await;
    let parsed = raw.until_ready().await;
    assert!(error_of(&parsed).is_none(), "{parsed:?}");
    let run = tokio::spawn(async move {
        raw.send(&query("EXECUTE up")).await;
        raw.until_ready().await
    });
    let t = pending(&pw, &[]).await;
    // The approver reads what EXECUTE runs, not only its name.
    assert_eq!(
        t.statement,
        "EXECUTE up\n\n-- \"up\" runs the prepared statement:\nUPDATE appr_exec SET v = 9 WHERE id = 1"
    );
    pw.gateway
        .approvals()
        .vote(&t.id, &carol(), false, Some("no".into()))
        .await
        .expect("deny");
    let answer = run.await.expect("task");
    let e = error_of(&answer).expect("denied");
    assert_eq!(e.sqlstate(), "42501", "{answer:?}");
    assert_eq!(value(&pw, "appr_exec").await, 1);
}
