//! The built-in rules added for issue 12's gaps (DROP OWNED, DROP COLUMN,
//! RENAME, unbounded MERGE, pg_reload_conf, signalling other sessions) and
//! the session's own temporary tables.

use super::lexer::LexSettings;
use super::rules::{Identity, Verdict};
use super::{Lexing, Policy, Session};
use crate::config::policy::compile;
use crate::config::raw::RawPolicy;
use std::collections::BTreeSet;
use std::sync::Arc;

fn builtin() -> Policy {
    let raw: RawPolicy = toml::from_str("").expect("empty policy");
    Policy::new(Arc::new(compile(&raw).expect("rules")))
}

/// The rule that denies, "deny(SQLSTATE)" for other refusals, or "allow".
pub(super) fn name(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Allow(_) => "allow".into(),
        Verdict::Deny(d) if d.message.contains("pgward rule \"") => {
            d.message.split('"').nth(1).unwrap_or_default().to_owned()
        }
        Verdict::Deny(d) => format!("deny({})", d.code),
        Verdict::Approval(a) => format!("approval({})", a.rule),
    }
}

/// [`name`] of the verdict on `sql` run by a `dev` user in `session`.
pub(super) fn decided(p: &Policy, sql: &str, session: &Session<'_>) -> String {
    let who = Identity::new("alice", ["dev"]);
    name(&p.judge_in(sql.as_bytes(), &who, session).verdict)
}

const ON: Lexing = Lexing::Known(LexSettings {
    standard_conforming_strings: true,
});

