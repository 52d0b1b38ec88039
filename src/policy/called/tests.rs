//! Resolution of called code against hand-made catalogs, judged by the
//! built-in rules (no I/O).

use super::*;
use crate::policy::builtin_tests::name;
use crate::policy::lexer::LexSettings;
use crate::policy::rules::{Identity, Verdict};
use crate::policy::{Lexing, Policy, Session};
use std::sync::Arc;

fn builtin() -> Policy {
    let raw = toml::from_str("").expect("empty policy");
    Policy::new(Arc::new(
        crate::config::policy::compile(&raw).expect("rules"),
    ))
}

const ON: Lexing = Lexing::Known(LexSettings {
    standard_conforming_strings: true,
});

fn code(oid: u32, schema: &str, name: &str) -> CodeRef {
    CodeRef {
        oid,
        schema: schema.into(),
        name: name.into(),
    }
}

/// A function as `pg_get_functiondef` writes it.
fn function(oid: u32, schema: &str, name: &str, language: &str, body: &str) -> Function {
    let (what, returns) = match name {
        n if n.starts_with("proc") => ("PROCEDURE", ""),
        n if n.starts_with("trg") => ("FUNCTION", "\n RETURNS trigger"),
        _ => ("FUNCTION", "\n RETURNS void"),
    };
    let body = if language == "plpgsql" {
        format!("BEGIN {body}; END")
    } else {
        body.to_owned()
    };
    Function {
        code: code(oid, schema, name),
        kind: if what == "PROCEDURE" { 'p' } else { 'f' },
        language: match language {
            "sql" => Language::Sql,
            "plpgsql" => Language::Plpgsql,
            other => Language::Other(other.into()),
        },
        definition: matches!(language, "sql" | "plpgsql").then(|| {
            format!(
                "CREATE OR REPLACE {what} {schema}.{name}(){returns}\n LANGUAGE {language}\nAS $function${body}$function$\n"
            )
        }),
        support: Vec::new(),
    }
}

/// The verdict's rule name and message for `sql` under `catalog`.
fn judge_with(p: &Policy, catalog: &CodeCatalog, sql: &str) -> (String, String) {
    let session = Session {
        code: Some(catalog),
        ..Session::new(ON)
    };
    let outcome = p.judge_in(sql.as_bytes(), &Identity::new("alice", ["dev"]), &session);
    let message = match &outcome.verdict {
        Verdict::Deny(d) => d.message.clone(),
        _ => String::new(),
    };
    (name(&outcome.verdict), message)
}

fn check(catalog: &CodeCatalog, cases: &[(&str, &str, &str)]) {
    let p = builtin();
    for (sql, rule, says) in cases {
        // Twice: the cached verdict must be the same.
        for _ in 0..2 {
            let (got, message) = judge_with(&p, catalog, sql);
            assert_eq!(&got, rule, "{sql}: {message}");
            assert!(message.contains(says), "{sql}: {message:?} lacks {says:?}");
        }
    }
}

fn catalog(parts: CatalogParts) -> CodeCatalog {
    CodeCatalog::new(parts)
}

