//! The verdict cache is sound: a verdict served from the cache is the one a
//! fresh judgement of the same text would give. Property test over pairs of
//! statements built from one template with different literals (so that many
//! pairs share a cache shape), in the call forms, quotings and nestings an
//! adversary would use to smuggle a verdict-bearing literal past the key.

use pgward::config::policy::compile;
use pgward::config::raw::RawPolicy;
use pgward::policy::lexer::{scan, shape, LexSettings};
use pgward::policy::rules::{Identity, RuleSet};
use pgward::policy::{Lexing, Policy};
use proptest::prelude::*;
use std::sync::Arc;

/// Statement templates; each `{}` takes one literal.
const TEMPLATES: &[&str] = &[
    "SELECT set_config({}, {}, false)",
    "SELECT set_config(({}), {}, false)",
    "SELECT set_config((({})), 'x', false)",
    "SELECT \"set_config\"({}, {}, false)",
    "SELECT pg_catalog.set_config({}, 'x', false)",
    "SELECT pg_catalog.\"set_config\"(({}), 'x', false)",
    "SELECT \"pg_catalog\".set_config({}::text, {}, false)",
    "SELECT set_config({} || {}, 'x', false)",
    "SELECT set_config(CAST({} AS text), 'x', false)",
    "SELECT * FROM set_config({}, {}, true)",
    "SELECT 1 FROM t WHERE set_config({}, 'x', true) IS NOT NULL",
    "WITH a AS (SELECT set_config({}, {}, false)) SELECT * FROM a",
    "SELECT (SELECT set_config({}, 'x', false))",
    "SELECT {}; SELECT set_config({}, 'x', false)",
    "EXPLAIN SELECT set_config({}, 'y', false)",
    "PREPARE p AS SELECT set_config({}, $1, false)",
    "SELECT set_config(setting_name => {}, new_value => {}, is_local => false)",
    "SELECT set_config(new_value => {}, setting_name => {}, is_local => false)",
    "COPY t FROM {}",
    "COPY t TO {}",
    "COPY (SELECT 1) TO {}",
    "COPY t FROM {} WITH (FORMAT csv)",
    "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS {}",
    "CREATE FUNCTION f() RETURNS void LANGUAGE {} AS {}",
    "CREATE PROCEDURE p() LANGUAGE sql AS {}",
    "DO {}",
    "SET application_name = {}",
    "SET standard_conforming_strings = {}",
    "SET client_encoding = {}",
    "SET search_path = {}",
    "SELECT set_config('standard_conforming_strings', {}, false)",
    "SELECT set_config('client_encoding', {}, false)",
    "SELECT pg_terminate_backend({})",
    "SELECT pg_cancel_backend({})",
    "ALTER ROLE app SET role = {}",
    "ALTER DATABASE appdb SET standard_conforming_strings = {}",
    "SELECT {} FROM t WHERE id = {}",
    "UPDATE t SET v = {} WHERE id = {}",
    "DELETE FROM t WHERE v = {}",
    "SELECT json_array({})",
    "SELECT {}::json IS JSON",
    "MERGE INTO t USING s ON {} WHEN MATCHED THEN DELETE",
    "DROP TABLE IF EXISTS t",
];

/// Literal values, several of them verdict-bearing.
const VALUES: &[&str] = &[
    "role",
    "ROLE",
    "session_authorization",
    "application_name",
    "app.tenant",
    "search_path",
    "standard_conforming_strings",
    "client_encoding",
    "off",
    "on",
    "SJIS",
    "UTF8",
    "LATIN1",
    "",
    "/etc/passwd",
    "DELETE FROM t",
    "SELECT 1",
    "TRUNCATE t",
    "sql",
    "plpgsql",
    "1",
    "x'y",
    "a\\b",
];

