//! The built binary: `passwd`, `check-config` and `run`, end to end.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{connect_eventually, Backend, DB};

const BIN: &str = env!("CARGO_BIN_EXE_pgward");

#[test]
fn check_config_explains_a_good_file_and_names_the_bad_field() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pgward.example.toml");
    let out = Command::new(BIN)
        .args(["check-config", "--config", example])
        .env("SHOP_DB_PASSWORD", "from-the-environment")
        .env("SHOP_OWNER_PASSWORD", "from-the-environment")
        .env("SHOP_SUPPORT_PASSWORD", "from-the-environment")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(!stdout.contains("from-the-environment"), "password printed");

    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(example).expect("example").replace(
        "startup_timeout = \"10s\"",
        "startup_timeout = \"ten seconds\"",
    );
    std::fs::write(&bad, text).expect("write");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .env("SHOP_DB_PASSWORD", "x")
        .env("SHOP_OWNER_PASSWORD", "x")
        .env("SHOP_SUPPORT_PASSWORD", "x")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.startup_timeout"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_then_run_then_sigterm() {
    let backend = Backend::shared();
    let mut passwd = Command::new(BIN)
        .args(["passwd", "carol"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("passwd");
    passwd
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"carol-pw\n")
        .expect("write");
    let out = passwd.wait_with_output().expect("passwd output");
    assert!(out.status.success());
    let snippet = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(snippet.starts_with("[users.carol]\nscram_verifier = \"SCRAM-SHA-256$4096:"));
    assert!(!snippet.contains("carol-pw"));

    let port = pgward::cluster::free_port().expect("port");
    let config = backend.config("", "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let path = backend.cluster.dir().join(format!("cli-{port}.toml"));
    std::fs::write(&path, format!("{config}\n{snippet}")).expect("config");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .expect("pgward run");
    let config = binary_client(port, "carol", "carol-pw");
    let client = connect_eventually(&config, false)
        .await
        .expect("the binary serves");
    let row = client
        .query_one("SELECT 'via the binary'", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, &str>(0), "via the binary");

    signal(&child, "-TERM");
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.expect("pgward exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    // The idle session was closed by the drain.
    assert!(client.simple_query("SELECT 1").await.is_err());
}

/// A client config for the binary listening on `port`.
fn binary_client(port: u16, user: &str, password: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(DB);
    config
}

/// A pgward run that is killed if the test fails before it stops it (a
/// left-over child would hold the test's output open).
struct Running(std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` to the child.
fn signal(child: &std::process::Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill")
        .success());
}

/// Polls `check` every 100 ms for up to 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_without_dropping_sessions() {
    let backend = Backend::shared();
    let port = pgward::cluster::free_port().expect("port");
    let base = backend.config("", "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let deny_now =
        "\n[[policy.rules]]\nname = \"no-now\"\naction = \"deny\"\nfunctions = [\"now\"]\n";
    let path = backend.cluster.dir().join(format!("reload-{port}.toml"));
    let log = backend.cluster.dir().join(format!("reload-{port}.log"));
    std::fs::write(&path, format!("{base}{deny_now}")).expect("config");
    let child = Running(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("pgward run"),
    );
    let config = binary_client(port, support::USER, support::PASSWORD);
    let client = connect_eventually(&config, false)
        .await
        .expect("the binary serves");
    let e = client
        .simple_query("SELECT now()")
        .await
        .expect_err("denied");
    assert!(support::message(&e).contains("no-now"), "{e:?}");

    // Drop the rule and reload: the same session may now call now(). The
    // section stays, empty: a file without it would be refused.
    std::fs::write(&path, format!("{base}\n[policy]\n")).expect("config");
    signal(&child, "-HUP");
    assert!(
        eventually(|| async { client.simple_query("SELECT now()").await.is_ok() }).await,
        "the new rules apply to the open session"
    );

    // A broken file is rejected with a log line; the rules in force stay.
    std::fs::write(&path, format!("{base}{deny_now}\naction = \"sometimes\"\n")).expect("config");
    signal(&child, "-HUP");
    assert!(
        eventually(|| async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("rules reload rejected")
        })
        .await,
        "no log line: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    client
        .simple_query("SELECT now()")
        .await
        .expect("old rules stay");
    signal(&child, "-TERM");
}

/// Whether `now()` is denied and the masked column reads NULL.
async fn in_force(client: &tokio_postgres::Client, select_ssn: &str) -> (bool, bool) {
    let denied = client.simple_query("SELECT now()").await.is_err();
    let row = client.query_one(select_ssn, &[]).await.expect("select");
    (denied, row.get::<_, Option<String>>(0).is_none())
}

/// The log lines of a run so far that contain `needle`, without colours.
fn log_lines(log: &std::path::Path, needle: &str) -> Vec<String> {
    let ansi = regex::Regex::new("\x1b\\[[0-9;]*m").expect("regex");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| ansi.replace_all(l, "").into_owned())
        .filter(|l| l.contains(needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_file_keeps_rules_and_masking_under_load() {
    let backend = Backend::shared();
    let table = format!("reload_secrets_{:08x}", rand::random::<u32>());
    backend.admin_sql(&format!(
        "CREATE TABLE {table} (id int, ssn text); INSERT INTO {table} VALUES (1, '123-45-6789'); \
         GRANT SELECT ON {table} TO {}, {};",
        support::APP_ROLE,
        support::MASKED_ROLE
    ));
    let port = pgward::cluster::free_port().expect("port");
    let base = backend.masked_config("", "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let rules = "\n[[policy.rules]]\nname = \"no-now\"\naction = \"deny\"\nfunctions = [\"now\"]\n";
    let masking = format!(
        "\n[masking]\n[[masking.rules]]\nname = \"ssn\"\ncolumns = [\"{table}.ssn\"]\nstrategy = \"null\"\n"
    );
    let good = format!("{base}{rules}{masking}");
    let path = backend
        .cluster
        .dir()
        .join(format!("reload-bad-{port}.toml"));
    let log = backend.cluster.dir().join(format!("reload-bad-{port}.log"));
    std::fs::write(&path, &good).expect("config");
    let child = Running(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("pgward run"),
    );
    let config = binary_client(port, support::USER, support::PASSWORD);
    let client = connect_eventually(&config, false)
        .await
        .expect("the binary serves");
    let select_ssn = format!("SELECT ssn FROM {table}");
    assert_eq!(
        in_force(&client, &select_ssn).await,
        (true, true),
        "rules at startup"
    );

    // Load alongside: a second session runs statements throughout.
    let busy = connect_eventually(&config, true).await.expect("busy");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn({
        let stop = std::sync::Arc::clone(&stop);
        async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match busy.simple_query("SELECT 1").await {
                    Ok(_) => ok += 1,
                    Err(_) => {
                        failed += 1;
                        break;
                    }
                }
            }
            (ok, failed)
        }
    });

    let policy_at = good.find("[[policy.rules]]").expect("policy");
    let masking_at = good.find("[masking]").expect("masking");
    let bad_files = [
        ("empty", String::new(), "upstreams"),
        (
            "truncated before [policy]",
            good[..policy_at].to_owned(),
            "lacks [masking] and [policy],",
        ),
        (
            "truncated inside a rule",
            good[..good.len() - 18].to_owned(),
            "strategy",
        ),
        (
            "partial (rules only)",
            format!("{rules}{masking}"),
            "upstreams",
        ),
        (
            "mistyped",
            good.replace("action = \"deny\"", "action = \"denny\""),
            "denny",
        ),
        (
            "without [masking]",
            good[..masking_at].to_owned(),
            "lacks [masking],",
        ),
        (
            "server change",
            good.replace("[server]", "[server]\nmax_client_connections = 7"),
            "[server] changed",
        ),
    ];
    for (n, (what, text, reason)) in bad_files.iter().enumerate() {
        std::fs::write(&path, text).expect("config");
        signal(&child, "-HUP");
        assert!(
            eventually(|| async { log_lines(&log, "rules reload rejected").len() > n }).await,
            "{what}: no log line: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let line = log_lines(&log, "rules reload rejected").remove(n);
        assert!(line.contains("ERROR"), "{what}: {line}");
        assert!(line.contains(reason), "{what}: {line}");
        assert_eq!(
            in_force(&client, &select_ssn).await,
            (true, true),
            "{what}: rules stay"
        );
    }
    assert!(log_lines(&log, "rules reloaded").is_empty());

    // A good file still reloads, with the next version, on the open session.
    std::fs::write(&path, format!("{base}\n[policy]\n{masking}")).expect("config");
    signal(&child, "-HUP");
    assert!(
        eventually(|| async { client.simple_query("SELECT now()").await.is_ok() }).await,
        "the good reload applies"
    );
    let reloaded = log_lines(&log, "rules reloaded");
    assert!(reloaded[0].contains("version=2"), "{reloaded:?}");
    assert_eq!(
        in_force(&client, &select_ssn).await,
        (false, true),
        "masking stays"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.expect("load task");
    assert!(ok > 0 && failed == 0, "load: {ok} ok, {failed} failed");
    signal(&child, "-TERM");
}