#[test]
fn functions_match_every_overload_in_every_schema_by_bare_name() {
    let c = catalog(CatalogParts {
        functions: vec![
            function(20000, "public", "wipe", "sql", "DELETE FROM accounts"),
            function(20001, "a", "tidy", "sql", "SELECT 1"),
            function(20002, "b", "tidy", "sql", "TRUNCATE accounts"),
            function(20003, "pg_temp_3", "sneaky", "sql", "DROP TABLE accounts"),
            function(20004, "pg_catalog", "lower2", "sql", "DELETE FROM accounts"),
        ],
        ..CatalogParts::default()
    });
    check(
        &c,
        &[
            (
                "SELECT wipe()",
                "no-unbounded-write",
                "(in the body of function public.wipe called by this statement)",
            ),
            ("SELECT public.wipe()", "no-unbounded-write", "public.wipe"),
            ("SELECT other.wipe()", "allow", ""),
            ("select WIPE(1, 2)", "no-unbounded-write", "public.wipe"),
            ("SELECT \"WIPE\"()", "allow", ""),
            ("SELECT tidy()", "no-truncate", "function b.tidy"),
            ("SELECT a.tidy()", "allow", ""),
            ("SELECT b.tidy()", "no-truncate", "function b.tidy"),
            ("SELECT sneaky()", "no-drop", "pg_temp_3.sneaky"),
            ("SELECT pg_temp.sneaky()", "no-drop", "pg_temp_3.sneaky"),
            ("SELECT pg_temp_4.sneaky()", "allow", ""),
            ("SELECT pg_catalog.lower2()", "no-unbounded-write", "lower2"),
            ("SELECT x FROM t WHERE id = 1", "allow", ""),
            (
                "WITH d AS (SELECT wipe()) SELECT 1",
                "no-unbounded-write",
                "wipe",
            ),
        ],
    );
}

#[test]
fn procedures_are_resolved_for_call() {
    let c = catalog(CatalogParts {
        functions: vec![
            function(
                20010,
                "public",
                "proc_purge",
                "plpgsql",
                "TRUNCATE accounts",
            ),
            function(
                20011,
                "public",
                "proc_fine",
                "plpgsql",
                "UPDATE t SET a = 1 WHERE id = 2",
            ),
        ],
        ..CatalogParts::default()
    });
    check(
        &c,
        &[
            (
                "CALL proc_purge()",
                "no-truncate",
                "in the body of function public.proc_purge called by this statement",
            ),
            ("CALL proc_fine()", "allow", ""),
        ],
    );
}

#[test]
fn operators_run_their_functions_built_in_or_not() {
    let c = catalog(CatalogParts {
        functions: vec![function(
            20020,
            "public",
            "dropper",
            "sql",
            "DROP TABLE accounts",
        )],
        operators: vec![
            Operator {
                schema: "public".into(),
                name: "~>>".into(),
                functions: vec![code(2624, "pg_catalog", "pg_read_file")],
            },
            Operator {
                schema: "public".into(),
                name: "===".into(),
                functions: vec![code(20020, "public", "dropper")],
            },
            Operator {
                schema: "public".into(),
                name: "=".into(),
                functions: vec![code(20020, "public", "dropper")],
            },
        ],
        ..CatalogParts::default()
    });
    check(
        &c,
        &[
            (
                "SELECT 'x' ~>> 'y'",
                "no-server-file-functions",
                "function pg_catalog.pg_read_file behind operator public.~>> used by this statement",
            ),
            ("SELECT 1 OPERATOR(public.~>>) 2", "no-server-file-functions", "~>>"),
            ("SELECT 1 OPERATOR(other.~>>) 2", "allow", ""),
            ("SELECT a === b FROM t", "no-drop", "behind operator public.==="),
            ("SELECT 1 WHERE 2 = 3", "no-drop", "operator public.="),
            ("SELECT 1 WHERE 2 IN (3, 4)", "no-drop", "operator public.="),
            ("SELECT CASE a WHEN 1 THEN 2 END FROM t", "no-drop", "operator public.="),
            ("SELECT * FROM t JOIN u USING (id)", "no-drop", "operator public.="),
            ("SELECT 1 WHERE 2 < 3", "allow", ""),
        ],
    );
}

#[test]
fn aggregates_run_their_support_functions() {
    let mut agg = function(20030, "public", "total", "sql", "");
    agg.kind = 'a';
    agg.language = Language::Other("internal".into());
    agg.definition = None;
    agg.support = vec![
        code(20031, "public", "total_step"),
        code(1841, "pg_catalog", "int4_sum"),
    ];
    let mut harmless = agg.clone();
    harmless.code = code(20032, "public", "fine_total");
    harmless.support = vec![code(1841, "pg_catalog", "int4_sum")];
    let c = catalog(CatalogParts {
        functions: vec![
            agg,
            harmless,
            function(
                20031,
                "public",
                "total_step",
                "sql",
                "DELETE FROM accounts RETURNING 1",
            ),
        ],
        ..CatalogParts::default()
    });
    check(
        &c,
        &[
            (
                "SELECT total(x) FROM t",
                "no-unbounded-write",
                "in the body of function public.total_step, a support function of aggregate function public.total called by this statement",
            ),
            ("SELECT fine_total(x) FROM t", "allow", ""),
        ],
    );
}

