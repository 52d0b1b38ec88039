//! The request side of masking: before a statement of a masked identity
//! runs, decide from its parse tree whether a masked column could reach the
//! client other than as a bare column of the outermost select list (where
//! the response side masks it). Anything else is refused, naming the column.
//!
//! Conservative by design: names resolve over the whole statement and every
//! doubt counts as masked (`scope`: alias lists, USING and NATURAL merges,
//! join and subquery aliases, qualifiers); a masked column inside a CTE,
//! sublink, set operation, expression, function call, cast, predicate,
//! ordering or grouping is refused even where it could not leak (`scan`).
//! The one relaxation is a subquery in FROM, which may select masked
//! columns bare as long as nothing outside it uses them (count wrappers).
//! Refusing a harmless query is the price of never answering in clear.

use super::catalog::MaskMap;
use crate::policy::classify::{inner, parse, qual_name, single_entry, str_field};
use crate::policy::lexer::LexSettings;
use scan::{Place, Scan};
use scope::{names, Scope};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

mod scan;
mod scope;

/// Why a statement is refused for a masked identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The client's message.
    pub why: String,
    /// The statement names a relation newer than the column map: refresh
    /// the map, then the statement may pass.
    pub stale: bool,
}

impl Leak {
    fn new(why: String) -> Self {
        Self { why, stale: false }
    }
}

/// What the guard needs to know of one identity's masking.
///
/// Every masked session keeps one. Only the masked columns are the
/// identity's own; the views, functions and relations are the map's, the
/// same for every identity, so they are read from the shared map rather
/// than copied into each session (a copy cost each session about 20 KiB on
/// a database of a few hundred relations).
#[derive(Debug, Clone, Default)]
pub struct Masked {
    /// (schema, table) -> masked column names, for this identity.
    pub tables: Vec<(String, String, BTreeSet<String>)>,
    /// The map: views over masked columns, functions outside pg_catalog
    /// and every relation it knows.
    map: Arc<MaskMap>,
    /// Functions reviewed not to read masked columns.
    allowed_functions: BTreeSet<String>,
}

impl Masked {
    /// The part of `map` that applies to an identity: columns whose rule
    /// `applies(rule)` says masks them.
    pub fn from_map(map: &Arc<MaskMap>, applies: impl Fn(usize) -> bool) -> Self {
        let mut tables: Vec<(String, String, BTreeSet<String>)> = Vec::new();
        for c in map.columns.values().filter(|c| applies(c.rule)) {
            match tables
                .iter_mut()
                .find(|(s, t, _)| *s == c.schema && *t == c.table)
            {
                Some((_, _, cols)) => {
                    cols.insert(c.column.clone());
                }
                None => tables.push((
                    c.schema.clone(),
                    c.table.clone(),
                    BTreeSet::from([c.column.clone()]),
                )),
            }
        }
        Self {
            tables,
            map: Arc::clone(map),
            allowed_functions: BTreeSet::new(),
        }
    }

    /// A guard over `tables` with these views, functions and relations (a
    /// map of only them), for tests and benchmarks.
    pub fn with_catalog(
        tables: Vec<(String, String, BTreeSet<String>)>,
        views: BTreeSet<(String, String)>,
        functions: BTreeSet<String>,
        relations: BTreeSet<(String, String)>,
    ) -> Self {
        let map = MaskMap {
            views,
            functions,
            relations,
            ..MaskMap::default()
        };
        Self {
            tables,
            map: Arc::new(map),
            allowed_functions: BTreeSet::new(),
        }
    }

    /// Lets these functions through (reviewed not to read masked columns).
    pub fn allow_functions(&mut self, allowed: &BTreeSet<String>) {
        self.allowed_functions.clone_from(allowed);
    }

    /// Whether nothing is masked for this identity.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Views over masked columns, as (schema, name).
    fn views(&self) -> &BTreeSet<(String, String)> {
        &self.map.views
    }

    /// Whether `name` is a function outside pg_catalog not reviewed as safe.
    fn unreviewed_function(&self, name: &str) -> bool {
        self.map.functions.contains(name) && !self.allowed_functions.contains(name)
    }

    /// Every relation the map knows (any schema), as (schema, name).
    fn relations(&self) -> &BTreeSet<(String, String)> {
        &self.map.relations
    }
}

/// Checks every statement of `sql`.
pub fn check(sql: &str, settings: LexSettings, masked: &Masked) -> Result<(), Leak> {
    let statements = parse(sql, settings)
        .map_err(|e| Leak::new(format!("the statement cannot be parsed: {e}")))?;
    for (_, tree) in statements {
        check_statement(&tree, masked)?;
    }
    Ok(())
}

/// Built-in functions that run SQL given as text: what that SQL reads is
/// invisible here, so masked identities may not call them.
const SQL_TEXT_FUNCTIONS: &[&str] = &[
    "query_to_xml*",
    "table_to_xml*",
    "cursor_to_xml*",
    "schema_to_xml*",
    "database_to_xml*",
    "ts_stat",
    "ts_rewrite",
    "dblink*",
];