/// Renders `value` in one of the string-literal forms PostgreSQL accepts.
fn literal(value: &str, form: usize) -> String {
    match form % 7 {
        0 => format!("'{}'", value.replace('\'', "''")),
        1 => format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'")),
        2 if !value.contains('$') => format!("$${value}$$"),
        3 if !value.contains('$') => format!("$q${value}$q$"),
        4 => {
            // Every character as a Unicode escape: U&'\0072\006f...'.
            let escaped: String = value
                .chars()
                .map(|c| format!("\\{:04x}", c as u32))
                .collect();
            format!("U&'{escaped}'")
        }
        5 => format!(
            "E'{}'",
            value
                .chars()
                .map(|c| format!("\\x{:02x}", c as u32))
                .collect::<String>()
        ),
        6 => value.parse::<i64>().map_or_else(
            |_| format!("'{}'", value.replace('\'', "''")),
            |n| n.to_string(),
        ),
        _ => format!("'{}'", value.replace('\'', "''")),
    }
}

fn fill(template: &str, literals: &[(usize, usize)]) -> String {
    let mut out = String::new();
    let mut parts = template.split("{}");
    out.push_str(parts.next().unwrap_or_default());
    for (i, part) in parts.enumerate() {
        let (v, f) = literals[i % literals.len()];
        out.push_str(&literal(VALUES[v % VALUES.len()], f));
        out.push_str(part);
    }
    out
}

fn rules() -> Arc<RuleSet> {
    let raw: RawPolicy = toml::from_str(
        r#"
        [[rules]]
        name = "no-search-path"
        action = "deny"
        settings = ["search_path"]
        [[rules]]
        name = "watch-apps"
        action = "log"
        settings = ["application_name"]
        "#,
    )
    .expect("policy");
    Arc::new(compile(&raw).expect("rules"))
}

const SETTINGS: [LexSettings; 2] = [
    LexSettings {
        standard_conforming_strings: true,
    },
    LexSettings {
        standard_conforming_strings: false,
    },
];

fn literals() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((0..VALUES.len(), 0..7usize), 3)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// A first statement fills the cache; a second one of the same template
    /// then gets exactly the verdict a fresh policy gives it.
    #[test]
    fn cached_verdicts_equal_fresh_ones(
        template in 0..TEMPLATES.len(),
        a in literals(),
        b in literals(),
        scs in 0..2usize,
    ) {
        let rules = rules();
        let who = Identity::new("alice", ["dev"]);
        let lexing = Lexing::Known(SETTINGS[scs]);
        let first = fill(TEMPLATES[template], &a);
        let second = fill(TEMPLATES[template], &b);
        let cached = Policy::new(Arc::clone(&rules));
        let _ = cached.judge(first.as_bytes(), &who, lexing);
        let served = cached.judge(second.as_bytes(), &who, lexing);
        let fresh = Policy::new(rules).judge(second.as_bytes(), &who, lexing);
        prop_assert_eq!(&served.verdict, &fresh.verdict, "after {:?}: {:?}", first, second);
        prop_assert_eq!(&served.effects, &fresh.effects);
    }
}

/// The property above is not vacuous: many generated pairs do share a
/// shape, and among them pairs whose fresh verdicts differ (the ones a
/// shape-keyed cache must not join).
#[test]
fn the_generated_pairs_share_shapes_and_differ_in_verdict() {
    let rules = rules();
    let who = Identity::new("alice", ["dev"]);
    let settings = SETTINGS[0];
    let (mut shared, mut differing) = (0, 0);
    for template in TEMPLATES {
        for v in 0..VALUES.len() {
            let a = fill(template, &[(v, 0)]);
            let b = fill(template, &[((v + 1) % VALUES.len(), 0)]);
            let (Ok(ta), Ok(tb)) = (scan(&a, settings), scan(&b, settings)) else {
                continue;
            };
            if shape(&a, &ta, settings) != shape(&b, &tb, settings) {
                continue;
            }
            shared += 1;
            let verdict = |sql: &str| {
                Policy::new(Arc::clone(&rules))
                    .judge(sql.as_bytes(), &who, Lexing::Known(settings))
                    .verdict
                    .clone()
            };
            if verdict(&a) != verdict(&b) {
                differing += 1;
            }
        }
    }
    assert!(shared > 200, "{shared} pairs share a shape");
    assert!(differing > 20, "{differing} of them differ in verdict");
}