#[test]
fn casts_run_their_functions_explicit_and_implicit() {
    let cast = |target: &str, context: char, oid: u32| Cast {
        source: "text".into(),
        target_schema: "public".into(),
        target: target.into(),
        context,
        function: code(oid, "public", "to_type"),
    };
    let explicit = catalog(CatalogParts {
        functions: vec![function(
            20040,
            "public",
            "to_type",
            "sql",
            "DELETE FROM accounts",
        )],
        casts: vec![cast("mood", 'e', 20040)],
        ..CatalogParts::default()
    });
    check(
        &explicit,
        &[
            (
                "SELECT 'x'::mood",
                "no-unbounded-write",
                "of the cast from text to public.mood",
            ),
            (
                "SELECT CAST('x' AS public.mood)",
                "no-unbounded-write",
                "public.to_type",
            ),
            ("SELECT mood('x')", "no-unbounded-write", "public.to_type"),
            ("SELECT 'x'::other.mood", "allow", ""),
            ("SELECT 'x'::text", "allow", ""),
        ],
    );
    let implicit = catalog(CatalogParts {
        functions: vec![function(
            20040,
            "public",
            "to_type",
            "sql",
            "DELETE FROM accounts",
        )],
        casts: vec![cast("mood", 'i', 20040)],
        ..CatalogParts::default()
    });
    check(
        &implicit,
        &[
            (
                "INSERT INTO t (m) VALUES ('x')",
                "no-unbounded-write",
                "implicit cast",
            ),
            ("BEGIN", "allow", ""),
        ],
    );
}

#[test]
fn triggers_on_written_tables_and_defaults_they_fill() {
    let c = catalog(CatalogParts {
        functions: vec![
            function(
                20050,
                "public",
                "trg_purge",
                "plpgsql",
                "TRUNCATE customers",
            ),
            function(
                20051,
                "public",
                "trg_audit",
                "plpgsql",
                "INSERT INTO audit VALUES (1)",
            ),
            function(
                20052,
                "public",
                "wipe",
                "sql",
                "DELETE FROM accounts RETURNING 1",
            ),
        ],
        triggers: vec![
            Trigger {
                schema: "public".into(),
                table: "orders".into(),
                name: "purge".into(),
                function: code(20050, "public", "trg_purge"),
            },
            Trigger {
                schema: "public".into(),
                table: "items".into(),
                name: "audit".into(),
                function: code(20051, "public", "trg_audit"),
            },
        ],
        defaults: vec![
            ColumnDefault {
                schema: "public".into(),
                table: "tickets".into(),
                column: "n".into(),
                expression: "wipe()".into(),
            },
            ColumnDefault {
                schema: "public".into(),
                table: "items".into(),
                column: "id".into(),
                expression: "nextval('items_id_seq'::regclass)".into(),
            },
            ColumnDefault {
                schema: "public".into(),
                table: "items".into(),
                column: "at".into(),
                expression: "now()".into(),
            },
        ],
        ..CatalogParts::default()
    });
    check(
        &c,
        &[
            (
                "INSERT INTO orders VALUES (1)",
                "no-truncate",
                "in the body of function public.trg_purge of trigger purge on public.orders, which this statement writes",
            ),
            ("UPDATE public.orders SET a = 1 WHERE id = 2", "no-truncate", "trigger purge"),
            ("DELETE FROM orders WHERE id = 2", "no-truncate", "trigger purge"),
            ("COPY orders FROM STDIN", "no-truncate", "trigger purge"),
            ("INSERT INTO other.orders VALUES (1)", "allow", ""),
            ("SELECT * FROM orders", "allow", ""),
            ("INSERT INTO items (name) VALUES ('a')", "allow", ""),
            (
                "INSERT INTO tickets DEFAULT VALUES",
                "no-unbounded-write",
                "in the body of function public.wipe called by the default of column public.tickets.n, which this statement fills",
            ),
            (
                "WITH x AS (INSERT INTO tickets DEFAULT VALUES RETURNING 1) SELECT 1",
                "no-unbounded-write",
                "tickets.n",
            ),
            ("DELETE FROM tickets WHERE id = 1", "allow", ""),
        ],
    );
}

