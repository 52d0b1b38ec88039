//! `pgward approvals` and `pgward grants`: the built binary against a
//! running admin API, as an approver would use it.

mod support;

use std::process::{Command, Output};
use support::approvals::{start, ticket};
use support::Backend;

const BIN: &str = env!("CARGO_BIN_EXE_pgward");

/// Runs the binary as `user` (password in PGWARD_PASSWORD) with `args`.
async fn pgward(admin: std::net::SocketAddr, user: &str, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .args(["--url", &format!("http://{admin}"), "--user", user])
        .env("PGWARD_PASSWORD", format!("{user}-pw"))
        .env_remove("PGWARD_TOKEN");
    tokio::task::spawn_blocking(move || command.output().expect("run pgward"))
        .await
        .expect("join")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_approve_and_deny() {
    let s = start(Backend::shared()).await;
    let t = ticket(1);
    s.store.create_ticket(&t).await.expect("create");
    let mut own = ticket(1);
    own.requester.user = "dana".into();
    s.store.create_ticket(&own).await.expect("create");

    let out = pgward(s.admin, "dana", &["approvals", "list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&t.id) && text.contains("alice@appdb"),
        "{text}"
    );
    assert!(text.contains("rule approve-updates"), "{text}");

    let out = pgward(s.admin, "dana", &["approvals", "show", &t.id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "identity     alice (groups: dev)",
        "client       127.0.0.1:40000",
        "transaction  transaction",
        "rule         approve-updates: updates need a second pair of eyes",
        "justification INC-7: fix a customer's address",
        "UPDATE customers SET email = 'x' WHERE id = $1",
        "$1 int4 (binary) = 42",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }

    // --json is the API's JSON.
    let out = pgward(s.admin, "dana", &["approvals", "list", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["tickets"].as_array().expect("tickets").len(), 2);

    // Self-approval: refused, with the API's reason, exit status 1.
    let out = pgward(s.admin, "dana", &["approvals", "approve", &own.id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot approve or deny it (403)"),
        "{}",
        stderr(&out)
    );
    // A denial needs --reason (clap refuses before any request).
    let out = pgward(s.admin, "erin", &["approvals", "deny", &own.id]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = pgward(
        s.admin,
        "erin",
        &["approvals", "deny", &own.id, "--reason", "no"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("denied"), "{}", stdout(&out));

    let out = pgward(s.admin, "dana", &["approvals", "approve", &t.id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("ticket {} (Hold mode): approved", t.id)),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        s.store
            .ticket(&t.id)
            .await
            .expect("read")
            .expect("ticket")
            .state,
        pgward::approvals::model::TicketState::Approved
    );
    let out = pgward(s.admin, "dana", &["approvals", "list"]).await;
    assert!(stdout(&out).trim() == "none", "{}", stdout(&out));

    // Wrong password, bad id.
    let mut command = Command::new(BIN);
    command
        .args([
            "approvals",
            "list",
            "--url",
            &format!("http://{}", s.admin),
            "--user",
            "dana",
        ])
        .env("PGWARD_PASSWORD", "wrong");
    let out = tokio::task::spawn_blocking(move || command.output().expect("run"))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(401)"), "{}", stderr(&out));
    let out = pgward(s.admin, "dana", &["approvals", "show", "../metrics"]).await;
    assert!(
        stderr(&out).contains("is not a ticket or grant id"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_create_list_revoke() {
    let s = start(Backend::shared()).await;
    let out = pgward(
        s.admin,
        "dana",
        &[
            "grants",
            "create",
            "--to-user",
            "alice",
            "--rule",
            "approve-updates",
            "--duration",
            "20m",
            "--reason",
            "data fix",
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = g["id"].as_str().expect("id").to_owned();

    let out = pgward(s.admin, "erin", &["grants", "list"]).await;
    let text = stdout(&out);
    assert!(
        text.contains(&id)
            && text.contains("user alice  statements of rule approve-updates  by dana  until "),
        "{text}"
    );

    let out = pgward(
        s.admin,
        "root",
        &[
            "grants",
            "create",
            "--to-user",
            "alice",
            "--role",
            support::MASKED_ROLE,
            "--database",
            support::DB,
            "--duration",
            "5m",
            "--reason",
            "x",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("none of the approver groups for this grant (403)"),
        "{}",
        stderr(&out)
    );

    let out = pgward(
        s.admin,
        "dana",
        &["grants", "revoke", &id, "--reason", "done"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("revoked by dana"), "{}", stdout(&out));
    let out = pgward(s.admin, "dana", &["grants", "list"]).await;
    assert!(stdout(&out).trim() == "none", "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_psql_statement_runs_once_approved_and_fails_once_denied() {
    let s = start(Backend::shared()).await;
    let table = support::approvals::table("cli");
    let held = support::approvals::psql(
        &s.pw,
        &format!("UPDATE {table} SET email = 'new@example.com' WHERE id = 1"),
    );
    let t = support::approvals::wait_pending(&*s.store).await;
    let out = pgward(s.admin, "dana", &["approvals", "approve", &t.id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = held.await.expect("psql");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "UPDATE 1");

    let held_update = support::approvals::psql(
        &s.pw,
        &format!("UPDATE {table} SET email = 'third@example.com'"),
    );
    let t = support::approvals::wait_pending(&*s.store).await;
    let out = pgward(
        s.admin,
        "erin",
        &["approvals", "deny", &t.id, "--reason", "not now"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = held_update.await.expect("psql");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not now"), "{}", stderr(&out));
    assert_eq!(
        Backend::shared()
            .admin_sql(&format!("SELECT email FROM {table}"))
            .trim(),
        "new@example.com"
    );
}

/// What a client sent reaches the approver's terminal as text: a carriage
/// return or an escape sequence in the statement (or in the client's
/// application_name) cannot overwrite what `show` printed, or hide it, so
/// the approver reads the statement that runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_does_not_pass_terminal_control_characters_through() {
    let s = start(Backend::shared()).await;
    let mut t = ticket(1);
    t.statement = "DELETE FROM customers; --\r    UPDATE customers SET email = 'x' WHERE id = 1\n\
                   /* \u{1b}[8m */ DROP TABLE orders /* \u{1b}[0m \u{202e} */"
        .into();
    t.requester.application_name = Some("psql\u{1b}]0;owned\u{7}".into());
    t.params[0].value = Some("42\r1".into());
    s.store.create_ticket(&t).await.expect("create");
    for args in [
        &["approvals", "show", &t.id][..],
        &["approvals", "list"][..],
    ] {
        let out = pgward(s.admin, "dana", args).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{args:?} printed control characters: {text:?}"
        );
        assert!(text.contains("DELETE FROM customers;"), "{text}");
    }
}
