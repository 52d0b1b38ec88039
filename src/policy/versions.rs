//! Syntax newer than the server. pgward parses with PostgreSQL 18's grammar;
//! an older server reads some of the same text differently (to PostgreSQL
//! 15, `json_array(1)` is a call of whatever function `json_array` the
//! search path finds, and `SELECT 0x1F` selects 0 under the alias `x1F`), or
//! rejects it. Either way pgward would judge a statement the server does
//! not run, so such text is refused for servers older than the construct.
//! docs/policy.md lists the constructs with the version that added each.

use super::classify::{inner, int_field, qual_name, single_entry, str_field};
use pg_query::protobuf::{AlterTableType, JsonExprOp, MergeMatchKind, ScanToken, Token};
use serde_json::Value;

/// The major version whose grammar pgward parses with.
pub const GRAMMAR_MAJOR: u32 = 18;

/// A construct the server's version does not read as pgward does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Newer {
    /// What it is, as the client wrote it.
    pub construct: &'static str,
    /// The major version that added it.
    pub since: u32,
}

impl std::fmt::Display for Newer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is PostgreSQL {} syntax, which this server's version reads differently or not at all",
            self.construct, self.since
        )
    }
}

/// Constructs recognised by their node type alone.
const NODES: &[(&str, &str, u32)] = &[
    ("JsonObjectConstructor", "JSON_OBJECT()", 16),
    ("JsonArrayConstructor", "JSON_ARRAY()", 16),
    ("JsonArrayQueryConstructor", "JSON_ARRAY(query)", 16),
    ("JsonObjectAgg", "JSON_OBJECTAGG()", 16),
    ("JsonArrayAgg", "JSON_ARRAYAGG()", 16),
    ("JsonIsPredicate", "IS JSON", 16),
    ("JsonParseExpr", "JSON()", 17),
    ("JsonScalarExpr", "JSON_SCALAR()", 17),
    ("JsonSerializeExpr", "JSON_SERIALIZE()", 17),
    ("JsonTable", "JSON_TABLE", 17),
    // `merge_action()`: to PostgreSQL 15 and 16 a call of whatever
    // function `merge_action` the search path finds.
    ("MergeSupportFunc", "MERGE_ACTION()", 17),
];

/// Names PostgreSQL 18's grammar qualifies with pg_catalog because it reads
/// them as keywords, which an older server reads as plain names resolved
/// through the search path: (a field that marks the node, the name field,
/// name, since). Legacy `json_object(text[])` (a FuncCall) and the `json`
/// type (a TypeName, held as a typed field, so known by its fields): to
/// PostgreSQL 15, `json_object(1)` calls the best match among every
/// visible `json_object` (a user's `public.json_object(int)` wins), and
/// `::json` finds the first `json` type on the search path.
const SYSTEM_NAMES: &[(&str, &str, &str, u32)] = &[
    ("agg_star", "funcname", "json_object", 16),
    ("typmods", "names", "json", 16),
];

/// Rewrites `tree` (parsed from `sql`) as the server's grammar reads it,
/// then returns the first construct newer than the server: a name the
/// grammar qualified with pg_catalog (see [`SYSTEM_NAMES`]) that the
/// text wrote bare becomes the bare name, so called code and rules see
/// what the server will resolve. Every parse tree pgward judges passes
/// here (statements, SQL function bodies, PL/pgSQL's embedded SQL).
pub fn as_server_reads(tree: &mut Value, sql: &str, server: u32) -> Option<Newer> {
    if server < 16 {
        unqualify(tree, sql, server);
    }
    in_tree(tree, server)
}

/// The rewrite of [`as_server_reads`].
fn unqualify(value: &mut Value, sql: &str, server: u32) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| unqualify(v, sql, server)),
        Value::Object(map) => {
            for (marker, field, name, since) in SYSTEM_NAMES {
                if server >= *since || !map.contains_key(*marker) {
                    continue;
                }
                // Where the node starts: at the keyword when written bare,
                // at `pg_catalog` when written qualified.
                let written_bare = map
                    .get("location")
                    .and_then(Value::as_u64)
                    .and_then(|at| sql.get(usize::try_from(at).ok()?..))
                    .and_then(|rest| rest.get(..name.len()))
                    .is_some_and(|word| word.eq_ignore_ascii_case(name));
                let Some(names) = map.get_mut(*field).and_then(Value::as_array_mut) else {
                    continue;
                };
                let parts: Vec<&str> = names.iter().map(|p| str_field(inner(p), "sval")).collect();
                if written_bare && parts == ["pg_catalog", *name] {
                    names.remove(0);
                }
            }
            map.values_mut().for_each(|v| unqualify(v, sql, server));
        }
        _ => {}
    }
}

