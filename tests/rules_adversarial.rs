//! Issue 12's classes of differential between what pgward judges and what
//! PostgreSQL runs, as an adversary would try them: each case goes through
//! pgward in the simple and the extended protocol, with the upstream role
//! both the database's owner and a least-privilege role, and must end
//! refused with the guarded table intact. Then the everyday statements the
//! same rules must keep allowing.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use support::{message, sqlstate, Backend, Pgward, DB};
use tokio_postgres::Client;

/// A fresh name per call, so tests sharing the cluster never collide.
fn fresh(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a refusal looks like: a built-in rule's name, or a SQLSTATE.
#[derive(Debug, Clone, Copy)]
enum Refused {
    Rule(&'static str),
    Code(&'static str),
}

/// One adversarial case: statements that must run first (each allowed, or
/// failing on the server when written `!statement`), then the attack.
struct Case {
    class: &'static str,
    setup: Vec<String>,
    attack: String,
    refused: Refused,
}

fn case(class: &'static str, attack: impl Into<String>, refused: Refused) -> Case {
    Case {
        class,
        setup: Vec::new(),
        attack: attack.into(),
        refused,
    }
}

fn after(class: &'static str, setup: &[&str], attack: impl Into<String>, refused: Refused) -> Case {
    Case {
        class,
        setup: setup.iter().map(|s| (*s).to_owned()).collect(),
        attack: attack.into(),
        refused,
    }
}

use Refused::{Code, Rule};

/// The cases, against table `t` (owned by the owner role, with `n` rows).
fn cases(t: &str, tmp: &str) -> Vec<Case> {
    let mut all = vec![
        // 6. The verdict cache: a harmless call of one shape first, then a
        // role switch of the same shape.
        after("cache", &["SELECT set_config(('application_name'), 'x', false)"],
            "SELECT set_config(('role'), 'postgres', false)", Rule("no-role-switch")),
        after("cache", &["SELECT \"set_config\"('application_name', 'x', false)"],
            "SELECT \"set_config\"('role', 'postgres', false)", Rule("no-role-switch")),
        after("cache", &["SELECT pg_catalog.set_config((('application_name')), 'y', false)"],
            "SELECT pg_catalog.set_config((('role')), 'postgres', false)", Rule("no-role-switch")),
        after("cache", &["SELECT set_config(E'application_name', 'x', false)"],
            "SELECT set_config(E'\\x72ole', 'postgres', false)", Rule("no-role-switch")),
        after("cache", &["SELECT set_config(U&'application_name', 'x', false)"],
            "SELECT set_config(U&'!0072ole' UESCAPE '!', 'postgres', false)", Rule("no-role-switch")),
        after("cache", &["SELECT set_config($$application_name$$, 'x', false)"],
            "SELECT set_config($$session_authorization$$, 'postgres', false)", Rule("no-role-switch")),
        after("cache", &["SELECT 1 FROM (SELECT set_config('application_name', 'z', true)) s"],
            "SELECT 1 FROM (SELECT set_config('role', 'postgres', true)) s", Rule("no-role-switch")),
        case("cache", "SELECT set_config('ro' || 'le', 'postgres', false)", Rule("no-role-switch")),
        case("cache", "SELECT set_config('role'::text, 'postgres', false)", Rule("no-role-switch")),
        case("cache", "SELECT set_config(setting_name => 'role', new_value => 'postgres', is_local => false)", Rule("no-role-switch")),
        after("cache", &[&format!("CREATE OR REPLACE FUNCTION pg_temp.{t}_f() RETURNS void LANGUAGE sql AS 'SELECT 1'")],
            format!("CREATE OR REPLACE FUNCTION pg_temp.{t}_f() RETURNS void LANGUAGE sql AS 'DELETE FROM {t}'"), Rule("no-unbounded-write")),
        // 5. Statements carried in typed fields.
        case("walk", "ALTER ROLE CURRENT_USER SET role = postgres", Rule("no-role-switch")),
        case("walk", "ALTER ROLE CURRENT_USER IN DATABASE appdb SET role TO postgres", Rule("no-role-switch")),
        case("walk", "ALTER DATABASE appdb SET role = postgres", Rule("no-role-switch")),
        case("walk", "ALTER DATABASE appdb SET session_authorization = postgres", Rule("no-role-switch")),
        case("walk", "ALTER ROLE ALL IN DATABASE appdb SET role = postgres", Rule("no-role-switch")),
        case("walk", "CREATE FUNCTION f_sw() RETURNS int LANGUAGE sql SET role = postgres AS 'SELECT 1'", Rule("no-role-switch")),
        case("walk", "ALTER SYSTEM SET shared_preload_libraries = 'x'", Rule("no-alter-system")),
        // 7. Gaps in the built-in set.
        case("builtin", "DROP OWNED BY CURRENT_USER", Rule("no-drop-owned")),
        case("builtin", "DROP OWNED BY CURRENT_USER CASCADE", Rule("no-drop-owned")),
        case("builtin", "REASSIGN OWNED BY CURRENT_USER TO postgres", Rule("no-drop-owned")),
        case("builtin", format!("ALTER TABLE {t} DROP COLUMN v"), Rule("no-drop-column")),
        case("builtin", format!("ALTER TABLE {t} ADD COLUMN w int, DROP v"), Rule("no-drop-column")),
        case("builtin", format!("ALTER TABLE ONLY public.{t} DROP COLUMN IF EXISTS v CASCADE"), Rule("no-drop-column")),
        case("builtin", format!("ALTER TABLE {t} RENAME TO {t}_gone"), Rule("no-rename-tables")),
        case("builtin", format!("ALTER TABLE {t} RENAME COLUMN v TO w"), Rule("no-rename-tables")),
        case("builtin", format!("ALTER TABLE IF EXISTS public.{t} RENAME v TO w"), Rule("no-rename-tables")),
        case("builtin", format!("MERGE INTO {t} USING (SELECT 1 AS one) s ON true WHEN MATCHED THEN DELETE"), Rule("no-unbounded-write")),
        case("builtin", format!("MERGE INTO {t} USING (SELECT 1 AS one) s ON one = 1 WHEN MATCHED THEN DELETE"), Rule("no-unbounded-write")),
        case("builtin", format!("MERGE INTO {t} USING (SELECT 1 AS one) s ON 1 = 1 WHEN MATCHED THEN UPDATE SET v = 'gone'"), Rule("no-unbounded-write")),
        case("builtin", format!("WITH s AS (SELECT 1 AS one) MERGE INTO {t} USING s ON s.one = 1 WHEN MATCHED THEN DELETE"), Rule("no-unbounded-write")),
        case("builtin", format!("EXPLAIN ANALYZE MERGE INTO {t} USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE"), Rule("no-unbounded-write")),
        case("builtin", "SELECT pg_reload_conf()", Rule("no-reload-conf")),
        case("builtin", "SELECT pg_catalog.pg_reload_conf() WHERE true", Rule("no-reload-conf")),
        case("builtin", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()", Rule("no-signal-other-sessions")),
        case("builtin", "SELECT pg_cancel_backend(1)", Rule("no-signal-other-sessions")),
        case("builtin", "SELECT \"pg_terminate_backend\"((SELECT min(pid) FROM pg_stat_activity))", Rule("no-signal-other-sessions")),
        case("builtin", "SELECT pg_terminate_backend(pg_backend_pid() - 1)", Rule("no-signal-other-sessions")),
        case("builtin", "ALTER ROLE CURRENT_USER SET search_path = public, pg_temp", Rule("no-pg-temp-in-search-path")),
        // The session's temporary tables: only those the server confirmed.
        after("temp", &["BEGIN", &format!("CREATE TEMP TABLE {t} (id int)"), "ROLLBACK"],
            format!("DROP TABLE {t}"), Rule("no-drop")),
        after("temp", &["BEGIN", &format!("CREATE TEMP TABLE {t} (id int)"), "SAVEPOINT a", "ROLLBACK TO SAVEPOINT a", "COMMIT"],
            format!("DROP TABLE {t}"), Rule("no-drop")),
        after("temp", &[&format!("CREATE TEMP TABLE {t} (id int) ON COMMIT DROP")],
            format!("TRUNCATE {t}"), Rule("no-truncate")),
        after("temp", &[&format!("CREATE TEMP TABLE {tmp} (id int)"), "SET search_path = public, pg_temp"],
            format!("DROP TABLE {tmp}"), Rule("no-drop")),
        after("temp", &[&format!("CREATE TEMP TABLE {tmp}_d (id int)"), "DISCARD TEMP"],
            format!("DROP TABLE {tmp}_d"), Rule("no-drop")),
        after("temp", &[&format!("!SELECT 1/0; CREATE TEMP TABLE {t} (id int)")],
            format!("DROP TABLE {t}"), Rule("no-drop")),
        after("temp", &["BEGIN", "!SELECT 1/0", &format!("!CREATE TEMP TABLE {t} (id int)"), "COMMIT"],
            format!("DROP TABLE {t}"), Rule("no-drop")),
        case("temp", format!("DROP TABLE pg_temp.{tmp}, {t}"), Rule("no-drop")),
        case("temp", format!("TRUNCATE {tmp}, {t}"), Rule("no-truncate")),
    ];
    all.extend(more_cases(t));
    all
}

/// Cases of the classes added after the first ones (encoding, version,
/// function bodies, parse errors).
fn more_cases(t: &str) -> Vec<Case> {
    vec![
        // 3. standard_conforming_strings: function bodies under both
        // readings, and no route to turning the setting off.
        case("strings", format!(r#"CREATE FUNCTION pg_temp.{t}_b() RETURNS int LANGUAGE sql AS $$SELECT 'a\', ' ; DELETE FROM {t}; SELECT 1 --'$$"#), Rule("no-unbounded-write")),
        case("strings", format!(r#"CREATE PROCEDURE pg_temp.{t}_p() LANGUAGE sql AS 'SELECT ''a\'', '' ; TRUNCATE {t}; SELECT 1 --'''"#), Rule("no-truncate")),
        case("strings", format!(r#"CREATE FUNCTION pg_temp.{t}_c() RETURNS int LANGUAGE sql AS $$SELECT 'a\', ' ; DROP TABLE {t}; SELECT 1 --'$$"#), Rule("no-drop")),
        case("strings", "SET standard_conforming_strings = off", Rule("no-standard-conforming-strings-off")),
        case("strings", "SET SESSION standard_conforming_strings TO 'false'", Rule("no-standard-conforming-strings-off")),
        case("strings", "SELECT set_config('standard_conforming_strings', 'off', false)", Rule("no-standard-conforming-strings-off")),
        case("strings", "SELECT set_config(('standard_conforming_strings'), 'of', true)", Rule("no-standard-conforming-strings-off")),
        case("strings", "ALTER ROLE CURRENT_USER SET standard_conforming_strings = off", Rule("no-standard-conforming-strings-off")),
        case("strings", "ALTER DATABASE appdb SET standard_conforming_strings TO off", Rule("no-standard-conforming-strings-off")),
        case("strings", format!("CREATE FUNCTION pg_temp.{t}_s() RETURNS int LANGUAGE sql SET standard_conforming_strings = off AS 'SELECT 1'"), Rule("no-standard-conforming-strings-off")),
        // 2. Syntax newer than the server (the tests' PostgreSQL is 15).
        case("version", "SELECT json_array(1)", Code("0A000")),
        case("version", "SELECT json_object('a': 1)", Code("0A000")),
        case("version", "SELECT json_arrayagg(id) FROM (SELECT 1 AS id) s", Code("0A000")),
        case("version", format!("SELECT 1 FROM {t} WHERE v IS JSON"), Code("0A000")),
        case("version", "SELECT json_value('{\"a\": 1}', '$.a')", Code("0A000")),
        case("version", "SELECT json_scalar(1), json('{}'), json_serialize('{}')", Code("0A000")),
        case("version", "SELECT * FROM json_table('[1]', '$[*]' COLUMNS (a int PATH '$')) AS jt", Code("0A000")),
        case("version", format!("MERGE INTO {t} USING (SELECT 1 AS id) s ON {t}.id = s.id WHEN MATCHED THEN DELETE RETURNING *"), Code("0A000")),
        case("version", format!("MERGE INTO {t} USING (SELECT 1 AS id) s ON {t}.id = s.id WHEN NOT MATCHED BY SOURCE AND {t}.id < 0 THEN DELETE"), Code("0A000")),
        case("version", "SELECT 0x1F", Code("0A000")),
        case("version", format!("DELETE FROM {t} WHERE id = 1_0"), Code("0A000")),
        case("version", "SELECT SYSTEM_USER", Code("0A000")),
        case("version", format!("UPDATE {t} SET v = v WHERE id = 1 RETURNING WITH (OLD AS o) o.v"), Code("0A000")),
        case("version", format!("CREATE FUNCTION pg_temp.{t}_j() RETURNS json LANGUAGE sql AS 'SELECT json_array(1)'"), Code("0A000")),
        // 1. Client encodings pgward cannot judge are never switched to.
        case("encoding", "SET client_encoding = 'SJIS'", Rule("no-unjudgeable-client-encoding")),
        case("encoding", "SET NAMES 'BIG5'", Rule("no-unjudgeable-client-encoding")),
        case("encoding", "SET client_encoding TO gbk", Rule("no-unjudgeable-client-encoding")),
        case("encoding", "SET client_encoding = 'Shift-JIS'", Rule("no-unjudgeable-client-encoding")),
        case("encoding", "SELECT set_config('client_encoding', 'GB18030', false)", Rule("no-unjudgeable-client-encoding")),
        case("encoding", "SELECT set_config(('client_encoding'), 'mskanji', true)", Rule("no-unjudgeable-client-encoding")),
        case("encoding", "ALTER ROLE CURRENT_USER SET client_encoding = 'UHC'", Rule("no-unjudgeable-client-encoding")),
        case("encoding", "ALTER DATABASE appdb SET client_encoding TO 'JOHAB'", Rule("no-unjudgeable-client-encoding")),
        case("encoding", format!("CREATE FUNCTION pg_temp.{t}_e() RETURNS int LANGUAGE sql SET client_encoding = 'SJIS' AS 'SELECT 1'"), Rule("no-unjudgeable-client-encoding")),
        // 4. Code that runs without being named (statement-level part).
        case("code", "CREATE OPERATOR ~>> (RIGHTARG = text, FUNCTION = pg_read_file)", Rule("no-server-file-functions")),
        case("code", "CREATE AGGREGATE pg_temp.agg(text) (SFUNC = textcat, STYPE = text, FINALFUNC = pg_read_file)", Rule("no-server-file-functions")),
        case("code", "CREATE CAST (text AS int) WITH FUNCTION pg_read_file(text)", Rule("no-server-file-functions")),
        case("code", format!("CREATE TRIGGER {t}_tr AFTER INSERT ON {t} EXECUTE FUNCTION dblink_exec()"), Rule("no-dblink")),
        case("code", "CREATE FUNCTION pg_temp.rf(text) RETURNS text LANGUAGE internal STRICT AS 'pg_read_file_all'", Rule("no-native-functions")),
        case("code", "CREATE FOREIGN TABLE ft_prog (a text) SERVER files OPTIONS (program 'id')", Rule("no-copy-program")),
        case("code", "CREATE FOREIGN TABLE ft_file (a text) SERVER files OPTIONS (filename '/etc/passwd')", Rule("no-server-files")),
        case("code", format!("CREATE FUNCTION pg_temp.{t}_pl() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {t}; END $$"), Rule("no-unbounded-write")),
        case("code", format!("CREATE PROCEDURE pg_temp.{t}_pp() LANGUAGE plpgsql AS $$ DECLARE n int := (SELECT count(*) FROM {t}); BEGIN TRUNCATE {t}; END $$"), Rule("no-truncate")),
        case("code", format!("CREATE FUNCTION pg_temp.{t}_dx() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'DROP TABLE ' || '{t}'; END $$"), Rule("no-opaque-code")),
        case("code", format!("CREATE FUNCTION pg_temp.{t}_rf() RETURNS text LANGUAGE plpgsql AS $$ DECLARE s text := pg_read_file('/etc/passwd'); BEGIN RETURN s; END $$"), Rule("no-server-file-functions")),
        case("cache", "VALUES (set_config('role', 'postgres', false))", Rule("no-role-switch")),
        case("cache", "SELECT set_config(lower('ROLE'), 'postgres', false)", Rule("no-role-switch")),
        case("walk", "CREATE PROCEDURE pg_temp.p_sw() LANGUAGE sql SET role = postgres AS 'SELECT 1'", Rule("no-role-switch")),
        case("walk", "ALTER ROLE CURRENT_USER SET session_authorization TO DEFAULT", Rule("no-role-switch")),
        case("encoding", "SET client_encoding = 'EUC_TW'", Rule("no-unjudgeable-client-encoding")),
        case("encoding", "SET client_encoding = 'MULE_INTERNAL'", Rule("no-unjudgeable-client-encoding")),
        case("temp", format!("TRUNCATE pg_temp_1.{t}"), Rule("no-truncate")),
        case("errors", format!("SELECT * FROM {t} AS"), Code("42601")),
        case("errors", "CREATE ROLE r UNENCRYPTED PASSWORD 'x'", Code("0A000")),
        // 9. Parse errors keep PostgreSQL's SQLSTATE (not always 42601).
        case("errors", "CREATE ASSERTION a CHECK (true)", Code("0A000")),
        case("errors", format!("SELECT * FROM {t} WHERE"), Code("42601")),
        case(
            "errors",
            format!("DELETE FROM {t} WHERE id = 1 OR"),
            Code("42601"),
        ),
    ]
}

/// A least-privilege upstream role that can read and write `t` only.
fn least_privilege_config(backend: &Backend) -> String {
    static ROLE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let file = ROLE.get_or_init(|| {
        let password = format!("least-{:016x}", rand::random::<u64>());
        backend.admin_sql(&format!(
            "CREATE ROLE pgward_least LOGIN PASSWORD '{password}'; \
             GRANT CONNECT, TEMP ON DATABASE {DB} TO pgward_least; \
             GRANT USAGE ON SCHEMA public TO pgward_least"
        ));
        let file = backend.cluster.dir().join("least.password");
        std::fs::write(&file, format!("{password}\n")).expect("password file");
        file
    });
    backend
        .config(
            "",
            "role_map = [{ users = [\"*\"], role = \"pgward_least\" }]",
        )
        .replace(
            &format!("user = \"{}\"", support::APP_ROLE),
            "user = \"pgward_least\"",
        )
        .replace(
            &format!("password_file = \"{}\"", backend.password_file.display()),
            &format!("password_file = \"{}\"", file.display()),
        )
}

async fn count(client: &Client, t: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM public.{t}"), &[])
        .await
        .expect("count")
        .get(0)
}

fn check(e: &tokio_postgres::Error, refused: Refused, what: &str) {
    match refused {
        Rule(rule) => {
            assert_eq!(sqlstate(e), "42501", "{what}: {e:?}");
            assert!(
                message(e).contains(&format!("pgward rule \"{rule}\"")),
                "{what}: {}",
                message(e)
            );
        }
        Code(code) => assert_eq!(sqlstate(e), code, "{what}: {e:?}"),
    }
}

/// Runs every case through `pw` in both protocols.
async fn run_cases(pw: &Pgward, owner: &Client, role: &str) -> usize {
    let t = fresh("adv");
    owner
        .batch_execute(&format!(
            "CREATE TABLE {t} (id int8 PRIMARY KEY, v text); \
             INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 20) g; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO pgward_least"
        ))
        .await
        .expect("table");
    let mut ran = 0;
    for protocol in ["simple", "extended"] {
        let tmp = fresh("tmp");
        for case in cases(&t, &tmp) {
            // A fresh session per case: setups leave state behind.
            let client = pw.connect().await;
            let what = format!("[{role}/{protocol}/{}] {}", case.class, case.attack);
            for sql in &case.setup {
                let (fails, sql) = match sql.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, sql.as_str()),
                };
                let done = if protocol == "simple" {
                    client.simple_query(sql).await.map(|_| ())
                } else {
                    client.execute(sql, &[]).await.map(|_| ())
                };
                match done {
                    Err(e) if fails => assert_ne!(sqlstate(&e), "42501", "{what}: {sql}"),
                    Ok(()) if !fails => {}
                    other => panic!("{what}: setup {sql}: {other:?}"),
                }
            }
            let e = if protocol == "simple" {
                client
                    .simple_query(&case.attack)
                    .await
                    .map(|_| ())
                    .expect_err(&what)
            } else {
                client
                    .execute(case.attack.as_str(), &[])
                    .await
                    .map(|_| ())
                    .expect_err(&what)
            };
            check(&e, case.refused, &what);
            let _ = client.batch_execute("ROLLBACK").await;
            assert_eq!(count(&client, &t).await, 20, "{what}");
            ran += 1;
        }
    }
    // The table is whole: same columns, same name, same rows.
    let row = owner
        .query_one(
            &format!("SELECT count(*), string_agg(v, ',' ORDER BY id) FROM {t}"),
            &[],
        )
        .await
        .expect("intact");
    assert_eq!(row.get::<_, i64>(0), 20);
    ran
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adversarial_case_is_refused_with_the_table_intact() {
    let backend = Backend::shared();
    let owner_pw = Pgward::start(backend).await;
    let owner = owner_pw.connect().await;
    let least_config = least_privilege_config(backend);
    let least_pw = Pgward::start_in(&least_config, backend.cluster.dir()).await;
    let mut ran = run_cases(&owner_pw, &owner, "owner").await;
    ran += run_cases(&least_pw, &owner, "least-privilege").await;
    assert!(ran >= 2 * 2 * 100, "{ran} runs of {} cases", ran / 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_statements_keep_working() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    let t = fresh("daily");
    let tmp = fresh("tmp");
    for sql in [
        format!("CREATE TABLE {t} (id int PRIMARY KEY, v text)"),
        format!("INSERT INTO {t} VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET v = excluded.v"),
        format!("INSERT INTO {t} VALUES (1, 'b') ON CONFLICT (id) DO UPDATE SET v = excluded.v"),
        format!("MERGE INTO {t} USING (SELECT 2 AS id, 'c' AS v) s ON {t}.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)"),
        format!("MERGE INTO {t} AS x USING (SELECT 2 AS id) s ON x.id = s.id WHEN MATCHED AND x.v = 'zz' THEN DELETE"),
        // Migrations and test suites: temporary tables come and go.
        format!("CREATE TEMP TABLE {tmp} (id int)"),
        format!("INSERT INTO {tmp} VALUES (1)"),
        format!("TRUNCATE {tmp}"),
        format!("DROP TABLE IF EXISTS {tmp}"),
        format!("CREATE TEMP TABLE {tmp} AS SELECT 1 AS id"),
        format!("DROP TABLE {tmp}"),
        format!("CREATE TABLE pg_temp.{tmp} (id int)"),
        format!("DROP TABLE pg_temp.{tmp}"),
        format!("DROP TABLE IF EXISTS pg_temp.{tmp}_never"),
        "BEGIN".into(),
        format!("CREATE TEMP TABLE {tmp} (id int)"),
        format!("TRUNCATE {tmp}"),
        "COMMIT".into(),
        format!("DROP TABLE {tmp}"),
        "SELECT pg_cancel_backend(pg_backend_pid()) FROM (SELECT 1) s WHERE false".into(),
        format!("ALTER TABLE {t} ADD COLUMN w int"),
        "SELECT set_config('application_name', 'daily', false)".into(),
        format!(
            "CREATE FUNCTION {t}_count() RETURNS bigint LANGUAGE plpgsql AS $$ \
             DECLARE n bigint; BEGIN SELECT count(*) INTO n FROM {t}; RETURN n; END $$"
        ),
        format!("SELECT {t}_count()"),
        format!(
            "CREATE FUNCTION {t}_touch() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN NEW.w := coalesce(NEW.w, 0) + 1; RETURN NEW; END $$"
        ),
        format!("CREATE TRIGGER {t}_tr BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_touch()"),
        format!("UPDATE {t} SET v = 'd' WHERE id = 1"),
    ] {
        client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    // The same through the extended protocol, in a new session.
    let client = pw.connect().await;
    for sql in [
        format!("CREATE TEMP TABLE {tmp} (id int)"),
        format!("DROP TABLE {tmp}"),
        format!("CREATE TEMP TABLE {tmp} (id int)"),
        format!("TRUNCATE pg_temp.{tmp}"),
        format!("TRUNCATE {tmp}"),
    ] {
        client
            .execute(sql.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_errors_carry_the_servers_message_code_and_position() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    let client = pw.connect().await;
    for (sql, code, message_text, position) in [
        ("SELEC 1", "42601", "syntax error at or near \"SELEC\"", 1),
        (
            "SELECT 'é', ü FRM t",
            "42601",
            "syntax error at or near \"t\"",
            19,
        ),
        (
            "SELECT 1 FROM t WHERE",
            "42601",
            "syntax error at end of input",
            22,
        ),
        (
            "CREATE ASSERTION a CHECK (true)",
            "0A000",
            "CREATE ASSERTION is not yet implemented",
            1,
        ),
    ] {
        let simple = client.simple_query(sql).await.expect_err(sql);
        let extended = client.prepare(sql).await.expect_err(sql);
        for e in [simple, extended] {
            let db = e.as_db_error().expect("a server-style error");
            assert_eq!(db.code().code(), code, "{sql}");
            assert_eq!(db.message(), message_text, "{sql}");
            assert_eq!(
                db.position(),
                Some(&tokio_postgres::error::ErrorPosition::Original(position)),
                "{sql}"
            );
        }
    }
    // psql draws its marker from the position, as it would for the server.
    let psql = backend.cluster.program("psql");
    let dsn = pw.dsn();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(psql)
            .env("PGPASSWORD", support::PASSWORD)
            .args(["-X", "-c", "SELECT 1 FROM pg_class WHERE relname = 'x' AND"])
            .arg(dsn)
            .output()
            .expect("psql")
    })
    .await
    .expect("psql");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR:  syntax error at end of input"),
        "{stderr}"
    );
    assert!(
        stderr.contains("LINE 1: SELECT 1 FROM pg_class WHERE relname = 'x' AND"),
        "{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.trim_end().ends_with('^')),
        "{stderr}"
    );
}
