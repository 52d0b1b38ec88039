//! The request side of masking: before a statement of a masked identity
//! runs, decide from its parse tree whether a masked column could reach the
//! client other than as a bare column of the outermost select list (where
//! the response side masks it). Anything else is refused, naming the column.
//!
//! Conservative by design: an unqualified column whose name is the name of
//! a masked column of any table the statement names counts as that masked
//! column; a masked column inside a subquery, CTE, expression, function
//! call, cast, predicate, ordering or grouping is refused even where it
//! could not leak. Refusing a harmless query is the price of never
//! answering in clear.

use super::catalog::MaskMap;
use crate::policy::classify::{inner, parse, qual_name, single_entry, str_field};
use crate::policy::lexer::LexSettings;
use scope::{names, Scope};
use serde_json::Value;
use std::collections::BTreeSet;

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
#[derive(Debug, Clone, Default)]
pub struct Masked {
    /// (schema, table) -> masked column names, for this identity.
    pub tables: Vec<(String, String, BTreeSet<String>)>,
    /// Views over masked columns, as (schema, name).
    pub views: BTreeSet<(String, String)>,
    /// Functions outside pg_catalog, by name.
    pub functions: BTreeSet<String>,
    /// Every relation the map knows (any schema), as (schema, name).
    pub relations: BTreeSet<(String, String)>,
}

