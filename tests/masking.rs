//! Masking end to end: masked identities see masked values in text and
//! binary results, in the simple and extended protocols, through
//! tokio-postgres, psql and pgbench; exempt identities see clear values;
//! bypass attempts are refused; schema changes never open a window.

mod support;

use pgward::auth::verifier::ScramVerifier;
use std::time::Duration;
use support::{connect_with, message, sqlstate, text_rows, Backend, Pgward, PASSWORD, USER};
use tokio_postgres::Client;

const DBA_PASSWORD: &str = "dba-secret";

/// pgward with masking for the `dev` group (alice) and an exempt `dba`.
async fn start(table: &str) -> Pgward {
    let backend = Backend::shared();
    let config = format!(
        r#"{base}
[users.dba]
scram_verifier = "{dba}"
groups = ["dba"]

# The dba migrates schemas: allowed past the built-in DROP COLUMN rule.
[policy]
[[policy.rules]]
name = "dba-may-drop-columns"
action = "allow"
groups = ["dba"]
kinds = ["drop_column"]

[masking]
hash_key_env = "PGWARD_TEST_HASH_KEY"
refresh = "1h"

[[masking.rules]]
name = "ssn-last4"
columns = ["{table}.ssn*"]
strategy = "partial"
keep_last = 4
exempt_groups = ["dba"]

[[masking.rules]]
name = "mail"
columns = ["{table}.email", "{table}_leads.email"]
strategy = "email"
exempt_groups = ["dba"]

[[masking.rules]]
name = "card"
columns = ["{table}.card"]
strategy = "redact"
replacement = "[card]"
exempt_groups = ["dba"]

[[masking.rules]]
name = "score"
columns = ["{table}.score"]
strategy = "constant"
value = "0"
exempt_groups = ["dba"]

[[masking.rules]]
name = "token"
columns = ["{table}.token"]
strategy = "hash"
exempt_groups = ["dba"]
"#,
        base = backend.masked_config("", ""),
        dba = ScramVerifier::generate(DBA_PASSWORD),
    );
    std::env::set_var("PGWARD_TEST_HASH_KEY", "test-key");
    // The table exists before pgward reads the catalog.
    let setup = Pgward::start(backend).await;
    let c = setup.connect().await;
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, name text, ssn text, email text, card text, score int4, token text); \
         INSERT INTO {table} VALUES \
           (1, 'Ada', '123-45-6789', 'ada@example.com', '4111111111111111', 97, 'tok-a'), \
           (2, 'Alan', '987-65-4321', 'alan@example.org', '5500000000000004', 88, 'tok-a'), \
           (3, 'Grace', NULL, 'grace@example.net', '340000000000009', 91, 'tok-b')"
    ))
    .await
    .expect("table");
    drop(c);
    setup.shutdown().await;
    Pgward::start_in(&config, backend.cluster.dir()).await
}

fn table() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "cust_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn dba(pw: &Pgward) -> Client {
    connect_with(&pw.client_config("dba", DBA_PASSWORD))
        .await
        .expect("dba")
}

const SECRETS: &[&str] = &[
    "123-45-6789",
    "987-65-4321",
    "ada@",
    "alan@",
    "4111111111111111",
    "5500000000000004",
    "tok-a",
    "tok-b",
];