/// A relation the statement names, and what it is called in it.
struct Named {
    /// Masked columns, and the names a column-alias list gives its columns
    /// (positions are not known here, so every renamed name counts).
    columns: BTreeSet<String>,
    /// The relation's name, then its alias, as column references may
    /// qualify them.
    names: Vec<String>,
}

/// A RangeVar of the statement.
struct Relation {
    schema: Option<String>,
    name: String,
    alias: Option<String>,
    /// The alias's column names (`FROM t AS a(x, y)`).
    colnames: Vec<String>,
}

fn check_statement(tree: &Value, masked: &Masked) -> Result<(), Leak> {
    let tree = tree.get("node").unwrap_or(tree);
    let Some((kind, body)) = single_entry(tree) else {
        return Ok(());
    };
    // EXPLAIN (with or without ANALYZE) returns a plan, never the rows: it
    // is judged as its query. A cursor's rows come back through FETCH with
    // their column origins, masked like the query's own result.
    if matches!(kind, "ExplainStmt" | "DeclareCursorStmt") {
        return match body.get("query").filter(|q| !q.is_null()) {
            Some(query) => check_statement(query, masked),
            None => Err(Leak::new(format!(
                "a {kind} without a query cannot be judged"
            ))),
        };
    }
    if let Some(why) = code_as_text(kind, body) {
        return Err(Leak::new(why));
    }
    let mut relations = Vec::new();
    let mut functions = Vec::new();
    collect(body, &mut relations, &mut functions);
    check_functions(&functions, masked)?;
    check_known(&relations, kind, body, masked)?;
    let mut named = Vec::new();
    let mut plain = BTreeSet::new();
    for r in &relations {
        let matches =
            |s: &String, t: &String| *t == r.name && r.schema.as_ref().is_none_or(|x| x == s);
        if let Some((s, v)) = masked.views().iter().find(|(s, v)| matches(s, v)) {
            return Err(Leak::new(format!("view {s}.{v} reads masked columns")));
        }
        let mut columns: BTreeSet<String> = masked
            .tables
            .iter()
            .filter(|(s, t, _)| matches(s, t))
            .flat_map(|(_, _, c)| c.iter().cloned())
            .collect();
        let mut names = vec![r.name.clone()];
        names.extend(r.alias.clone());
        if columns.is_empty() {
            plain.extend(names);
        } else {
            columns.extend(r.colnames.iter().cloned());
            named.push(Named { columns, names });
        }
    }
    if named.is_empty() {
        return Ok(());
    }
    let mut scope = Scope::new(body, named, plain);
    let listed = scope.listed();
    match kind {
        "SelectStmt" if body.get("into_clause").is_none_or(Value::is_null) => {}
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
            // Writes may name a masked table; nothing of it may come back or
            // steer the write (RETURNING, WHERE, SET from, INSERT ... SELECT,
            // an ON CONFLICT target).
            let upsert = body.get("on_conflict_clause").filter(|c| !c.is_null());
            if let Some(clause) = upsert {
                on_conflict_target(clause, str_field(&body["relation"], "relname"), &scope)?;
                scope.allow_excluded();
            }
            let mut out = Scan::new(&scope);
            for (field, value) in body.as_object().into_iter().flatten() {
                if field != "relation" {
                    out.everywhere(value);
                }
            }
            return out.finish();
        }
        // What these do to a masked table returns none of its values:
        // statistics are for the catalog (which masked identities may not
        // read for masked columns), a lock is a lock.
        "VacuumStmt" | "LockStmt" => return Ok(()),
        "CopyStmt" if copies_no_masked_column(body, &scope) => return Ok(()),
        _ => {
            return Err(Leak::new(format!(
                "a {} statement may not read a table with masked columns ({listed})",
                kind.trim_end_matches("Stmt")
            )))
        }
    }
    let mut scan = Scan::new(&scope);
    scan.select(body, Place::Outermost);
    scan.finish()
}

/// Statements whose code is given as text (a DO block, a function or
/// procedure with a body in a string): what that code reads is invisible
/// here, whatever the statement rules allow, so masked identities may not
/// run or create it. A `BEGIN ATOMIC` body is parsed with the statement and
/// judged with it.
fn code_as_text(kind: &str, body: &Value) -> Option<String> {
    match kind {
        "DoStmt" => {
            Some("a DO block runs code given as text, which could read masked columns".into())
        }
        "CreateFunctionStmt" if body.get("sql_body").is_none_or(Value::is_null) => {
            Some("a function whose body is given as text could read masked columns".into())
        }
        _ => None,
    }
}

/// Functions a masked identity may not call: those that run SQL given as
/// text, and those outside pg_catalog (their bodies may read masked tables).
fn check_functions(
    functions: &[crate::policy::facts::QualName],
    masked: &Masked,
) -> Result<(), Leak> {
    for f in functions {
        if SQL_TEXT_FUNCTIONS
            .iter()
            .any(|g| crate::policy::rules::Glob::new(g).matches(&f.name))
        {
            return Err(Leak::new(format!(
                "function {f} runs SQL given as text, which could read masked columns"
            )));
        }
        let outside_catalog = f.schema.as_deref().is_none_or(|s| s != "pg_catalog");
        if outside_catalog && masked.unreviewed_function(&f.name) {
            return Err(Leak::new(format!(
                "function {f} is not in pg_catalog and may read masked columns"
            )));
        }
    }
    Ok(())
}