impl Masked {
    /// The part of `map` that applies to an identity: columns whose rule
    /// `applies(rule)` says masks them.
    pub fn from_map(map: &MaskMap, applies: impl Fn(usize) -> bool) -> Self {
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
            views: map.views.clone(),
            functions: map.functions.clone(),
            relations: map.relations.clone(),
        }
    }

    /// Whether nothing is masked for this identity.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
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
pub(super) struct Named {
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
    let mut relations = Vec::new();
    let mut functions = Vec::new();
    collect(body, &mut relations, &mut functions);
    for f in &functions {
        if SQL_TEXT_FUNCTIONS
            .iter()
            .any(|g| crate::policy::rules::Glob::new(g).matches(&f.name))
        {
            return Err(Leak::new(format!(
                "function {f} runs SQL given as text, which could read masked columns"
            )));
        }
        let outside_catalog = f.schema.as_deref().is_none_or(|s| s != "pg_catalog");
        if outside_catalog && masked.functions.contains(&f.name) {
            return Err(Leak::new(format!(
                "function {f} is not in pg_catalog and may read masked columns"
            )));
        }
    }
    let ctes = cte_names(body);
    let created = created_relation(kind, body);
    for r in &relations {
        if created.as_ref() == Some(&r.name) {
            continue;
        }
        let known = match &r.schema {
            Some(s) => masked.relations.contains(&(s.clone(), r.name.clone())),
            None => ctes.contains(&r.name) || masked.relations.iter().any(|(_, n)| *n == r.name),
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
    let mut named = Vec::new();
    let mut plain = BTreeSet::new();
    for r in &relations {
        let matches =
            |s: &String, t: &String| *t == r.name && r.schema.as_ref().is_none_or(|x| x == s);
        if let Some((s, v)) = masked.views.iter().find(|(s, v)| matches(s, v)) {
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

/// Where a select list is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The statement's own result: its bare columns reach the client with
    /// their origin (table OID, attribute number) in RowDescription, which
    /// is what the response side masks by.
    Outermost,
    /// A subquery in FROM: its bare masked outputs are names the rest of
    /// the statement may not use (Scope), so selecting them is harmless.
    Wrapped,
    /// Anywhere else (set-operation branches, CTEs, sublinks).
    Inner,
}

/// Walks a statement looking for masked columns outside bare positions.
struct Scan<'a> {
    scope: &'a Scope,
    /// Output names of masked columns selected bare (ORDER BY x may name one).
    outputs: BTreeSet<String>,
    /// Whether the select list being scanned has a masked column or a star.
    selects_masked: bool,
    leak: Option<Leak>,
}

impl<'a> Scan<'a> {
    fn new(scope: &'a Scope) -> Self {
        Self {
            scope,
            outputs: BTreeSet::new(),
            selects_masked: false,
            leak: None,
        }
    }

    fn finish(self) -> Result<(), Leak> {
        self.leak.map_or(Ok(()), Err)
    }

    fn refuse(&mut self, why: String) {
        if self.leak.is_none() {
            self.leak = Some(Leak::new(why));
        }
    }

    /// A SELECT whose select list is at `place`.
    fn select(&mut self, body: &Value, place: Place) {
        let Some(map) = body.as_object() else { return };
        let outer_selects_masked = std::mem::replace(&mut self.selects_masked, false);
        // UNION / INTERSECT / EXCEPT results carry no column origins, so
        // their branches are never outermost: a masked column there is
        // refused.
        let set_operation = map.get("larg").is_some_and(|v| !v.is_null());
        for side in ["larg", "rarg"] {
            if let Some(branch) = map.get(side).filter(|v| !v.is_null()) {
                self.select(inner(branch), Place::Inner);
            }
        }
        let place = if set_operation { Place::Inner } else { place };
        // The select list first: ORDER BY and GROUP BY may name its outputs.
        if let Some(targets) = map.get("target_list") {
            for target in targets.as_array().into_iter().flatten() {
                if place == Place::Inner {
                    self.everywhere(target);
                } else {
                    self.target(inner(target), place);
                }
            }
        }
        for (field, value) in map {
            match field.as_str() {
                "larg" | "rarg" | "target_list" => {}
                "sort_clause" | "group_clause" | "distinct_clause" if place != Place::Inner => {
                    self.positional(field, value);
                    self.everywhere(value);
                }
                _ => self.everywhere(value),
            }
        }
        self.selects_masked = outer_selects_masked;
    }

    /// One entry of a select list that may carry bare masked columns.
    fn target(&mut self, target: &Value, place: Place) {
        let Some(colref) = scope::target_colref(target) else {
            if let Some(v) = target.get("val") {
                self.everywhere(v);
            }
            return;
        };
        let fields = scope::fields(colref);
        let outermost = place == Place::Outermost;
        if fields.last().is_some_and(Option::is_none) {
            // `*` or `t.*`: expands to bare columns, masked on the way out,
            // unless it expands to a subquery's outputs.
            if outermost && self.scope.star_through_subquery(&fields) {
                self.refuse(
                    "a * over a subquery that selects masked columns would carry them".into(),
                );
            }
            self.selects_masked = true;
        } else if self.scope.is_whole_row(&fields) {
            self.refuse(format!(
                "a whole-row reference to {} would carry masked columns",
                shown(&fields)
            ));
        } else if self.scope.is_field_of_masked(&fields) {
            // A field of a composite column has no origin of its own.
            self.refuse(format!("{} is a field of a masked column", shown(&fields)));
        } else if !self.scope.is_masked(&fields) {
        } else if outermost && self.scope.through_subquery(&fields) {
            self.refuse(format!(
                "{} is a masked column selected through a subquery",
                shown(&fields)
            ));
        } else {
            self.selects_masked = true;
            if outermost {
                let output = str_field(target, "name");
                self.outputs.insert(if output.is_empty() {
                    fields.last().cloned().flatten().unwrap_or_default()
                } else {
                    output.to_owned()
                });
            }
        }
    }

    /// ORDER BY 1, GROUP BY 2: positions may point at a masked column.
    fn positional(&mut self, field: &str, value: &Value) {
        let present = value.as_array().is_some_and(|a| !a.is_empty());
        let text = value.to_string();
        if self.selects_masked
            && present
            && (text.contains("\"Ival\"") || field == "distinct_clause")
        {
            self.refuse(format!(
                "{} over a result with masked columns could reveal their order or equality",
                field
                    .replace("_clause", "")
                    .replace('_', " ")
                    .to_uppercase()
            ));
        }
    }

    /// A join: USING and NATURAL compare columns without naming them as
    /// references, an equality oracle when one is masked.
    fn join(&mut self, join: &Value) {
        for column in names(join.get("using_clause")) {
            if self.scope.is_masked_name(&column) {
                self.refuse(format!(
                    "JOIN ... USING ({column}) compares a masked column"
                ));
            }
        }
        if crate::policy::classify::bool_field(join, "is_natural") && self.scope.reads_masked(join)
        {
            self.refuse("a NATURAL JOIN over a table with masked columns may compare them".into());
        }
    }

    /// Anywhere else: a masked column, a star or a whole-row reference that
    /// may carry one is refused.
    fn everywhere(&mut self, value: &Value) {
        match value {
            Value::Array(items) => items.iter().for_each(|v| self.everywhere(v)),
            Value::Object(map) => {
                if let Some(Value::Object(colref)) = map.get("ColumnRef") {
                    self.reference(&scope::fields(colref));
                    return;
                }
                if let Some(sub) = map.get("RangeSubselect") {
                    if let Some(query) = sub.get("subquery").filter(|q| !q.is_null()) {
                        self.select(inner(query), Place::Wrapped);
                    }
                    return;
                }
                if let Some(join) = map.get("JoinExpr") {
                    self.join(join);
                }
                map.values().for_each(|v| self.everywhere(v));
            }
            _ => {}
        }
    }

    /// A column reference outside a bare position.
    fn reference(&mut self, fields: &[Option<String>]) {
        let last = fields.last().cloned().flatten();
        if last.is_none() {
            self.refuse("a * inside an expression or subquery would carry masked columns".into());
        } else if self.scope.is_masked(fields) {
            self.refuse(format!(
                "column {} is masked: it may only be selected as it is",
                shown(fields)
            ));
        } else if fields.len() == 1 && last.as_ref().is_some_and(|c| self.outputs.contains(c)) {
            self.refuse(format!(
                "{} names a masked column of the result",
                shown(fields)
            ));
        } else if self.scope.is_whole_row(fields) {
            self.refuse(format!(
                "a whole-row reference to {} would carry masked columns",
                shown(fields)
            ));
        }
    }
}

/// A column reference as written (for messages).
fn shown(fields: &[Option<String>]) -> String {
    fields
        .iter()
        .map(|f| f.as_deref().unwrap_or("*"))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests;
