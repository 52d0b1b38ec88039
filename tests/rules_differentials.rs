//! Differentials between what pgward judges and what PostgreSQL runs, found
//! in review: a keyword PostgreSQL 18 reads as syntax that the server (15)
//! reads as a function call, the session's own temporary tables vanishing
//! by routes other than a DROP TABLE of their name (so a bare name reaches
//! the permanent table again), and DROP ... CASCADE of objects tables and
//! columns depend on. Each attack runs in the simple and the extended
//! protocol against objects the app role owns, and must end refused with
//! the objects intact.

mod support;

use support::{message, sqlstate, Backend, Pgward, APP_ROLE};
use tokio_postgres::Client;

/// A fresh name prefix per call: tests share the cluster.
fn fresh() -> String {
    support::fresh_name("df")
}

/// Runs `sql` through `client` in `protocol`.
async fn run(client: &Client, protocol: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    if protocol == "simple" {
        client.simple_query(sql).await.map(|_| ())
    } else {
        client.execute(sql, &[]).await.map(|_| ())
    }
}

/// Runs `setup` (each statement must succeed), then `attack`, which must be
/// refused by pgward rule `rule` (or with SQLSTATE `rule` when it is one).
async fn refused(pw: &Pgward, protocol: &str, setup: &[String], attack: &str, rule: &str) {
    let client = pw.connect().await;
    for sql in setup {
        run(&client, protocol, sql)
            .await
            .unwrap_or_else(|e| panic!("[{protocol}] setup {sql}: {e:?}"));
    }
    let what = format!("[{protocol}] {attack} after {setup:?}");
    let e = run(&client, protocol, attack).await.expect_err(&what);
    if rule.len() == 5 && rule.chars().all(|c| c.is_ascii_alphanumeric()) {
        assert_eq!(sqlstate(&e), rule, "{what}: {e:?}");
    } else {
        assert_eq!(sqlstate(&e), "42501", "{what}: {e:?}");
        assert!(
            message(&e).contains(&format!("pgward rule \"{rule}\"")),
            "{what}: {}",
            message(&e)
        );
    }
}

/// A permanent table of 20 rows owned by the app role (so only pgward's
/// rules stand between the app and dropping it).
fn owned_table(t: &str) {
    Backend::shared().admin_sql(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text); \
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 20) g; \
         ALTER TABLE {t} OWNER TO {APP_ROLE}"
    ));
}

/// Rows of `table`, read as the superuser (panics if it is gone).
fn rows(table: &str) -> i64 {
    Backend::shared()
        .admin_sql(&format!("SELECT count(*) FROM {table}"))
        .trim()
        .parse()
        .expect("a count")
}

