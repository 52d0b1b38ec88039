//! The approvals API on the admin listener: who gets in, what an approver
//! sees, votes (threshold, self-approval, non-approvers, double votes,
//! decided tickets), cross-site refusal, grants, and the event stream.

mod support;

use serde_json::json;
use support::approvals::{call, send, start, ticket};
use support::Backend;

/// `user` votes (`approve` or `deny`) on ticket `id`.
async fn vote(
    s: &support::approvals::Setup,
    id: &str,
    user: &str,
    verb: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let path = format!("/api/approvals/{id}/{verb}");
    call(s.admin, "POST", &path, Some(user), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_see_everything_and_votes_follow_the_rules() {
    let s = start(Backend::shared()).await;
    let t = ticket(2);
    s.store.create_ticket(&t).await.expect("create");
    let path = format!("/api/approvals/{}", t.id);

    // Nobody without credentials; a non-approver identity is refused.
    assert_eq!(
        call(s.admin, "GET", "/api/approvals", None, None).await.0,
        401
    );
    let (status, body) = call(s.admin, "GET", "/api/approvals", Some("bob"), None).await;
    assert_eq!(status, 401, "{body}"); // bob's password is not bob-pw
    let (status, body) = call(s.admin, "GET", "/api/approvals", Some("nobody"), None).await;
    assert_eq!(status, 401, "{body}");

    // The list shows what an approver must see.
    let (status, body) = call(
        s.admin,
        "GET",
        "/api/approvals?state=pending",
        Some("dana"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let listed = &body["tickets"][0];
    assert_eq!(listed["id"], t.id.as_str());
    assert_eq!(listed["requester"]["user"], "alice");
    assert_eq!(listed["requester"]["groups"], json!(["dev"]));
    assert_eq!(listed["requester"]["client"], "127.0.0.1:40000");
    assert_eq!(listed["requester"]["database"], support::DB);
    assert_eq!(listed["requester"]["role"], support::APP_ROLE);
    assert_eq!(listed["statement"], t.statement.as_str());
    assert_eq!(listed["params"][0]["value"], "42");
    assert_eq!(listed["params"][0]["type_name"], "int4");
    assert_eq!(listed["transaction"], "transaction");
    assert_eq!(listed["rule"], "approve-updates");
    assert_eq!(listed["rule_message"], "updates need a second pair of eyes");
    assert_eq!(listed["justification"], "INC-7: fix a customer's address");
    assert!(listed["waiting_seconds"].is_u64(), "{listed}");
    assert_eq!(listed["may_vote"], true);
    // The admin sees it too, but may not vote (not an approver).
    let (status, shown) = call(s.admin, "GET", &path, Some("root"), None).await;
    assert_eq!(
        (status, &shown["may_vote"]),
        (200, &json!(false)),
        "{shown}"
    );
    assert_eq!(
        call(
            s.admin,
            "GET",
            "/api/approvals/0000000000000000",
            Some("root"),
            None
        )
        .await
        .0,
        404
    );

    // Votes, in order: an admin who is no approver; an approval; the same
    // approver again; a denial without a reason; the second approval
    // (threshold 2: approved); a late denial.
    let reason = |r: &str| Some(json!({ "reason": r }));
    for (user, verb, body, status, outcome) in [
        ("root", "approve", None, 403, "approver groups"),
        ("dana", "approve", Some(json!({})), 200, "pending"),
        ("dana", "approve", None, 409, "voted on this ticket already"),
        ("erin", "deny", None, 400, "a reason is required"),
        ("erin", "approve", None, 200, "approved"),
        ("erin", "deny", reason("late"), 409, "not pending"),
    ] {
        let (got, answer) = vote(&s, &t.id, user, verb, body).await;
        assert_eq!(got, status, "{user} {verb}: {answer}");
        let said = answer["state"]
            .as_str()
            .or(answer["error"].as_str())
            .unwrap_or_default();
        assert!(said.contains(outcome), "{user} {verb}: {answer}");
    }
    let stored = s.store.ticket(&t.id).await.expect("read").expect("ticket");
    assert_eq!(stored.approvals(), 2);
    let (_, body) = call(s.admin, "GET", "/api/approvals", Some("dana"), None).await;
    assert_eq!(
        body["tickets"],
        json!([]),
        "a decided ticket is not pending"
    );
    let (_, body) = call(
        s.admin,
        "GET",
        "/api/approvals?state=all",
        Some("dana"),
        None,
    )
    .await;
    assert_eq!(body["tickets"][0]["id"], t.id.as_str());
    assert_eq!(
        call(
            s.admin,
            "GET",
            "/api/approvals?state=bogus",
            Some("dana"),
            None
        )
        .await
        .0,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_approval_is_refused_and_a_denial_ends_the_ticket() {
    let s = start(Backend::shared()).await;
    let mut t = ticket(1);
    t.requester.user = "dana".into();
    s.store.create_ticket(&t).await.expect("create");
    let path = format!("/api/approvals/{}", t.id);
    let (_, shown) = call(s.admin, "GET", &path, Some("dana"), None).await;
    assert_eq!(shown["may_vote"], false);
    let (status, body) = vote(&s, &t.id, "dana", "approve", None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("cannot approve"),
        "{body}"
    );
    let freeze = Some(json!({"reason": "not during the freeze"}));
    let (status, body) = vote(&s, &t.id, "erin", "deny", freeze).await;
    assert_eq!((status, &body["state"]), (200, &json!("denied")), "{body}");
    assert_eq!(body["end_reason"], "denied by erin: not during the freeze");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_and_headerless_changes_are_refused() {
    let s = start(Backend::shared()).await;
    let t = ticket(1);
    s.store.create_ticket(&t).await.expect("create");
    let path = format!("/api/approvals/{}/approve", t.id);
    let csrf = ("X-Pgward-Request", "1");
    let evil = ("Origin", "http://evil.example");
    for (path, user, headers) in [
        // No CSRF header: what a cross-site form would send.
        (path.as_str(), "dana", &[][..]),
        // The header, but a browser says the request is cross-site.
        (&path, "dana", &[csrf, evil]),
        (&path, "dana", &[csrf, ("Sec-Fetch-Site", "cross-site")]),
        // The admin routes refuse a cross-site browser POST too.
        ("/sessions/1/terminate", "root", &[evil]),
    ] {
        let r = send(s.admin, "POST", path, Some(user), None, headers).await;
        assert_eq!(r.status, 403, "{path} {headers:?}: {}", r.text());
    }
    assert_eq!(
        s.store.ticket(&t.id).await.expect("read").expect("t").state,
        pgward::approvals::model::TicketState::Pending
    );
    // The page's own request goes through.
    let origin = format!("http://{}", s.admin);
    let own = [
        csrf,
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let r = send(s.admin, "POST", &path, Some("dana"), None, &own).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_made_listed_and_revoked_by_who_may() {
    let s = start(Backend::shared()).await;
    let grant = |subject: serde_json::Value, scope: serde_json::Value, duration: &str| json!({"subject": subject, "scope": scope, "duration": duration, "reason": "maintenance"});
    let alice = json!({"user": "alice"});
    let rule = json!({"rule": "approve-updates"});
    let role = |r: &str| json!({"role": {"database": support::DB, "role": r}});
    for (user, body, expected) in [
        // Not to oneself or one's group.
        (
            "dana",
            grant(json!({"user": "dana"}), rule.clone(), "30m"),
            403,
        ),
        (
            "dana",
            grant(json!({"group": "dba"}), rule.clone(), "30m"),
            403,
        ),
        // Not longer than max_grant, not for an unknown rule or role.
        ("dana", grant(alice.clone(), rule.clone(), "9h"), 400),
        (
            "dana",
            grant(alice.clone(), json!({"rule": "no-such-rule"}), "30m"),
            400,
        ),
        ("dana", grant(alice.clone(), role("postgres"), "10m"), 400),
        ("dana", json!({"subject": 1}), 400),
        // An admin in no approver group grants neither a rule's
        // statements nor a role ([approvals] approvers grant roles).
        ("root", grant(alice.clone(), rule.clone(), "30m"), 403),
        (
            "root",
            grant(alice.clone(), role(support::MASKED_ROLE), "10m"),
            403,
        ),
    ] {
        let (status, answer) = call(
            s.admin,
            "POST",
            "/api/grants",
            Some(user),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, expected, "{user} {body}: {answer}");
    }
    let (status, g) = call(
        s.admin,
        "POST",
        "/api/grants",
        Some("dana"),
        Some(grant(alice.clone(), rule, "30m")),
    )
    .await;
    assert_eq!(status, 201, "{g}");
    assert_eq!(
        (&g["created_by"], &g["active"]),
        (&json!("dana"), &json!(true))
    );
    let id = g["id"].as_str().expect("id").to_owned();
    let (status, r) = call(
        s.admin,
        "POST",
        "/api/grants",
        Some("dana"),
        Some(grant(alice, role(support::MASKED_ROLE), "10m")),
    )
    .await;
    assert_eq!(status, 201, "{r}");

    let count = |v: &serde_json::Value| v["grants"].as_array().expect("grants").len();
    let (_, listed) = call(s.admin, "GET", "/api/grants", Some("erin"), None).await;
    assert_eq!(count(&listed), 2, "{listed}");
    // Erin approves the rule too: she may revoke Dana's grant; the admin
    // may not (not the rule's approver, not its creator); twice is a 409.
    let revoke = format!("/api/grants/{id}/revoke");
    assert_eq!(
        call(s.admin, "POST", &revoke, Some("root"), None).await.0,
        403
    );
    let (status, revoked) = call(
        s.admin,
        "POST",
        &revoke,
        Some("erin"),
        Some(json!({"reason": "done"})),
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(
        (&revoked["active"], &revoked["revoked"]["by"]),
        (&json!(false), &json!("erin"))
    );
    assert_eq!(
        call(s.admin, "POST", &revoke, Some("erin"), None).await.0,
        409
    );
    let (_, listed) = call(s.admin, "GET", "/api/grants", Some("erin"), None).await;
    assert_eq!(count(&listed), 1);
    let (_, all) = call(s.admin, "GET", "/api/grants?state=all", Some("erin"), None).await;
    assert_eq!(count(&all), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_tells_of_new_tickets_and_the_pages_are_locked_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(Backend::shared()).await;
    let mut stream = tokio::net::TcpStream::connect(s.admin)
        .await
        .expect("connect");
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode("dana:dana-pw")
    };
    stream
        .write_all(format!("GET /api/approvals/events HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The stream opens with a resync; then a new ticket arrives as one.
    let t = ticket(1);
    let mut created = false;
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if !created && text.contains("event: resync") {
            assert!(text.contains("text/event-stream"), "{text}");
            s.store.create_ticket(&t).await.expect("create");
            created = true;
        }
        if text.contains("event: ticket") && text.contains(&t.id) {
            assert!(text.contains("\"statement\""), "{text}");
            break;
        }
    }

    for path in [
        "/approvals",
        &format!("/approvals/{}", t.id),
        "/approvals/assets/approvals.js",
    ] {
        let r = send(s.admin, "GET", path, Some("dana"), None, &[]).await;
        assert_eq!(r.status, 200, "{path}");
    }
    let r = send(s.admin, "GET", "/approvals", None, None, &[]).await;
    assert_eq!(r.status, 401);
    // The sessions page is for admins.
    assert_eq!(
        send(s.admin, "GET", "/sessions.html", Some("dana"), None, &[])
            .await
            .status,
        401
    );
    assert_eq!(
        send(s.admin, "GET", "/sessions.html", Some("root"), None, &[])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_statement_is_posted_to_the_configured_webhook() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/services/T0/B0/SECRET",
        receiver.local_addr().expect("addr")
    );
    let backend = Backend::shared();
    let dir = tempfile::tempdir().expect("dir");
    let text = format!(
        "{}\n{}\n[[approvals.webhooks]]\nurl = \"{url}\"\nformat = \"slack\"\n",
        backend.config("", ""),
        support::approvals::config_extra()
    );
    let pw = support::Pgward::start_in(&text, dir.path()).await;
    let table = support::approvals::table("hook");
    let held = support::approvals::psql(&pw, &format!("UPDATE {table} SET email = 'x'"));

    let (mut s, _) = receiver.accept().await.expect("a webhook request");
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let body = loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "cut short: {}", String::from_utf8_lossy(&request));
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.parse().ok())
                .expect("length");
            if body.len() >= len {
                assert!(
                    head.starts_with("POST /services/T0/B0/SECRET HTTP/1.1"),
                    "{head}"
                );
                break body.to_owned();
            }
        }
    };
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .await
        .expect("answer");
    let posted: serde_json::Value = serde_json::from_str(&body).expect("json");
    let message = posted["text"].as_str().expect("text");
    let ticket = support::approvals::wait_pending(&**pw.gateway.approvals().store()).await;
    assert!(message.contains(&ticket.id), "{message}");
    assert!(
        message.contains("*alice* wants to run on *appdb*"),
        "{message}"
    );
    assert!(
        message.contains(&format!("UPDATE {table} SET email = 'x'")),
        "{message}"
    );
    pw.gateway
        .approvals()
        .vote(
            &ticket.id,
            &pgward::auth::identity::Identity::new("dana", ["dba"]),
            false,
            Some("test over".into()),
        )
        .await
        .expect("deny");
    let out = held.await.expect("psql");
    assert!(String::from_utf8_lossy(&out.stderr).contains("test over"));
}
