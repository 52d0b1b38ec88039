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
use serde_json::{Map, Value};
use std::collections::BTreeSet;

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
struct Named {
    /// Masked columns (empty: not a masked table).
    columns: BTreeSet<String>,
    /// The relation's name and alias, as column references may qualify them.
    names: Vec<String>,
}

fn check_statement(tree: &Value, masked: &Masked) -> Result<(), Leak> {
    let tree = tree.get("node").unwrap_or(tree);
    let Some((kind, body)) = single_entry(tree) else {
        return Ok(());
    };
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
    for (schema, name, _) in &relations {
        if created.as_ref() == Some(name) {
            continue;
        }
        let known = match schema {
            Some(s) => masked.relations.contains(&(s.clone(), name.clone())),
            None => ctes.contains(name) || masked.relations.iter().any(|(_, n)| n == name),
        };
        if !known {
            let shown = schema
                .as_ref()
                .map_or(name.clone(), |s| format!("{s}.{name}"));
            return Err(Leak {
                why: format!(
                    "relation {shown} is newer than pgward's column map, which is being refreshed: retry in a moment"
                ),
                stale: true,
            });
        }
    }
    let mut named = Vec::new();
    for (schema, name, alias) in &relations {
        let matches =
            |s: &String, t: &String| *t == *name && schema.as_ref().is_none_or(|x| x == s);
        if let Some((s, v)) = masked.views.iter().find(|(s, v)| matches(s, v)) {
            return Err(Leak::new(format!("view {s}.{v} reads masked columns")));
        }
        let columns: BTreeSet<String> = masked
            .tables
            .iter()
            .filter(|(s, t, _)| matches(s, t))
            .flat_map(|(_, _, c)| c.iter().cloned())
            .collect();
        if !columns.is_empty() {
            let mut names = vec![name.clone()];
            names.extend(alias.clone());
            named.push(Named { columns, names });
        }
    }
    if named.is_empty() {
        return Ok(());
    }
    let masked_columns: BTreeSet<&String> = named.iter().flat_map(|n| &n.columns).collect();
    let table_names: BTreeSet<&String> = named.iter().flat_map(|n| &n.names).collect();
    let all: Vec<&str> = masked_columns.iter().map(|c| c.as_str()).collect();
    let listed = all.join(", ");
    match kind {
        "SelectStmt" if body.get("into_clause").is_none_or(Value::is_null) => {}
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
            // Writes may name a masked table; nothing of it may come back or
            // steer the write (RETURNING, WHERE, SET from, INSERT ... SELECT).
            let mut out = Scan::new(&masked_columns, &table_names);
            for (field, value) in body.as_object().into_iter().flatten() {
                if field != "relation" {
                    out.everywhere(value);
                }
            }
            return out.finish();
        }
        _ => {
            return Err(Leak::new(format!(
                "a {} statement may not read a table with masked columns ({listed})",
                kind.trim_end_matches("Stmt")
            )))
        }
    }
    let mut scan = Scan::new(&masked_columns, &table_names);
    scan.select(body, true);
    scan.finish()
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

