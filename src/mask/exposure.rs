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
        };
    };
    let mut walk = Walk {
        map,
        masked_tables,
        clean: true,
        statistics: None,
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
    }
}

struct Walk<'a> {
    map: &'a MaskMap,
    masked_tables: &'a BTreeSet<(String, String)>,
    clean: bool,
    statistics: Option<String>,
}

impl Walk<'_> {
    fn visit(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, body) in map {
                    match key.as_str() {
                        "RangeVar" => self.relation(body),
                        "FuncCall" => self.function(body.get("funcname")),
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
        let in_catalog = match q.schema.as_deref() {
            Some("pg_catalog") => true,
            Some(_) => false,
            None => !self.map.functions.contains(&q.name),
        };
        if VALUE_FUNCTIONS.contains(&q.name.as_str()) && in_catalog {
            self.statistics.get_or_insert_with(|| q.name.clone());
        }
        if !in_catalog {
            self.clean = false;
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
