//! Side channels of a masked session's statement: whether it can run code
//! pgward does not see into (whose error and notice *messages* could then
//! carry masked values), and whether it reads the catalog views that hold
//! column values (pg_stats and kin).
//!
//! "Clean" is proved, never assumed: a statement is clean only when it is
//! one of the kinds that fire no triggers (SELECT, SHOW, SET, transaction
//! control, ...), every relation it names is a known table or materialized
//! view that holds no column masked for the identity (no view, whose body
//! may call functions, and no foreign table), every function it calls
//! resolves to pg_catalog (qualified so, or a bare name no function outside
//! pg_catalog has), and it uses no operator defined outside pg_catalog.
//! Anything else, and anything that does not parse, is not clean.

use super::catalog::MaskMap;
use crate::policy::classify::{parse, qual_name, single_entry, str_field};
use crate::policy::lexer::LexSettings;
use serde_json::Value;
use std::collections::BTreeSet;

/// What a statement text exposes beyond its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// It provably runs no code pgward cannot see and touches no masked
    /// column: the server's messages for it may pass.
    pub clean: bool,
    /// It reads a catalog view or function that shows column values
    /// (named, for the refusal).
    pub statistics: Option<String>,
    /// It calls a function that is neither the server's own nor known to
    /// the map (created since the map was read, or placed in pg_catalog
    /// after initdb): refused until the map knows it.
    pub untrusted: Option<Untrusted>,
    /// It reads a session setting that takes free text (application_name,
    /// search_path, a custom setting, ...), named: code the session ran
    /// may have copied a masked value into it (`set_config`).
    pub settings: Option<String>,
    /// Part of the verdict was read from a literal's value (a setting's
    /// name): it may not be remembered for the text's shape, which leaves
    /// literals out.
    pub reads_literals: bool,
}

/// A function call masked identities may not make yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    /// The map does not know the function: read it again.
    Unknown(String),
    /// Named as pg_catalog's (or information_schema's) but not the
    /// server's own.
    Impostor(String),
}

impl Exposure {
    /// What the statement exposes under any of several readings of its text.
    fn merge(self, other: Exposure) -> Exposure {
        Exposure {
            clean: self.clean && other.clean,
            statistics: self.statistics.or(other.statistics),
            untrusted: self.untrusted.or(other.untrusted),
            settings: self.settings.or(other.settings),
            reads_literals: self.reads_literals || other.reads_literals,
        }
    }

    /// Why a masked identity may not run the statement at all, if it may
    /// not (the client's message).
    pub fn refusal(&self) -> Option<String> {
        if let Some(name) = &self.statistics {
            return Some(format!(
                "{name} holds column values (statistics of masked columns among them)"
            ));
        }
        if let Some(name) = &self.settings {
            return Some(format!(
                "{name} may hold a value that code the session ran copied from a masked column (settings that take free text are not shown to masked identities)"
            ));
        }
        match &self.untrusted {
            Some(Untrusted::Unknown(name)) => Some(format!(
                "function {name} is not known to pgward's column map yet; retry in a moment"
            )),
            Some(Untrusted::Impostor(name)) => Some(format!(
                "function {name} is in a system schema but is not one of the server's own"
            )),
            None => None,
        }
    }
}

/// [`analyze`] under each of `readings` (the lexing settings the text may
/// be read with), merged: clean only if clean under all of them.
pub fn analyze_readings(
    sql: &str,
    readings: &[LexSettings],
    map: &MaskMap,
    masked_tables: &BTreeSet<(String, String)>,
) -> Exposure {
    readings
        .iter()
        .map(|r| analyze(sql, *r, map, masked_tables))
        .reduce(Exposure::merge)
        .unwrap_or(Exposure {
            clean: false,
            statistics: None,
            untrusted: None,
            settings: None,
            reads_literals: false,
        })
}

/// Catalog relations whose rows hold column values (most common values,
/// histogram bounds, extended statistics' values).
pub const VALUE_CATALOGS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
];

/// Catalog views that show the session's settings (pg_stat_activity its
/// application_name).
const SETTING_CATALOGS: &[&str] = &["pg_settings", "pg_stat_activity", "pg_file_settings"];

/// Catalog functions behind them.
const SETTING_FUNCTIONS: &[&str] = &[
    "pg_show_all_settings",
    "pg_stat_get_activity",
    "pg_show_all_file_settings",
];