/// The words PostgreSQL 18's grammar reads as syntax (any keyword but an
/// unreserved one) that the server does not: there, `word(...)` is a call
/// of whatever function the search path finds, which pgward (seeing no
/// call) would not judge. Each must be refused; the list is derived from
/// the server and libpg_query, so a grammar upgrade that adds one fails
/// here until pgward refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keywords_newer_than_the_server_are_never_calls_pgward_cannot_see() {
    let backend = Backend::shared();
    let server: std::collections::BTreeMap<String, String> = backend
        .admin_sql("SELECT word || ' ' || catcode::text FROM pg_get_keywords()")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(w, c)| (w.to_owned(), c.to_owned()))
        .collect();
    let mut newer = Vec::new();
    for word in server
        .keys()
        .cloned()
        .chain(grammar_keywords())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let Ok(scan) = pg_query::scan(&word) else {
            continue;
        };
        let reserved_here = scan.tokens.first().is_some_and(|t| {
            t.keyword_kind != pg_query::protobuf::KeywordKind::NoKeyword as i32
                && t.keyword_kind != pg_query::protobuf::KeywordKind::UnreservedKeyword as i32
        });
        let plain_there = server.get(&word).is_none_or(|c| c == "U");
        if reserved_here && plain_there {
            newer.push(word);
        }
    }
    assert!(newer.contains(&"merge_action".to_owned()), "{newer:?}");
    // Functions of those names, which the server would call.
    let t = format!("{}_kw", fresh());
    owned_table(&t);
    for word in &newer {
        backend.admin_sql(&format!(
            "CREATE FUNCTION public.{word}() RETURNS bigint LANGUAGE sql \
               AS 'DELETE FROM {t} RETURNING 1'; \
             CREATE FUNCTION public.{word}(int) RETURNS bigint LANGUAGE sql \
               AS 'DELETE FROM {t} RETURNING 1'"
        ));
    }
    let pw = Pgward::start(backend).await;
    for protocol in ["simple", "extended"] {
        for word in &newer {
            for call in [format!("SELECT {word}()"), format!("SELECT {word}(1)")] {
                let client = pw.connect().await;
                let e = run(&client, protocol, &call)
                    .await
                    .expect_err(&format!("[{protocol}] {call}"));
                // Refused as newer syntax or unparsable, or (a legacy form
                // PostgreSQL 15 has too, json_object(text[])) judged as the
                // call of public.json_object it is there.
                let code = sqlstate(&e);
                assert!(
                    ["0A000", "42601"].contains(&code.as_str())
                        || message(&e).contains("pgward rule \"no-unbounded-write\""),
                    "[{protocol}] {call}: {e:?}"
                );
            }
        }
    }
    assert_eq!(rows(&t), 20);
}

/// Every keyword libpg_query knows, read off its scanner: each word of
/// the server's list plus those PostgreSQL added after 15 (a word the
/// server does not know is not in its list).
fn grammar_keywords() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/vendor/pg_query/libpg_query/src/postgres/include/parser/kwlist.h"
    );
    std::fs::read_to_string(path)
        .expect("libpg_query's keyword list")
        .lines()
        .filter_map(|l| l.strip_prefix("PG_KEYWORD(\""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// A bare name counts as the session's own temporary table only while
/// that table certainly exists: one that vanished by another route than a
/// DROP TABLE or RENAME of its name (dropped with its
/// partitioned parent, by a function, or unshadowed by a search_path a
/// function set) leaves the bare name to the permanent table, which
/// `no-drop` must still protect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_gone_by_another_route_is_not_the_session_s_own() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    for protocol in ["simple", "extended"] {
        let p = fresh();
        let t = format!("{p}_t");
        backend.admin_sql(&format!(
            "CREATE FUNCTION {p}_path() RETURNS text LANGUAGE sql \
             AS $$SELECT set_config('search_path', 'public, pg_temp', false)$$"
        ));
        let cases: Vec<Vec<String>> = vec![
            vec![
                format!("DROP TABLE {t}"),
                format!("CREATE TEMP TABLE {p}_parent (id int) PARTITION BY RANGE (id)"),
                format!("CREATE TEMP TABLE {t} PARTITION OF {p}_parent FOR VALUES FROM (1) TO (9)"),
                format!("DROP TABLE {p}_parent"),
            ],
            vec![
                format!("CREATE TEMP TABLE {p}_parent (id int) PARTITION BY RANGE (id)"),
                format!("ALTER TABLE {p}_parent ATTACH PARTITION {t} FOR VALUES FROM (1) TO (9)"),
                format!("DROP TABLE pg_temp.{p}_parent"),
            ],
            vec![
                format!("CREATE TEMP TABLE {p}_base (id int)"),
                format!("ALTER TABLE {t} INHERIT {p}_base"),
                format!("DROP TABLE pg_temp.{p}_base CASCADE"),
            ],
            vec![
                format!(
                    "CREATE FUNCTION pg_temp.{p}_drop() RETURNS void LANGUAGE sql \
                     AS 'DROP TABLE pg_temp.{t}'"
                ),
                format!("SELECT pg_temp.{p}_drop()"),
            ],
            // Made on the server (pgward, seeing set_config of search_path
            // in a CREATE, stops the tracking then).
            vec![format!("SELECT {p}_path()")],
            vec![
                format!(
                    "CREATE FUNCTION pg_temp.{p}_set() RETURNS void LANGUAGE sql \
                     AS 'SET search_path = public, pg_temp'"
                ),
                format!("SELECT pg_temp.{p}_set()"),
            ],
        ];
        for (n, steps) in cases.into_iter().enumerate() {
            let t = format!("{t}{n}");
            owned_table(&t);
            let mut setup = vec![format!("CREATE TEMP TABLE {t} (id int)")];
            setup.extend(steps.iter().map(|s| s.replace(&format!("{p}_t"), &t)));
            refused(&pw, protocol, &setup, &format!("DROP TABLE {t}"), "no-drop").await;
            assert_eq!(rows(&t), 20, "[{protocol}] {setup:?}");
        }
    }
}