#[test]
fn views_rules_policies_and_checks_run_with_their_relations() {
    let code = |table: &str, what: &str, when: When, sql: &str| RelationCode {
        schema: "public".into(),
        table: table.into(),
        what: what.into(),
        when,
        sql: sql.into(),
    };
    let c = catalog(CatalogParts {
        functions: vec![function(29000, "public", "wipe", "sql", "DELETE FROM accounts")],
        relation_code: vec![
            code(
                "v",
                "the query",
                When::Named,
                "CREATE RULE \"_RETURN\" AS ON SELECT TO public.v DO INSTEAD SELECT public.wipe() AS w",
            ),
            code(
                "v2",
                "the query",
                When::Named,
                "CREATE RULE \"_RETURN\" AS ON SELECT TO public.v2 DO INSTEAD SELECT w FROM public.v",
            ),
            code(
                "fine",
                "the query",
                When::Named,
                "CREATE RULE \"_RETURN\" AS ON SELECT TO public.fine DO INSTEAD SELECT 1 AS one",
            ),
            code(
                "logged",
                "rule also_purge",
                When::Written,
                "CREATE RULE also_purge AS ON INSERT TO public.logged DO ALSO DELETE FROM accounts",
            ),
            code(
                "over",
                "the query",
                When::Named,
                "CREATE RULE \"_RETURN\" AS ON SELECT TO public.over DO INSTEAD SELECT id FROM public.orders",
            ),
            code("secret", "policy mine", When::Named, "SELECT (public.wipe() IS NULL)"),
            code("checked", "check constraint c", When::Written, "SELECT (public.wipe() IS NULL)"),
        ],
        triggers: vec![Trigger {
            schema: "public".into(),
            table: "orders".into(),
            name: "purge".into(),
            function: CodeRef {
                oid: 29000,
                schema: "public".into(),
                name: "wipe".into(),
            },
        }],
        ..CatalogParts::default()
    });
    check(
        &c,
        &[
            (
                "SELECT * FROM v",
                "no-unbounded-write",
                "in the body of function public.wipe called by the query of public.v, which this statement reads",
            ),
            ("SELECT * FROM v2", "no-unbounded-write", "the query of public.v, which the query of public.v2"),
            ("SELECT * FROM fine", "allow", ""),
            ("INSERT INTO logged VALUES (1)", "no-unbounded-write", "in rule also_purge of public.logged, which this statement writes"),
            ("SELECT * FROM logged", "allow", ""),
            ("SELECT * FROM secret", "no-unbounded-write", "policy mine of public.secret"),
            ("INSERT INTO checked VALUES (1)", "no-unbounded-write", "check constraint c"),
            ("SELECT * FROM checked", "allow", ""),
            (
                "INSERT INTO over VALUES (1)",
                "no-unbounded-write",
                "trigger purge on public.orders, which a write through the query of public.over",
            ),
            ("SELECT * FROM over", "allow", ""),
        ],
    );
}

