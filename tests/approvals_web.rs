//! The approvals page in a real browser (headless Chromium over the
//! DevTools protocol): an approver loads it with their credentials, sees
//! the waiting statement with what they must see, clicks Approve (and
//! Deny, which asks for a reason first), and the store records each
//! decision; the sessions page lists a live session.
//!
//! Skipped, saying so, only when no Chromium is installed and
//! `PGWARD_REQUIRE_BROWSER` is unset (CI sets it: it never skips).

mod support;

use pgward::approvals::model::TicketState;
use std::time::{Duration, Instant};
use support::approvals::{start, ticket};
use support::cdp::{find_chromium, Browser};
use support::Backend;

fn chromium() -> Option<std::path::PathBuf> {
    match find_chromium() {
        Some(p) => Some(p),
        None if std::env::var_os("PGWARD_REQUIRE_BROWSER").is_some() => {
            panic!("PGWARD_REQUIRE_BROWSER is set but no chromium was found (apt-get install chromium)")
        }
        None => {
            eprintln!(
                "SKIPPED: no chromium on PATH (apt-get install chromium, or set PGWARD_CHROMIUM)"
            );
            None
        }
    }
}

/// Polls the store until ticket `id` is in `state`.
async fn wait_state(
    store: &dyn pgward::approvals::store::ApprovalStore,
    id: &str,
    state: TicketState,
) -> pgward::approvals::model::Ticket {
    let started = Instant::now();
    loop {
        let t = store.ticket(id).await.expect("read").expect("ticket");
        if t.state == state {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ticket {id} stayed {:?}",
            t.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_and_denies_from_the_page() {
    let Some(chromium) = chromium() else { return };
    let s = start(Backend::shared()).await;
    let mut browser = Browser::start(&chromium).await;
    browser.login("dana", "dana-pw").await;
    browser
        .navigate(&format!("http://{}/approvals", s.admin))
        .await;
    browser
        .wait_for(
            "document.getElementById('live').textContent === 'live'",
            "the live stream",
        )
        .await;

    // A ticket made after the page loaded appears through the event stream.
    let t = ticket(1);
    s.store.create_ticket(&t).await.expect("create");
    let approve = format!("button[data-action=approve][data-ticket=\"{}\"]", t.id);
    browser
        .wait_for(
            &format!("document.querySelector('{approve}')"),
            "the new ticket",
        )
        .await;
    let card = browser
        .eval(&format!(
            "document.querySelector('article[data-ticket=\"{}\"]').innerText",
            t.id
        ))
        .await;
    let card = card.as_str().expect("text");
    for expected in [
        "alice (groups: dev)",
        "127.0.0.1:40000",
        "app on upstream appdb",
        "transaction",
        "approve-updates: updates need a second pair of eyes",
        "INC-7: fix a customer's address",
        "UPDATE customers SET email = 'x' WHERE id = $1",
        "int4",
        "42",
    ] {
        assert!(card.contains(expected), "{expected:?} in\n{card}");
    }
    browser.click(&approve).await;
    let decided = wait_state(&*s.store, &t.id, TicketState::Approved).await;
    assert_eq!(decided.votes[0].approver, "dana");
    browser
        .wait_for(
            &format!(
                "document.getElementById('status').textContent.includes('{}: approved')",
                t.id
            ),
            "the approval",
        )
        .await;
    browser
        .wait_for(
            &format!("!document.querySelector('{approve}')"),
            "the ticket leaving the pending list",
        )
        .await;

    // Deny asks for a reason first.
    let t2 = ticket(1);
    s.store.create_ticket(&t2).await.expect("create");
    let deny = format!("button[data-action=deny][data-ticket=\"{}\"]", t2.id);
    browser
        .wait_for(
            &format!("document.querySelector('{deny}')"),
            "the second ticket",
        )
        .await;
    browser.click(&deny).await;
    browser
        .wait_for(
            "document.getElementById('status').textContent.includes('Say why')",
            "the request for a reason",
        )
        .await;
    assert_eq!(
        s.store
            .ticket(&t2.id)
            .await
            .expect("read")
            .expect("t")
            .state,
        TicketState::Pending
    );
    browser
        .click(&format!("input[data-reason=\"{}\"]", t2.id))
        .await;
    browser.type_text("not during the freeze").await;
    browser.click(&deny).await;
    let denied = wait_state(&*s.store, &t2.id, TicketState::Denied).await;
    assert_eq!(
        denied.end_reason.as_deref(),
        Some("denied by dana: not during the freeze")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_page_lists_live_sessions() {
    let Some(chromium) = chromium() else { return };
    let s = start(Backend::shared()).await;
    let client = s.pw.connect().await;
    client.simple_query("SELECT 1").await.expect("query");
    let mut browser = Browser::start(&chromium).await;
    browser.login("root", "root-pw").await;
    browser
        .navigate(&format!("http://{}/sessions.html", s.admin))
        .await;
    browser
        .wait_for("[...document.querySelectorAll('#sessions tbody tr')].some(r => r.innerText.includes('alice'))", "alice's session")
        .await;
}
