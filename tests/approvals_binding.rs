//! What a ticket-mode approval covers: the statement as the server reads
//! it, not only its bytes. An approval of one reading is never used by a
//! statement whose bytes are the same but that the server reads otherwise
//! (other declared parameter types, another client_encoding).

mod support;

use pgward::approvals::model::TicketState;
use pgward::policy::rules::Identity;
use std::sync::Arc;
use std::time::Duration;
use support::approvals::{shown, ticket_of};
use support::raw::{error_of, query, RawClient};
use support::{Backend, Pgward, DB, PASSWORD, USER};
use tokio_postgres::types::Type;

fn carol() -> Identity {
    Identity::new("carol", ["ops"])
}

/// pgward whose UPDATEs of `table` need a ticket-mode approval by `ops`,
/// and the table, with rows (1, 1, `secrets[0]`) and (2, 2, `secrets[1]`).
async fn start(table: &str, secrets: [&str; 2]) -> (Pgward, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let text = format!(
        "{}\n[approvals]\npath = \"{}\"\napprovers = [\"ops\"]\n\
         [policy]\n[[policy.rules]]\nname = \"approve-{table}\"\naction = \"require_approval\"\n\
         kinds = [\"update\"]\nrelations = [\"{table}\"]\napproval_mode = \"ticket\"\n",
        Backend::shared().config("", ""),
        dir.path().join("approvals.jsonl").display()
    );
    let pw = Pgward::start_in(&text, Backend::shared().cluster.dir()).await;
    pw.connect()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v int, secret text); \
             INSERT INTO {table} VALUES (1, 1, '{}'), (2, 2, '{}')",
            secrets[0], secrets[1]
        ))
        .await
        .expect("table");
    (pw, dir)
}