/// The first construct in `tree` that a server of major version `server`
/// does not parse as PostgreSQL 18 does.
fn in_tree(tree: &Value, server: u32) -> Option<Newer> {
    if server >= GRAMMAR_MAJOR {
        return None;
    }
    let mut found = None;
    visit(tree, &mut |name, body| {
        if found.is_none() {
            found = node_construct(name, body).filter(|n| n.since > server);
        }
    });
    found
}

/// Numeric literals of PostgreSQL 16's forms: `0x1F`, `0o17`, `0b101`, and
/// `_` between digits (`1_000`). PostgreSQL 15 reads `0x1F` as `0 x1F` (the
/// number 0, aliased) and `1_000` as `1 _000`.
pub fn in_tokens(sql: &str, tokens: &[ScanToken], server: u32) -> Option<Newer> {
    const ICONST: i32 = Token::Iconst as i32;
    const FCONST: i32 = Token::Fconst as i32;
    if server >= 16 {
        return None;
    }
    tokens
        .iter()
        .filter(|t| matches!(t.token, ICONST | FCONST))
        .any(|t| {
            let (a, b) = (t.start.max(0) as usize, t.end.max(0) as usize);
            let text = sql.as_bytes().get(a..b).unwrap_or_default();
            text.contains(&b'_')
                || (text.len() > 1
                    && text[0] == b'0'
                    && matches!(text[1], b'x' | b'X' | b'o' | b'O' | b'b' | b'B'))
        })
        .then_some(Newer {
            construct: "non-decimal integer literals and _ in numeric literals",
            since: 16,
        })
}

fn newer(construct: &'static str, since: u32) -> Option<Newer> {
    Some(Newer { construct, since })
}

/// The construct a node is, by its type and fields.
fn node_construct(name: &str, body: &Value) -> Option<Newer> {
    if let Some((_, construct, since)) = NODES.iter().find(|(n, _, _)| *n == name) {
        return newer(construct, *since);
    }
    let list = |field: &str| {
        body.get(field)
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
    };
    match name {
        "JsonFuncExpr" => match JsonExprOp::try_from(int_field(body, "op") as i32) {
            Ok(JsonExprOp::JsonExistsOp) => newer("JSON_EXISTS()", 17),
            Ok(JsonExprOp::JsonQueryOp) => newer("JSON_QUERY()", 17),
            _ => newer("JSON_VALUE()", 17),
        },
        "FuncCall" => {
            // SQL-syntax calls the grammar turns into catalog functions.
            let function = qual_name(body.get("funcname"));
            let sql_syntax = int_field(body, "funcformat") == 4;
            match (function.schema.as_deref(), function.name.as_str()) {
                (Some("pg_catalog"), "system_user") if sql_syntax => newer("SYSTEM_USER", 16),
                (Some("pg_catalog"), "timezone") if sql_syntax && list("args").len() == 1 => {
                    newer("AT LOCAL", 17)
                }
                _ => None,
            }
        }
        "RangeSubselect" if body.get("alias").is_none_or(Value::is_null) => {
            newer("a subquery in FROM without an alias", 16)
        }
        "GrantRoleStmt"
            if list("opt")
                .iter()
                .any(|o| matches!(str_field(inner(o), "defname"), "inherit" | "set")) =>
        {
            newer("GRANT ... WITH INHERIT / SET", 16)
        }
        "CopyStmt" => list("options")
            .iter()
            .find_map(|o| match str_field(inner(o), "defname") {
                "default" => newer("COPY ... (DEFAULT)", 16),
                "on_error" => newer("COPY ... (ON_ERROR)", 17),
                "log_verbosity" => newer("COPY ... (LOG_VERBOSITY)", 17),
                "reject_limit" => newer("COPY ... (REJECT_LIMIT)", 18),
                _ => None,
            }),
        "MergeStmt" if body.get("returning_clause").is_some_and(|r| !r.is_null()) => {
            newer("MERGE ... RETURNING", 17)
        }
        "MergeWhenClause"
            if int_field(body, "match_kind")
                == MergeMatchKind::MergeWhenNotMatchedBySource as i64 =>
        {
            newer("MERGE ... WHEN NOT MATCHED BY SOURCE", 17)
        }
        "AlterTableCmd" if int_field(body, "subtype") == AlterTableType::AtSetExpression as i64 => {
            newer("ALTER TABLE ... ALTER COLUMN ... SET EXPRESSION", 17)
        }
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt"
            if body
                .get("returning_clause")
                .and_then(|r| r.get("options"))
                .and_then(Value::as_array)
                .is_some_and(|o| !o.is_empty()) =>
        {
            newer("RETURNING WITH (OLD / NEW AS ...)", 18)
        }
        "Constraint" => {
            if str_field(body, "generated_kind") == "v" {
                newer(
                    "virtual generated columns (GENERATED ALWAYS AS (...) without STORED)",
                    18,
                )
            } else if ["without_overlaps", "pk_with_period", "fk_with_period"]
                .iter()
                .any(|f| body.get(*f).and_then(Value::as_bool) == Some(true))
            {
                newer("WITHOUT OVERLAPS / PERIOD (temporal keys)", 18)
            } else {
                None
            }
        }
        "AtalterConstraint"
            if ["alter_enforceability", "alter_inheritability"]
                .iter()
                .any(|f| body.get(*f).and_then(Value::as_bool) == Some(true)) =>
        {
            newer("ALTER CONSTRAINT ... [NOT] ENFORCED / [NO] INHERIT", 18)
        }
        _ => None,
    }
}

