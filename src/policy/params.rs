//! Parameters bound at Bind. A statement whose verdict reads a value
//! (`SELECT set_config($1, $2, false)`: psycopg binds everything
//! server-side) is judged at Parse with every parameter unknown, which
//! every value-reading rule takes as the worst value; judged again at Bind
//! with the actual values, it is refused only if they make it so. The
//! values take the place of the `$n` references in the parse tree as the
//! string constants the server would see, never as text spliced into SQL.

use serde_json::{json, Value};

/// One parameter of a Bind, as pgward can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// A text-format value, in the session's client encoding.
    Text(&'a [u8]),
    /// A binary-format value: not read, so it stays unknown (the worst).
    Binary,
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
/// UTF-8) by the constant it stands for; others stay references.
pub(super) fn substitute(tree: &mut Value, values: &[Option<Option<String>>]) {
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
            map.values_mut().for_each(|v| substitute(v, values));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, values)),
        _ => {}
    }
}
