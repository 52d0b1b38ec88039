//! The approvals page in a real browser (headless Chromium over the
//! DevTools protocol): an approver loads it with their credentials, sees
//! the statement a psql session is held on with what they must see, clicks
//! Approve, and psql receives its result; Deny asks for a reason first; a
//! grant is revoked from the page; the sessions page lists a live session
//! and terminates it.
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

    // A statement held after the page loaded appears through the event
    // stream.
    let table = support::approvals::table("web");
    let sql = format!(
        "/* reason: INC-7 fix an address */ UPDATE {table} SET email = 'new@example.com' WHERE id = 1"
    );
    let psql = support::approvals::psql(&s.pw, &sql);
    let t = support::approvals::wait_pending(&*s.store).await;
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
        "alice (groups: dev)".to_owned(),
        "127.0.0.1:".to_owned(),
        "app on upstream appdb".to_owned(),
        "Transaction\nidle".to_owned(),
        "Rule\napprove-updates".to_owned(),
        "INC-7 fix an address".to_owned(),
        format!("UPDATE {table} SET email = 'new@example.com' WHERE id = 1"),
    ] {
        assert!(card.contains(&expected), "{expected:?} in\n{card}");
    }
    browser.click(&approve).await;
    // psql, held until now, gets its result.
    let out = psql.await.expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "UPDATE 1");
    // The transcript, for `--nocapture` runs.
    eprintln!(
        "psql, approved from the page:\n{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("statement held for approval: ticket {}", t.id)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        Backend::shared()
            .admin_sql(&format!("SELECT email FROM {table}"))
            .trim(),
        "new@example.com"
    );
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

    // A grant appears in the grants table and is revoked from it.
    let erin = pgward::auth::identity::Identity::new("erin", ["dba"]);
    let grant =
        s.pw.gateway
            .approvals()
            .create_grant(
                pgward::approvals::model::GrantSubject::User("alice".into()),
                pgward::approvals::model::GrantScope::Rule("approve-updates".into()),
                Duration::from_secs(600),
                &erin,
                Some("data fix".into()),
            )
            .await
            .expect("grant");
    let revoke = format!("button[data-action=revoke][data-grant=\"{}\"]", grant.id);
    browser
        .wait_for(&format!("document.querySelector('{revoke}')"), "the grant")
        .await;
    browser.click(&revoke).await;
    let started = Instant::now();
    loop {
        let grants = s.store.grants(None, 10).await.expect("grants");
        let g = grants.iter().find(|g| g.id == grant.id).expect("the grant");
        if let Some(r) = &g.revoked {
            assert_eq!(r.by, "dana");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the grant was not revoked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser
        .wait_for(
            &format!("!document.querySelector('{revoke}')"),
            "the grant gone",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_page_lists_and_terminates_live_sessions() {
    let Some(chromium) = chromium() else { return };
    let s = start(Backend::shared()).await;
    let client = s.pw.connect().await;
    client.simple_query("SELECT 1").await.expect("query");
    let id = s.pw.gateway.registry.list()[0].id;
    let mut browser = Browser::start(&chromium).await;
    browser.login("root", "root-pw").await;
    browser
        .navigate(&format!("http://{}/sessions.html", s.admin))
        .await;
    let row = format!("tr[data-session=\"{id}\"]");
    browser
        .wait_for(
            &format!("document.querySelector('{row}').innerText.includes('alice')"),
            "alice's session",
        )
        .await;
    browser
        .click(&format!(
            "button[data-action=terminate][data-session=\"{id}\"]"
        ))
        .await;
    let started = Instant::now();
    while client.simple_query("SELECT 1").await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the session was not terminated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser
        .wait_for(
            &format!("!document.querySelector('{row}')"),
            "the session gone",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_session_replays_on_the_sessions_page() {
    let Some(chromium) = chromium() else { return };
    let backend = Backend::shared();
    let dir = tempfile::tempdir().expect("dir");
    let (private, _) = pgward::record::chain::generate_key();
    std::fs::write(dir.path().join("k"), private).expect("key");
    let text = format!(
        "{}\n{}\n[audit]\nenabled = true\ndirectory = \"{d}/trail\"\nsigning_key_file = \"{d}/k\"\n\
         record_groups = [\"dev\"]\nrecordings_directory = \"{d}/rec\"\n",
        backend.config("", ""),
        support::approvals::config_extra(),
        d = dir.path().display()
    );
    let s = support::approvals::serve(support::Pgward::start_in(&text, dir.path()).await).await;
    let client = s.pw.connect().await;
    let id = s.pw.gateway.registry.list()[0].id;
    client
        .simple_query("SELECT 'replay-marker-42' AS marker")
        .await
        .expect("query");
    drop(client);
    // The recording is complete once its end event is written.
    let rec = dir.path().join("rec");
    let started = Instant::now();
    let key = loop {
        let done = std::fs::read_dir(&rec).ok().and_then(|entries| {
            entries.flatten().find_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let ms = name
                    .strip_prefix(&format!("session-{id}-"))?
                    .strip_suffix(".jsonl")?
                    .to_owned();
                let body = std::fs::read_to_string(e.path()).ok()?;
                body.contains("\"kind\":\"end\"").then_some(ms)
            })
        });
        if let Some(ms) = done {
            break format!("{id}-{ms}");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no recording");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut browser = Browser::start(&chromium).await;
    browser.login("root", "root-pw").await;
    browser
        .navigate(&format!("http://{}/sessions.html", s.admin))
        .await;
    let button = format!("button[data-action=replay][data-recording=\"{key}\"]");
    browser
        .wait_for(
            &format!("document.querySelector('{button}')"),
            "the recording",
        )
        .await;
    let row = browser
        .eval(&format!(
            "document.querySelector('tr[data-recording=\"{key}\"]').innerText"
        ))
        .await;
    assert!(row.as_str().is_some_and(|r| r.contains("alice")), "{row}");
    browser.click(&button).await;
    browser
        .wait_for(
            "document.getElementById('transcript').textContent.includes('replay-marker-42')",
            "the transcript",
        )
        .await;
    let transcript = browser
        .eval("document.getElementById('transcript').textContent")
        .await;
    let transcript = transcript.as_str().expect("text");
    assert!(
        transcript.contains("=> SELECT 'replay-marker-42' AS marker"),
        "{transcript}"
    );
    assert!(
        transcript.contains(&format!("-- session {id} of alice")),
        "{transcript}"
    );
}
