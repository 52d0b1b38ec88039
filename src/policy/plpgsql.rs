//! PL/pgSQL function bodies, read with libpg_query's PL/pgSQL parser: the
//! SQL statements and expressions they embed are judged like any other
//! statement; what pgward cannot see into (EXECUTE of a string, OPEN /
//! RETURN QUERY / FOR ... EXECUTE) is opaque code, a unit of its own.

use super::classify::{ClassifyError, Walker};
use super::facts::Unit;
use super::kind::Kind;
use super::lexer::LexSettings;
use super::versions;
use serde_json::Value;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;

#[repr(C)]
struct PlpgsqlParseResult {
    plpgsql_funcs: *mut c_char,
    error: *mut PgQueryError,
}

#[repr(C)]
struct PgQueryError {
    message: *mut c_char,
    funcname: *mut c_char,
    filename: *mut c_char,
    lineno: i32,
    cursorpos: i32,
    context: *mut c_char,
}

extern "C" {
    // libpg_query (linked through the pg_query crate), pg_query.h.
    fn pg_query_parse_plpgsql(input: *const c_char) -> PlpgsqlParseResult;
    fn pg_query_free_plpgsql_parse_result(result: PlpgsqlParseResult);
}

/// What the PL/pgSQL functions in `create` embed: every expression and
/// statement (`PLpgSQL_expr`: query text and parse mode) and whether any
/// SQL is given as a string.
///
/// Not `pg_query::parse_plpgsql`: libpg_query 18.1 writes invalid JSON for
/// the datums of trigger functions (`{}}` for the TG_ variables), so that
/// call fails on every trigger function. The values pgward needs are cut
/// out of the text instead, by a scan that knows JSON strings, and parsed
/// one by one; wherever they sit (statements, variables' defaults).
fn parse_embedded(create: &str) -> Result<Found, String> {
    let input = CString::new(create).map_err(|e| e.to_string())?;
    // SAFETY: `input` is a NUL-terminated string that outlives the call;
    // the result is freed once, below, after its text was copied.
    let result = unsafe { pg_query_parse_plpgsql(input.as_ptr()) };
    let text = if result.error.is_null() && !result.plpgsql_funcs.is_null() {
        // SAFETY: libpg_query returns a NUL-terminated string.
        Ok(unsafe { CStr::from_ptr(result.plpgsql_funcs) }
            .to_string_lossy()
            .into_owned())
    } else if result.error.is_null() {
        Err("no result".to_owned())
    } else {
        // SAFETY: a non-null error has a NUL-terminated message.
        let message = unsafe { (*result.error).message };
        Err(if message.is_null() {
            "unknown error".to_owned()
        } else {
            // SAFETY: as above.
            unsafe { CStr::from_ptr(message) }
                .to_string_lossy()
                .into_owned()
        })
    };
    // SAFETY: frees what libpg_query allocated for this result.
    unsafe { pg_query_free_plpgsql_parse_result(result) };
    let text = text?;
    if !text.contains("PLpgSQL_function") {
        return Err("no PL/pgSQL function found".into());
    }
    let value_at = |start: usize| -> Result<Value, String> {
        serde_json::Deserializer::from_str(&text[start..])
            .into_iter::<Value>()
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| "unreadable PL/pgSQL tree".to_owned())
    };
    let keys = keys(&text);
    let mut found = Found::default();
    for (key, start) in keys {
        match key {
            k if DYNAMIC.contains(&k) => found.dynamic = true,
            // OPEN ... FOR EXECUTE, RETURN QUERY EXECUTE.
            "dynquery" => found.dynamic |= !value_at(start)?.is_null(),
            "PLpgSQL_expr" => {
                let expr = value_at(start)?;
                let query = expr.get("query").and_then(Value::as_str).unwrap_or("");
                let mode = expr.get("parseMode").and_then(Value::as_i64).unwrap_or(0);
                found
                    .queries
                    .push((query.to_owned(), i32::try_from(mode).unwrap_or(0)));
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Every object key in `json` (outside strings) and where its value starts.
fn keys(json: &str) -> Vec<(&str, usize)> {
    let bytes = json.as_bytes();
    let (mut i, mut found) = (0, Vec::new());
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        // A string: find its end, minding escapes.
        let start = i + 1;
        let mut j = start;
        while j < bytes.len() && bytes[j] != b'"' {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        let text = json.get(start..j.min(bytes.len())).unwrap_or("");
        i = j + 1;
        if bytes.get(i) == Some(&b':') {
            found.push((text, i + 1));
        }
    }
    found
}

/// PL/pgSQL statements that run SQL given as a string.
const DYNAMIC: &[&str] = &["PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors"];

impl Walker<'_> {
    /// The units of the PL/pgSQL function `create` (a CREATE FUNCTION /
    /// PROCEDURE statement's text) runs.
    pub(super) fn plpgsql_body(
        &mut self,
        create: Option<&str>,
        body: &str,
    ) -> Result<Vec<Unit>, ClassifyError> {
        // Without the statement's own text (a function created inside a
        // body), or with a backslash (PL/pgSQL splits its body with the
        // caller's standard_conforming_strings at the first call, and
        // libpg_query's PL/pgSQL parser reads it with the setting on only),
        // the body cannot be judged as it will run.
        let (Some(create), false) = (create, body.contains('\\')) else {
            return Ok(vec![Unit::new(Kind::OpaqueCode)]);
        };
        let found = parse_embedded(create).map_err(|e| {
            ClassifyError::Unjudgeable(format!("the PL/pgSQL function body cannot be parsed: {e}"))
        })?;
        let mut units = Vec::new();
        if found.dynamic {
            units.push(Unit::new(Kind::OpaqueCode));
        }
        for (query, mode) in found.queries {
            // Only the parse-mode bits: the lexing flags are pgward's.
            let options = pg_query::ParserOptions::from(mode & 0xf);
            let parsed = super::classify::parse_with(&query, LexSettings::default(), options)
                .map_err(|e| {
                    ClassifyError::Unjudgeable(format!(
                        "a statement in the PL/pgSQL function body cannot be parsed: {e}"
                    ))
                })?;
            for (_, mut tree) in parsed {
                let server = self.env.server_major;
                if let Some(newer) = versions::as_server_reads(&mut tree, &query, server) {
                    return Err(ClassifyError::NewerSyntax(newer));
                }
                units.extend(self.statement(&tree)?);
            }
        }
        Ok(units)
    }
}

#[derive(Default)]
struct Found {
    /// (query text, libpg_query parse mode) of every embedded expression.
    queries: Vec<(String, i32)>,
    dynamic: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_inside_strings_are_not_keys() {
        let json =
            r#"{"a":{"query":"SELECT '\"PLpgSQL_stmt_dynexecute\":1', '\\'","b":2},"c":[1]}"#;
        let names: Vec<&str> = keys(json).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "query", "b", "c"]);
    }

    #[test]
    fn trigger_functions_are_read_despite_libpg_query_s_json() {
        let found = parse_embedded(
            "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ \
             DECLARE n int := 1; BEGIN NEW.x := n; PERFORM '\"dynquery\": 1'; RETURN NEW; END $$",
        )
        .expect("parsed");
        assert!(!found.dynamic);
        let queries: Vec<&str> = found.queries.iter().map(|(q, _)| q.as_str()).collect();
        assert_eq!(queries, ["1", "NEW.x := n", "SELECT '\"dynquery\": 1'"]);
    }
}
