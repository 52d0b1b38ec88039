//! Payloads, and the whole path (file store change -> queue -> POST)
//! against a local receiver that refuses the first attempt and accepts the second.

use super::*;
use crate::approvals::model::ApprovalMode;
use crate::approvals::store::file::FileStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ticket(id: &str, instance: &str) -> Ticket {
    let mut t = crate::approvals::testkit::ticket(id, "alice", ApprovalMode::Hold, 2);
    t.requester.instance = instance.into();
    t.statement = "UPDATE customers SET email = '<!channel> <http://evil|x>' WHERE id = 1".into();
    t.justification = Some("ticket #42 & more".into());
    t
}

#[test]
fn payloads() {
    let t = ticket("00000000000000aa", "i1");
    let json: serde_json::Value = serde_json::from_slice(&payload(
        WebhookFormat::Json,
        &t,
        Some("http://h/approvals/aa"),
    ))
    .expect("json");
    assert_eq!(json["event"], "ticket_pending");
    assert_eq!(json["url"], "http://h/approvals/aa");
    assert_eq!(json["ticket"]["id"], "00000000000000aa");
    assert_eq!(json["ticket"]["requester"]["user"], "alice");

    let slack: serde_json::Value = serde_json::from_slice(&payload(
        WebhookFormat::Slack,
        &t,
        Some("http://h/approvals/aa"),
    ))
    .expect("json");
    let text = slack["text"].as_str().expect("text");
    assert!(
        text.contains("*alice* wants to run on *db* as *app*"),
        "{text}"
    );
    assert!(text.contains("2 approvals needed"), "{text}");
    assert!(
        text.contains("<http://h/approvals/aa|Approve or deny>"),
        "{text}"
    );
    // The requester's text cannot mention a channel or forge a link.
    assert!(
        text.contains("&lt;!channel&gt; &lt;http://evil|x&gt;"),
        "{text}"
    );
    assert!(text.contains("ticket #42 &amp; more"), "{text}");
    assert_eq!(slack.as_object().expect("object").len(), 1);
}

#[test]
fn backoff_doubles_up_to_a_cap_and_urls_are_shown_without_their_path() {
    assert_eq!(backoff(1), FIRST_BACKOFF);
    assert_eq!(backoff(2), FIRST_BACKOFF * 2);
    assert_eq!(backoff(20), MAX_BACKOFF);
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    assert_eq!(
        shown_url("https://hooks.example/services/SECRET"),
        "https://hooks.example"
    );
    assert_eq!(shown_url("http://h:1?k=SECRET"), "http://h:1");
}

/// Answers 503 to the first request and 200 to the rest; sends each
/// request's body on.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(u16, Vec<u8>)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/hook/SECRET",
        listener.local_addr().expect("addr")
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for n in 0.. {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let got = s.read(&mut chunk).await.expect("read");
                assert!(got > 0, "request cut short");
                buf.extend_from_slice(&chunk[..got]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.parse().ok())
                    .expect("content-length");
                if buf.len() >= end + 4 + len {
                    break buf[end + 4..end + 4 + len].to_vec();
                }
            };
            let status = if n == 0 { 503 } else { 200 };
            let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            s.write_all(answer.as_bytes()).await.expect("answer");
            let _ = tx.send((status, body));
        }
    });
    (url, rx)
}

#[tokio::test]
async fn a_new_ticket_of_this_instance_is_posted_once_after_a_failed_attempt() {
    let (url, mut received) = receiver().await;
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(
        FileStore::open(&dir.path().join("approvals.jsonl"))
            .await
            .expect("store"),
    );
    let hooks = [WebhookConfig {
        url,
        format: WebhookFormat::Json,
        timeout: Duration::from_secs(10),
        retries: 3,
    }];
    let task = start(
        &hooks,
        Some("http://pgward/approvals".into()),
        &(Arc::clone(&store) as Arc<dyn ApprovalStore>),
        "i1".into(),
    )
    .expect("start")
    .expect("a task");
    // Another instance's ticket, then ours.
    store
        .create_ticket(&ticket("00000000000000bb", "i2"))
        .await
        .expect("create");
    store
        .create_ticket(&ticket("00000000000000aa", "i1"))
        .await
        .expect("create");

    let (first, body) = received.recv().await.expect("first attempt");
    assert_eq!(first, 503);
    let (second, again) = received.recv().await.expect("second attempt");
    assert_eq!(second, 200);
    assert_eq!(body, again, "the retry posts the same payload");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["ticket"]["id"], "00000000000000aa");
    assert_eq!(json["url"], "http://pgward/approvals/00000000000000aa");

    // A change to ours posts nothing again: a later ticket of ours is the
    // next post, not a repeat of the first or the other instance's.
    store
        .update_ticket("00000000000000aa", &|t| {
            t.end(TicketState::Withdrawn, "test");
            Ok(())
        })
        .await
        .expect("update");
    store
        .create_ticket(&ticket("00000000000000cc", "i1"))
        .await
        .expect("create");
    let (status, body) = received.recv().await.expect("third post");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["ticket"]["id"], "00000000000000cc");
    task.abort();
}

#[tokio::test]
async fn no_hooks_no_task() {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn ApprovalStore> = Arc::new(
        FileStore::open(&dir.path().join("approvals.jsonl"))
            .await
            .expect("store"),
    );
    assert!(start(&[], None, &store, "i1".into()).expect("ok").is_none());
}
