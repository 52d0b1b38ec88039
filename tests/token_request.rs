//! Tokens issued on approval (issue 18 point 6): an identity in a
//! `[[tokens.requests]]` requester group asks for a token through the
//! admin API or `pgward token request`, approvers decide the ticket like any
//! other, and the requester collects the token once; it then logs in.

mod support;

use pgward::approvals::model::TicketState;
use pgward::auth::verifier::ScramVerifier;
use serde_json::json;
use support::approvals::{call, config_extra, serve};
use support::tokens::TokenGateway;

const BIN: &str = env!("CARGO_BIN_EXE_pgward");

/// The requests policy, and rita (group `dev`), who may ask.
fn extra() -> String {
    format!(
        "{}\n[users.rita]\nscram_verifier = \"{}\"\ngroups = [\"dev\"]\n",
        config_extra(),
        ScramVerifier::generate("rita-pw")
    )
}

const REQUESTS: &str =
    "\n[[tokens.requests]]\nsubjects = [\"ci-agent*\"]\nrequesters = [\"dev\", \"dba\"]\n\
     approvers = [\"dba\"]\ngroups = [\"deploy\"]\nmax_ttl = \"30m\"\n";

fn ask(subject: &str, ttl: &str) -> serde_json::Value {
    json!({"subject": subject, "database": "appdb", "ttl": ttl, "reason": "INC-9 deploy"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_request_gives_its_requester_one_token_that_logs_in() {
    let TokenGateway { pw, pki, .. } = TokenGateway::start(REQUESTS, &extra()).await;
    let s = serve(pw).await;
    let (status, t) = call(
        s.admin,
        "POST",
        "/api/tokens/requests",
        Some("rita"),
        Some(ask("ci-agent-7", "10m")),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(t["state"], "pending");
    assert_eq!(t["rule"], "token-request");
    assert_eq!(t["justification"], "INC-9 deploy");
    assert!(
        t["statement"]
            .as_str()
            .is_some_and(|s| s.contains("ci-agent-7") && s.contains("deploy")),
        "{t}"
    );
    let id = t["id"].as_str().expect("id").to_owned();
    let path = format!("/api/tokens/requests/{id}");

    // Nothing to collect until approved; approvers see it like any ticket.
    let (status, e) = call(
        s.admin,
        "POST",
        &format!("{path}/collect"),
        Some("rita"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{e}");
    let (status, listed) = call(s.admin, "GET", "/api/approvals", Some("dana"), None).await;
    assert_eq!(status, 200);
    assert!(listed["tickets"]
        .as_array()
        .is_some_and(|l| l.iter().any(|x| x["id"] == id.as_str())));
    // Not a requester: neither shown nor collected for others.
    let (status, _) = call(s.admin, "GET", &path, Some("root"), None).await;
    assert_eq!(status, 403);
    let (status, _) = call(s.admin, "GET", &path, Some("dana"), None).await;
    assert_eq!(status, 404, "another requester's ticket");

    let (status, v) = call(
        s.admin,
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some("dana"),
        Some(json!({})),
    )
    .await;
    assert_eq!((status, &v["state"]), (200, &json!("approved")), "{v}");
    let (status, issued) = call(
        s.admin,
        "POST",
        &format!("{path}/collect"),
        Some("rita"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{issued}");
    let token = issued["token"].as_str().expect("token").to_owned();
    // Exactly once.
    let (status, again) = call(
        s.admin,
        "POST",
        &format!("{path}/collect"),
        Some("rita"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{again}");
    let used = s.store.ticket(&id).await.expect("store").expect("ticket");
    assert_eq!(used.state, TicketState::Used);
    assert!(used
        .end_reason
        .as_deref()
        .is_some_and(|r| r.contains(issued["jti"].as_str().unwrap_or("?"))));

    // The token logs in as its subject with the policy's groups.
    let mut config = s.pw.client_config("ci-agent-7", &token);
    config
        .host("localhost")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
            pki.client_config(),
        ))
        .await
        .expect("token login");
    tokio::spawn(connection);
    let row = client.query_one("SELECT 1", &[]).await.expect("query");
    assert_eq!(row.get::<_, i32>(0), 1);
    let session =
        s.pw.gateway
            .registry
            .list()
            .into_iter()
            .find(|x| x.user == "ci-agent-7")
            .expect("the token's session");
    assert_eq!(session.groups, vec!["deploy".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_refused_outside_the_policy_and_never_self_approved() {
    let TokenGateway { pw, .. } = TokenGateway::start(REQUESTS, &extra()).await;
    let s = serve(pw).await;
    let post = |user: &'static str, body: serde_json::Value| {
        let admin = s.admin;
        async move {
            call(
                admin,
                "POST",
                "/api/tokens/requests",
                Some(user),
                Some(body),
            )
            .await
        }
    };
    // A subject the policy does not name, a TTL over its maximum, a
    // database that does not exist, no reason, an identity in no
    // requester group.
    for (user, body, status) in [
        ("rita", ask("ci-root", "10m"), 403),
        ("rita", ask("ci-agent", "2h"), 400),
        (
            "rita",
            json!({"subject": "ci-agent", "database": "nope", "ttl": "5m", "reason": "x"}),
            400,
        ),
        (
            "rita",
            json!({"subject": "ci-agent", "database": "appdb", "ttl": "5m"}),
            400,
        ),
        ("root", ask("ci-agent", "5m"), 403),
    ] {
        let (got, v) = post(user, body.clone()).await;
        assert_eq!(got, status, "{user} {body}: {v}");
    }
    // dana (an approver, and a requester) cannot approve her own request;
    // erin can, and only dana collects it.
    let (status, t) = post("dana", ask("ci-agent", "5m")).await;
    assert_eq!(status, 201, "{t}");
    let id = t["id"].as_str().expect("id").to_owned();
    let approve = format!("/api/approvals/{id}/approve");
    let (status, e) = call(s.admin, "POST", &approve, Some("dana"), Some(json!({}))).await;
    assert_eq!(status, 403, "{e}");
    let (status, _) = call(s.admin, "POST", &approve, Some("erin"), Some(json!({}))).await;
    assert_eq!(status, 200);
    let collect = format!("/api/tokens/requests/{id}/collect");
    let (status, _) = call(s.admin, "POST", &collect, Some("erin"), None).await;
    assert_eq!(status, 404, "not erin's request");
    let (status, v) = call(s.admin, "POST", &collect, Some("dana"), None).await;
    assert_eq!(status, 200, "{v}");
    // A denied request has nothing to collect.
    let (_, t) = post("rita", ask("ci-agent", "5m")).await;
    let id = t["id"].as_str().expect("id").to_owned();
    let (status, _) = call(
        s.admin,
        "POST",
        &format!("/api/approvals/{id}/deny"),
        Some("dana"),
        Some(json!({"reason": "not today"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        s.admin,
        "POST",
        &format!("/api/tokens/requests/{id}/collect"),
        Some("rita"),
        None,
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_for_the_approval_and_prints_the_token() {
    let TokenGateway { pw, .. } = TokenGateway::start(REQUESTS, &extra()).await;
    let s = serve(pw).await;
    let url = format!("http://{}", s.admin);
    let cli = |args: &[&str]| {
        tokio::process::Command::new(BIN)
            .args(["token", "request", "--url", &url, "--user", "rita"])
            .args(args)
            .env("PGWARD_PASSWORD", "rita-pw")
            .output()
    };
    for (approve, reason) in [(true, "ship it"), (false, "not today")] {
        let run = cli(&[
            "--subject",
            "ci-agent-cli",
            "--database",
            "appdb",
            "--ttl",
            "5m",
            "--reason",
            reason,
        ]);
        let waiting = async {
            let t = support::approvals::wait_pending(&*s.store).await;
            assert_eq!(t.justification.as_deref(), Some(reason));
            let verb = if approve { "approve" } else { "deny" };
            let (status, v) = call(
                s.admin,
                "POST",
                &format!("/api/approvals/{}/{verb}", t.id),
                Some("erin"),
                Some(json!({"reason": reason})),
            )
            .await;
            assert_eq!(status, 200, "{v}");
        };
        let (out, ()) = tokio::join!(run, waiting);
        let out = out.expect("pgward token request");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("waiting for approval"), "{stderr}");
        if approve {
            assert!(out.status.success(), "{stderr}");
            assert_eq!(stdout.trim().split('.').count(), 3, "a JWT: {stdout}");
        } else {
            assert!(!out.status.success());
            assert!(stdout.trim().is_empty(), "{stdout}");
            assert!(stderr.contains("denied"), "{stderr}");
        }
    }
}