/// `ALTER INDEX name RENAME` renames any relation PostgreSQL finds by that
/// name, tables included (tablecmds.c allows it for historical reasons),
/// and a session's temporary table renamed so leaves its bare name to the
/// permanent table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_index_rename_is_a_table_rename() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    for protocol in ["simple", "extended"] {
        let t = format!("{}_ix", fresh());
        owned_table(&t);
        let rename = format!("ALTER INDEX {t} RENAME TO {t}_gone");
        refused(&pw, protocol, &[], &rename, "no-rename-tables").await;
        let temp = [format!("CREATE TEMP TABLE {t} (id int)")];
        refused(&pw, protocol, &temp, &rename, "no-rename-tables").await;
        assert_eq!(rows(&format!("public.{t}")), 20);
    }
}

/// DROP ... CASCADE of an object tables or columns depend on drops them
/// too: a typed table with its type, a generated column with its
/// function, a column with its domain. pgward cannot see the dependents,
/// so a cascade counts as dropping tables and columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_cascade_counts_as_dropping_tables_and_columns() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    for protocol in ["simple", "extended"] {
        let p = fresh();
        backend.admin_sql(&format!(
            "CREATE TYPE {p}_ty AS (id int, v text); CREATE TABLE {p}_typed OF {p}_ty; \
             CREATE FUNCTION {p}_twice(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1 * 2'; \
             CREATE TABLE {p}_gen (id int, d int GENERATED ALWAYS AS ({p}_twice(id)) STORED); \
             CREATE DOMAIN {p}_dom AS int; CREATE TABLE {p}_dommed (id int, d {p}_dom); \
             ALTER TYPE {p}_ty OWNER TO {APP_ROLE}; ALTER TABLE {p}_typed OWNER TO {APP_ROLE}; \
             ALTER FUNCTION {p}_twice(int) OWNER TO {APP_ROLE}; ALTER TABLE {p}_gen OWNER TO {APP_ROLE}; \
             ALTER DOMAIN {p}_dom OWNER TO {APP_ROLE}; ALTER TABLE {p}_dommed OWNER TO {APP_ROLE}"
        ));
        for (attack, rule) in [
            (format!("DROP TYPE {p}_ty CASCADE"), "no-drop"),
            (format!("DROP FUNCTION {p}_twice(int) CASCADE"), "no-drop"),
            (format!("DROP DOMAIN {p}_dom CASCADE"), "no-drop"),
        ] {
            refused(&pw, protocol, &[], &attack, rule).await;
        }
        let columns = backend.admin_sql(&format!(
            "SELECT count(*) FROM information_schema.columns WHERE table_name LIKE '{p}%'"
        ));
        assert_eq!(columns.trim(), "6", "[{protocol}]");
        // Without CASCADE, PostgreSQL refuses itself.
        let client = pw.connect().await;
        let e = run(&client, protocol, &format!("DROP TYPE {p}_ty"))
            .await
            .expect_err("dependents");
        assert_eq!(sqlstate(&e), "2BP01");
    }
}