#[test]
fn moving_code_is_judged_as_running_it() {
    let c = catalog(CatalogParts {
        functions: vec![function(
            28000,
            "public",
            "evil",
            "sql",
            "DELETE FROM accounts",
        )],
        casts: vec![Cast {
            source: "int4".into(),
            target_schema: "public".into(),
            target: "mood".into(),
            context: 'e',
            function: code(28000, "public", "evil"),
        }],
        triggers: vec![Trigger {
            schema: "public".into(),
            table: "orders".into(),
            name: "purge".into(),
            function: code(28000, "public", "evil"),
        }],
        ..CatalogParts::default()
    });
    check(
        &c,
        &[
            (
                "ALTER FUNCTION evil() RENAME TO harmless",
                "no-unbounded-write",
                "public.evil",
            ),
            (
                "ALTER ROUTINE public.evil SET SCHEMA first",
                "no-unbounded-write",
                "public.evil",
            ),
            (
                "ALTER TYPE mood RENAME TO calm",
                "no-unbounded-write",
                "cast from int4",
            ),
            (
                "ALTER TABLE orders SET SCHEMA first",
                "no-unbounded-write",
                "trigger purge",
            ),
            ("ALTER FUNCTION other() RENAME TO x", "allow", ""),
        ],
    );
}

#[test]
fn calls_are_followed_recursively_with_a_depth_limit() {
    let chain = |n: u32, last: &str| -> Vec<Function> {
        (0..n)
            .map(|i| {
                let body = if i + 1 == n {
                    last.to_owned()
                } else {
                    format!("SELECT f{}()", i + 1)
                };
                function(21000 + i, "public", &format!("f{i}"), "sql", &body)
            })
            .collect()
    };
    let three = catalog(CatalogParts {
        functions: chain(3, "DELETE FROM accounts"),
        ..CatalogParts::default()
    });
    check(
        &three,
        &[(
            "SELECT f0()",
            "no-unbounded-write",
            "in the body of function public.f2 called by function public.f1 called by function public.f0 called by this statement",
        )],
    );
    let deep = catalog(CatalogParts {
        functions: chain(12, "SELECT 1"),
        ..CatalogParts::default()
    });
    check(
        &deep,
        &[("SELECT f0()", "no-opaque-code", "nests too deeply")],
    );
    // A cycle ends.
    let cycle = catalog(CatalogParts {
        functions: vec![
            function(22000, "public", "ping", "sql", "SELECT pong()"),
            function(22001, "public", "pong", "sql", "SELECT ping()"),
        ],
        ..CatalogParts::default()
    });
    check(&cycle, &[("SELECT ping()", "allow", "")]);
}

#[test]
fn native_and_unknown_languages_are_opaque() {
    let c = catalog(CatalogParts {
        functions: vec![
            function(23000, "public", "read_all", "internal", ""),
            function(23001, "public", "native", "c", ""),
            function(23002, "public", "snake", "plpython3u", ""),
        ],
        ..CatalogParts::default()
    });
    check(
        &c,
        &[
            (
                "SELECT read_all('/etc/passwd')",
                "no-opaque-code",
                "function public.read_all called by this statement: it is in LANGUAGE internal",
            ),
            ("SELECT native()", "no-opaque-code", "LANGUAGE c"),
            ("SELECT snake()", "no-opaque-code", "LANGUAGE plpython3u"),
        ],
    );
}

#[test]
fn dynamic_sql_in_a_called_plpgsql_function_is_opaque() {
    let c = catalog(CatalogParts {
        functions: vec![
            function(
                24000,
                "public",
                "run",
                "plpgsql",
                "EXECUTE 'TRUNCATE accounts'",
            ),
            function(24001, "public", "fine", "plpgsql", "PERFORM 1"),
        ],
        ..CatalogParts::default()
    });
    check(
        &c,
        &[
            (
                "SELECT run()",
                "no-opaque-code",
                "in the body of function public.run",
            ),
            ("SELECT fine()", "allow", ""),
        ],
    );
}

