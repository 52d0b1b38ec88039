//! Masking's name resolution through pgward (issue 13): renamed, merged and
//! whole-row references to masked columns are refused in the simple and the
//! extended protocol; what applications send (qualified filters, ORM count
//! wrappers, upserts, EXPLAIN, cursors, COPY column lists, ANALYZE, LOCK)
//! passes and comes back masked. Every case scans everything the client
//! received (rows, errors, notices, COPY data) for the clear values.

mod support;

use support::{
    connect_with_messages, message, sqlstate, text_rows, Backend, Pgward, PASSWORD, USER,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};

const REFUSED: &str = include_str!("../src/mask/guard/resolution_refused.txt");
const ALLOWED: &str = include_str!("../src/mask/guard/resolution_allowed.txt");

/// Clear values of masked columns, including the ones the upserts write.
const SECRETS: &[&str] = &[
    "123-45-6789",
    "987-65-4321",
    "ada@",
    "alan@",
    "4111111111111111",
    "777-77-7777",
    "eve@",
    "888-88-8888",
    "mal@",
];

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what}: clear value {s} in {text}");
    }
}

fn cases(text: &'static str) -> Vec<&'static str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect()
}

/// The fixture, made once per test process by the superuser: a
/// least-privilege role needs the grants.
const FIXTURE: &str =
    "CREATE TABLE customers (id int PRIMARY KEY, name text, ssn text UNIQUE, email text); \
     INSERT INTO customers VALUES (1, 'Ada', '123-45-6789', 'ada@example.com'), \
                                  (2, 'Alan', '987-65-4321', 'alan@example.org'); \
     CREATE SCHEMA crm; CREATE TABLE crm.leads (id int, phone text); \
     INSERT INTO crm.leads VALUES (1, '4111111111111111'); \
     CREATE TABLE orders (id int, customer_id int, ssn text, total numeric); \
     INSERT INTO orders VALUES (1, 1, '000-00-0000', 10), (2, 2, '000-00-0001', 20); \
     CREATE TABLE other (v text); \
     GRANT USAGE ON SCHEMA crm TO app_masked; \
     GRANT ALL ON ALL TABLES IN SCHEMA public, crm TO app_masked";

/// pgward in front of the fixture, masking ssn, email and phone (redacted to
/// `****`) for every identity; alice acts as the least-privilege role.
async fn start() -> Pgward {
    static MADE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let backend = Backend::shared();
    MADE.get_or_init(|| {
        backend.admin_sql(FIXTURE);
    });
    let config = format!(
        "{}\n[[masking.rules]]\nname = \"pii\"\ncolumns = [\"public.customers.ssn\", \"public.customers.email\", \"crm.leads.phone\"]\nstrategy = \"redact\"\n",
        backend.masked_config("", "")
    );
    Pgward::start_in(&config, backend.cluster.dir()).await
}

/// Everything received so far on the connection's side channel.
fn drain(rx: &mut UnboundedReceiver<AsyncMessage>) -> String {
    let mut out = String::new();
    while let Ok(m) = rx.try_recv() {
        out.push_str(&format!("{m:?}\n"));
    }
    out
}

