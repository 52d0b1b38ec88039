//! Parameters bound at Bind. A statement whose verdict reads a value
//! (`SELECT set_config($1, $2, false)`: psycopg binds everything
//! server-side) is judged at Parse with every parameter unknown, which
//! every value-reading rule takes as the worst value; judged again at Bind
//! with the actual values, it is refused only if they make it so. The
//! values take the place of the `$n` references in the parse tree as the
//! string constants the server would see, never as text spliced into SQL.

use serde_json::{json, Value};

/// One parameter of a Bind, as pgward can read it. The server reads a
/// text-format value through its parameter's type, which may change it
/// before a function sees it as text: `character` (bpchar) drops trailing
/// spaces (`'role   '` names `role`), `name` cuts at 63 bytes, and a
/// type's own implicit cast to text can return anything. So a value is
/// read as it is only where the server provably takes it as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// A text-format value of a parameter the server types as `text` or
    /// `varchar` (declared so in the Parse, or described so by the
    /// server), in the session's client encoding.
    Text(&'a [u8]),
    /// A text-format value of a parameter whose type the Parse left to the
    /// server: it infers the type from the first use it analyses, which
    /// may be anywhere in the statement (a cast in FROM, a comparison in
    /// a JOIN). Read only where every use of it is a direct argument of
    /// `set_config`, whose arguments make it text; else unknown.
    Inferred(&'a [u8]),
    /// A binary-format value, or a value of any other declared type: not
    /// read, so it stays unknown (the worst).
    Binary,
}

/// What a Bind gives `$n`, converted to UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Bound {
    /// Not known (the worst).
    Unknown,
    /// SQL NULL.
    Null,
    /// A value the server reads as text.
    Text(String),
    /// A value of a parameter whose type the server infers ([`Param::Inferred`]).
    Inferred(String),
}

/// Whether `tree` holds a parameter reference (`$n`).
pub(super) fn has_params(tree: &Value) -> bool {
    match tree {
        Value::Object(map) => map.contains_key("ParamRef") || map.values().any(has_params),
        Value::Array(items) => items.iter().any(has_params),
        _ => false,
    }
}

/// Replaces every `$n` whose value is known (`values[n - 1]`, already in
/// UTF-8) by the constant it stands for; others stay references. An
/// inferred value is known only if every reference to it is a direct
/// argument of `set_config` (see [`Param::Inferred`]).
pub(super) fn substitute(tree: &mut Value, values: &[Bound]) {
    if values.is_empty() {
        return;
    }
    let mut uses = vec![(0usize, 0usize); values.len()];
    count_uses(tree, &mut uses);
    let known: Vec<Option<Option<String>>> = values
        .iter()
        .zip(&uses)
        .map(|(value, (all, as_text))| match value {
            Bound::Unknown => None,
            Bound::Null => Some(None),
            Bound::Text(text) => Some(Some(text.clone())),
            Bound::Inferred(text) if all == as_text => Some(Some(text.clone())),
            Bound::Inferred(_) => None,
        })
        .collect();
    replace(tree, &known);
}

/// The number of `$n` in a ParamRef node's body, as an index into values.
fn param_index(param: &Value) -> Option<usize> {
    let n = param.get("number").and_then(Value::as_u64)?;
    usize::try_from(n).ok()?.checked_sub(1)
}

/// Counts, per parameter, its references and those that are direct
/// arguments of a call named `set_config` (the server types those text).
fn count_uses(tree: &Value, uses: &mut [(usize, usize)]) {
    match tree {
        Value::Object(map) => {
            if let Some(i) = map.get("ParamRef").and_then(param_index) {
                if let Some(u) = uses.get_mut(i) {
                    u.0 += 1;
                }
            }
            let set_config = map.contains_key("args")
                && map
                    .get("funcname")
                    .and_then(Value::as_array)
                    .and_then(|parts| parts.last())
                    .map(|last| last.get("node").unwrap_or(last))
                    .and_then(|last| last.get("String"))
                    .and_then(|s| s.get("sval"))
                    .and_then(Value::as_str)
                    == Some("set_config");
            if set_config {
                for arg in map
                    .get("args")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let arg = arg.get("node").unwrap_or(arg);
                    if let Some(i) = arg.get("ParamRef").and_then(param_index) {
                        if let Some(u) = uses.get_mut(i) {
                            u.1 += 1;
                        }
                    }
                }
            }
            map.values().for_each(|v| count_uses(v, uses));
        }
        Value::Array(items) => items.iter().for_each(|v| count_uses(v, uses)),
        _ => {}
    }
}

fn replace(tree: &mut Value, values: &[Option<Option<String>>]) {
    match tree {
        Value::Object(map) => {
            let known = map
                .get("ParamRef")
                .and_then(|p| p.get("number"))
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok()?.checked_sub(1))
                .and_then(|i| values.get(i))
                .and_then(Option::as_ref);
            if let Some(value) = known {
                let constant = match value {
                    None => json!({"isnull": true, "location": -1}),
                    Some(text) => {
                        json!({"isnull": false, "location": -1, "val": {"Sval": {"sval": text}}})
                    }
                };
                map.clear();
                map.insert("AConst".into(), constant);
                return;
            }
            map.values_mut().for_each(|v| replace(v, values));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace(v, values)),
        _ => {}
    }
}