/// Settings whose values are not free text a function could have set to a
/// masked value: what ParameterStatus tells masked sessions anyway, and
/// settings that take numbers, booleans or a fixed set of words (the
/// server refuses anything else). Everything else (application_name,
/// search_path, custom `a.b` settings, `ALL`) may carry a value that code
/// the session ran copied there with `set_config`.
const SETTINGS_WITHOUT_FREE_TEXT: &[&str] = &[
    "client_encoding",
    "server_encoding",
    "server_version",
    "server_version_num",
    "datestyle",
    "intervalstyle",
    "timezone",
    "integer_datetimes",
    "standard_conforming_strings",
    "is_superuser",
    "default_transaction_read_only",
    "default_transaction_isolation",
    "default_transaction_deferrable",
    "transaction_isolation",
    "transaction_read_only",
    "transaction_deferrable",
    "in_hot_standby",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "extra_float_digits",
    "bytea_output",
    "max_identifier_length",
    "max_connections",
    "block_size",
    "work_mem",
    "lc_collate",
    "lc_ctype",
];

/// Whether `name` (as written; settings are case-insensitive) is one of
/// [`SETTINGS_WITHOUT_FREE_TEXT`].
fn shows_no_free_text(name: &str) -> bool {
    SETTINGS_WITHOUT_FREE_TEXT
        .iter()
        .any(|s| s.eq_ignore_ascii_case(name))
}

/// Catalog functions that return column values from statistics.
const VALUE_FUNCTIONS: &[&str] = &["pg_mcv_list_items"];

/// Statement kinds that fire no triggers and run no stored code of their
/// own (what they contain is checked below).
const CLEAN_KINDS: &[&str] = &[
    "SelectStmt",
    "VariableSetStmt",
    "VariableShowStmt",
    "TransactionStmt",
    "ExplainStmt",
    "DeallocateStmt",
    "DiscardStmt",
    "ListenStmt",
    "UnlistenStmt",
    "NotifyStmt",
    "DeclareCursorStmt",
    "PrepareStmt",
];

/// Analyses `sql` for an identity whose masked tables are `masked_tables`
/// (as (schema, table)).
pub fn analyze(
    sql: &str,
    settings: LexSettings,
    map: &MaskMap,
    masked_tables: &BTreeSet<(String, String)>,
) -> Exposure {
    let Ok(statements) = parse(sql, settings) else {
        return Exposure {
            clean: false,
            statistics: None,
            untrusted: None,
            settings: None,
            reads_literals: false,
        };
    };
    let mut walk = Walk {
        map,
        masked_tables,
        clean: true,
        statistics: None,
        untrusted: None,
        settings: None,
        reads_literals: false,
    };
    for (_, tree) in &statements {
        let tree = tree.get("node").unwrap_or(tree);
        match single_entry(tree) {
            Some((kind, _)) if CLEAN_KINDS.contains(&kind) => {}
            _ => walk.clean = false,
        }
        walk.visit(tree);
    }
    Exposure {
        clean: walk.clean,
        statistics: walk.statistics,
        untrusted: walk.untrusted,
        settings: walk.settings,
        reads_literals: walk.reads_literals,
    }
}

struct Walk<'a> {
    map: &'a MaskMap,
    masked_tables: &'a BTreeSet<(String, String)>,
    clean: bool,
    statistics: Option<String>,
    untrusted: Option<Untrusted>,
    settings: Option<String>,
    reads_literals: bool,
}

