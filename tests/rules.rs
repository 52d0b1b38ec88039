//! Statement rules end to end: each built-in rule refuses in the simple and
//! the extended protocol, inside and outside transactions; the session goes
//! on, the transaction fails as PostgreSQL would fail it, and the protected
//! table is intact. Also: EXECUTE inherits PREPARE's verdict, reloads, the
//! lexing setting followed from the server, pipelining, psql.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use support::{message, sqlstate, Backend, Pgward, PASSWORD};
use tokio_postgres::{Client, SimpleQueryMessage};

/// A fresh table name per call, so tests sharing the cluster never collide.
fn table_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a table with `rows` rows through pgward.
async fn guarded_table(client: &Client, rows: i64) -> String {
    let t = table_name("guarded");
    client
        .batch_execute(&format!(
            "CREATE TABLE {t} (id int8 PRIMARY KEY, v text); \
             INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, {rows}) g"
        ))
        .await
        .expect("create table");
    t
}

async fn count(client: &Client, t: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .expect("count")
        .get(0)
}

/// One statement per built-in rule, with the rule's name.
fn denied_statements(t: &str) -> Vec<(String, &'static str)> {
    [
        (format!("DROP TABLE {t}"), "no-drop"),
        ("DROP SCHEMA public CASCADE".into(), "no-drop"),
        ("DROP DATABASE appdb".into(), "no-drop"),
        (format!("TRUNCATE {t}"), "no-truncate"),
        (format!("DELETE FROM {t}"), "no-unbounded-write"),
        (format!("UPDATE {t} SET v = 'gone'"), "no-unbounded-write"),
        (
            format!("WITH d AS (DELETE FROM {t} RETURNING 1) SELECT count(*) FROM d"),
            "no-unbounded-write",
        ),
        (
            "ALTER SYSTEM SET work_mem = '1MB'".into(),
            "no-alter-system",
        ),
        (format!("COPY {t} TO PROGRAM 'cat'"), "no-copy-program"),
        (format!("COPY {t} FROM '/etc/hostname'"), "no-server-files"),
        (
            "SELECT pg_read_file('postgresql.conf')".into(),
            "no-server-file-functions",
        ),
        (
            "SELECT lo_import('/etc/hostname')".into(),
            "no-server-file-functions",
        ),
        (
            "SELECT * FROM dblink('dbname=appdb', 'SELECT 1') AS x(a int)".into(),
            "no-dblink",
        ),
        (
            format!("SELECT query_to_xml('SELECT * FROM {t}', true, false, '')"),
            "no-dynamic-sql-functions",
        ),
        ("SET ROLE postgres".into(), "no-role-switch"),
        (
            "SET SESSION AUTHORIZATION postgres".into(),
            "no-role-switch",
        ),
        (
            "SELECT set_config('role', 'postgres', false)".into(),
            "no-role-switch",
        ),
        (
            format!("DO $$ BEGIN DELETE FROM {t}; END $$"),
            "no-do-blocks",
        ),
    ]
    .into_iter()
    .collect()
}