#[test]
fn sql_bodies_are_judged_under_both_string_readings() {
    // With standard_conforming_strings off the body deletes; with it on it
    // is one string.
    let c = catalog(CatalogParts {
        functions: vec![function(
            25000,
            "public",
            "tricky",
            "sql",
            "SELECT 'a\\''; DELETE FROM accounts; --'",
        )],
        ..CatalogParts::default()
    });
    check(
        &c,
        &[("SELECT tricky()", "no-unbounded-write", "public.tricky")],
    );
}

#[test]
fn a_verdict_does_not_outlive_its_catalog() {
    let p = builtin();
    let harmless = catalog(CatalogParts {
        functions: vec![function(26000, "public", "f", "sql", "SELECT 1")],
        ..CatalogParts::default()
    });
    let harmful = catalog(CatalogParts {
        functions: vec![function(26000, "public", "f", "sql", "TRUNCATE accounts")],
        ..CatalogParts::default()
    });
    assert_eq!(judge_with(&p, &harmless, "SELECT f()").0, "allow");
    assert_eq!(judge_with(&p, &harmful, "SELECT f()").0, "no-truncate");
    assert_eq!(judge_with(&p, &harmful, "SELECT f(2)").0, "no-truncate");
    assert_eq!(judge_with(&p, &harmless, "SELECT f(2)").0, "allow");
}

#[test]
fn prepared_statements_carry_the_code_they_run() {
    let p = builtin();
    let c = catalog(CatalogParts {
        functions: vec![function(
            27000,
            "public",
            "wipe",
            "sql",
            "DELETE FROM accounts",
        )],
        ..CatalogParts::default()
    });
    let session = Session {
        code: Some(&c),
        ..Session::new(ON)
    };
    let outcome = p.judge_in(
        b"PREPARE p AS SELECT wipe()",
        &Identity::new("alice", ["dev"]),
        &session,
    );
    let Some(crate::policy::facts::Effect::Prepare { units, .. }) = outcome.effects.first() else {
        panic!("no PREPARE effect: {outcome:?}");
    };
    assert!(units
        .iter()
        .any(|u| u.unbounded_write && u.origin.as_deref().is_some_and(|o| o.contains("wipe"))));
}

#[test]
fn operators_and_casts_are_collected_by_the_walk() {
    let statements = crate::policy::classify::classify(
        "SELECT a = b, x BETWEEN 1 AND 2, y IN (1), z LIKE 'q', 'v'::mood, \
         CAST(w AS s.t), v = ANY (SELECT 1) FROM t ORDER BY a USING ~<~",
        LexSettings::default(),
    )
    .expect("parsed");
    let unit = &statements[0].units[0];
    let ops: Vec<String> = unit.operators.iter().map(ToString::to_string).collect();
    for op in ["=", ">=", "<=", "<", ">", "~~", "~<~"] {
        assert!(ops.contains(&op.to_owned()), "{op} not in {ops:?}");
    }
    let casts: Vec<String> = unit.casts.iter().map(ToString::to_string).collect();
    assert!(
        casts.contains(&"mood".to_owned()) && casts.contains(&"s.t".to_owned()),
        "{casts:?}"
    );
}

#[test]
fn statements_that_change_code_are_flagged_even_through_called_code() {
    let p = builtin();
    let c = catalog(CatalogParts {
        functions: vec![function(
            30000,
            "public",
            "make",
            "sql",
            "CREATE TABLE made (a int)",
        )],
        ..CatalogParts::default()
    });
    let session = Session {
        code: Some(&c),
        ..Session::new(ON)
    };
    let who = Identity::new("alice", ["dev"]);
    for (sql, changes) in [
        ("SELECT 1", false),
        (
            "CREATE FUNCTION g() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            true,
        ),
        ("ALTER TABLE t ADD COLUMN b int", true),
        ("COMMENT ON TABLE t IS 'x'", true),
        ("SELECT make()", true),
        ("INSERT INTO t VALUES (1)", false),
    ] {
        let outcome = p.judge_in(sql.as_bytes(), &who, &session);
        assert_eq!(outcome.changes_schema(), changes, "{sql}");
    }
}