/// Approves ticket `id` as carol and waits until the store says so.
async fn approve(pw: &Pgward, id: &str) {
    let approvals = Arc::clone(pw.gateway.approvals());
    approvals
        .vote(id, &carol(), true, None)
        .await
        .expect("vote");
    for _ in 0..500 {
        if let Ok(Some(t)) = approvals.ticket(id).await {
            if t.state == TicketState::Approved {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("ticket {id} was never approved");
}

async fn rows(pw: &Pgward, sql: &str) -> Vec<(i32, String)> {
    pw.connect()
        .await
        .query(sql, &[])
        .await
        .expect("read")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The approver is shown `$1 float4 (binary) = 1`; the same four bytes
/// declared as int4 are 1065353216. The approval covers the first only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_does_not_cover_the_same_bytes_declared_as_another_type() {
    let (pw, _dir) = start("bind_types", ["s", "s"]).await;
    let client = pw.connect().await;
    let sql = "UPDATE bind_types SET v = $1 WHERE id = 1";
    let as_float = client
        .prepare_typed(sql, &[Type::FLOAT4])
        .await
        .expect("parse");
    let e = client
        .execute(&as_float, &[&1.0f32])
        .await
        .expect_err("needs approval");
    let id = ticket_of(&e);
    let shown = shown(&pw, &id).await;
    assert_eq!(shown.params[0].type_name.as_deref(), Some("float4"));
    assert_eq!(shown.params[0].value.as_deref(), Some("1"));
    approve(&pw, &id).await;

    let as_int = client
        .prepare_typed(sql, &[Type::INT4])
        .await
        .expect("parse");
    assert_eq!(1.0f32.to_bits(), 1_065_353_216);
    let other = client
        .execute(&as_int, &[&1_065_353_216i32])
        .await
        .expect_err("another reading of the same bytes is not covered");
    assert_ne!(ticket_of(&other), id);
    assert_eq!(
        rows(&pw, "SELECT v, secret FROM bind_types WHERE id = 1").await,
        [(1, "s".to_owned())]
    );
    // The approved reading itself still runs, once.
    assert_eq!(
        client.execute(&as_float, &[&1.0f32]).await.expect("runs"),
        1
    );
}

/// The same bytes in another client_encoding are another statement:
/// `'\xc3\xa9'` is `'é'` in UTF8 and `'Ã©'` in LATIN1. An approval of the
/// UPDATE of the row the approver was shown (`é`) does not change the
/// other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_does_not_cover_the_same_bytes_in_another_client_encoding() {
    let (pw, _dir) = start("bind_enc", ["é", "Ã©"]).await;
    let sql = "UPDATE bind_enc SET v = 0 WHERE secret = 'é'";
    let utf8 = pw.connect().await;
    let e = utf8.simple_query(sql).await.expect_err("needs approval");
    let id = ticket_of(&e);
    let shown = shown(&pw, &id).await;
    assert_eq!(shown.statement, sql);
    approve(&pw, &id).await;

    let latin1 = pw.connect().await;
    latin1
        .batch_execute("SET client_encoding = 'LATIN1'")
        .await
        .expect("set");
    let other = latin1
        .simple_query(sql)
        .await
        .expect_err("the other reading is not covered");
    assert_ne!(ticket_of(&other), id);
    let read = "SELECT v, secret FROM bind_enc ORDER BY id";
    assert_eq!(
        rows(&pw, read).await,
        [(1, "é".to_owned()), (2, "Ã©".to_owned())]
    );
    // The approved reading runs, once, where the server reads it so.
    utf8.simple_query(sql).await.expect("runs");
    assert_eq!(
        rows(&pw, read).await,
        [(0, "é".to_owned()), (2, "Ã©".to_owned())]
    );
}

/// A session that prepares `up` (protocol Parse, which is not held: the
/// approval is asked when it runs) as `text`.
async fn prepared(pw: &Pgward, text: &str) -> RawClient {
    let (mut raw, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let mut parse = bytes::BytesMut::new();
    pgward::wire::encode::parse_named(&mut parse, b"up", text);
    raw.send(&parse).await;
    raw.send(&support::raw::message(b'S', &[])).await;
    let parsed = raw.until_ready().await;
    assert!(error_of(&parsed).is_none(), "{parsed:?}");
    raw
}

/// The ticket id of a ticket-mode refusal of `EXECUTE up`, or `None` when
/// it ran.
async fn execute_up(raw: &mut RawClient) -> Option<String> {
    raw.send(&query("EXECUTE up")).await;
    let answer = raw.until_ready().await;
    let e = error_of(&answer)?;
    assert_eq!(e.sqlstate(), "42501", "{answer:?}");
    let m = e.field(b'M').unwrap_or_default();
    m.split("ticket ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// `EXECUTE up` runs whatever `up` names in the session that sends it. An
/// approval of `EXECUTE up` where `up` changes row 1 does not run an `up`
/// that changes every row, and the approver is shown what `up` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_of_execute_covers_the_statement_it_runs() {
    let (pw, _dir) = start("bind_exec", ["s", "s"]).await;
    let mut first = prepared(&pw, "UPDATE bind_exec SET v = 9 WHERE id = 1").await;
    let id = execute_up(&mut first).await.expect("needs approval");
    let shown = shown(&pw, &id).await;
    assert!(
        shown
            .statement
            .contains("UPDATE bind_exec SET v = 9 WHERE id = 1"),
        "the approver sees what EXECUTE runs: {:?}",
        shown.statement
    );
    approve(&pw, &id).await;

    let mut second = prepared(&pw, "UPDATE bind_exec SET v = 0").await;
    let other = execute_up(&mut second).await;
    assert!(
        other.as_ref().is_some_and(|o| *o != id),
        "another statement under the same name is not covered: {other:?}"
    );
    let read = "SELECT v, secret FROM bind_exec ORDER BY id";
    assert_eq!(
        rows(&pw, read).await,
        [(1, "s".to_owned()), (2, "s".to_owned())]
    );
    assert_eq!(execute_up(&mut first).await, None, "the approved one runs");
    assert_eq!(
        rows(&pw, read).await,
        [(9, "s".to_owned()), (2, "s".to_owned())]
    );
}

/// An approval is for the statement run as the role the approver was
/// shown: the same statement from a session a role grant elevated (to a
/// role that may bypass the row policies, own more, ...) is another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_does_not_cover_the_statement_run_as_an_elevated_role() {
    use pgward::approvals::model::{GrantScope, GrantSubject};
    use support::{APP_ROLE, MASKED_ROLE};
    let dir = tempfile::tempdir().expect("dir");
    let backend = Backend::shared();
    let text = format!(
        "{}\n[approvals]\npath = \"{}\"\napprovers = [\"ops\"]\nmax_grant = \"1h\"\n\
         [policy]\n[[policy.rules]]\nname = \"approve-bind_role\"\naction = \"require_approval\"\n\
         kinds = [\"update\"]\nrelations = [\"bind_role\"]\napproval_mode = \"ticket\"\n",
        backend.config(
            "",
            &format!("role_map = [{{ users = [\"*\"], role = \"{MASKED_ROLE}\" }}]")
        ),
        dir.path().join("approvals.jsonl").display()
    );
    backend.admin_sql(&format!(
        "DROP TABLE IF EXISTS bind_role; CREATE TABLE bind_role (id int PRIMARY KEY, v int); \
         INSERT INTO bind_role VALUES (1, 1); \
         GRANT SELECT, UPDATE ON bind_role TO {APP_ROLE}, {MASKED_ROLE}"
    ));
    let pw = Pgward::start_in(&text, backend.cluster.dir()).await;
    let sql = "UPDATE bind_role SET v = 5 WHERE id = 1";
    let plain = pw.connect().await;
    let e = plain.simple_query(sql).await.expect_err("needs approval");
    let id = ticket_of(&e);
    let shown = shown(&pw, &id).await;
    assert_eq!(shown.requester.role, MASKED_ROLE);
    approve(&pw, &id).await;

    pw.gateway
        .approvals()
        .create_grant(
            GrantSubject::User(support::USER.into()),
            GrantScope::Role {
                database: DB.into(),
                role: APP_ROLE.into(),
            },
            Duration::from_secs(600),
            &carol(),
            Some("incident 7".into()),
        )
        .await
        .expect("grant");
    let elevated = pw.connect().await;
    let role: String = elevated
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("role")
        .get(0);
    assert_eq!(role, APP_ROLE);
    let other = elevated
        .simple_query(sql)
        .await
        .expect_err("the approval was for the other role");
    assert_ne!(ticket_of(&other), id);
    let v: i32 = elevated
        .query_one("SELECT v FROM bind_role WHERE id = 1", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(v, 1);
    // The session it was approved for still runs it.
    plain.simple_query(sql).await.expect("runs");
}
