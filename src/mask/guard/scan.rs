//! The guard's walk over a statement: where a masked column (as Scope
//! resolves names) appears, and whether that position could carry its value
//! to the client other than as a bare column of the result.

use super::scope::{self, names, Scope};
use super::Leak;
use crate::policy::classify::{inner, str_field};
use serde_json::Value;
use std::collections::BTreeSet;

/// Where a select list is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
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
pub(super) struct Scan<'a> {
    scope: &'a Scope,
    /// Output names of masked columns selected bare (ORDER BY x may name one).
    outputs: BTreeSet<String>,
    /// Whether the select list being scanned has a masked column or a star.
    selects_masked: bool,
    leak: Option<Leak>,
}

impl<'a> Scan<'a> {
    pub(super) fn new(scope: &'a Scope) -> Self {
        Self {
            scope,
            outputs: BTreeSet::new(),
            selects_masked: false,
            leak: None,
        }
    }

    pub(super) fn finish(self) -> Result<(), Leak> {
        self.leak.map_or(Ok(()), Err)
    }

    fn refuse(&mut self, why: String) {
        if self.leak.is_none() {
            self.leak = Some(Leak::new(why));
        }
    }

    /// A SELECT whose select list is at `place`.
    pub(super) fn select(&mut self, body: &Value, place: Place) {
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
    pub(super) fn everywhere(&mut self, value: &Value) {
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