/// A relation the map does not know yet is newer than it: refresh, then
/// judge (CTE names and the relation being created are not relations).
fn check_known(
    relations: &[Relation],
    kind: &str,
    body: &Value,
    masked: &Masked,
) -> Result<(), Leak> {
    let ctes = cte_names(body);
    let created = created_relation(kind, body);
    for r in relations {
        if created.as_ref() == Some(&r.name) {
            continue;
        }
        let known = match &r.schema {
            Some(s) => masked.relations().contains(&(s.clone(), r.name.clone())),
            None => ctes.contains(&r.name) || masked.relations().iter().any(|(_, n)| *n == r.name),
        };
        if !known {
            let shown = r
                .schema
                .as_ref()
                .map_or(r.name.clone(), |s| format!("{s}.{}", r.name));
            return Err(Leak {
                why: format!(
                    "relation {shown} is newer than pgward's column map, which is being refreshed: retry in a moment"
                ),
                stale: true,
            });
        }
    }
    Ok(())
}

/// `COPY t (a, b) TO ...` of a masked table, listing no masked column: the
/// rows go out as COPY data, which the response side does not mask, so a
/// column list without masked columns is the only COPY of it allowed.
fn copies_no_masked_column(body: &Value, scope: &Scope) -> bool {
    let table = str_field(body.get("relation").unwrap_or(&Value::Null), "relname");
    let columns = names(body.get("attlist"));
    !crate::policy::classify::bool_field(body, "is_from")
        && body.get("query").is_none_or(Value::is_null)
        && body.get("where_clause").is_none_or(Value::is_null)
        && !columns.is_empty()
        && !columns.iter().any(|c| scope.table_masks(table, c))
}

/// ON CONFLICT's inference target: whether the insert conflicts tells
/// whether a row with that value exists, so it may not name a masked
/// column, nor a constraint of a masked table (its columns are not known
/// here).
fn on_conflict_target(clause: &Value, table: &str, scope: &Scope) -> Result<(), Leak> {
    let infer = clause.get("infer").filter(|i| !i.is_null());
    let Some(infer) = infer else { return Ok(()) };
    for elem in infer
        .get("index_elems")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let column = str_field(inner(elem), "name");
        if !column.is_empty() && scope.is_masked_name(column) {
            return Err(Leak::new(format!(
                "ON CONFLICT ({column}) would tell whether a masked value exists"
            )));
        }
    }
    let constraint = str_field(infer, "conname");
    if !constraint.is_empty() && scope.is_masked_table(table) {
        return Err(Leak::new(format!(
            "ON CONFLICT ON CONSTRAINT {constraint} of a table with masked columns may tell whether a masked value exists"
        )));
    }
    Ok(())
}

/// The relation a CREATE statement makes (not in any map yet, and not read).
fn created_relation(kind: &str, body: &Value) -> Option<String> {
    let target = match kind {
        "CreateStmt" | "CreateForeignTableStmt" => body.get("relation"),
        "ViewStmt" => body.get("view"),
        "CreateSeqStmt" => body.get("sequence"),
        "CreateTableAsStmt" => body.get("into").and_then(|i| i.get("rel")),
        "SelectStmt" => body.get("into_clause").and_then(|i| i.get("rel")),
        _ => None,
    }?;
    let target = target.get("node").map(inner).unwrap_or(target);
    Some(str_field(target, "relname").to_owned()).filter(|n| !n.is_empty())
}

/// Every CTE name defined anywhere in the statement.
fn cte_names(value: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => {
                if let Some(Value::String(name)) = map.get("ctename") {
                    out.insert(name.clone());
                }
                map.values().for_each(|i| walk(i, out));
            }
            _ => {}
        }
    }
    walk(value, &mut out);
    out
}

/// Every RangeVar and every function called.
fn collect(
    value: &Value,
    relations: &mut Vec<Relation>,
    functions: &mut Vec<crate::policy::facts::QualName>,
) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect(v, relations, functions)),
        Value::Object(map) => {
            if map.contains_key("relname") && map.contains_key("relpersistence") {
                let schema = map
                    .get("schemaname")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                let alias = map.get("alias").filter(|a| !a.is_null());
                relations.push(Relation {
                    schema: schema.map(str::to_owned),
                    name: str_field(value, "relname").to_owned(),
                    alias: alias
                        .and_then(|a| a.get("aliasname"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    colnames: names(alias.and_then(|a| a.get("colnames"))),
                });
                return;
            }
            if map.contains_key("funcname") && map.contains_key("agg_star") {
                functions.push(qual_name(map.get("funcname")));
            }
            map.values().for_each(|v| collect(v, relations, functions));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
