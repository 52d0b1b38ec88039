//! Name resolution for the guard: which names in a statement may stand for
//! a masked column, and which stand for a whole row that carries one.
//!
//! Resolution is by name over the whole statement, not per query level,
//! and every doubt resolves towards "masked": a name that could mean a
//! masked column in any scope counts as one. What it adds over plain
//! column names is what renames or merges a column without naming it:
//! column-alias lists of relations, joins and subqueries, the output names
//! of subqueries in FROM that select a masked column, and join aliases.
//! Qualified references resolve to their qualifier's relation when that
//! qualifier can only mean a relation with no masked column.

use super::Named;
use crate::policy::classify::{inner, str_field};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// The names of one statement, resolved as far as masking needs.
pub(super) struct Scope {
    /// Relations with masked columns (their columns include alias names).
    named: Vec<Named>,
    /// Names and aliases of relations with no masked column, and EXCLUDED in
    /// an upsert (the client's own proposed row).
    plain: BTreeSet<String>,
    /// Aliases of subqueries in FROM that select a masked column.
    subqueries: BTreeSet<String>,
    /// Whether any subquery in FROM selects one (aliased or not).
    any_subquery: bool,
    /// Aliases of joins over a masked relation.
    joins: BTreeSet<String>,
    /// Every name a masked column may go by anywhere in the statement.
    masked: BTreeSet<String>,
    /// Output names of the subqueries above that may carry a masked column.
    through_subquery: BTreeSet<String>,
}

/// A ColumnRef's fields as strings (`None` for `*`).
pub(super) fn fields(colref: &Map<String, Value>) -> Vec<Option<String>> {
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

/// The names in a list of String nodes (alias column names, USING lists).
pub(super) fn names(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|n| str_field(inner(n), "sval").to_owned())
        .collect()
}

/// The ColumnRef a select-list entry is, if it is one.
pub(super) fn target_colref(target: &Value) -> Option<&Map<String, Value>> {
    target
        .get("val")
        .and_then(|v| v.get("node").unwrap_or(v).get("ColumnRef"))
        .and_then(Value::as_object)
}

/// Calls `f` on every object node under `value`.
fn walk<'v>(value: &'v Value, f: &mut impl FnMut(&'v Map<String, Value>)) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| walk(v, f)),
        Value::Object(map) => {
            f(map);
            map.values().for_each(|v| walk(v, f));
        }
        _ => {}
    }
}

impl Scope {
    /// Resolves the names of statement `body`; `plain` are the relations it
    /// names with no masked column.
    pub(super) fn new(body: &Value, named: Vec<Named>, plain: BTreeSet<String>) -> Self {
        let masked = named
            .iter()
            .flat_map(|n| n.columns.iter().cloned())
            .collect();
        let mut scope = Self {
            named,
            plain,
            subqueries: BTreeSet::new(),
            any_subquery: false,
            joins: BTreeSet::new(),
            masked,
            through_subquery: BTreeSet::new(),
        };
        let mut joins = Vec::new();
        let mut subselects = Vec::new();
        walk(body, &mut |node| {
            if let Some(join) = node.get("JoinExpr") {
                joins.push(join);
            }
            if let Some(sub) = node.get("RangeSubselect") {
                subselects.push(sub);
            }
        });
        for join in joins {
            if scope.reads_masked(join) {
                if let Some(alias) = join.get("alias").filter(|a| !a.is_null()) {
                    scope.joins.insert(str_field(alias, "aliasname").to_owned());
                    scope.masked.extend(names(alias.get("colnames")));
                }
            }
        }
        // A subquery's output may be another subquery's masked output under
        // a new name: repeat until nothing new is learnt (each round adds a
        // name, so this ends).
        loop {
            let mut learnt = false;
            for sub in &subselects {
                let Some(outputs) = scope.masked_outputs(inner(&sub["subquery"])) else {
                    continue;
                };
                scope.any_subquery = true;
                let alias = sub.get("alias").filter(|a| !a.is_null());
                if let Some(alias) = alias {
                    learnt |= scope
                        .subqueries
                        .insert(str_field(alias, "aliasname").to_owned());
                }
                let renamed = alias.map(|a| names(a.get("colnames"))).unwrap_or_default();
                for name in outputs.into_iter().chain(renamed) {
                    learnt |= scope.through_subquery.insert(name.clone());
                    learnt |= scope.masked.insert(name);
                }
            }
            if !learnt {
                break;
            }
        }
        scope
    }

    /// Adds EXCLUDED (an upsert's proposed row, the client's own values) as
    /// a relation with no masked column, unless a relation is called that.
    pub(super) fn allow_excluded(&mut self) {
        let taken = self
            .named
            .iter()
            .any(|n| n.names.iter().any(|x| x == "excluded"))
            || self.subqueries.contains("excluded")
            || self.joins.contains("excluded");
        if !taken {
            self.plain.insert("excluded".into());
        }
    }

