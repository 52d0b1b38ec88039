//! Table-driven classification and verdict tests: what PostgreSQL's grammar
//! makes of each statement, and what the built-in rules decide.

use super::classify::classify;
use super::facts::{Effect, Statement};
use super::lexer::LexSettings;
use super::rules::{Identity, Verdict};
use super::{Lexing, Policy};
use crate::config::policy::compile;
use crate::config::raw::RawPolicy;
use std::sync::Arc;

/// One line per statement: `kind w:writes r:other-relations f:functions
/// nowhere set:name`, nested units after ` + `, effects after ` !`.
fn render(statements: &[Statement]) -> String {
    statements
        .iter()
        .map(|s| {
            let mut units: Vec<String> = s
                .units
                .iter()
                .map(|u| {
                    let mut out = u.kind.name().to_owned();
                    let join =
                        |it: &mut dyn Iterator<Item = String>| it.collect::<Vec<_>>().join(",");
                    if !u.writes.is_empty() {
                        out += &format!(" w:{}", join(&mut u.writes.iter().map(|q| q.to_string())));
                    }
                    let reads: Vec<String> = u
                        .relations
                        .iter()
                        .filter(|r| !u.writes.contains(r))
                        .map(|q| q.to_string())
                        .collect();
                    if !reads.is_empty() {
                        out += &format!(" r:{}", reads.join(","));
                    }
                    if !u.functions.is_empty() {
                        out += &format!(
                            " f:{}",
                            join(&mut u.functions.iter().map(|q| q.to_string()))
                        );
                    }
                    if u.unbounded_write {
                        out += " nowhere";
                    }
                    if let Some(s) = &u.setting {
                        out += &format!(" set:{s}");
                    }
                    out
                })
                .collect();
            for e in &s.effects {
                units.push(match e {
                    Effect::Prepare { name, .. } => format!("!prepare:{name}"),
                    Effect::Execute(name) => format!("!execute:{name}"),
                    Effect::Deallocate(Some(name)) => format!("!deallocate:{name}"),
                    Effect::Deallocate(None) => "!deallocate-all".into(),
                    Effect::DiscardAll => "!discard-all".into(),
                    Effect::CreateTemp(name) => format!("!temp:{name}"),
                    Effect::ForgetTemp(name) => format!("!forget:{name}"),
                    Effect::ForgetAllTemp => "!forget-all".into(),
                    Effect::SearchPathChanged => "!search-path".into(),
                    Effect::Rollback => "!rollback".into(),
                });
            }
            units.join(" + ")
        })
        .collect::<Vec<_>>()
        .join(" ; ")
}

const ON: LexSettings = LexSettings {
    standard_conforming_strings: true,
};
const OFF: LexSettings = LexSettings {
    standard_conforming_strings: false,
};