/// Runs `sql` in the simple protocol; `Ok` holds the rows as text.
async fn simple(client: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    if sql.starts_with("COPY") {
        use futures::StreamExt;
        let stream = client.copy_out(sql).await?;
        let mut out = String::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk?));
        }
        return Ok(out);
    }
    client
        .simple_query(sql)
        .await
        .map(|m| format!("{:?}", text_rows(&m)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_merged_and_whole_row_references_are_refused_through_pgward() {
    let pw = start().await;
    let (alice, mut rx) = connect_with_messages(&pw.client_config(USER, PASSWORD)).await;
    let attempts = cases(REFUSED);
    assert!(attempts.len() >= 80, "{} attempts", attempts.len());
    for sql in attempts {
        let extended = alice
            .query(sql, &[])
            .await
            .map(|rows| format!("{} rows", rows.len()));
        for (protocol, result) in [
            ("simple", simple(&alice, sql).await),
            ("extended", extended),
        ] {
            match result {
                Ok(rows) => panic!("{protocol}: {sql}: allowed: {rows}"),
                Err(e) => {
                    assert_eq!(sqlstate(&e), "42501", "{protocol}: {sql}: {e:?}");
                    // Refused by pgward, not by the server's privileges.
                    assert!(
                        !message(&e).starts_with("permission denied"),
                        "{protocol}: {sql}: {e:?}"
                    );
                    assert_no_secret(sql, &format!("{e:?}"));
                }
            }
        }
        assert_no_secret(sql, &drain(&mut rx));
    }
    // The session is still usable and still masks.
    let rows = alice
        .simple_query("SELECT name, ssn FROM customers WHERE id = 1")
        .await
        .expect("plain select");
    assert_eq!(
        text_rows(&rows),
        vec![vec![Some("Ada".to_owned()), Some("****".to_owned())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_applications_send_passes_and_stays_masked() {
    let pw = start().await;
    let (alice, mut rx) = connect_with_messages(&pw.client_config(USER, PASSWORD)).await;
    for sql in cases(ALLOWED) {
        let got = simple(&alice, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_no_secret(sql, &got);
        // A single query also in the extended protocol (binary results):
        // every text cell is scanned.
        if !sql.contains(';') && !sql.starts_with("COPY") {
            let rows = alice
                .query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("extended: {sql}: {e:?}"));
            for row in &rows {
                for (i, column) in row.columns().iter().enumerate() {
                    if *column.type_() == tokio_postgres::types::Type::TEXT {
                        let cell: Option<String> = row.get(i);
                        assert_no_secret(sql, cell.as_deref().unwrap_or(""));
                    }
                }
            }
        }
        assert_no_secret(sql, &drain(&mut rx));
    }
    // The qualified filter, the count wrapper and the alias list give the
    // answers they should, masked.
    let rows = |m: Vec<SimpleQueryMessage>| text_rows(&m);
    let got = rows(
        alice
            .simple_query(
                "SELECT c.name, c.ssn FROM customers c JOIN orders o ON o.customer_id = c.id \
                 WHERE o.ssn = '000-00-0000'",
            )
            .await
            .expect("qualified filter"),
    );
    assert_eq!(got, vec![vec![Some("Ada".into()), Some("****".into())]]);
    let got = rows(
        alice
            .simple_query(
                "SELECT count(*) FROM (SELECT customers.id, customers.ssn FROM customers \
                 WHERE customers.id < 3) AS anon_1",
            )
            .await
            .expect("count wrapper"),
    );
    assert_eq!(got, vec![vec![Some("2".into())]]);
    // (Every name of an alias list counts as masked, so it is not filtered.)
    let got = rows(
        alice
            .simple_query("SELECT i, s FROM customers AS c(i, n, s)")
            .await
            .expect("alias list"),
    );
    assert!(
        got.contains(&vec![Some("2".into()), Some("****".into())]),
        "{got:?}"
    );
    assert_no_secret("checks", &drain(&mut rx));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_rows_are_masked_in_both_protocols() {
    let pw = start().await;
    let (mut alice, mut rx) = connect_with_messages(&pw.client_config(USER, PASSWORD)).await;
    let got = alice
        .simple_query(
            "BEGIN; DECLARE cur CURSOR FOR SELECT id, ssn, email FROM customers WHERE id < 3 ORDER BY id; \
             FETCH 1 FROM cur; FETCH ALL FROM cur; CLOSE cur; COMMIT",
        )
        .await
        .expect("simple cursor");
    let expect = |id: &str| vec![Some(id.into()), Some("****".into()), Some("****".into())];
    assert_eq!(text_rows(&got), vec![expect("1"), expect("2")]);
    // Extended protocol, binary results: FETCH is described by its cursor.
    let tx = alice.transaction().await.expect("begin");
    tx.batch_execute(
        "DECLARE cur2 SCROLL CURSOR FOR SELECT id, ssn FROM customers WHERE id < 3 ORDER BY id",
    )
    .await
    .expect("declare");
    for fetch in [
        "FETCH 2 FROM cur2",
        "FETCH PRIOR FROM cur2",
        "FETCH ABSOLUTE 1 FROM cur2",
    ] {
        let rows = tx.query(fetch, &[]).await.expect(fetch);
        assert!(!rows.is_empty(), "{fetch}");
        for row in rows {
            let ssn: Option<String> = row.get(1);
            assert_eq!(ssn.as_deref(), Some("****"), "{fetch}");
        }
    }
    tx.commit().await.expect("commit");
    // A holdable cursor outlives its transaction (its rows are materialised
    // at commit) and is still described with the columns' origins.
    alice
        .batch_execute("DECLARE held CURSOR WITH HOLD FOR SELECT id, ssn FROM customers WHERE id < 3 ORDER BY id")
        .await
        .expect("declare held");
    let got = alice
        .simple_query("FETCH 1 FROM held")
        .await
        .expect("fetch held");
    assert_eq!(
        text_rows(&got),
        vec![vec![Some("1".into()), Some("****".into())]]
    );
    let rows = alice
        .query("FETCH 1 FROM held", &[])
        .await
        .expect("fetch held");
    assert_eq!(rows[0].get::<_, Option<String>>(1).as_deref(), Some("****"));
    alice.batch_execute("CLOSE held").await.expect("close held");
    // psql's FETCH_COUNT runs every query through a cursor.
    let out = pw
        .psql(
            &["-v", "FETCH_COUNT=1"],
            "SELECT name, ssn, email FROM customers WHERE id < 3 ORDER BY id",
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "Ada|****|****\nAlan|****|****",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret("cursors", &drain(&mut rx));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_copy_lists_explain_analyze_and_lock_pass() {
    let pw = start().await;
    let (alice, mut rx) = connect_with_messages(&pw.client_config(USER, PASSWORD)).await;
    // An upsert with parameters, twice: the second takes the DO UPDATE arm.
    let upsert = "INSERT INTO customers (id, name, ssn, email) VALUES ($1, $2, $3, $4) \
                  ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, ssn = EXCLUDED.ssn \
                  RETURNING id";
    for email in ["mal@example.com", "mal@example.net"] {
        let rows = alice
            .query(upsert, &[&8i32, &"Mal", &"888-88-8888", &email])
            .await
            .expect("upsert");
        assert_eq!(rows[0].get::<_, i32>(0), 8);
    }
    let stored = Backend::shared().admin_sql("SELECT email FROM customers WHERE id = 8");
    assert!(stored.contains("mal@example.net"), "{stored}");
    let got = text_rows(
        &alice
            .simple_query("SELECT email FROM customers WHERE id = 8")
            .await
            .expect("read back"),
    );
    assert_eq!(got, vec![vec![Some("****".into())]]);
    // COPY of unmasked columns only.
    let copied = simple(&alice, "COPY customers (id, name) TO STDOUT")
        .await
        .expect("copy");
    assert!(copied.contains("1\tAda\n"), "{copied}");
    // EXPLAIN returns a plan; EXPLAIN ANALYZE runs the (passing) query.
    for sql in [
        "EXPLAIN SELECT ssn FROM customers",
        "EXPLAIN ANALYZE SELECT ssn, email FROM customers",
    ] {
        let plan = simple(&alice, sql).await.expect(sql);
        assert!(plan.contains("Scan on customers"), "{sql}: {plan}");
        assert_no_secret(sql, &plan);
    }
    // ANALYZE and LOCK reach the server (which may skip ANALYZE for a
    // non-owner with a warning: the server's decision, not pgward's).
    alice
        .batch_execute("ANALYZE customers")
        .await
        .expect("analyze");
    alice
        .batch_execute("BEGIN; LOCK TABLE customers IN SHARE MODE; COMMIT")
        .await
        .expect("lock");
    assert_no_secret("writes", &drain(&mut rx));
}

/// Masked cells are counted for `/metrics` (NULLs are not masked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_cells_are_counted() {
    use std::sync::atomic::Ordering;
    let pw = start().await;
    let alice = pw.connect().await;
    let cells = || pw.gateway.metrics.masked_cells.load(Ordering::Relaxed);
    assert_eq!(cells(), 0);
    alice
        .simple_query("SELECT id, ssn, email FROM customers")
        .await
        .expect("masked select");
    assert_eq!(cells(), 4);
    alice
        .query(
            "SELECT ssn, NULL::text AS n FROM customers WHERE id = $1",
            &[&1i32],
        )
        .await
        .expect("extended");
    assert_eq!(cells(), 5);
    alice
        .simple_query("SELECT id, name FROM customers")
        .await
        .expect("nothing masked");
    assert_eq!(cells(), 5);
}

/// The guard caches verdicts by statement shape (issue 13, item 5): texts
/// that differ only in literals share one. With the cache primed by every
/// passing case, every refused case, and the same case with its literals
/// changed, is still refused in the same session; new literals in a
/// passing shape still come back masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_shapes_never_carry_a_pass_to_a_refused_statement() {
    let pw = start().await;
    let (alice, mut rx) = connect_with_messages(&pw.client_config(USER, PASSWORD)).await;
    for sql in cases(ALLOWED) {
        if sql.starts_with("BEGIN") || sql.starts_with("COPY") || sql.contains("INSERT") {
            continue;
        }
        let _ = simple(&alice, sql).await;
        let _ = alice.query(sql, &[]).await;
    }
    let changed = |sql: &str| sql.replace('1', "2").replace("'a", "'b");
    for sql in cases(REFUSED) {
        for text in [sql.to_owned(), changed(sql)] {
            match simple(&alice, &text).await {
                Ok(rows) => panic!("{text}: allowed after the cache was primed: {rows}"),
                Err(e) => assert_eq!(sqlstate(&e), "42501", "{text}: {e:?}"),
            }
            let e = alice.query(&text, &[]).await.expect_err(&text);
            assert_eq!(sqlstate(&e), "42501", "extended {text}: {e:?}");
        }
    }
    for id in 1..=2 {
        let sql = format!("SELECT name, ssn FROM customers WHERE id = {id} AND name <> 'x{id}'");
        let rows = alice.simple_query(&sql).await.expect(&sql);
        let rows = text_rows(&rows);
        assert_eq!(rows.len(), 1, "{sql}");
        assert_eq!(rows[0][1].as_deref(), Some("****"), "{sql}");
    }
    assert_no_secret("shape cache", &drain(&mut rx));
}