    /// Whether a select's list may carry a masked column, and the output
    /// names that may (a `*` carries the names it expands to, which are
    /// masked names already).
    fn masked_outputs(&self, select: &Value) -> Option<Vec<String>> {
        let mut carries = false;
        let mut outputs = Vec::new();
        for side in ["larg", "rarg"] {
            if let Some(branch) = select.get(side).filter(|v| !v.is_null()) {
                if let Some(more) = self.masked_outputs(inner(branch)) {
                    carries = true;
                    outputs.extend(more);
                }
            }
        }
        for target in select
            .get("target_list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let target = inner(target);
            let Some(colref) = target_colref(target) else {
                continue;
            };
            let fields = fields(colref);
            match fields.last() {
                Some(None) => carries = true,
                Some(Some(col)) if self.is_masked(&fields) => {
                    carries = true;
                    let name = str_field(target, "name");
                    outputs.push(if name.is_empty() {
                        col.clone()
                    } else {
                        name.to_owned()
                    });
                }
                _ => {}
            }
        }
        carries.then_some(outputs)
    }

    /// Whether a part of the tree names a relation with masked columns.
    pub(super) fn reads_masked(&self, value: &Value) -> bool {
        let mut found = false;
        walk(value, &mut |node| {
            let relation = node.get("RangeVar").unwrap_or(&Value::Null);
            let name = str_field(relation, "relname");
            if !name.is_empty() && self.named.iter().any(|n| n.names[0] == name) {
                found = true;
            }
        });
        found
    }

    /// Whether any name may be a masked column.
    pub(super) fn is_masked_name(&self, name: &str) -> bool {
        self.masked.contains(name)
    }

    /// Whether a column reference may be a masked column (or a field of one).
    pub(super) fn is_masked(&self, fields: &[Option<String>]) -> bool {
        let Some((Some(column), before)) = fields.split_last() else {
            return false;
        };
        if self.is_field_of_masked(fields) {
            return true;
        }
        let Some(Some(qualifier)) = before.last() else {
            return self.masked.contains(column);
        };
        if self.subqueries.contains(qualifier) || self.joins.contains(qualifier) {
            return self.masked.contains(column);
        }
        let tables: Vec<&Named> = self
            .named
            .iter()
            .filter(|n| n.names.contains(qualifier))
            .collect();
        if !tables.is_empty() {
            return tables.iter().any(|n| n.columns.contains(column));
        }
        if self.plain.contains(qualifier) {
            return false;
        }
        // A CTE, a function or VALUES alias, or something unforeseen.
        self.masked.contains(column)
    }

    /// `ssn.f` or `t.ssn.f`: may be a field of a composite masked column.
    pub(super) fn is_field_of_masked(&self, fields: &[Option<String>]) -> bool {
        fields
            .split_last()
            .is_some_and(|(_, before)| before.iter().flatten().any(|f| self.masked.contains(f)))
    }

    /// Whether a reference goes through a subquery that selects a masked
    /// column: such outputs may be used only inside it (count wrappers).
    pub(super) fn through_subquery(&self, fields: &[Option<String>]) -> bool {
        // Through a join's alias too: the join may hold such a subquery.
        match fields {
            [.., Some(q), Some(column)] => {
                self.subqueries.contains(q)
                    || (self.joins.contains(q) && self.through_subquery.contains(column))
            }
            [Some(column)] => self.through_subquery.contains(column),
            _ => false,
        }
    }

    /// Whether `*` (unqualified) or `q.*` may expand to a subquery's masked
    /// outputs.
    pub(super) fn star_through_subquery(&self, fields: &[Option<String>]) -> bool {
        match fields {
            [None] => self.any_subquery,
            [.., Some(q), None] => {
                self.subqueries.contains(q) || (self.joins.contains(q) && self.any_subquery)
            }
            _ => false,
        }
    }

    /// Whether a one-name reference is a whole row carrying masked columns
    /// (a column of that name would take precedence).
    pub(super) fn is_whole_row(&self, fields: &[Option<String>]) -> bool {
        let [Some(name)] = fields else {
            return false;
        };
        !self.masked.contains(name)
            && (self.named.iter().any(|n| n.names.contains(name))
                || self.subqueries.contains(name)
                || self.joins.contains(name))
    }

    /// Every masked column name, for messages.
    pub(super) fn listed(&self) -> String {
        let all: BTreeSet<&String> = self.named.iter().flat_map(|n| &n.columns).collect();
        all.into_iter().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Whether the relation called `name` has masked column `column`.
    pub(super) fn table_masks(&self, name: &str, column: &str) -> bool {
        self.named
            .iter()
            .any(|n| n.names[0] == name && n.columns.contains(column))
    }

    /// Whether `name` is a relation with masked columns.
    pub(super) fn is_masked_table(&self, name: &str) -> bool {
        self.named.iter().any(|n| n.names[0] == name)
    }
}