fn assert_denied(e: &tokio_postgres::Error, rule: &str, sql: &str) {
    assert_eq!(sqlstate(e), "42501", "{sql}: {e:?}");
    let text = message(e);
    assert!(
        text.contains(&format!("pgward rule \"{rule}\"")),
        "{sql}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_rule_denies_in_both_protocols_and_the_session_goes_on() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    let t = guarded_table(&client, 50).await;
    for (sql, rule) in denied_statements(&t) {
        let simple = client.simple_query(&sql).await.expect_err(&sql);
        assert_denied(&simple, rule, &sql);
        let extended = client.execute(sql.as_str(), &[]).await.expect_err(&sql);
        assert_denied(&extended, rule, &sql);
        // The session is usable at once and the table is intact.
        assert_eq!(count(&client, &t).await, 50, "{sql}");
    }
    // Inside explicit transactions, in both protocols: refused, the
    // transaction is failed (25P02 next), and a rollback recovers.
    for (sql, rule) in denied_statements(&t) {
        client.batch_execute("BEGIN").await.expect("begin");
        assert_denied(
            &client.simple_query(&sql).await.expect_err(&sql),
            rule,
            &sql,
        );
        let e = client.simple_query("SELECT 1").await.expect_err("aborted");
        assert_eq!(sqlstate(&e), "25P02", "{sql}: {e:?}");
        client.batch_execute("ROLLBACK").await.expect("rollback");
        client.batch_execute("BEGIN").await.expect("begin");
        assert_denied(
            &client.execute(sql.as_str(), &[]).await.expect_err(&sql),
            rule,
            &sql,
        );
        let e = client.execute("SELECT 1", &[]).await.expect_err("aborted");
        assert_eq!(sqlstate(&e), "25P02", "{sql}: {e:?}");
        client.batch_execute("ROLLBACK").await.expect("rollback");
    }
    assert_eq!(count(&client, &t).await, 50);
    let row = client
        .query_one(
            "SELECT rolname = current_user FROM pg_roles WHERE rolname = 'app'",
            &[],
        )
        .await
        .expect("still the app role");
    assert!(row.get::<_, bool>(0));
    // Allowed statements of the same kinds still run.
    client
        .execute(&format!("UPDATE {t} SET v = 'x' WHERE id = 1"), &[])
        .await
        .expect("bounded update");
    assert_eq!(
        client
            .execute(&format!("DELETE FROM {t} WHERE id > 40"), &[])
            .await
            .expect("bounded delete"),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_fails_the_transaction_like_a_server_error() {
    let pw = Pgward::start(Backend::shared()).await;
    let mut client = pw.connect().await;
    let t = guarded_table(&client, 10).await;

    // Simple protocol: the denial aborts the transaction; COMMIT rolls back.
    client
        .batch_execute(&format!("BEGIN; INSERT INTO {t} VALUES (100, 'new')"))
        .await
        .expect("begin");
    let e = client
        .simple_query(&format!("TRUNCATE {t}"))
        .await
        .expect_err("denied");
    assert_denied(&e, "no-truncate", "TRUNCATE");
    let e = client.simple_query("SELECT 1").await.expect_err("aborted");
    assert_eq!(sqlstate(&e), "25P02", "{e:?}");
    let done = client.simple_query("COMMIT").await.expect("commit");
    assert!(matches!(
        done.last(),
        Some(SimpleQueryMessage::CommandComplete(0))
    ));
    assert_eq!(count(&client, &t).await, 10, "the insert was rolled back");

    // Extended protocol, through a driver-managed transaction.
    let tx = client.transaction().await.expect("transaction");
    tx.execute(&format!("INSERT INTO {t} VALUES (101, 'new')"), &[])
        .await
        .expect("insert");
    let e = tx
        .execute(&format!("DELETE FROM {t}"), &[])
        .await
        .expect_err("denied");
    assert_denied(&e, "no-unbounded-write", "DELETE");
    let e = tx.execute("SELECT 1", &[]).await.expect_err("aborted");
    assert_eq!(sqlstate(&e), "25P02", "{e:?}");
    let _ = tx.commit().await;
    assert_eq!(count(&client, &t).await, 10, "rolled back");

    // A denial in a failed transaction is answered as PostgreSQL answers
    // any statement there (25P02), and the session still recovers.
    client.batch_execute("BEGIN").await.expect("begin");
    let _ = client
        .simple_query("SELECT 1/0")
        .await
        .expect_err("div by zero");
    let e = client
        .simple_query(&format!("TRUNCATE {t}"))
        .await
        .expect_err("denied");
    assert_eq!(sqlstate(&e), "25P02", "{e:?}");
    client.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(count(&client, &t).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_messages_and_pipelines_keep_their_order() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    let t = guarded_table(&client, 5).await;
    // One denial denies the whole message: PostgreSQL would run it as one
    // implicit transaction, so nothing of it runs.
    let e = client
        .simple_query(&format!("INSERT INTO {t} VALUES (6, 'x'); TRUNCATE {t}"))
        .await
        .expect_err("denied");
    assert_denied(&e, "no-truncate", "multi");
    assert_eq!(count(&client, &t).await, 5);

    // Pipelined extended-protocol queries: each gets its own answer, in order.
    let good = format!("SELECT count(*) FROM {t}");
    let bad = format!("DELETE FROM {t}");
    let (a, b, c, d) = tokio::join!(
        client.query_one(good.as_str(), &[]),
        client.execute(bad.as_str(), &[]),
        client.query_one(good.as_str(), &[]),
        client.execute("SELECT pg_read_file('x')", &[]),
    );
    assert_eq!(a.expect("first").get::<_, i64>(0), 5);
    assert_denied(&b.expect_err("second"), "no-unbounded-write", &bad);
    assert_eq!(c.expect("third").get::<_, i64>(0), 5);
    assert_denied(
        &d.expect_err("fourth"),
        "no-server-file-functions",
        "pg_read_file",
    );

    // Syntax errors are refused with PostgreSQL's message and 42601.
    let e = client.simple_query("SELEC 1").await.expect_err("syntax");
    assert_eq!(sqlstate(&e), "42601");
    assert!(
        message(&e).contains("syntax error at or near \"SELEC\""),
        "{e:?}"
    );
    let e = client.prepare("SELEC 1").await.expect_err("syntax");
    assert_eq!(sqlstate(&e), "42601");
    assert_eq!(count(&client, &t).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_inherits_the_verdict_of_prepare_under_the_current_rules() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    let client = pw.connect().await;
    let t = guarded_table(&client, 3).await;
    let e = client
        .simple_query(&format!("PREPARE wipe AS DELETE FROM {t}"))
        .await
        .expect_err("denied");
    assert_denied(&e, "no-unbounded-write", "PREPARE");
    client
        .batch_execute(&format!("PREPARE peek AS SELECT count(*) FROM {t}"))
        .await
        .expect("prepare");
    let rows = client.simple_query("EXECUTE peek").await.expect("execute");
    assert!(rows
        .iter()
        .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("3"))));

    // New rules: reading the table now needs approval (a ticket). The
    // statement was prepared under the old rules; EXECUTE is judged under
    // the new ones.
    pw.reload_with(&format!(
        "[policy]\n[[policy.rules]]\nname = \"ask-first\"\naction = \"require_approval\"\napproval_mode = \"ticket\"\napprovers = [\"ops\"]\nrelations = [\"{t}\"]\n"
    ))
    .expect("reload");
    let e = client.simple_query("EXECUTE peek").await.expect_err("held");
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        message(&e).contains("requires approval by pgward rule \"ask-first\""),
        "{e:?}"
    );
    let hint = e
        .as_db_error()
        .and_then(|d| d.hint())
        .unwrap_or_default()
        .to_owned();
    assert!(hint.contains("approved"), "{hint}");

    // An invalid file is rejected and the rules in force stay.
    let e = pw
        .reload_with("[policy]\ndefault_action = \"maybe\"\n")
        .expect_err("invalid");
    assert!(e.to_string().contains("policy.default_action"), "{e}");
    assert!(
        client.simple_query("EXECUTE peek").await.is_err(),
        "old rules stay"
    );
    // An EXECUTE of a statement pgward never saw prepared is refused.
    let e = client
        .simple_query("EXECUTE nonesuch")
        .await
        .expect_err("unknown");
    assert_eq!(sqlstate(&e), "42501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lexing_follows_the_servers_standard_conforming_strings() {
    // The built-in rules refuse turning the setting off; a rule of the
    // operator's placed first allows it, so lexing under "off" is exercised.
    let backend = Backend::shared();
    let config = format!(
        "{}\n[policy]\n[[policy.rules]]\nname = \"legacy-strings\"\naction = \"allow\"\nkinds = [\"standard_conforming_strings_off\"]\n",
        backend.config("", "")
    );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let client = pw.connect().await;
    let t = guarded_table(&client, 2).await;
    let tricky = format!("SELECT 'a\\'; DROP TABLE {t}; --'");
    // With the setting on (the default), the string ends at the backslash
    // and a DROP follows: refused.
    let e = client.simple_query(&tricky).await.expect_err("denied");
    assert_denied(&e, "no-drop", &tricky);
    // With it off, the same text is one string: allowed, and harmless.
    client
        .batch_execute("SET standard_conforming_strings = off")
        .await
        .expect("set");
    let rows = client.simple_query(&tricky).await.expect("one string");
    let value = rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(
        value.as_deref(),
        Some(format!("a'; DROP TABLE {t}; --").as_str())
    );
    // A SET that is rolled back leaves the server's setting, and pgward's, as it was.
    client
        .batch_execute("BEGIN; SET standard_conforming_strings = on; ROLLBACK")
        .await
        .expect("rolled back");
    client.simple_query(&tricky).await.expect("still off");
    client
        .batch_execute("RESET standard_conforming_strings")
        .await
        .expect("reset");
    let e = client.simple_query(&tricky).await.expect_err("on again");
    assert_denied(&e, "no-drop", &tricky);
    assert_eq!(count(&client, &t).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_sees_denials_and_carries_on() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    let client = pw.connect().await;
    let t = guarded_table(&client, 4).await;
    // Every built-in rule's statement, one per line, then a \copy (allowed:
    // COPY TO STDOUT) and a count: psql reports each refusal and goes on.
    let mut script: String = denied_statements(&t)
        .iter()
        .map(|(sql, _)| format!("{sql};\n"))
        .collect();
    script.push_str(&format!(
        "\\copy {t} to '/dev/null'\nSELECT 'count=' || count(*) FROM {t};\n"
    ));
    let file = backend
        .cluster
        .dir()
        .join(format!("{}.sql", table_name("script")));
    std::fs::write(&file, &script).expect("script");
    let psql = backend.cluster.program("psql");
    let dsn = pw.dsn();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(psql)
            .env("PGPASSWORD", PASSWORD)
            .args(["-X", "-q", "-t", "-A", "-f"])
            .arg(&file)
            .arg(dsn)
            .output()
            .expect("psql -f")
    })
    .await
    .expect("psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (sql, rule) in denied_statements(&t) {
        assert!(stderr.contains(&format!("\"{rule}\"")), "{sql}: {stderr}");
    }
    let refusals = stderr
        .matches("ERROR:  statement denied by pgward rule")
        .count();
    assert_eq!(refusals, denied_statements(&t).len(), "{stderr}");
    assert!(
        stdout.contains("count=4"),
        "the script went on: {stdout}\n{stderr}"
    );
    assert_eq!(count(&client, &t).await, 4);
}