/// Every RangeVar (schema, name, alias) and every function called.
fn collect(
    value: &Value,
    relations: &mut Vec<(Option<String>, String, Option<String>)>,
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
                let alias = map
                    .get("alias")
                    .and_then(|a| a.get("aliasname"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                relations.push((
                    schema.map(str::to_owned),
                    str_field(value, "relname").to_owned(),
                    alias,
                ));
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

/// Walks a statement looking for masked columns outside bare positions.
struct Scan<'a> {
    masked: &'a BTreeSet<&'a String>,
    tables: &'a BTreeSet<&'a String>,
    /// Output names of masked columns selected bare (ORDER BY x may name one).
    outputs: BTreeSet<String>,
    /// Whether the outermost select list has a masked column or a star.
    selects_masked: bool,
    leak: Option<Leak>,
}

impl<'a> Scan<'a> {
    fn new(masked: &'a BTreeSet<&'a String>, tables: &'a BTreeSet<&'a String>) -> Self {
        Self {
            masked,
            tables,
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

    /// The fields of a ColumnRef as strings (`None` for `*`).
    fn fields(colref: &Map<String, Value>) -> Vec<Option<String>> {
        colref
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|f| {
                let node = f.get("node").unwrap_or(f);
                node.get("String").map(|s| str_field(s, "sval").to_owned())
            })
            .collect()
    }

    /// A SELECT; `outermost` when its select list reaches the client with
    /// each column's origin (table OID, attribute number) in RowDescription,
    /// which is what the response side masks by.
    fn select(&mut self, body: &Value, outermost: bool) {
        let Some(map) = body.as_object() else { return };
        // UNION / INTERSECT / EXCEPT results carry no column origins, so
        // their branches are never outermost: a masked column there is
        // refused.
        let set_operation = map.get("larg").is_some_and(|v| !v.is_null());
        for side in ["larg", "rarg"] {
            if let Some(branch) = map.get(side).filter(|v| !v.is_null()) {
                self.select(inner(branch), false);
            }
        }
        let outermost = outermost && !set_operation;
        // The select list first: ORDER BY and GROUP BY may name its outputs.
        if let Some(targets) = map.get("target_list") {
            for target in targets.as_array().into_iter().flatten() {
                if outermost {
                    self.target(inner(target));
                } else {
                    self.everywhere(target);
                }
            }
        }
        for (field, value) in map {
            match field.as_str() {
                "larg" | "rarg" | "target_list" => {}
                "sort_clause" | "group_clause" | "distinct_clause" if outermost => {
                    self.positional(field, value);
                    self.everywhere(value);
                }
                _ => self.everywhere(value),
            }
        }
    }

    /// One entry of the outermost select list.
    fn target(&mut self, target: &Value) {
        let val = target.get("val").map(inner);
        let colref = target
            .get("val")
            .and_then(|v| v.get("node").unwrap_or(v).get("ColumnRef"))
            .and_then(Value::as_object);
        let Some(colref) = colref else {
            if let Some(v) = val {
                self.everywhere(v);
            }
            return;
        };
        let fields = Self::fields(colref);
        match fields.as_slice() {
            // `*` or `t.*`: expands to bare columns, masked on the way out.
            [.., None] => self.selects_masked = true,
            // A bare table name or alias is the whole row.
            [Some(name)] if self.tables.contains(name) && !self.masked.contains(name) => self
                .refuse(format!(
                    "a whole-row reference to {name} would carry masked columns"
                )),
            [.., Some(col)] if self.masked.contains(col) => {
                self.selects_masked = true;
                let output = str_field(target, "name");
                self.outputs.insert(if output.is_empty() {
                    col.clone()
                } else {
                    output.to_owned()
                });
            }
            _ => {}
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

    /// Anywhere else: a masked column, a star over a masked table or a
    /// whole-row reference is refused.
    fn everywhere(&mut self, value: &Value) {
        match value {
            Value::Array(items) => items.iter().for_each(|v| self.everywhere(v)),
            Value::Object(map) => {
                if let Some(Value::Object(colref)) = map.get("ColumnRef") {
                    let fields = Self::fields(colref);
                    match fields.as_slice() {
                        [.., None] => self.refuse(
                            "a * inside an expression or subquery would carry masked columns"
                                .into(),
                        ),
                        [.., Some(col)] if self.masked.contains(col) => self.refuse(format!(
                            "column {col} is masked: it may only be selected as it is"
                        )),
                        [.., Some(col)] if self.outputs.contains(col) => {
                            self.refuse(format!("{col} names a masked column of the result"))
                        }
                        [Some(name)] if self.tables.contains(name) => self.refuse(format!(
                            "a whole-row reference to {name} would carry masked columns"
                        )),
                        _ => {}
                    }
                    return;
                }
                map.values().for_each(|v| self.everywhere(v));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
