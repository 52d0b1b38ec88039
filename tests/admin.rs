//! The admin HTTP API: authentication against pgward identities, /metrics
//! in Prometheus text with counters that match the traffic sent, sessions
//! listed and terminated, reload returning the new rule-set version.

mod support;

use pgward::admin::{router, serve, AdminState};
use pgward::auth::verifier::ScramVerifier;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use support::http::{exchange, http};
use support::{sqlstate, Backend, Pgward};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOT_PASSWORD: &str = "root-secret";

fn config(backend: &Backend) -> String {
    format!(
        "{}\n[users.root]\nscram_verifier = \"{}\"\ngroups = [\"admin\"]\n\n[policy]\n[[policy.rules]]\nname = \"no-sleeping\"\naction = \"deny\"\nfunctions = [\"pg_sleep\"]\n\n[admin]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
        backend.config("", ""),
        ScramVerifier::generate(ROOT_PASSWORD)
    )
}

/// pgward and its admin API on a free port; the config is also written to
/// a file for reloads.
async fn start(backend: &Backend) -> (Pgward, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let text = config(backend);
    let path = dir.path().join("pgward.toml");
    std::fs::write(&path, &text).expect("config");
    let pw = Pgward::start_in(&text, dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(AdminState {
        gw: Arc::clone(&pw.gateway),
        config_path: Some(path),
        ready: Arc::new(AtomicBool::new(true)),
    });
    tokio::spawn(serve(listener, app, std::future::pending()));
    (pw, addr, dir)
}

const ROOT: Option<(&str, &str)> = Some(("root", ROOT_PASSWORD));

/// The value of the sample `name` (with its labels, exactly) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_identities_get_in() {
    let (_pw, addr, _dir) = start(Backend::shared()).await;
    assert_eq!(http(addr, "GET", "/health", None).await.0, 200);
    assert_eq!(http(addr, "GET", "/ready", None).await.0, 200);
    assert_eq!(http(addr, "GET", "/metrics", None).await.0, 401);
    assert_eq!(
        http(addr, "GET", "/metrics", Some(("root", "wrong")))
            .await
            .0,
        401
    );
    assert_eq!(
        http(addr, "GET", "/metrics", Some(("nobody", "x"))).await.0,
        401
    );
    // A real identity, but not in an admin group.
    assert_eq!(
        http(
            addr,
            "GET",
            "/metrics",
            Some((support::USER, support::PASSWORD))
        )
        .await
        .0,
        401
    );
    assert_eq!(http(addr, "GET", "/metrics", ROOT).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_the_traffic() {
    let (pw, addr, _dir) = start(Backend::shared()).await;
    let client = pw.connect().await;
    for _ in 0..5 {
        client.simple_query("SELECT 1").await.expect("select");
    }
    for _ in 0..2 {
        let e = client
            .simple_query("SELECT pg_sleep(0)")
            .await
            .expect_err("refused");
        assert_eq!(sqlstate(&e), "42501");
    }
    client.simple_query("SELECT 1/0").await.expect_err("error");
    client
        .query_one("SELECT $1::int", &[&7i32])
        .await
        .expect("extended");

    let (status, text) = http(addr, "GET", "/metrics", ROOT).await;
    assert_eq!(status, 200);
    let shape = regex::Regex::new(
        r#"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eE]+$|^\+Inf"#,
    )
    .unwrap();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "{line}"
            );
        } else {
            assert!(shape.is_match(line), "not a sample line: {line:?}");
        }
    }
    let ok = sample(
        &text,
        r#"pgward_statements_total{decision="allowed",result="ok"}"#,
    );
    let failed = sample(
        &text,
        r#"pgward_statements_total{decision="allowed",result="error"}"#,
    );
    let refused = sample(
        &text,
        r#"pgward_refusals_total{sqlstate="42501",rule="no-sleeping",phase="rules"}"#,
    );
    assert_eq!(
        (ok, failed, refused),
        (Some(6.0), Some(1.0), Some(2.0)),
        "{text}"
    );
    assert_eq!(
        sample(&text, "pgward_statement_duration_seconds_count"),
        Some(7.0)
    );
    assert_eq!(sample(&text, "pgward_sessions"), Some(1.0));
    assert_eq!(
        sample(&text, r#"pgward_sessions_by_group{group="dev"}"#),
        Some(1.0)
    );
    assert!(sample(&text, "pgward_client_bytes_sent_total").is_some_and(|b| b > 0.0));
    // Every byte the client sent is counted: one more Query of 14 bytes
    // (tag, length, "SELECT 1\0") adds exactly that. (The query before
    // it also brings in what the client sent with no answer to count it
    // by, such as tokio-postgres closing its statement.)
    let received = |text: &str| sample(text, "pgward_client_bytes_received_total");
    assert!(received(&text).is_some_and(|b| b >= (5 * 14 + 2 * 24 + 16) as f64));
    client.simple_query("SELECT 1").await.expect("select");
    let (_, text) = http(addr, "GET", "/metrics", ROOT).await;
    let before = received(&text).expect("bytes received");
    client.simple_query("SELECT 1").await.expect("select");
    let (_, after) = http(addr, "GET", "/metrics", ROOT).await;
    assert_eq!(received(&after), Some(before + 14.0), "{after}");
    assert_eq!(sample(&after, "pgward_masked_cells_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_and_terminated_and_reload_returns_the_version() {
    let (pw, addr, _dir) = start(Backend::shared()).await;
    let client = pw.connect().await;
    client.simple_query("SELECT 1").await.expect("select");
    let (status, body) = http(addr, "GET", "/sessions", ROOT).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let mine = list
        .as_array()
        .and_then(|l| l.iter().find(|s| s["user"] == support::USER))
        .cloned()
        .expect("alice's session is listed");
    assert_eq!(mine["database"], support::DB);
    let id = mine["id"].as_u64().expect("id");

    assert_eq!(
        http(addr, "POST", "/sessions/999999/terminate", ROOT)
            .await
            .0,
        404
    );
    let (status, _) = http(addr, "POST", &format!("/sessions/{id}/terminate"), ROOT).await;
    assert_eq!(status, 200);
    // The FATAL may reach the connection before the next query does.
    assert!(client.simple_query("SELECT 1").await.is_err(), "terminated");
    for _ in 0..200 {
        if !pw.gateway.registry.list().iter().any(|s| s.id == id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!pw.gateway.registry.list().iter().any(|s| s.id == id));

    let (status, body) = http(addr, "POST", "/reload", ROOT).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["version"], 2);
    assert_eq!(pw.gateway.rules_version(), 2);
}

/// psql against the admin console as `user`: (success, stdout, stderr).
fn psql_console(pw: &Pgward, user: &str, password: &str, sql: &str) -> (bool, String, String) {
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user={user} dbname=pgward sslmode=disable",
            pw.addr.port()
        ))
        .args(["-X", "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_on_the_admin_console_shows_tables_and_kill_ends_a_session() {
    let (pw, _addr, dir) = start(Backend::shared()).await;
    let _ = pw.gateway.config_path.set(dir.path().join("pgward.toml"));
    let client = pw.connect().await;
    client.simple_query("SELECT 1").await.expect("select");
    let id = pw.gateway.registry.list()[0].id;

    let (ok, out, err) = psql_console(&pw, "root", ROOT_PASSWORD, "SHOW SESSIONS");
    assert!(ok, "{err}");
    assert!(out.contains(" id ") && out.contains("backend_pid"), "{out}");
    assert!(
        out.contains(support::USER) && out.contains(support::DB),
        "{out}"
    );
    assert!(out.contains("(1 row)"), "{out}");

    let (ok, out, err) = psql_console(&pw, "root", ROOT_PASSWORD, "SHOW STATS");
    assert!(ok, "{err}");
    assert!(out.contains("statements_ok"), "{out}");
    let (ok, out, err) = psql_console(&pw, "root", ROOT_PASSWORD, "show rules;");
    assert!(ok, "{err}");
    assert!(out.contains("no-sleeping") && out.contains("deny"), "{out}");
    let (ok, _, err) = psql_console(&pw, "root", ROOT_PASSWORD, "SHOW APPROVALS");
    assert!(!ok && err.contains("approvals are not configured"), "{err}");
    let (ok, _, err) = psql_console(&pw, "root", ROOT_PASSWORD, "DROP TABLE x");
    assert!(!ok && err.contains("try SHOW HELP"), "{err}");

    let (ok, out, err) = psql_console(&pw, "root", ROOT_PASSWORD, "RELOAD");
    assert!(ok, "{err}");
    assert!(out.contains("version") && out.contains(" 2 "), "{out}");
    assert_eq!(pw.gateway.rules_version(), 2);

    let (ok, _, err) = psql_console(&pw, "root", ROOT_PASSWORD, &format!("KILL {id}"));
    assert!(ok, "{err}");
    for _ in 0..200 {
        if pw.gateway.registry.list().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        pw.gateway.registry.list().is_empty(),
        "KILL ended the session"
    );
    assert!(client.simple_query("SELECT 1").await.is_err());

    // Not an admin identity: refused after authentication.
    let (ok, _, err) = psql_console(&pw, support::USER, support::PASSWORD, "SHOW SESSIONS");
    assert!(
        !ok && err.contains("permission denied for database \"pgward\""),
        "{err}"
    );
    let (ok, _, err) = psql_console(&pw, "root", "wrong", "SHOW SESSIONS");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_speaks_https_when_configured() {
    let backend = Backend::shared();
    let dir = tempfile::tempdir().expect("dir");
    let pki = support::certs::TestPki::new(dir.path(), "admin");
    let text = format!(
        "{}tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        config(backend),
        pki.cert_file.display(),
        pki.key_file.display()
    );
    let pw = Pgward::start_in(&text, dir.path()).await;
    let state = AdminState {
        gw: Arc::clone(&pw.gateway),
        config_path: None,
        ready: Arc::new(AtomicBool::new(true)),
    };
    let addr = pgward::admin::start(state, "127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .expect("start");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client_config()));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("handshake");
    let (status, body) = exchange(tls, "GET", "/metrics", ROOT).await;
    assert_eq!(status, 200);
    assert!(body.contains("pgward_sessions"), "{body}");
    // A stalled handshake does not hold up others; plain HTTP gets nothing.
    let _stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out).await;
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("handshake beside a stalled one");
    assert_eq!(exchange(tls, "GET", "/health", None).await.0, 200);
}