#[test]
fn the_new_builtin_rules_decide() {
    let p = builtin();
    let session = Session::new(ON);
    for (sql, expected) in [
        ("DROP OWNED BY CURRENT_USER", "no-drop-owned"),
        ("drop owned by app cascade", "no-drop-owned"),
        ("REASSIGN OWNED BY app TO postgres", "no-drop-owned"),
        ("ALTER TABLE t DROP COLUMN a", "no-drop-column"),
        ("ALTER TABLE t DROP a", "no-drop-column"),
        ("ALTER TABLE IF EXISTS t ADD COLUMN b int, DROP COLUMN IF EXISTS a CASCADE", "no-drop-column"),
        ("ALTER TABLE ONLY public.t DROP COLUMN a", "no-drop-column"),
        ("ALTER TABLE t ADD COLUMN b int", "allow"),
        ("ALTER TABLE t ALTER COLUMN a DROP DEFAULT", "allow"),
        ("ALTER TABLE t RENAME TO u", "no-rename-tables"),
        ("ALTER TABLE t RENAME COLUMN a TO b", "no-rename-tables"),
        ("ALTER TABLE t RENAME a TO b", "no-rename-tables"),
        ("ALTER VIEW v RENAME TO w", "no-rename-tables"),
        ("ALTER MATERIALIZED VIEW m RENAME TO n", "no-rename-tables"),
        ("ALTER SEQUENCE s RENAME TO s2", "no-rename-tables"),
        ("ALTER FOREIGN TABLE f RENAME COLUMN a TO b", "no-rename-tables"),
        // ALTER INDEX renames any relation of the name, tables too.
        ("ALTER INDEX i RENAME TO j", "no-rename-tables"),
        ("ALTER TABLE t RENAME CONSTRAINT c TO d", "allow"),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", "no-unbounded-write"),
        ("MERGE INTO t USING s ON 1 = 1 WHEN MATCHED THEN UPDATE SET v = 'x'", "no-unbounded-write"),
        ("MERGE INTO t USING (SELECT 1 AS x) s ON x = 1 WHEN MATCHED THEN DELETE", "no-unbounded-write"),
        ("MERGE INTO t USING s ON s.id = 1 WHEN MATCHED THEN DELETE", "no-unbounded-write"),
        ("MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE", "no-unbounded-write"),
        ("WITH x AS (SELECT 1) MERGE INTO t USING x ON true WHEN MATCHED THEN UPDATE SET v = 'a'", "no-unbounded-write"),
        ("EXPLAIN ANALYZE MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", "no-unbounded-write"),
        ("PREPARE m AS MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", "no-unbounded-write"),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)", "allow"),
        ("MERGE INTO public.t AS x USING s ON x.id = s.id WHEN MATCHED THEN DELETE", "allow"),
        ("MERGE INTO t USING s ON true WHEN MATCHED AND t.v = 'x' THEN DELETE", "allow"),
        ("MERGE INTO t USING s ON true WHEN NOT MATCHED THEN INSERT VALUES (1)", "allow"),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING", "allow"),
        ("SELECT pg_reload_conf()", "no-reload-conf"),
        ("SELECT pg_catalog.pg_reload_conf()", "no-reload-conf"),
        ("SELECT 1 WHERE pg_reload_conf()", "no-reload-conf"),
        ("SELECT pg_terminate_backend(1234)", "no-signal-other-sessions"),
        ("SELECT pg_cancel_backend(pid) FROM pg_stat_activity", "no-signal-other-sessions"),
        ("SELECT \"pg_terminate_backend\"((SELECT 1))", "no-signal-other-sessions"),
        ("SELECT pg_terminate_backend(pid => 7)", "no-signal-other-sessions"),
        ("SELECT pg_terminate_backend(pg_backend_pid() + 1)", "no-signal-other-sessions"),
        ("SELECT pg_terminate_backend(public.pg_backend_pid())", "no-signal-other-sessions"),
        ("SELECT pg_terminate_backend(pg_backend_pid())", "allow"),
        ("SELECT pg_catalog.pg_cancel_backend(pg_catalog.pg_backend_pid())", "allow"),
        ("ALTER ROLE app SET search_path = public, pg_temp", "no-pg-temp-in-search-path"),
        ("ALTER DATABASE appdb SET search_path TO \"$user\", pg_temp_3", "no-pg-temp-in-search-path"),
        ("ALTER ROLE app IN DATABASE appdb SET search_path = 'public,pg_temp'", "no-pg-temp-in-search-path"),
        ("ALTER ROLE app SET search_path = public", "allow"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = admin, pg_temp AS 'SELECT 1'", "allow"),
        ("SET standard_conforming_strings = off", "no-standard-conforming-strings-off"),
        ("SET standard_conforming_strings TO 'of'", "no-standard-conforming-strings-off"),
        ("SET SESSION standard_conforming_strings = false", "no-standard-conforming-strings-off"),
        ("SET LOCAL \"standard_conforming_strings\" = 0", "no-standard-conforming-strings-off"),
        ("SET standard_conforming_strings = nonsense", "no-standard-conforming-strings-off"),
        ("SELECT set_config('standard_conforming_strings', 'off', false)", "no-standard-conforming-strings-off"),
        ("SELECT set_config('STANDARD_CONFORMING_STRINGS', v, false) FROM t", "no-standard-conforming-strings-off"),
        ("SELECT pg_catalog.set_config(('standard_conforming_strings'), ('no'), true)", "no-standard-conforming-strings-off"),
        ("ALTER ROLE app SET standard_conforming_strings = off", "no-standard-conforming-strings-off"),
        ("ALTER DATABASE appdb SET standard_conforming_strings TO false", "no-standard-conforming-strings-off"),
        ("ALTER FUNCTION f() SET standard_conforming_strings = off", "no-standard-conforming-strings-off"),
        ("ALTER PROCEDURE p() SET standard_conforming_strings FROM CURRENT", "no-standard-conforming-strings-off"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET standard_conforming_strings = off AS 'SELECT 1'", "no-standard-conforming-strings-off"),
        ("ALTER SYSTEM SET standard_conforming_strings = off", "no-alter-system"),
        ("SET standard_conforming_strings = on", "allow"),
        ("SET standard_conforming_strings TO true", "allow"),
        ("SET standard_conforming_strings = 1", "allow"),
        ("SELECT set_config('standard_conforming_strings', 'on', false)", "allow"),
        ("RESET standard_conforming_strings", "allow"),
        ("SET standard_conforming_strings TO DEFAULT", "allow"),
        ("RESET ALL", "allow"),
        // Function bodies: judged as read with the setting on and off. On,
        // this body is two strings; off, `\'` escapes and a DELETE follows.
        (r#"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$SELECT 'a\', ' ; DELETE FROM t; SELECT 1 --'$$"#, "no-unbounded-write"),
        (r#"CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT ''a\'', '' ; TRUNCATE t; SELECT 1 --'''"#, "no-truncate"),
        (r#"CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$SELECT 'a\' || 'b'$$"#, "allow"),
        (r#"CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$SELECT 'plain'$$"#, "allow"),
        ("SET client_encoding = 'SJIS'", "no-unjudgeable-client-encoding"),
        ("SET NAMES 'BIG5'", "no-unjudgeable-client-encoding"),
        ("SET client_encoding TO gbk", "no-unjudgeable-client-encoding"),
        ("SET client_encoding = 'Shift_JIS'", "no-unjudgeable-client-encoding"),
        ("SET client_encoding = 'EUC_JP'", "no-unjudgeable-client-encoding"),
        ("SELECT set_config('client_encoding', 'GB18030', false)", "no-unjudgeable-client-encoding"),
        ("SELECT set_config('client_encoding', e, false) FROM t", "no-unjudgeable-client-encoding"),
        ("ALTER ROLE app SET client_encoding = 'UHC'", "no-unjudgeable-client-encoding"),
        ("ALTER DATABASE appdb SET client_encoding TO 'JOHAB'", "no-unjudgeable-client-encoding"),
        ("SET client_encoding = 'UTF8'", "allow"),
        ("SET NAMES 'latin9'", "allow"),
        ("SET client_encoding TO 'WIN1252'", "allow"),
        ("SELECT set_config('client_encoding', 'LATIN1', false)", "allow"),
        ("RESET client_encoding", "allow"),
        ("SET client_encoding TO DEFAULT", "allow"),
        // Code run later without a call: creating it over a denied function.
        ("CREATE OPERATOR ~>> (RIGHTARG = text, FUNCTION = pg_read_file)", "no-server-file-functions"),
        ("CREATE OPERATOR public.~>> (LEFTARG = text, RIGHTARG = text, PROCEDURE = pg_catalog.pg_read_binary_file)", "no-server-file-functions"),
        ("CREATE AGGREGATE a(text) (SFUNC = dblink_exec, STYPE = text)", "no-dblink"),
        ("CREATE AGGREGATE a(text) (SFUNC = textcat, STYPE = text, FINALFUNC = pg_read_file)", "no-server-file-functions"),
        ("CREATE CAST (text AS int) WITH FUNCTION pg_read_file(text)", "no-server-file-functions"),
        ("CREATE TRIGGER tr AFTER INSERT ON t EXECUTE FUNCTION dblink_exec()", "no-dblink"),
        ("CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION lo_import()", "no-server-file-functions"),
        ("CREATE TYPE ty (INPUT = pg_read_file, OUTPUT = textout)", "no-server-file-functions"),
        ("ALTER OPERATOR = (int, int) SET (RESTRICT = query_to_xml)", "no-dynamic-sql-functions"),
        ("CREATE OPERATOR ~~~ (RIGHTARG = text, FUNCTION = textlen)", "allow"),
        ("CREATE TRIGGER tr BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch()", "allow"),
        ("CREATE FUNCTION f() RETURNS text LANGUAGE internal AS 'pg_read_file_all'", "no-native-functions"),
        ("CREATE OR REPLACE FUNCTION f(text) RETURNS text LANGUAGE C AS '$libdir/x', 'y'", "no-native-functions"),
        ("CREATE PROCEDURE p() LANGUAGE 'internal' AS 'pg_terminate_backend'", "no-native-functions"),
        ("CREATE FOREIGN TABLE ft (a text) SERVER s OPTIONS (program 'id')", "no-copy-program"),
        ("CREATE FOREIGN TABLE ft (a text) SERVER s OPTIONS (filename '/etc/passwd', format 'csv')", "no-server-files"),
        ("ALTER FOREIGN TABLE ft OPTIONS (ADD filename '/etc/passwd')", "no-server-files"),
        ("ALTER FOREIGN TABLE ft OPTIONS (SET program 'sh -c id')", "no-copy-program"),
        ("CREATE SERVER s FOREIGN DATA WRAPPER file_fdw OPTIONS (program 'id')", "no-copy-program"),
        ("CREATE FOREIGN TABLE ft (a text) SERVER s OPTIONS (table_name 'x')", "allow"),
        // PL/pgSQL bodies: their statements judged, dynamic SQL opaque.
        ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DELETE FROM t; END $$", "no-unbounded-write"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ DECLARE n int; BEGIN TRUNCATE t; RETURN 1; END $$", "no-truncate"),
        ("CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_read_file('x'); END $$", "no-server-file-functions"),
        ("CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$ DECLARE s text := pg_read_file('x'); BEGIN RETURN s; END $$", "no-server-file-functions"),
        ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN IF (SELECT set_config('role', 'x', false)) IS NULL THEN NULL; END IF; END $$", "no-role-switch"),
        ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'DROP TABLE ' || 't'; END $$", "no-opaque-code"),
        ("CREATE FUNCTION f() RETURNS SETOF t LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY EXECUTE 'SELECT * FROM t'; END $$", "no-opaque-code"),
        ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP END LOOP; END $$", "no-opaque-code"),
        ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE 'SELECT 1'; END $$", "no-opaque-code"),
        ("CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN E'a\\nb'; END $$", "no-opaque-code"),
        ("CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated := now(); RETURN NEW; END $$", "allow"),
        ("CREATE FUNCTION f(a int) RETURNS SETOF int LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY SELECT id FROM t WHERE id > a; RETURN NEXT 1; END $$", "allow"),
        ("CREATE OR REPLACE FUNCTION f(OUT n bigint) LANGUAGE plpgsql AS $$ BEGIN SELECT count(*) INTO n FROM t; UPDATE t SET a = 1 WHERE id = 1; END $$", "allow"),
        ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS 'BEGIN DELETE FROM t WHERE id = 1; END'", "allow"),
        ("DROP TABLE pg_temp.x", "allow"),
        ("DROP TABLE IF EXISTS pg_temp.x, pg_temp.y", "allow"),
        ("TRUNCATE pg_temp.x", "allow"),
        ("DROP TABLE pg_temp.x, t", "no-drop"),
        ("DROP TABLE pg_temp_3.x", "no-drop"),
        ("DROP TABLE IF EXISTS tmp_x", "no-drop"),
        ("TRUNCATE tmp_x", "no-truncate"),
    ] {
        assert_eq!(decided(&p, sql, &session), expected, "{sql}");
    }
}

#[test]
fn a_signal_to_the_sessions_own_pid_is_allowed_and_never_cached() {
    let p = builtin();
    let mine = Session {
        own_pid: Some(4242),
        ..Session::new(ON)
    };
    let other = Session {
        own_pid: Some(1),
        ..Session::new(ON)
    };
    for _ in 0..2 {
        assert_eq!(
            decided(&p, "SELECT pg_cancel_backend(4242)", &mine),
            "allow"
        );
        assert_eq!(
            decided(&p, "SELECT pg_cancel_backend(4242)", &other),
            "no-signal-other-sessions"
        );
        assert_eq!(
            decided(&p, "SELECT pg_cancel_backend(4243)", &mine),
            "no-signal-other-sessions"
        );
    }
}

#[test]
fn the_sessions_own_temp_tables_may_be_dropped_and_truncated() {
    let p = builtin();
    let tables: BTreeSet<String> = ["tmp_x".to_owned(), "scratch".to_owned()].into();
    let own = Session {
        own_temp_tables: &tables,
        ..Session::new(ON)
    };
    let none = Session::new(ON);
    for round in 0..2 {
        for (sql, with_tables, without) in [
            ("DROP TABLE IF EXISTS tmp_x", "allow", "no-drop"),
            ("DROP TABLE tmp_x, scratch", "allow", "no-drop"),
            ("TRUNCATE tmp_x", "allow", "no-truncate"),
            ("TRUNCATE TABLE ONLY scratch", "allow", "no-truncate"),
            ("DROP TABLE tmp_x, accounts", "no-drop", "no-drop"),
            ("DROP TABLE public.tmp_x", "no-drop", "no-drop"),
            ("TRUNCATE tmp_x, accounts", "no-truncate", "no-truncate"),
            ("DROP TABLE accounts", "no-drop", "no-drop"),
        ] {
            assert_eq!(decided(&p, sql, &own), with_tables, "{sql} ({round})");
            assert_eq!(decided(&p, sql, &none), without, "{sql} ({round})");
        }
    }
}

#[test]
fn text_is_judged_as_the_server_converts_it() {
    use super::encoding::ClientEncoding;
    let p = builtin();
    let latin9 = ClientEncoding::named("LATIN9");
    let sjis = ClientEncoding::named("SJIS");
    let in_encoding = |e: &'static ClientEncoding| Session {
        client_encoding: e,
        ..Session::new(ON)
    };
    let latin9: &'static ClientEncoding = Box::leak(Box::new(latin9));
    let sjis: &'static ClientEncoding = Box::leak(Box::new(sjis));
    let who = Identity::new("alice", ["dev"]);
    let code = |text: &[u8], s: &Session<'_>| match &p.judge_in(text, &who, s).verdict {
        Verdict::Allow(_) => "allow".to_owned(),
        Verdict::Deny(d) => d.code.to_owned(),
        Verdict::Approval(_) => "approval".to_owned(),
    };
    // Not UTF-8, but LATIN9: '\xa4' is the euro sign.
    assert_eq!(code(b"SELECT '\xa4'", &Session::new(ON)), "22021");
    assert_eq!(code(b"SELECT '\xa4'", &in_encoding(latin9)), "allow");
    assert_eq!(
        code(b"SELECT '\xa4'; DROP TABLE t", &in_encoding(latin9)),
        "42501"
    );
    // SJIS: ASCII passes, anything else cannot be judged.
    assert_eq!(
        code(b"SET client_encoding = 'UTF8'", &in_encoding(sjis)),
        "allow"
    );
    assert_eq!(code(b"DROP TABLE t", &in_encoding(sjis)), "42501");
    assert_eq!(
        code(
            "SELECT E'\u{3041}\\'; DROP TABLE t; --'".as_bytes(),
            &in_encoding(sjis)
        ),
        "22021"
    );
}

#[test]
fn parameters_are_judged_at_bind_with_their_values() {
    use super::Param;
    let p = builtin();
    let session = Session::new(ON);
    let who = Identity::new("alice", ["dev"]);
    let sql = b"SELECT set_config($1, $2, false)";
    let parsed = p.judge_in(sql, &who, &session);
    assert_eq!(
        name(&parsed.verdict),
        "no-role-switch",
        "unknown: the worst"
    );
    assert!(parsed.depends_on_parameters());
    let bound = |sql: &[u8], params: &[Param<'_>]| {
        name(&p.judge_bound(sql, &who, &session, params).verdict)
    };
    let text = |s: &'static str| Param::Text(s.as_bytes());
    assert_eq!(bound(sql, &[text("application_name"), text("x")]), "allow");
    assert_eq!(bound(sql, &[text("app.tenant"), text("7")]), "allow");
    assert_eq!(
        bound(sql, &[text("role"), text("postgres")]),
        "no-role-switch"
    );
    assert_eq!(
        bound(sql, &[text("ROLE"), text("postgres")]),
        "no-role-switch"
    );
    assert_eq!(
        bound(sql, &[text("session_authorization"), text("x")]),
        "no-role-switch"
    );
    assert_eq!(bound(sql, &[Param::Binary, text("x")]), "no-role-switch");
    // A value whose type the server infers is read where every use of it
    // is an argument of set_config (which makes it text), and unknown
    // where another use may type it first (bpchar drops the spaces).
    let inferred = |s: &'static str| Param::Inferred(s.as_bytes());
    assert_eq!(
        bound(sql, &[inferred("application_name"), inferred("x")]),
        "allow"
    );
    assert_eq!(bound(sql, &[inferred("role   "), inferred("x")]), "allow");
    let typed_first = b"SELECT set_config($1, $2, false) FROM (SELECT $1::char(10)) s";
    assert_eq!(
        bound(typed_first, &[inferred("role   "), inferred("x")]),
        "no-role-switch"
    );
    assert_eq!(
        bound(typed_first, &[inferred("application_name"), inferred("x")]),
        "no-role-switch"
    );
    assert_eq!(
        bound(typed_first, &[text("application_name"), inferred("x")]),
        "allow"
    );
    assert_eq!(bound(sql, &[Param::Null, text("x")]), "no-role-switch");
    assert_eq!(bound(sql, &[]), "no-role-switch");
    assert_eq!(
        bound(sql, &[text("standard_conforming_strings"), text("off")]),
        "no-standard-conforming-strings-off"
    );
    assert_eq!(
        bound(sql, &[text("client_encoding"), text("SJIS")]),
        "no-unjudgeable-client-encoding"
    );
    assert_eq!(
        bound(sql, &[text("client_encoding"), text("LATIN1")]),
        "allow"
    );
    // A value is a constant in the tree, never SQL: no injection through it.
    assert_eq!(
        bound(sql, &[text("x', 'y', false); DROP TABLE t; --"), text("x")]),
        "allow"
    );
    assert_eq!(
        bound(b"SELECT pg_cancel_backend($1)", &[text("123")]),
        "no-signal-other-sessions"
    );
    // Statements that read no values do not depend on their parameters.
    let plain = p.judge_in(b"SELECT * FROM t WHERE id = $1", &who, &session);
    assert!(!plain.depends_on_parameters());
    assert_eq!(name(&plain.verdict), "allow");
    let unbounded = p.judge_in(b"DELETE FROM t", &who, &session);
    assert!(!unbounded.depends_on_parameters());
}

/// What runs besides a statement's own unit forgets the session's
/// temporary tables (`hazards::temp_effect`).
#[test]
fn nested_and_called_units_forget_temporary_tables() {
    use crate::policy::facts::{Effect, Unit};
    use crate::policy::kind::Kind;
    let own = Unit::new(Kind::Select);
    let unit = |kind, setting: Option<&str>| {
        let mut u = Unit::new(kind);
        u.setting = setting.map(str::to_owned);
        u
    };
    let effect = |nested: Unit, effects: &[Effect]| {
        crate::policy::hazards::temp_effect(&[own.clone(), nested], effects)
    };
    let forget = Some(Effect::ForgetAllTemp);
    let stop = Some(Effect::SearchPathChanged);
    assert_eq!(effect(unit(Kind::DropTempTable, None), &[]), forget);
    assert_eq!(effect(unit(Kind::Rename, None), &[]), forget);
    assert_eq!(effect(unit(Kind::OpaqueCode, None), &[]), forget);
    assert_eq!(effect(unit(Kind::Set, Some("search_path")), &[]), stop);
    assert_eq!(effect(unit(Kind::Set, Some("SEARCH_PATH")), &[]), stop);
    assert_eq!(effect(unit(Kind::SetRole, None), &[]), stop);
    assert_eq!(effect(unit(Kind::Reset, None), &[]), stop);
    assert_eq!(effect(unit(Kind::Set, Some("work_mem")), &[]), None);
    assert_eq!(effect(unit(Kind::Select, None), &[]), None);
    let execute = [Effect::Execute("p".into())];
    assert_eq!(effect(unit(Kind::Select, None), &execute), forget);
    // The statement's own unit: its effects are worked out by name.
    let top = crate::policy::hazards::temp_effect(&[unit(Kind::DropTable, None)], &[]);
    assert_eq!(top, None);
}