impl Walk<'_> {
    fn visit(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, body) in map {
                    match key.as_str() {
                        "RangeVar" => self.relation(body),
                        "FuncCall" => {
                            self.function(body.get("funcname"));
                            self.setting_read(body);
                        }
                        "VariableShowStmt" => {
                            let name = str_field(body, "name");
                            if !shows_no_free_text(name) {
                                self.settings.get_or_insert_with(|| format!("SHOW {name}"));
                            }
                        }
                        "AExpr" | "A_Expr" => self.operator(body.get("name")),
                        // `x = ANY (...)`, `ORDER BY x USING <`.
                        "SubLink" => self.operator(body.get("oper_name")),
                        "SortBy" => self.operator(body.get("use_op")),
                        // EXECUTE runs a prepared statement judged when it
                        // was prepared, FETCH a cursor's query: not visible
                        // from this text.
                        "ExecuteStmt" | "FetchStmt" | "CallStmt" | "DoStmt" => self.clean = false,
                        _ => {}
                    }
                    self.visit(body);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.visit(v)),
            _ => {}
        }
    }

    fn relation(&mut self, body: &Value) {
        let name = str_field(body, "relname");
        let schema = str_field(body, "schemaname");
        let named = |set: &BTreeSet<(String, String)>| {
            set.iter()
                .any(|(s, n)| n == name && (schema.is_empty() || s == schema))
        };
        if VALUE_CATALOGS.contains(&name) && (schema.is_empty() || schema == "pg_catalog") {
            self.statistics.get_or_insert_with(|| name.to_owned());
        }
        if SETTING_CATALOGS.contains(&name) && (schema.is_empty() || schema == "pg_catalog") {
            self.settings.get_or_insert_with(|| name.to_owned());
        }
        let system = schema.is_empty() || schema == "pg_catalog" || schema == "information_schema";
        let catalog = system && name.starts_with("pg_");
        // Catalog relations count too: catalog views (pg_stat_activity,
        // pg_settings, ...) read through functions of their own.
        if catalog
            || named(self.masked_tables)
            || named(&self.map.code_relations)
            || !named(&self.map.relations)
        {
            self.clean = false;
        }
    }

    fn function(&mut self, funcname: Option<&Value>) {
        let q = qual_name(funcname);
        // The server's own only if initdb made it and nothing else bears
        // its name (a function put into pg_catalog later is in
        // `functions`; one created since the map was read is in neither).
        let builtin =
            self.map.builtin_functions.contains(&q.name) && !self.map.functions.contains(&q.name);
        let in_catalog = match q.schema.as_deref() {
            Some("pg_catalog") | None => builtin,
            Some(_) => false,
        };
        if VALUE_FUNCTIONS.contains(&q.name.as_str()) && in_catalog {
            self.statistics.get_or_insert_with(|| q.name.clone());
        }
        if !in_catalog {
            self.clean = false;
        }
        let known = builtin || self.map.functions.contains(&q.name);
        let catalog_schema = matches!(
            q.schema.as_deref(),
            Some("pg_catalog" | "information_schema")
        );
        if self.untrusted.is_none() {
            if !known {
                self.untrusted = Some(Untrusted::Unknown(q.name.clone()));
            } else if catalog_schema && !builtin {
                self.untrusted = Some(Untrusted::Impostor(q.name.clone()));
            }
        }
    }

    /// `current_setting(name)` of a setting that may take free text (or of
    /// a name that is not a literal), and the functions behind the
    /// settings views.
    fn setting_read(&mut self, call: &Value) {
        let q = qual_name(call.get("funcname"));
        if !matches!(q.schema.as_deref(), None | Some("pg_catalog")) {
            return;
        }
        let name = q.name.as_str();
        if SETTING_FUNCTIONS.contains(&name) {
            self.settings.get_or_insert_with(|| name.to_owned());
            return;
        }
        if name != "current_setting" {
            return;
        }
        let first = call
            .get("args")
            .and_then(Value::as_array)
            .and_then(|a| a.first());
        let literal = first
            .map(|a| a.get("node").unwrap_or(a))
            .and_then(|a| a.get("AConst"))
            .and_then(|c| c.get("val"))
            .and_then(|v| v.get("Sval"))
            .map(|s| str_field(s, "sval"));
        self.reads_literals = true;
        match literal {
            Some(setting) if shows_no_free_text(setting) => {}
            Some(setting) => {
                self.settings
                    .get_or_insert_with(|| format!("current_setting('{setting}')"));
            }
            None => {
                self.settings
                    .get_or_insert_with(|| "current_setting() of a computed name".into());
            }
        }
    }

    fn operator(&mut self, name: Option<&Value>) {
        if name.and_then(Value::as_array).is_none_or(Vec::is_empty) {
            return;
        }
        let q = qual_name(name);
        let in_catalog = match q.schema.as_deref() {
            Some(schema) => schema == "pg_catalog",
            None => !self.map.operators.contains(&q.name),
        };
        if !in_catalog {
            self.clean = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> MaskMap {
        let mut map = MaskMap::default();
        for (s, n) in [
            ("public", "customers"),
            ("public", "orders"),
            ("public", "v_orders"),
        ] {
            map.relations.insert((s.into(), n.into()));
        }
        map.code_relations
            .insert(("public".into(), "v_orders".into()));
        map.functions.insert("leak".into());
        for builtin in ["lower", "now", "pg_mcv_list_items"] {
            map.builtin_functions.insert(builtin.into());
        }
        map.operators.insert("===".into());
        map
    }

    fn analyzed(sql: &str) -> Exposure {
        let masked = BTreeSet::from([("public".to_owned(), "customers".to_owned())]);
        analyze(sql, LexSettings::default(), &map(), &masked)
    }

    #[test]
    fn plain_reads_of_unmasked_tables_are_clean() {
        for sql in [
            "SELECT id, total FROM orders WHERE id = 'x'",
            "SELECT lower(name) FROM public.orders",
            "SELECT pg_catalog.now()",
            "SHOW search_path",
            "SET statement_timeout = '5s'",
            "BEGIN; SELECT 1 + 1; COMMIT",
            "EXPLAIN SELECT * FROM orders",
        ] {
            assert!(analyzed(sql).clean, "{sql}");
        }
    }

    #[test]
    fn code_masked_tables_and_writes_are_not_clean() {
        for sql in [
            "SELECT * FROM customers",
            "SELECT * FROM v_orders",
            "SELECT leak(1)",
            "SELECT brand_new_function(1)",
            "SELECT pg_catalog.brand_new_function(1)",
            "SELECT public.lower('x')",
            "SELECT 1 WHERE 'a' === 'b'",
            "SELECT 1 WHERE 1 OPERATOR(public.=) 1",
            "SELECT 1 WHERE 'a' === ANY (ARRAY['b'])",
            "SELECT id FROM orders ORDER BY id USING ===",
            "INSERT INTO orders VALUES (1)",
            "UPDATE orders SET total = 1 WHERE id = 2",
            "DELETE FROM orders WHERE id = 1",
            "CALL p()",
            "DO $$ BEGIN END $$",
            "EXECUTE s",
            "FETCH 1 FROM c",
            "COPY orders FROM STDIN",
            "SELECT * FROM newer_table",
            "SELECT * FROM pg_stat_activity",
            "SELECT (",
        ] {
            assert!(!analyzed(sql).clean, "{sql}");
        }
    }

    #[test]
    fn unknown_and_impostor_functions_are_named() {
        assert_eq!(
            analyzed("SELECT brand_new(1)").untrusted,
            Some(Untrusted::Unknown("brand_new".into()))
        );
        assert_eq!(
            analyzed("SELECT pg_catalog.leak(1)").untrusted,
            Some(Untrusted::Impostor("leak".into()))
        );
        assert_eq!(analyzed("SELECT lower('x'), leak(1)").untrusted, None);
    }

    #[test]
    fn every_reading_of_a_backslash_counts() {
        // With standard_conforming_strings on the call is code; off, it is
        // inside the string. The text must be judged under both.
        let sql = "SELECT 'a\\' , brand_new(1) --'";
        let masked = BTreeSet::new();
        let off = LexSettings {
            standard_conforming_strings: false,
        };
        assert_eq!(analyze(sql, off, &map(), &masked).untrusted, None);
        let both = analyze_readings(sql, &[off, LexSettings::default()], &map(), &masked);
        assert_eq!(both.untrusted, Some(Untrusted::Unknown("brand_new".into())));
        assert!(!both.clean);
        assert!(both.refusal().is_some_and(|why| why.contains("brand_new")));
    }

    #[test]
    fn statistics_views_are_named() {
        for (sql, name) in [
            ("SELECT * FROM pg_stats", "pg_stats"),
            (
                "select most_common_vals from pg_catalog.pg_stats",
                "pg_stats",
            ),
            ("SELECT * FROM \"pg_stats_ext\"", "pg_stats_ext"),
            ("SELECT * FROM U&\"pg\\005fstatistic\"", "pg_statistic"),
            ("SELECT * FROM pg_mcv_list_items(0)", "pg_mcv_list_items"),
            (
                "WITH s AS (SELECT * FROM pg_stats_ext_exprs) SELECT 1",
                "pg_stats_ext_exprs",
            ),
        ] {
            assert_eq!(analyzed(sql).statistics.as_deref(), Some(name), "{sql}");
        }
        assert_eq!(analyzed("SELECT * FROM orders").statistics, None);
    }
}
