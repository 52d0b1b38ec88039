//! Approvers logging in to the approvals API with a token pgward minted
//! (`Authorization: Bearer`), verified as at a PostgreSQL login.

mod support;

use serde_json::json;
use std::time::Duration;
use support::approvals::{config_extra, serve, ticket};
use support::tokens::TokenGateway;

async fn bearer(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let r = support::approvals::send(
        addr,
        method,
        path,
        None,
        None,
        &[("Authorization", &auth), ("X-Pgward-Request", "1")],
    )
    .await;
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_logs_an_approver_in_and_a_revoked_one_does_not() {
    let g = TokenGateway::start("", &config_extra()).await;
    let minted = g.mint("ci-approver", &["dba"], Duration::from_secs(600));
    let outsider = g.mint("ci-outsider", &["dev"], Duration::from_secs(600));
    let revoked = g.mint("ci-revoked", &["dba"], Duration::from_secs(600));
    pgward::auth::token::revocation::revoke(&g.revocations, &revoked.jti, Some("test"))
        .expect("revoke");
    let s = serve(g.pw).await;

    let (status, who) = bearer(s.admin, "GET", "/api/whoami", &minted.token).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(
        who,
        json!({"user": "ci-approver", "groups": ["dba"], "admin": false})
    );

    let t = ticket(1);
    s.store.create_ticket(&t).await.expect("create");
    let (status, body) = bearer(
        s.admin,
        "POST",
        &format!("/api/approvals/{}/approve", t.id),
        &minted.token,
    )
    .await;
    assert_eq!(
        (status, &body["state"]),
        (200, &json!("approved")),
        "{body}"
    );
    assert_eq!(body["votes"][0]["approver"], "ci-approver");

    // In no approver group: authenticated, refused.
    assert_eq!(
        bearer(s.admin, "GET", "/api/approvals", &outsider.token)
            .await
            .0,
        403
    );
    // Revoked, tampered with, or not a token at all.
    assert_eq!(
        bearer(s.admin, "GET", "/api/approvals", &revoked.token)
            .await
            .0,
        401
    );
    let mut tampered = minted.token.clone();
    tampered.push('x');
    assert_eq!(
        bearer(s.admin, "GET", "/api/approvals", &tampered).await.0,
        401
    );
    assert_eq!(
        bearer(s.admin, "GET", "/api/approvals", "not-a-token")
            .await
            .0,
        401
    );
}