fn assert_no_secret(text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "clear value {s} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_in_text_and_binary_clear_for_the_exempt() {
    let t = table();
    let pw = start(&t).await;
    let alice = pw.connect().await;
    let sql = format!("SELECT id, name, ssn, email, card, score, token FROM {t} ORDER BY id");
    // Simple protocol, text format.
    let rows = text_rows(&alice.simple_query(&sql).await.expect("simple"));
    assert_eq!(rows[0][2].as_deref(), Some("*******6789"));
    assert_eq!(rows[0][3].as_deref(), Some("****@example.com"));
    assert_eq!(rows[0][4].as_deref(), Some("[card]"));
    assert_eq!(rows[0][5].as_deref(), Some("0"));
    assert_eq!(rows[2][2], None, "NULL stays NULL");
    assert_eq!(
        rows[0][1].as_deref(),
        Some("Ada"),
        "clear columns stay clear"
    );
    // Keyed hash: equal values give equal tokens, different ones differ.
    let token = |r: &Vec<Option<String>>| r[6].clone().unwrap_or_default();
    assert!(token(&rows[0]).starts_with("h:"));
    assert_eq!(token(&rows[0]), token(&rows[1]));
    assert_ne!(token(&rows[0]), token(&rows[2]));
    assert_no_secret(&format!("{rows:?}"));

    // Extended protocol: tokio-postgres asks for binary results.
    let rows = alice.query(sql.as_str(), &[]).await.expect("extended");
    assert_eq!(rows[1].get::<_, Option<&str>>(2), Some("*******4321"));
    assert_eq!(rows[1].get::<_, &str>(3), "****@example.org");
    assert_eq!(rows[1].get::<_, i32>(5), 0, "a valid int4 in binary");
    assert_eq!(rows[1].get::<_, &str>(1), "Alan");
    // A prepared statement executed many times (Execute without Describe).
    let stmt = alice
        .prepare(&format!("SELECT ssn, score FROM {t} WHERE id = $1"))
        .await
        .expect("prepare");
    for _ in 0..3 {
        let row = alice.query_one(&stmt, &[&1i32]).await.expect("execute");
        assert_eq!(row.get::<_, &str>(0), "*******6789");
        assert_eq!(row.get::<_, i32>(1), 0);
    }
    // Pipelined: several prepared executions in flight at once.
    let (a, b) = tokio::join!(
        alice.query_one(&stmt, &[&1i32]),
        alice.query_one(&stmt, &[&2i32])
    );
    assert_eq!(a.expect("a").get::<_, &str>(0), "*******6789");
    assert_eq!(b.expect("b").get::<_, &str>(0), "*******4321");

    // The exempt identity sees clear values, in both protocols.
    let dba = dba(&pw).await;
    let rows = text_rows(&dba.simple_query(&sql).await.expect("dba simple"));
    assert_eq!(rows[0][2].as_deref(), Some("123-45-6789"));
    let rows = dba.query(sql.as_str(), &[]).await.expect("dba extended");
    assert_eq!(rows[0].get::<_, i32>(5), 97);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_attempts_are_refused_in_both_protocols() {
    let t = table();
    let pw = start(&t).await;
    let alice = pw.connect().await;
    let attempts = [
        format!("SELECT ssn || '' FROM {t}"),
        format!("SELECT upper(email) FROM {t}"),
        format!("SELECT ssn::bytea FROM {t}"),
        format!("SELECT string_agg(ssn, ',') FROM {t}"),
        format!("SELECT format('%s', card) FROM {t}"),
        format!("SELECT row_to_json(c) FROM {t} c"),
        format!("SELECT c FROM {t} c"),
        format!("SELECT c::text FROM {t} c"),
        format!("SELECT json_build_object('s', ssn) FROM {t}"),
        format!("SELECT ARRAY[ssn] FROM {t}"),
        format!("SELECT name FROM {t} WHERE ssn LIKE '123%'"),
        format!("SELECT name FROM {t} ORDER BY ssn"),
        format!("SELECT ssn FROM {t} ORDER BY 1"),
        format!("SELECT ssn FROM {t} UNION SELECT 'x'"),
        format!("WITH x AS (SELECT ssn FROM {t}) SELECT * FROM x"),
        format!("SELECT * FROM (SELECT ssn AS s FROM {t}) q"),
        format!("SELECT (SELECT ssn FROM {t} LIMIT 1)"),
        format!("COPY {t} TO STDOUT"),
        format!("COPY (SELECT ssn FROM {t}) TO STDOUT"),
        format!("CREATE TEMP TABLE loot AS SELECT ssn FROM {t}"),
        format!("CREATE TEMP VIEW loot AS SELECT * FROM {t}"),
        format!("PREPARE p AS SELECT ssn || '' FROM {t}"),
        format!("DECLARE c CURSOR WITH HOLD FOR SELECT ssn || '' FROM {t}"),
        format!("UPDATE {t} SET name = ssn WHERE id = 1"),
        format!("DELETE FROM {t} WHERE id = 99 RETURNING *"),
        format!("SELECT query_to_xml('SELECT ssn FROM {t}', true, false, '')"),
        format!("SELECT \"SSN\" FROM (SELECT ssn AS \"SSN\" FROM {t}) x"),
        format!("SeLeCt SsN || '' FrOm {t}"),
    ];
    for sql in &attempts {
        let simple = alice.simple_query(sql).await;
        match simple {
            Ok(msgs) => panic!(
                "{sql}: allowed in the simple protocol: {:?}",
                text_rows(&msgs)
            ),
            Err(e) => {
                assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
                assert_no_secret(&format!("{e:?}"));
            }
        }
        let extended = alice.query(sql.as_str(), &[]).await;
        match extended {
            Ok(rows) => panic!(
                "{sql}: allowed in the extended protocol ({} rows)",
                rows.len()
            ),
            Err(e) => assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}"),
        }
    }
    // The session is still fine, and the data intact for the exempt.
    assert_eq!(
        text_rows(&alice.simple_query("SELECT 1").await.expect("alive"))[0][0].as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_details_do_not_carry_masked_values() {
    let t = table();
    let pw = start(&t).await;
    let alice = pw.connect().await;
    alice
        .batch_execute(&format!("CREATE UNIQUE INDEX ON {t} (ssn)"))
        .await
        .expect_err("DDL on a masked table is refused for masked identities");
    let dba = dba(&pw).await;
    dba.batch_execute(&format!("CREATE UNIQUE INDEX ON {t} (ssn)"))
        .await
        .expect("index");
    // A unique violation's DETAIL would quote the value: withheld.
    let e = alice
        .simple_query(&format!(
            "INSERT INTO {t} (id, ssn) VALUES (10, '123-45-6789')"
        ))
        .await
        .expect_err("duplicate");
    assert_eq!(sqlstate(&e), "23505");
    let detail = e
        .as_db_error()
        .and_then(|d| d.detail())
        .unwrap_or_default()
        .to_owned();
    assert!(!detail.contains("6789"), "{detail}");
    // An INSERT may fire triggers, whose messages pgward cannot see into:
    // the message itself is withheld too, the SQLSTATE kept.
    assert!(
        message(&e).contains("message withheld by pgward"),
        "{}",
        message(&e)
    );
    // The exempt identity still gets the full detail.
    let e = dba
        .simple_query(&format!(
            "INSERT INTO {t} (id, ssn) VALUES (10, '123-45-6789')"
        ))
        .await
        .expect_err("duplicate");
    assert!(e
        .as_db_error()
        .and_then(|d| d.detail())
        .unwrap_or_default()
        .contains("123-45-6789"));
    let _ = message(&e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_keep_masking_right_without_a_restart() {
    let t = table();
    let pw = start(&t).await;
    let alice = pw.connect().await;
    let dba = dba(&pw).await;
    // A new column matching a pattern, added by someone else.
    dba.batch_execute(&format!(
        "ALTER TABLE {t} ADD COLUMN ssn_old text; UPDATE {t} SET ssn_old = ssn WHERE true"
    ))
    .await
    .expect("add column");
    // Until the map knows the column, the result is withheld; then masked.
    let mut masked = false;
    for _ in 0..100 {
        match alice
            .simple_query(&format!("SELECT ssn_old FROM {t} WHERE id = 1"))
            .await
        {
            Ok(msgs) => {
                let rows = text_rows(&msgs);
                assert_no_secret(&format!("{rows:?}"));
                assert_eq!(rows[0][0].as_deref(), Some("*******6789"));
                masked = true;
                break;
            }
            Err(e) => {
                assert_eq!(sqlstate(&e), "42501", "{e:?}");
                assert_no_secret(&format!("{e:?}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(masked, "the new column is masked once the map is refreshed");

    // A new table matching a pattern.
    dba.batch_execute(&format!(
        "CREATE TABLE {t}_leads (email text); INSERT INTO {t}_leads VALUES ('lead@example.com')"
    ))
    .await
    .expect("new table");
    let mut seen = false;
    for _ in 0..100 {
        match alice
            .simple_query(&format!("SELECT email FROM {t}_leads"))
            .await
        {
            Ok(msgs) => {
                assert_eq!(text_rows(&msgs)[0][0].as_deref(), Some("****@example.com"));
                seen = true;
                break;
            }
            Err(e) => assert_eq!(sqlstate(&e), "42501", "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the new table is masked once the map is refreshed");

    // Renaming a masked column away from its pattern is refused to the
    // masked identity; dropping it just removes it.
    let e = alice
        .batch_execute(&format!("ALTER TABLE {t} RENAME COLUMN ssn TO tax_id"))
        .await
        .expect_err("rename");
    assert_eq!(sqlstate(&e), "42501");
    dba.batch_execute(&format!("ALTER TABLE {t} DROP COLUMN ssn_old"))
        .await
        .expect("drop column");
    let rows = text_rows(
        &alice
            .simple_query(&format!("SELECT ssn FROM {t} WHERE id = 2"))
            .await
            .expect("ssn"),
    );
    assert_eq!(rows[0][0].as_deref(), Some("*******4321"));
    let _ = USER;
    let _ = PASSWORD;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pgbench_see_masked_values() {
    let t = table();
    let pw = start(&t).await;
    let backend = Backend::shared();
    let sql =
        format!("SELECT name, ssn, email, card FROM {t} ORDER BY id; SELECT ssn || 'x' FROM {t};");
    let out = pw.psql(&[], &sql).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // psql -c sends one Query: one refusal refuses all of it.
    assert!(stderr.contains("masked"), "{stderr}");
    assert_no_secret(&stdout);
    let sql = format!("SELECT name, ssn, email, card FROM {t} ORDER BY id");
    let out = pw.psql(&[], &sql).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Ada|*******6789|****@example.com|[card]"),
        "{stdout}"
    );
    assert_no_secret(&stdout);

    // pgbench with a custom script reading masked columns, in every mode:
    // no failures (rows are rewritten in flight, lengths and all).
    let script = backend.cluster.dir().join(format!("{t}.sql"));
    std::fs::write(
        &script,
        format!("\\set id random(1, 3)\nSELECT ssn, email, card, score FROM {t} WHERE id = :id;\n"),
    )
    .expect("script");
    for mode in ["simple", "extended", "prepared"] {
        let pgbench = backend.cluster.program("pgbench");
        let dsn = pw.dsn();
        let script = script.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(pgbench)
                .env("PGPASSWORD", PASSWORD)
                .args(["-n", "-M", mode, "-c", "2", "-t", "50", "-f"])
                .arg(&script)
                .arg(dsn)
                .output()
                .expect("pgbench")
        })
        .await
        .expect("pgbench");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            report.contains("number of transactions actually processed: 100/100"),
            "{mode}: {report}"
        );
    }
}

/// `config` with a masking rule first that masks `t.ssn` for everyone
/// (the first rule that matches a column decides).
fn every_ssn_masked(config: &str, t: &str) -> String {
    let all_ssn = format!(
        "[[masking.rules]]\nname = \"all-ssn\"\ncolumns = [\"{t}.ssn\"]\nstrategy = \"null\"\n\n"
    );
    config.replacen(
        "[[masking.rules]]",
        &format!("{all_ssn}[[masking.rules]]"),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_masks_an_identity_applies_at_once() {
    let t = table();
    let pw = start(&t).await;
    let dba = dba(&pw).await;
    let sql = format!("SELECT ssn FROM {t} WHERE id = 1");
    let clear = text_rows(&dba.simple_query(&sql).await.expect("clear"));
    assert_eq!(clear[0][0].as_deref(), Some("123-45-6789"));
    // New rules: the dba group is masked too.
    // (First in the list: the first rule that matches a column decides.)
    pw.reload_text(&every_ssn_masked(&pw.config_text, &t))
        .expect("reload");
    // The open unmasked session may not go on reading in clear.
    let e = dba.simple_query(&sql).await.expect_err("must reconnect");
    assert_eq!(sqlstate(&e), "42501");
    // A new session is masked, and so its role must be least-privilege:
    // the dba's role owns the table, so the login is refused.
    let e = connect_with(&pw.client_config("dba", DBA_PASSWORD))
        .await
        .expect_err("an owner role for a masked identity");
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        message(&e).contains("does not own the masked tables"),
        "{}",
        message(&e)
    );
    // alice, masked before and after on her least-privilege role, reads
    // the new rule's NULLs.
    let alice = pw.connect().await;
    let rows = text_rows(&alice.simple_query(&sql).await.expect("masked"));
    assert_eq!(rows[0][0], None);
}

/// Statements parsed and portals bound before such a reload are not read
/// in clear after it either: Bind and Execute are refused like a Query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_masks_an_identity_stops_its_prepared_statements_and_portals() {
    let t = table();
    let pw = start(&t).await;
    let dba_a = dba(&pw).await;
    let mut dba_b = dba(&pw).await;
    let sql = format!("SELECT ssn FROM {t} WHERE id = 1");
    let statement = dba_a.prepare(&sql).await.expect("prepare");
    let clear: String = dba_a
        .query_one(&statement, &[])
        .await
        .expect("clear")
        .get(0);
    assert_eq!(clear, "123-45-6789");
    let in_tx = dba_b.prepare(&sql).await.expect("prepare");
    let pid: i32 = dba_b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let tx = dba_b.transaction().await.expect("begin");
    let portal = tx.bind(&in_tx, &[]).await.expect("bind");
    pw.reload_text(&every_ssn_masked(&pw.config_text, &t))
        .expect("reload");
    // The statement parsed before the reload: its Bind is refused.
    let e = dba_a
        .query(&statement, &[])
        .await
        .expect_err("statement after reload");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert!(
        message(&e).contains("masking rules changed"),
        "{}",
        message(&e)
    );
    // The portal bound before the reload: its Execute is refused.
    let e = tx
        .query_portal(&portal, 0)
        .await
        .expect_err("portal after reload");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert!(
        message(&e).contains("masking rules changed"),
        "{}",
        message(&e)
    );
    // A bare ROLLBACK still ends the transaction (its locks go with it);
    // anything else stays refused.
    tx.rollback().await.expect("rollback");
    let state = Backend::shared().admin_sql(&format!(
        "SELECT state FROM pg_stat_activity WHERE pid = {pid}"
    ));
    assert_eq!(state.trim(), "idle");
    let e = dba_b
        .simple_query("ROLLBACK; SELECT 1")
        .await
        .expect_err("more than a rollback");
    assert_eq!(sqlstate(&e), "42501", "{e}");
}

/// The guard's bypass list (src/mask/guard/bypass_attempts.txt), run through
/// pgward against real tables in both protocols.
const BYPASS_ATTEMPTS: &str = include_str!("../src/mask/guard/bypass_attempts.txt");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_bypass_attempt_is_refused_through_pgward() {
    let backend = Backend::shared();
    let setup = Pgward::start(backend).await;
    setup
        .connect()
        .await
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text, ssn text, email text); \
             INSERT INTO customers VALUES (1, 'Ada', '123-45-6789', 'ada@example.com'), \
                                          (2, 'Alan', '987-65-4321', 'alan@example.org'); \
             CREATE SCHEMA crm; CREATE TABLE crm.leads (id int, phone text); \
             INSERT INTO crm.leads VALUES (1, '4111111111111111'); \
             CREATE TABLE orders (id int, customer_id int, ssn text, total numeric); \
             CREATE TABLE other (v text); \
             CREATE TABLE other_schema_table_without_masks (ssn text); \
             CREATE VIEW customer_ssns AS SELECT id, ssn FROM customers; \
             CREATE FUNCTION leak() RETURNS text LANGUAGE sql AS 'SELECT ssn FROM customers LIMIT 1'; \
             CREATE FUNCTION helper(int) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
        )
        .await
        .expect("fixture");
    setup.shutdown().await;
    let config = format!(
        "{}\n[[masking.rules]]\nname = \"pii\"\ncolumns = [\"public.customers.ssn\", \"public.customers.email\", \"crm.leads.phone\"]\nstrategy = \"null\"\n",
        backend.masked_config("", "")
    );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let alice = pw.connect().await;
    let attempts: Vec<&str> = BYPASS_ATTEMPTS
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert!(attempts.len() >= 60);
    for sql in attempts {
        for (protocol, result) in [
            (
                "simple",
                alice
                    .simple_query(sql)
                    .await
                    .map(|m| format!("{:?}", text_rows(&m))),
            ),
            (
                "extended",
                alice
                    .query(sql, &[])
                    .await
                    .map(|rows| format!("{} rows", rows.len())),
            ),
        ] {
            match result {
                Ok(rows) => panic!("{protocol}: {sql}: allowed: {rows}"),
                Err(e) => {
                    let code = sqlstate(&e);
                    // 42601: the rules refuse what does not parse, first.
                    assert!(
                        code == "42501" || code == "42601",
                        "{protocol}: {sql}: {e:?}"
                    );
                    assert_no_secret(&format!("{e:?}"));
                }
            }
        }
    }
    // The plain select still works, masked.
    let rows = text_rows(
        &alice
            .simple_query("SELECT name, ssn FROM customers ORDER BY id")
            .await
            .expect("plain"),
    );
    assert_eq!(rows[0], vec![Some("Ada".to_owned()), None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_payloads_are_withheld_from_masked_identities() {
    let t = table();
    let pw = start(&t).await;
    let (alice, mut rx) = support::connect_with_messages(&pw.client_config(USER, PASSWORD)).await;
    alice.batch_execute("LISTEN pii").await.expect("listen");
    let dba = dba(&pw).await;
    dba.batch_execute("NOTIFY pii, '123-45-6789'")
        .await
        .expect("notify");
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(tokio_postgres::AsyncMessage::Notification(n)) = rx.recv().await {
                return n;
            }
        }
    })
    .await
    .expect("a notification");
    assert_eq!(got.channel(), "pii");
    assert_eq!(got.payload(), "(withheld by pgward)");
}

/// A masked session remembers the last result that passed untouched (its
/// description, formats, map and rules) and lets the same one pass again
/// without planning it: a reload that masks one of its columns, or a
/// description that changes, is planned afresh, in both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_passed_is_planned_again_when_the_rules_change() {
    let t = table();
    let pw = start(&t).await;
    let alice = pw.connect().await;
    let sql = format!("SELECT name FROM {t} WHERE id = 1");
    let prepared = alice.prepare(&sql).await.expect("prepare");
    for _ in 0..3 {
        let rows = text_rows(&alice.simple_query(&sql).await.expect("clear"));
        assert_eq!(rows[0][0].as_deref(), Some("Ada"));
        let row = alice.query_one(&prepared, &[]).await.expect("clear");
        assert_eq!(row.get::<_, &str>(0), "Ada");
    }
    // The same columns under another alias: another description.
    let aliased = format!("SELECT name AS n FROM {t} WHERE id = 1");
    let rows = text_rows(&alice.simple_query(&aliased).await.expect("clear"));
    assert_eq!(rows[0][0].as_deref(), Some("Ada"));
    // Now `name` is masked for alice: the very statements that passed are
    // masked on this open session.
    let names = format!(
        "[[masking.rules]]\nname = \"names\"\ncolumns = [\"{t}.name\"]\nstrategy = \"redact\"\nreplacement = \"[name]\"\nexempt_groups = [\"dba\"]\n\n"
    );
    let text =
        pw.config_text
            .replacen("[[masking.rules]]", &format!("{names}[[masking.rules]]"), 1);
    pw.reload_text(&text).expect("reload");
    // At once, before the map is read again under the new rules: the
    // prepared statement's rows are withheld or masked, never clear (the
    // old map names rules by their place in the old list).
    match alice.query_one(&prepared, &[]).await {
        Ok(row) => assert_eq!(row.get::<_, &str>(0), "[name]"),
        Err(e) => {
            assert_eq!(sqlstate(&e), "42501", "{e:?}");
            assert!(!format!("{e:?}").contains("Ada"));
        }
    }
    // A Query waits for the map, then runs under it.
    let rows = text_rows(&alice.simple_query(&sql).await.expect("masked"));
    assert_eq!(rows[0][0].as_deref(), Some("[name]"));
    let row = alice.query_one(&prepared, &[]).await.expect("masked");
    assert_eq!(row.get::<_, &str>(0), "[name]");
    let rows = text_rows(&alice.simple_query(&aliased).await.expect("masked"));
    assert_eq!(rows[0][0].as_deref(), Some("[name]"));
}
