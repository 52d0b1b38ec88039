//! Two pgward instances sharing the PostgreSQL approval store: a statement
//! held in a session on instance B is released (or refused) by a vote made
//! through instance A, which B hears of through LISTEN / NOTIFY; a role
//! grant made on A elevates sessions on B, and its revocation on A ends
//! them.

mod support;

use pgward::approvals::model::{GrantScope, GrantSubject, Ticket, TicketState};
use pgward::policy::rules::Identity;
use std::time::Duration;
use support::raw::RawClient;
use support::{sqlstate, Backend, Pgward, APP_ROLE, DB, MASKED_ROLE, PASSWORD, USER};

/// pgward with UPDATEs of `table` needing approval by `ops`, its tickets in
/// `schema` on the app upstream.
fn config(table: &str, schema: &str) -> String {
    config_with(table, schema, "")
}

/// [`config`] with `upstream` lines in the upstream's section.
fn config_with(table: &str, schema: &str, upstream: &str) -> String {
    format!(
        "{}\n[approvals]\nstore = \"postgres\"\npostgres_upstream = \"{db}\"\npostgres_schema = \"{schema}\"\n\
         approvers = [\"ops\"]\n\
         [policy]\n[[policy.rules]]\nname = \"approve-{table}\"\naction = \"require_approval\"\n\
         kinds = [\"update\"]\nrelations = [\"{table}\"]\n",
        Backend::shared().config("", upstream),
        db = support::DB,
    )
}

async fn two_instances(table: &str) -> (Pgward, Pgward) {
    let schema = format!("appr_{:016x}", rand::random::<u64>());
    let dir = Backend::shared().cluster.dir();
    let a = Pgward::start_in(&config(table, &schema), dir).await;
    let b = Pgward::start_in(&config(table, &schema), dir).await;
    let c = a.connect().await;
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, v int); INSERT INTO {table} VALUES (1, 1)"
    ))
    .await
    .expect("table");
    (a, b)
}

/// Waits (polling instance `pw`'s view of the shared store) for a pending
/// ticket.
async fn pending(pw: &Pgward) -> Ticket {
    for _ in 0..1000 {
        let tickets = pw
            .gateway
            .approvals()
            .tickets(true, 10)
            .await
            .expect("tickets");
        if let Some(t) = tickets.into_iter().next() {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no ticket became pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_held_on_one_instance_is_released_by_a_vote_on_another() {
    let (a, b) = two_instances("shared_hold").await;
    let client = b.connect().await;
    let update = tokio::spawn(async move {
        let r = client
            .execute("UPDATE shared_hold SET v = 2 WHERE id = 1", &[])
            .await;
        (r, client)
    });
    let t = pending(&a).await;
    assert_eq!(t.statement, "UPDATE shared_hold SET v = 2 WHERE id = 1");
    assert_eq!(t.requester.instance, b.gateway.approvals().instance());
    assert!(
        !update.is_finished(),
        "the statement waits for the decision"
    );
    let voted = a
        .gateway
        .approvals()
        .vote(&t.id, &Identity::new("carol", ["ops"]), true, None)
        .await
        .expect("vote through A");
    assert_eq!(voted.state, TicketState::Approved);
    let (r, client) = tokio::time::timeout(Duration::from_secs(30), update)
        .await
        .expect("B released the statement")
        .expect("task");
    assert_eq!(r.expect("the approved update ran"), 1);
    let v: i32 = client
        .query_one("SELECT v FROM shared_hold WHERE id = 1", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(v, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_on_one_instance_refuses_the_statement_held_on_another() {
    let (a, b) = two_instances("shared_deny").await;
    let client = b.connect().await;
    let update = tokio::spawn(async move {
        client
            .execute("UPDATE shared_deny SET v = 3 WHERE id = 1", &[])
            .await
    });
    let t = pending(&b).await;
    a.gateway
        .approvals()
        .vote(
            &t.id,
            &Identity::new("dave", ["ops"]),
            false,
            Some("not today".into()),
        )
        .await
        .expect("deny through A");
    let err = tokio::time::timeout(Duration::from_secs(30), update)
        .await
        .expect("B refused the statement")
        .expect("task")
        .expect_err("denied");
    assert_eq!(sqlstate(&err), "42501", "{err}");
    assert!(support::message(&err).contains("not today"), "{err}");
    let c = a.connect().await;
    let v: i32 = c
        .query_one("SELECT v FROM shared_deny WHERE id = 1", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(v, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_grant_revoked_on_one_instance_ends_the_session_it_elevated_on_another() {
    let schema = format!("appr_{:016x}", rand::random::<u64>());
    let text = config_with(
        "shared_grant",
        &schema,
        &format!("role_map = [{{ users = [\"*\"], role = \"{MASKED_ROLE}\" }}]"),
    );
    let dir = Backend::shared().cluster.dir();
    let a = Pgward::start_in(&text, dir).await;
    let b = Pgward::start_in(&text, dir).await;
    let carol = Identity::new("carol", ["ops"]);
    let grant = a
        .gateway
        .approvals()
        .create_grant(
            GrantSubject::User(USER.into()),
            GrantScope::Role {
                database: DB.into(),
                role: APP_ROLE.into(),
            },
            Duration::from_secs(600),
            &carol,
            None,
        )
        .await
        .expect("grant on A");
    // B hears of the grant.
    let alice = Identity::new(USER, ["dev"]);
    for _ in 0..1000 {
        if b.gateway.approvals().role_grant(&alice, DB).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut on_b, _) = RawClient::login(b.addr, USER, PASSWORD, DB).await;
    let who = on_b.simple("SELECT current_user").await;
    assert!(
        who.iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(APP_ROLE.as_bytes())),
        "B elevated the session: {who:?}"
    );
    a.gateway
        .approvals()
        .revoke_grant(&grant.id, &carol, Some("done".into()))
        .await
        .expect("revoke on A");
    assert_eq!(
        on_b.fatal_at_end().await,
        format!(
            "terminating connection: the grant {} that elevated this session to role {APP_ROLE} \
             was revoked by carol: done",
            grant.id
        )
    );
}