/// (SQL, expected rendering) under standard_conforming_strings = on.
const CASES: &[(&str, &str)] = &[
    // Plain DML and reads.
    ("SELECT 1", "select"),
    ("select * from orders", "select r:orders"),
    ("SELECT * FROM public.orders o JOIN customers c ON c.id = o.customer_id", "select r:customers,public.orders"),
    ("SELECT count(*) FROM orders", "select r:orders f:count"),
    ("SELECT now(), pg_catalog.lower('X')", "select f:now,pg_catalog.lower"),
    ("TABLE orders", "select r:orders"),
    ("VALUES (1), (2)", "select"),
    ("SELECT * FROM (SELECT * FROM a) s WHERE EXISTS (SELECT 1 FROM b)", "select r:a,b"),
    ("SELECT a FROM t1 UNION SELECT b FROM t2 EXCEPT SELECT c FROM t3", "select r:t1,t2,t3"),
    ("SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.id = t.id) l", "select r:t,u"),
    ("SELECT * FROM generate_series(1, 3) g", "select f:generate_series"),
    ("SELECT * FROM t FOR UPDATE", "select r:t"),
    ("SELECT x INTO newtable FROM t", "create_table_as w:newtable r:t"),
    ("INSERT INTO t (a) VALUES (1)", "insert w:t"),
    ("INSERT INTO s.t SELECT * FROM u", "insert w:s.t r:u"),
    ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2", "insert w:t"),
    ("INSERT INTO t VALUES (1) RETURNING *", "insert w:t"),
    ("UPDATE t SET a = 1 WHERE id = 2", "update w:t"),
    ("UPDATE t SET a = 1", "update w:t nowhere"),
    ("update T set a = 1", "update w:t nowhere"),
    ("UPDATE \"T\" SET a = 1 WHERE true", "update w:T"),
    ("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", "update w:t r:u"),
    ("DELETE FROM t WHERE id = 1", "delete w:t"),
    ("DELETE FROM t", "delete w:t nowhere"),
    ("DELETE FROM ONLY s.t", "delete w:s.t nowhere"),
    ("DELETE FROM t USING u WHERE t.id = u.id", "delete w:t r:u"),
    ("DELETE FROM t WHERE CURRENT OF c", "delete w:t"),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", "merge w:t r:u"),
    // Case, quoting, identifiers.
    ("SeLeCt * FrOm OrDeRs", "select r:orders"),
    ("SELECT * FROM \"Orders\"", "select r:Orders"),
    ("SELECT * FROM \"my schema\".\"my table\"", "select r:my schema.my table"),
    ("SELECT * FROM U&\"d\\0061t\\+000061\"", "select r:data"),
    ("SELECT * FROM mydb.public.orders", "select r:public.orders"),
    // Comments, nested comments, dollar quoting, strings.
    ("/* DROP TABLE t; */ SELECT 1", "select"),
    ("SELECT 1 -- ; DROP TABLE t", "select"),
    ("SELECT /* outer /* nested; DROP TABLE t; */ still comment */ 1", "select"),
    ("SELECT $$; DROP TABLE t; $$", "select"),
    ("SELECT $tag$ $$ ; DELETE FROM t $$ $tag$", "select"),
    ("SELECT 'it''s; DROP TABLE t'", "select"),
    ("SELECT E'\\'; DROP TABLE t; --'", "select"),
    ("SELECT U&'\\0041; DROP TABLE t'", "select"),
    ("SELECT 'a\\'; DROP TABLE t; --'", "select ; drop_table w:t + !forget:t"),
    ("SELECT 1; /* ; */ SELECT 2", "select ; select"),
    ("SELECT B'101', X'FF', 1.5e3, 42", "select"),
    // Multi-statement strings.
    ("SELECT 1; DELETE FROM t", "select ; delete w:t nowhere"),
    ("BEGIN; UPDATE t SET a = 1 WHERE id = 1; COMMIT", "begin ; update w:t ; commit"),
    ("SELECT 1;;;SELECT 2;", "select ; select"),
    // CTEs.
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "select + delete w:t nowhere"),
    ("WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) INSERT INTO log SELECT * FROM d", "insert w:log + delete w:t"),
    ("WITH u AS (UPDATE t SET a = 1 RETURNING id) SELECT count(*) FROM u", "select f:count + update w:t nowhere"),
    ("WITH x AS (SELECT * FROM orders) SELECT * FROM x", "select r:orders"),
    ("WITH orders AS (SELECT 1) SELECT * FROM orders", "select"),
    ("WITH orders AS (SELECT * FROM orders) SELECT * FROM orders", "select r:orders"),
    ("WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b", "select"),
    ("WITH b AS (SELECT * FROM a), a AS (SELECT 1) SELECT * FROM b", "select r:a"),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r", "select"),
    ("SELECT * FROM orders, (WITH orders AS (SELECT 1) SELECT * FROM orders) s", "select r:orders"),
    ("WITH orders AS (SELECT 1) DELETE FROM orders", "delete w:orders nowhere"),
    ("WITH m AS (MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE RETURNING *) SELECT 1", "select + merge w:t r:u nowhere"),
    // EXPLAIN, PREPARE, EXECUTE, cursors.
    ("EXPLAIN SELECT * FROM t", "explain + select r:t"),
    ("EXPLAIN ANALYZE DELETE FROM t", "explain + delete w:t nowhere"),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1 WHERE id = 1", "explain + update w:t"),
    ("PREPARE p AS DELETE FROM t", "prepare + delete w:t nowhere + !prepare:p"),
    ("PREPARE q (int) AS SELECT * FROM t WHERE id = $1", "prepare + select r:t + !prepare:q"),
    ("EXECUTE p", "execute + !execute:p"),
    ("EXECUTE q(1)", "execute + !execute:q"),
    ("CREATE TABLE x AS EXECUTE p", "create_table_as w:x + execute + !execute:p"),
    ("EXPLAIN ANALYZE EXECUTE p", "explain + execute + !execute:p"),
    ("DEALLOCATE p", "deallocate + !deallocate:p"),
    ("DEALLOCATE ALL", "deallocate + !deallocate-all"),
    ("DISCARD ALL", "discard + !discard-all"),
    ("DISCARD PLANS", "discard"),
    ("DECLARE c CURSOR FOR SELECT * FROM t", "declare_cursor r:t"),
    ("FETCH 10 FROM c", "fetch"),
    ("MOVE NEXT IN c", "fetch"),
    ("CLOSE c", "close_cursor"),
    // COPY.
    ("COPY t FROM STDIN", "copy_from w:t"),
    ("COPY t TO STDOUT", "copy_to r:t"),
    ("COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)", "copy_to r:t"),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", "copy_to + delete w:t nowhere"),
    ("COPY t FROM '/etc/passwd'", "copy_from_file w:t"),
    ("COPY t TO '/tmp/out'", "copy_to_file r:t"),
    ("COPY t FROM PROGRAM 'curl evil'", "copy_from_program w:t"),
    ("COPY t TO PROGRAM 'sh'", "copy_to_program r:t"),
    ("copy t (a, b) from stdin with (format csv)", "copy_from w:t"),
    // DDL.
    ("CREATE TABLE t (id int primary key)", "create_table w:t"),
    ("CREATE TEMP TABLE t (id int)", "create_table w:t + !temp:t"),
    ("CREATE TEMP TABLE t (id int) ON COMMIT DROP", "create_table w:t"),
    ("CREATE TABLE pg_temp.t (id int)", "create_table w:pg_temp.t + !temp:t"),
    ("CREATE TEMPORARY TABLE t AS SELECT 1", "create_table_as w:t + !temp:t"),
    ("SELECT 1 INTO TEMP t", "create_table_as w:t + !temp:t"),
    ("DISCARD TEMP", "discard + !forget-all"),
    // Tables that go with another object are never the session's own.
    ("CREATE TEMP TABLE t PARTITION OF p FOR VALUES IN (1)", "create_table w:t r:p"),
    ("CREATE TEMP TABLE t () INHERITS (p)", "create_table w:t r:p"),
    ("CREATE TEMP TABLE t OF ty", "create_table w:t"),
    ("ALTER TABLE p ATTACH PARTITION t FOR VALUES IN (1)", "alter_table w:p r:t + !forget:t + !forget:p"),
    ("ALTER TABLE t INHERIT p", "alter_table w:t r:p + !forget:p + !forget:t"),
    ("ALTER INDEX t RENAME TO u", "rename_table w:t + !forget:t"),
    ("SET search_path = public, pg_temp", "set set:search_path + !search-path"),
    ("SELECT set_config('search_path', 'pg_temp', false)", "select f:set_config + set set:search_path + !search-path"),
    ("ROLLBACK TO SAVEPOINT a", "rollback_to_savepoint + !rollback"),
    ("ALTER ROLE r SET search_path = public, pg_temp", "alter_role + search_path_pg_temp + set set:search_path"),
    ("CREATE TABLE s.t AS SELECT * FROM u", "create_table_as w:s.t r:u"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", "create_materialized_view w:mv r:t"),
    ("REFRESH MATERIALIZED VIEW mv", "refresh_materialized_view w:mv"),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY s.mv", "refresh_materialized_view w:s.mv"),
    ("CREATE VIEW v AS SELECT * FROM t", "create_view w:v r:t"),
    ("CREATE OR REPLACE TEMP VIEW orders AS SELECT 1", "create_view w:orders"),
    ("CREATE INDEX i ON t (a)", "create_index w:t"),
    ("CREATE SCHEMA s", "create_schema"),
    ("CREATE SCHEMA s CREATE TABLE t (a int)", "create_schema + create_table w:t"),
    ("CREATE DATABASE d", "create_database"),
    ("CREATE EXTENSION dblink", "create_extension"),
    ("CREATE ROLE r LOGIN", "create_role"),
    ("CREATE SEQUENCE sq", "create_sequence w:sq"),
    ("CREATE TYPE mood AS ENUM ('a', 'b')", "create_type"),
    ("CREATE TYPE pair AS (a int, b int)", "create_type r:pair"),
    ("CREATE DOMAIN d AS int", "create_type"),
    ("CREATE POLICY p ON t USING (true)", "create_policy w:t"),
    ("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "create_trigger w:t f:f"),
    ("CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u", "create_rule w:t + delete w:u nowhere"),
    ("CREATE RULE r AS ON SELECT TO t DO INSTEAD SELECT * FROM secret", "create_rule w:t r:secret"),
    ("CREATE FUNCTION f() RETURNS void AS 'DELETE FROM t' LANGUAGE sql", "create_function + delete w:t nowhere"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT count(*) FROM t $$", "create_function + select r:t f:count"),
    ("CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END", "create_function + delete w:t nowhere"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN (SELECT 1)", "create_function"),
    ("CREATE FUNCTION f() RETURNS int AS $$ BEGIN DELETE FROM t; RETURN 1; END $$ LANGUAGE plpgsql", "create_function + delete w:t nowhere + select"),
    ("CREATE PROCEDURE p() LANGUAGE sql AS 'TRUNCATE t'", "create_function + truncate w:t"),
    ("CREATE AGGREGATE a (int) (sfunc = int4pl, stype = int)", "create_other f:int4pl"),
    ("ALTER TABLE t ADD COLUMN c int", "alter_table w:t"),
    ("ALTER TABLE t RENAME TO u", "rename_table w:t + !forget:t"),
    ("ALTER TABLE t RENAME COLUMN a TO b", "rename_column w:t"),
    ("ALTER TABLE t SET SCHEMA s", "alter_other w:t"),
    ("ALTER ROLE r SUPERUSER", "alter_role"),
    ("ALTER ROLE r SET search_path = s", "alter_role + set set:search_path"),
    ("ALTER ROLE r SET role = postgres", "alter_role + set_role set:role"),
    ("ALTER ROLE r IN DATABASE d SET session_authorization = postgres", "alter_role + set_session_authorization set:session_authorization"),
    ("ALTER DATABASE d SET role = postgres", "alter_database + set_role set:role"),
    ("ALTER FUNCTION f() SET role = postgres", "alter_function + set_role set:role"),
    ("CREATE FOREIGN TABLE ft (a int) SERVER s", "create_table + create_table w:ft"),
    ("ALTER DATABASE d SET work_mem = '1GB'", "alter_database + set set:work_mem"),
    ("ALTER FUNCTION f() SECURITY DEFINER", "alter_function"),
    ("ALTER EXTENSION e UPDATE", "alter_extension"),
    ("ALTER SEQUENCE sq RESTART", "alter_other w:sq"),
    ("ALTER SYSTEM SET fsync = off", "alter_system + set set:fsync"),
    ("ALTER SYSTEM RESET ALL", "alter_system + reset"),
    ("DROP TABLE t", "drop_table w:t + !forget:t"),
    ("DROP TABLE IF EXISTS s.t, u CASCADE", "drop_table w:u,s.t + drop_table + drop_column + !forget:u"),
    ("drop table \"T\"", "drop_table w:T + !forget:T"),
    ("DROP VIEW v", "drop_view w:v"),
    ("DROP MATERIALIZED VIEW mv", "drop_materialized_view w:mv"),
    ("DROP INDEX i", "drop_index w:i"),
    ("DROP SEQUENCE sq", "drop_sequence w:sq"),
    ("DROP SCHEMA s CASCADE", "drop_schema + drop_table + drop_column"),
    ("DROP DATABASE d", "drop_database"),
    ("DROP DATABASE IF EXISTS d WITH (FORCE)", "drop_database"),
    ("DROP FUNCTION f(int)", "drop_function"),
    ("DROP TYPE ty CASCADE", "drop_type + drop_table + drop_column"),
    ("DROP TABLE pg_temp.t CASCADE", "drop_temp_table w:pg_temp.t + !forget:t"),
    ("DROP ROLE r", "drop_role"),
    ("DROP EXTENSION e", "drop_extension"),
    ("DROP TYPE mood", "drop_type"),
    ("DROP TRIGGER tr ON t", "drop_trigger"),
    ("DROP OWNED BY r", "drop_owned"),
    ("DROP TABLESPACE ts", "drop_other"),
    ("TRUNCATE t", "truncate w:t"),
    ("TRUNCATE TABLE a, s.b RESTART IDENTITY", "truncate w:a,s.b"),
    ("COMMENT ON TABLE t IS 'x'", "comment"),
    ("GRANT SELECT ON t TO r", "grant r:t"),
    ("REVOKE ALL ON t FROM r", "revoke r:t"),
    ("GRANT admin TO r", "grant_role"),
    ("REVOKE admin FROM r", "revoke_role"),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r", "alter_default_privileges + grant"),
    ("REASSIGN OWNED BY a TO b", "reassign_owned"),
    // Utility statements.
    ("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", "do"),
    ("DO LANGUAGE plpgsql 'BEGIN NULL; END'", "do"),
    ("CALL p(1)", "call f:p"),
    ("CALL s.p()", "call f:s.p"),
    ("SET work_mem = '64MB'", "set set:work_mem"),
    ("SET LOCAL statement_timeout = 0", "set set:statement_timeout"),
    ("SET search_path TO s, public", "set set:search_path + !search-path"),
    ("RESET work_mem", "reset set:work_mem"),
    ("RESET ALL", "reset + !search-path"),
    ("SET ROLE admin", "set_role set:role"),
    ("SET LOCAL ROLE admin", "set_role set:role"),
    ("RESET ROLE", "reset set:role"),
    ("SET SESSION AUTHORIZATION postgres", "set_session_authorization set:session_authorization"),
    ("SET SESSION AUTHORIZATION DEFAULT", "set_session_authorization set:session_authorization"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "set set:TRANSACTION"),
    ("SELECT set_config('role', 'admin', false)", "select f:set_config + set_role set:role"),
    ("SELECT set_config('app.user', '7', true)", "select f:set_config + set set:app.user"),
    ("SELECT set_config(name, 'x', false) FROM t", "select r:t f:set_config + set_role + !search-path"),
    ("SHOW work_mem", "show set:work_mem"),
    ("SHOW ALL", "show set:all"),
    ("VACUUM", "vacuum"),
    ("VACUUM (ANALYZE) t", "vacuum r:t"),
    ("VACUUM FULL t", "vacuum r:t"),
    ("ANALYZE t", "analyze r:t"),
    ("CLUSTER t USING i", "cluster w:t"),
    ("REINDEX TABLE t", "reindex w:t"),
    ("CHECKPOINT", "checkpoint"),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "lock r:t"),
    ("LISTEN ch", "listen"),
    ("NOTIFY ch, 'x'", "notify"),
    ("UNLISTEN *", "unlisten"),
    ("LOAD 'auto_explain'", "load"),
    ("START TRANSACTION READ ONLY", "begin"),
    ("COMMIT", "commit"),
    ("END", "commit"),
    ("ROLLBACK", "rollback + !rollback"),
    ("ABORT", "rollback + !rollback"),
    ("SAVEPOINT s1", "savepoint"),
    ("RELEASE SAVEPOINT s1", "release_savepoint"),
    ("ROLLBACK TO SAVEPOINT s1", "rollback_to_savepoint + !rollback"),
    ("PREPARE TRANSACTION 'x'", "prepare_transaction + !rollback"),
    ("COMMIT PREPARED 'x'", "commit_prepared"),
    ("SET CONSTRAINTS ALL DEFERRED", "set_constraints"),
    ("IMPORT FOREIGN SCHEMA s FROM SERVER f INTO t", "import_foreign_schema"),
    // Functions that matter to the built-in rules.
    ("SELECT pg_read_file('/etc/passwd')", "select f:pg_read_file"),
    ("SELECT * FROM pg_catalog.pg_ls_dir('.')", "select f:pg_catalog.pg_ls_dir"),
    ("SELECT lo_import('/etc/passwd')", "select f:lo_import"),
    ("SELECT PG_READ_FILE('x')", "select f:pg_read_file"),
    ("SELECT \"pg_read_file\"('x')", "select f:pg_read_file"),
    ("SELECT * FROM dblink('host=x', 'SELECT 1') AS t(a int)", "select f:dblink"),
    ("SELECT query_to_xml('SELECT * FROM secret', true, false, '')", "select f:query_to_xml"),
    ("SELECT (SELECT pg_read_file('x')) FROM t", "select r:t f:pg_read_file"),
    ("SELECT count(*) FILTER (WHERE f(a)) OVER () FROM t", "select r:t f:count,f"),
    ("INSERT INTO t VALUES (pg_read_file('x'))", "insert w:t f:pg_read_file"),
];

#[test]
fn classification_table() {
    assert!(CASES.len() >= 150, "{} cases", CASES.len());
    let mut failures = Vec::new();
    for (sql, expected) in CASES {
        match classify(sql, ON) {
            Ok(statements) => {
                let got = render(&statements);
                if got != *expected {
                    failures.push(format!(
                        "{sql}\n    expected: {expected}\n    got:      {got}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{sql}\n    error: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn standard_conforming_strings_moves_string_ends() {
    // On: a backslash is an ordinary character, the string ends at \'.
    let sql = "SELECT 'a\\'; DROP TABLE t; --'";
    assert_eq!(
        render(&classify(sql, ON).unwrap()),
        "select ; drop_table w:t + !forget:t"
    );
    // Off: \' escapes the quote, and the whole rest is one string.
    assert_eq!(render(&classify(sql, OFF).unwrap()), "select");
    // E'' strings escape under both settings.
    let sql = "SELECT E'a\\'; DROP TABLE t; --'";
    assert_eq!(render(&classify(sql, ON).unwrap()), "select");
    assert_eq!(render(&classify(sql, OFF).unwrap()), "select");
    // U&'' strings are refused by PostgreSQL when the setting is off.
    assert!(classify("SELECT U&'\\0041'", OFF).is_err());
}

#[test]
fn unparsable_text_is_an_error() {
    for sql in [
        "SELEC 1",
        "SELECT 'unterminated",
        "SELECT $$ unterminated",
        "DROP TABLE",
        "SELECT /* unterminated",
        "DELETE FROM t WHERE",
    ] {
        assert!(classify(sql, ON).is_err(), "{sql}");
    }
    // Deep nesting is an error, not a crash.
    let deep = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(classify(&deep, ON).is_err());
}

fn policy(extra: &str) -> Policy {
    let raw: RawPolicy = toml::from_str(extra).unwrap();
    Policy::new(Arc::new(compile(&raw).unwrap()))
}

fn who(user: &str, groups: &[&str]) -> Identity {
    Identity::new(user, groups.iter().copied())
}

/// The rule that denies, or "allow".
fn decision(p: &Policy, sql: &str, identity: &Identity) -> String {
    super::builtin_tests::name(&p.judge(sql.as_bytes(), identity, Lexing::Known(ON)).verdict)
}

#[test]
fn builtin_rules_decide() {
    let p = policy("");
    let alice = who("alice", &["support"]);
    for (sql, expected) in [
        ("SELECT * FROM orders", "allow"),
        ("UPDATE t SET a = 1 WHERE id = 1", "allow"),
        ("DROP TABLE t", "no-drop"),
        ("drop schema s cascade", "no-drop"),
        ("DROP DATABASE d", "no-drop"),
        ("DROP VIEW v", "allow"),
        ("TRUNCATE t", "no-truncate"),
        ("DELETE FROM t", "no-unbounded-write"),
        ("UPDATE t SET a = 1", "no-unbounded-write"),
        (
            "WITH d AS (DELETE FROM t RETURNING 1) SELECT 1",
            "no-unbounded-write",
        ),
        ("EXPLAIN ANALYZE DELETE FROM t", "no-unbounded-write"),
        ("PREPARE p AS DELETE FROM t", "no-unbounded-write"),
        ("PREPARE p AS TRUNCATE t", "deny(42601)"),
        ("SELECT 1; DROP TABLE t", "no-drop"),
        ("ALTER SYSTEM SET fsync = off", "no-alter-system"),
        ("ALTER ROLE app SET role = postgres", "no-role-switch"),
        ("ALTER DATABASE appdb SET role = postgres", "no-role-switch"),
        (
            "ALTER ROLE app IN DATABASE appdb SET session_authorization = postgres",
            "no-role-switch",
        ),
        ("COPY t TO PROGRAM 'sh'", "no-copy-program"),
        ("COPY t FROM '/etc/passwd'", "no-server-files"),
        ("COPY t FROM STDIN", "allow"),
        (
            "SELECT pg_read_file('/etc/passwd')",
            "no-server-file-functions",
        ),
        (
            "SELECT pg_catalog.pg_read_binary_file('x')",
            "no-server-file-functions",
        ),
        ("SELECT * FROM pg_ls_dir('.')", "no-server-file-functions"),
        ("SELECT lo_export(1, '/tmp/x')", "no-server-file-functions"),
        (
            "SELECT * FROM dblink('', 'DROP TABLE t') AS t(a text)",
            "no-dblink",
        ),
        ("SELECT dblink_exec('', 'x')", "no-dblink"),
        (
            "SELECT query_to_xml('select * from secret', true, false, '')",
            "no-dynamic-sql-functions",
        ),
        ("SET ROLE postgres", "no-role-switch"),
        ("SET SESSION AUTHORIZATION postgres", "no-role-switch"),
        (
            "SELECT set_config('role', 'postgres', false)",
            "no-role-switch",
        ),
        ("SELECT set_config('app.tenant', '7', false)", "allow"),
        ("RESET ROLE", "allow"),
        ("DO $$ BEGIN NULL; END $$", "no-do-blocks"),
        (
            "CREATE FUNCTION f() RETURNS void AS 'DELETE FROM t' LANGUAGE sql",
            "no-unbounded-write",
        ),
        ("SELEC 1", "deny(42601)"),
    ] {
        assert_eq!(decision(&p, sql, &alice), expected, "{sql}");
    }
}

#[test]
fn identities_groups_order_and_default_action() {
    let p = policy(
        r#"
        default_action = "deny"
        [[rules]]
        name = "watch-secrets"
        action = "log"
        text_regex = "(?i)secret"
        [[rules]]
        name = "dba-may-truncate"
        action = "allow"
        groups = ["dba"]
        kinds = ["truncate", "select"]
        [[rules]]
        name = "read-public"
        action = "allow"
        kinds = ["select"]
        relations = ["public.*"]
        [[rules]]
        name = "orders-need-approval"
        action = "require_approval"
        approvers = ["ops"]
        kinds = ["dml"]
        relations = ["public.orders"]
        "#,
    );
    let dba = who("bob", &["dba"]);
    let alice = who("alice", &["support"]);
    assert_eq!(decision(&p, "TRUNCATE t", &dba), "allow");
    assert_eq!(decision(&p, "TRUNCATE t", &alice), "no-truncate");
    assert_eq!(decision(&p, "SELECT * FROM orders", &alice), "allow");
    assert_eq!(
        decision(&p, "SELECT * FROM private.orders", &alice),
        "deny(42501)"
    );
    // An allow rule must cover every relation the statement names.
    assert_eq!(
        decision(&p, "SELECT * FROM public.a, private.b", &alice),
        "deny(42501)"
    );
    assert_eq!(decision(&p, "TRUNCATE a, b", &dba), "allow");
    assert_eq!(
        decision(&p, "DELETE FROM orders WHERE id = 1", &alice),
        "approval(orders-need-approval)"
    );
    // A deny-side rule assumes an unqualified name can be in any schema.
    assert_eq!(
        decision(&p, "UPDATE orders SET a = 1 WHERE id = 1", &alice),
        "approval(orders-need-approval)"
    );
    // A later unit's denial wins over an earlier one's approval.
    assert_eq!(
        decision(
            &p,
            "UPDATE orders SET a = 1 WHERE id = 1; TRUNCATE t",
            &alice
        ),
        "no-truncate"
    );
    let outcome = p.judge(b"SELECT secret FROM public.t", &alice, Lexing::Known(ON));
    assert_eq!(
        outcome.verdict,
        Verdict::Allow(vec![Arc::from("watch-secrets")])
    );
    let Verdict::Approval(a) = &p
        .judge(
            b"DELETE FROM orders WHERE id = 1",
            &alice,
            Lexing::Known(ON),
        )
        .verdict
    else {
        panic!("expected an approval");
    };
    assert_eq!(a.approval.approvers, ["ops"]);
    assert_eq!(a.detail, "delete on orders");
    // Where no approval can be asked for, it reads as a refusal.
    let d = a.denial();
    assert_eq!(d.code, "42501");
    assert!(d.message.contains("requires approval"), "{d:?}");
}

#[test]
fn cached_verdicts_follow_shape_settings_and_identity() {
    let p = policy(
        r#"
        [[rules]]
        name = "bob-no-orders"
        action = "deny"
        users = ["bob"]
        relations = ["orders"]
        "#,
    );
    let alice = who("alice", &[]);
    let bob = who("bob", &[]);
    for round in 0..2 {
        assert_eq!(
            decision(&p, "SELECT * FROM orders WHERE id = 1", &alice),
            "allow",
            "round {round}"
        );
        assert_eq!(
            decision(&p, "SELECT * FROM orders WHERE id = 2", &bob),
            "bob-no-orders"
        );
        assert_eq!(
            decision(&p, "SELECT 'x' FROM t WHERE id = 3", &bob),
            "allow"
        );
    }
    // Same tokens under the other setting: a different shape, judged anew.
    let sql = b"SELECT 'a\\'; DROP TABLE t; --'";
    assert!(matches!(
        p.judge(sql, &alice, Lexing::Known(OFF)).verdict,
        Verdict::Allow(_)
    ));
    assert!(matches!(
        p.judge(sql, &alice, Lexing::Known(ON)).verdict,
        Verdict::Deny(_)
    ));
    // Unsure which setting holds: the stricter reading wins.
    assert!(matches!(
        p.judge(sql, &alice, Lexing::Uncertain(OFF)).verdict,
        Verdict::Deny(_)
    ));
}

#[test]
fn bad_bytes_are_refused_when_rules_apply() {
    let p = policy("");
    let alice = who("alice", &[]);
    let code = |text: &[u8]| match &p.judge(text, &alice, Lexing::Known(ON)).verdict {
        Verdict::Deny(d) => d.code,
        Verdict::Allow(_) => "allow",
        Verdict::Approval(_) => "approval",
    };
    assert_eq!(code(b"SELECT '\xff'"), "22021");
    assert_eq!(code(b"SELECT 1\0; DROP TABLE t"), "22021");
    // With no rules at all, pgward does not judge (and the server decides).
    let inert = policy("builtin_rules = false");
    assert!(inert.is_inert());
    assert!(matches!(
        inert.judge(b"\xff", &alice, Lexing::Known(ON)).verdict,
        Verdict::Allow(_)
    ));
}

#[test]
fn config_errors_name_the_field() {
    for (text, field) in [
        ("default_action = \"maybe\"", "policy.default_action"),
        ("[[rules]]\nname = \"a\"\naction = \"nope\"", "policy.rules[0].action"),
        ("[[rules]]\nname = \"a\"\naction = \"deny\"\nkinds = [\"dropp\"]", "policy.rules[0].kinds"),
        ("[[rules]]\nname = \"a\"\naction = \"deny\"\nrelations = [\"a.b.c\"]", "policy.rules[0].relations"),
        ("[[rules]]\nname = \"a\"\naction = \"deny\"\ntext_regex = \"(\"", "policy.rules[0].text_regex"),
        ("[[rules]]\nname = \"a\"\naction = \"deny\"\n[[rules]]\nname = \"a\"\naction = \"deny\"", "policy.rules[1].name"),
        ("cache_size = 0", "policy.cache_size"),
    ] {
        let raw: RawPolicy = toml::from_str(text).unwrap();
        let e = compile(&raw).unwrap_err().to_string();
        assert!(e.starts_with(field), "{text}: {e}");
    }
}

#[test]
fn caches_key_by_the_rules_that_apply_not_by_who() {
    let p = policy(
        r#"
        [[rules]]
        name = "dba-may-truncate"
        action = "allow"
        groups = ["dba"]
        kinds = ["truncate"]
        [[rules]]
        name = "carol-no-orders"
        action = "deny"
        users = ["carol"]
        relations = ["orders"]
        "#,
    );
    // Identities that are in no user list (a token's) are judged by the
    // rules that name them or their groups, like any other.
    let token_dba = who("svc-from-token", &["dba"]);
    let other_dba = who("dave", &["dba", "x"]);
    let nobody = who("erin", &[]);
    let carol = who("carol", &["dba"]);
    assert_eq!(
        p.rules.audience(&token_dba),
        p.rules.audience(&other_dba),
        "the same rules apply: one cache entry serves both"
    );
    assert_ne!(p.rules.audience(&token_dba), p.rules.audience(&nobody));
    assert_ne!(p.rules.audience(&token_dba), p.rules.audience(&carol));
    for round in 0..2 {
        assert_eq!(decision(&p, "TRUNCATE t", &token_dba), "allow", "{round}");
        assert_eq!(decision(&p, "TRUNCATE t", &nobody), "no-truncate");
        assert_eq!(decision(&p, "TRUNCATE t", &other_dba), "allow");
        assert_eq!(decision(&p, "SELECT * FROM orders", &nobody), "allow");
        assert_eq!(
            decision(&p, "SELECT * FROM orders", &carol),
            "carol-no-orders"
        );
    }
}

#[test]
fn audiences_of_many_rules() {
    // Past 128 rules the audience bitset is no longer inline.
    let mut text = String::from("builtin_rules = false\n");
    for i in 0..150 {
        text += &format!("[[rules]]\nname = \"r{i}\"\naction = \"log\"\nusers = [\"u{i}\"]\n");
    }
    text += "[[rules]]\nname = \"last\"\naction = \"deny\"\nusers = [\"u149\"]\nkinds = [\"truncate\"]\n";
    let p = policy(&text);
    assert_eq!(decision(&p, "TRUNCATE t", &who("u149", &[])), "last");
    assert_eq!(decision(&p, "TRUNCATE t", &who("u148", &[])), "allow");
    assert_ne!(
        p.rules.audience(&who("u149", &[])),
        p.rules.audience(&who("u148", &[]))
    );
}

#[test]
fn the_default_action_can_ask_for_approval() {
    let raw: crate::config::raw::RawPolicy =
        toml::from_str("default_action = \"require_approval\"\nbuiltin_rules = false\n[[rules]]\nname = \"reads\"\naction = \"allow\"\nkinds = [\"select\"]\n")
            .expect("toml");
    let approvals = crate::config::approvals::ApprovalsConfig {
        approvers: vec!["ops".into()],
        ..Default::default()
    };
    let p = Policy::new(Arc::new(
        crate::config::policy::compile_with(&raw, &approvals).expect("rules"),
    ));
    let alice = who("alice", &[]);
    assert_eq!(decision(&p, "SELECT 1", &alice), "allow");
    assert_eq!(
        decision(&p, "DELETE FROM t", &alice),
        "approval(default_action)"
    );
    // A PREPARE is a statement of its own kind: no rule allows it here.
    assert_eq!(
        decision(&p, "PREPARE d AS DELETE FROM t", &alice),
        "approval(default_action)"
    );
    assert!(
        crate::config::policy::compile(&raw).is_err(),
        "no approvers: a config error"
    );
}