/// Calls `f` with every node (`{"Type": body}`) under `value`, and with the
/// statement-level typed bodies that hold a RETURNING clause.
fn visit(value: &Value, f: &mut dyn FnMut(&str, &Value)) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| visit(v, f)),
        Value::Object(map) => {
            if let Some((name, body)) = single_entry(value) {
                if body.is_object() {
                    f(name, body);
                }
            }
            map.values().for_each(|v| visit(v, f));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::config::policy::compile;
    use crate::policy::builtin_tests::decided;
    use crate::policy::lexer::LexSettings;
    use crate::policy::{Lexing, Policy, Session};
    use std::sync::Arc;

    /// (SQL, the version that added its syntax; 0: any version reads it).
    const CASES: &[(&str, u32)] = &[
        ("SELECT json_array(1)", 16),
        ("SELECT JSON_OBJECT('a' VALUE 1)", 16),
        ("SELECT json_object('a': 1 ABSENT ON NULL)", 16),
        ("SELECT json_array(SELECT 1)", 16),
        ("SELECT json_arrayagg(a) FROM t", 16),
        ("SELECT json_objectagg(k VALUE v) FROM t", 16),
        ("SELECT '1' IS JSON", 16),
        ("SELECT 1 WHERE '{}' IS NOT JSON OBJECT", 16),
        ("SELECT SYSTEM_USER", 16),
        ("SELECT 0x1F", 16),
        ("SELECT 0o17, 0b101", 16),
        ("SELECT 1_000_000", 16),
        ("DELETE FROM t WHERE id = 1_0", 16),
        ("SELECT * FROM (SELECT 1)", 16),
        ("GRANT r TO u WITH INHERIT TRUE", 16),
        ("COPY t FROM STDIN (DEFAULT '\\D')", 16),
        ("SELECT json('{}')", 17),
        ("SELECT json_scalar(1)", 17),
        ("SELECT json_serialize('{}' RETURNING bytea)", 17),
        ("SELECT json_value(j, '$.a') FROM t", 17),
        ("SELECT json_query(j, '$.a' WITH WRAPPER) FROM t", 17),
        ("SELECT json_exists(j, '$.a') FROM t", 17),
        ("SELECT * FROM json_table('[1]', '$[*]' COLUMNS (a int PATH '$'))", 17),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING *", 17),
        ("MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED BY SOURCE AND t.a > 1 THEN DELETE", 17),
        ("ALTER TABLE t ALTER COLUMN c SET EXPRESSION AS (a + 1)", 17),
        ("SELECT now() AT LOCAL", 17),
        ("COPY t FROM STDIN (ON_ERROR ignore)", 17),
        ("COPY t FROM STDIN (LOG_VERBOSITY verbose)", 17),
        ("COPY t FROM STDIN (ON_ERROR ignore, REJECT_LIMIT 10)", 17),
        ("CREATE FUNCTION f() RETURNS json LANGUAGE sql AS 'SELECT json_array(1)'", 16),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 0x10'", 16),
        ("CREATE FUNCTION f() RETURNS json LANGUAGE sql BEGIN ATOMIC SELECT json_scalar(1); END", 17),
        ("UPDATE t SET a = 1 WHERE id = 2 RETURNING WITH (OLD AS o) o.a", 18),
        ("CREATE TABLE g (a int, b int GENERATED ALWAYS AS (a * 2) VIRTUAL)", 18),
        ("CREATE TABLE g (a int, b int GENERATED ALWAYS AS (a * 2))", 18),
        ("CREATE TABLE p (id int, r tstzrange, PRIMARY KEY (id, r WITHOUT OVERLAPS))", 18),
        ("ALTER TABLE t ALTER CONSTRAINT c NOT ENFORCED", 18),
        ("SELECT merge_action()", 17),
        ("CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT merge_action()'", 17),
        // Everyday statements every supported version reads alike.
        ("SELECT 1", 0),
        ("SELECT json_build_array(1), jsonb_path_query(j, '$') FROM t", 0),
        ("SELECT * FROM (SELECT 1) s", 0),
        ("SELECT 10, 1.5, 1e10, 0.5, 007", 0),
        ("SELECT now() AT TIME ZONE 'UTC'", 0),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a WHEN NOT MATCHED THEN INSERT VALUES (s.id)", 0),
        ("CREATE TABLE g (a int, b int GENERATED ALWAYS AS (a * 2) STORED)", 0),
        ("ALTER TABLE t ALTER CONSTRAINT c DEFERRABLE", 0),
        ("GRANT r TO u WITH ADMIN OPTION", 0),
        ("COPY t FROM STDIN (FORMAT csv, HEADER true)", 0),
        ("SELECT source, target, path, error, format FROM t", 0),
    ];

    #[test]
    fn syntax_newer_than_the_server_is_refused() {
        let raw = toml::from_str("").expect("policy");
        let p = Policy::new(Arc::new(compile(&raw).expect("rules")));
        let known = Lexing::Known(LexSettings::default());
        for (sql, since) in CASES {
            for server in [15, 16, 17, 18] {
                let session = Session {
                    server_major: server,
                    ..Session::new(known)
                };
                // Twice: a cached verdict must follow the version too.
                for _ in 0..2 {
                    let got = decided(&p, sql, &session);
                    let refused = got == "deny(0A000)";
                    assert_eq!(refused, server < *since, "{sql} on {server}: {got}");
                }
            }
        }
    }

    /// What a unit of `sql`, read for a server of version `server`, calls
    /// and casts to.
    fn names(sql: &str, server: u32) -> (Vec<String>, Vec<String>) {
        let env = crate::policy::classify::Env {
            server_major: server,
            ..crate::policy::classify::Env::new(LexSettings::default())
        };
        let statements = crate::policy::classify::classify_in(sql, &env).expect("classified");
        let units = statements.iter().flat_map(|s| &s.units);
        let functions = units
            .clone()
            .flat_map(|u| &u.functions)
            .map(ToString::to_string);
        let casts = units.flat_map(|u| &u.casts).map(ToString::to_string);
        (functions.collect(), casts.collect())
    }

    #[test]
    fn names_the_grammar_qualifies_are_bare_to_an_older_server() {
        // Legacy json_object() and the json type: pg_catalog's to
        // PostgreSQL 16 and later, whatever the search path finds to 15.
        for sql in [
            "SELECT json_object(1)",
            "SELECT JSON_OBJECT('{a,b}'::text[])",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT json_object(1)'",
        ] {
            assert_eq!(names(sql, 15).0, ["json_object"], "{sql}");
            assert_eq!(names(sql, 16).0, ["pg_catalog.json_object"], "{sql}");
        }
        assert_eq!(names("SELECT 1::json", 15).1, ["json"]);
        assert_eq!(names("SELECT 1::json", 16).1, ["pg_catalog.json"]);
        // Written qualified, it stays so.
        let sql = "SELECT pg_catalog.json_object(NULL), 1::pg_catalog.json";
        assert_eq!(names(sql, 15).0, ["pg_catalog.json_object"]);
        assert_eq!(names(sql, 15).1, ["pg_catalog.json"]);
    }
}
