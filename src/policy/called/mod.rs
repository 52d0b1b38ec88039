//! Code a statement runs without its text being in the statement: user
//! functions it calls by name (and procedures for CALL), the functions
//! behind the operators it uses, aggregates' support functions, casts'
//! functions, triggers on the tables it writes and the column defaults it
//! fills. A [`CodeCatalog`] (read from the database by the session layer,
//! passed in through [`super::Session`]) says what exists; [`resolve`]
//! judges the bodies found there like the statement itself and adds their
//! units, each with its [`Unit::origin`], to the statement's.
//!
//! Names are matched conservatively: a bare name matches every object of
//! that name in every schema (PostgreSQL may resolve it to any of them,
//! whatever search_path the client set), a qualified one only that schema
//! (`pg_temp` every session's temporary schema). The server's own objects
//! (pg_catalog and information_schema with OIDs below 16384) are not in
//! the catalog: the rules name the dangerous built-ins themselves.

mod catalog;
mod resolve;

pub use catalog::{
    Cast, CatalogParts, CodeCatalog, CodeRef, ColumnDefault, Function, Language, Operator,
    RelationCode, Trigger, When,
};
pub(super) use resolve::resolve;

use super::classify::{bool_field, qual_name};
use std::time::Duration;

/// How fresh the session layer keeps the code catalogs (`[policy]`
/// `catalog_refresh` and `catalog_timeout`); in the rule set, so a reload
/// changes them like everything else in `[policy]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// How often a catalog is read again in the background.
    pub refresh: Duration,
    /// Time allowed for one read (login and queries); a statement that
    /// needs a catalog not read in time is refused.
    pub timeout: Duration,
}
use super::facts::{QualName, Unit};
use serde_json::Value;

/// Operators a BETWEEN is rewritten to.
const BETWEEN: &[&str] = &[">=", "<=", "<", ">"];

/// Collects the operators and cast targets a node `name` (`body` its
/// fields) uses by name into `unit`. Called by the generic walk on every
/// node; a handful of string comparisons for the others.
pub(super) fn collect_code_names(name: &str, body: &Value, unit: &mut Unit) {
    match name {
        "AExpr" => {
            let op = qual_name(body.get("name"));
            if op.name.contains("BETWEEN") {
                for o in BETWEEN {
                    unit.operators.insert(QualName::bare(o));
                }
            } else if !op.name.is_empty() {
                unit.operators.insert(op);
            }
        }
        "SubLink" => add_operator(unit, body.get("oper_name")),
        "SortBy" => add_operator(unit, body.get("use_op")),
        // USING and NATURAL join on `=` found by name; so does CASE x WHEN.
        "JoinExpr"
            if bool_field(body, "is_natural")
                || body
                    .get("using_clause")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()) =>
        {
            unit.operators.insert(QualName::bare("="));
        }
        "CaseExpr" if body.get("arg").is_some_and(|a| !a.is_null()) => {
            unit.operators.insert(QualName::bare("="));
        }
        "TypeCast" => {
            let target = qual_name(body.get("type_name").and_then(|t| t.get("names")));
            if !target.name.is_empty() {
                unit.casts.insert(target);
            }
        }
        _ => {}
    }
}

fn add_operator(unit: &mut Unit, names: Option<&Value>) {
    let op = qual_name(names);
    if !op.name.is_empty() {
        unit.operators.insert(op);
    }
}

#[cfg(test)]
mod tests;
