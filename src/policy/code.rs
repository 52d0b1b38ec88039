//! Code a statement makes the server run later without naming it in a
//! call: the functions behind an operator, aggregate, cast, trigger, type,
//! language or foreign-data wrapper; functions in native languages; and
//! foreign tables that read a program or a server file (file_fdw's
//! `program` / `filename`, which are COPY ... PROGRAM / FROM 'file' under
//! another name). Creating such objects over a function a rule denies is
//! judged as calling it; the rest become units the built-in rules refuse.

use super::classify::{inner, int_field, qual_name, str_field};
use super::facts::{QualName, Unit};
use super::kind::Kind;
use pg_query::protobuf::ObjectType;
use serde_json::Value;

/// DefElem names whose argument names a function (CREATE OPERATOR,
/// AGGREGATE, TYPE, ALTER OPERATOR, foreign-data wrappers).
const FUNCTION_OPTIONS: &[&str] = &[
    "function",
    "procedure",
    "sfunc",
    "finalfunc",
    "combinefunc",
    "serialfunc",
    "deserialfunc",
    "msfunc",
    "minvfunc",
    "mfinalfunc",
    "restrict",
    "join",
    "input",
    "output",
    "receive",
    "send",
    "typmod_in",
    "typmod_out",
    "analyze",
    "subscript",
    "canonical",
    "subtype_diff",
    "handler",
    "validator",
];

/// Statement fields that name a function as a dotted name list.
const FUNCTION_FIELDS: &[&str] = &[
    "funcname",
    "func_name",
    "plhandler",
    "plinline",
    "plvalidator",
    "handler_name",
];

/// Languages whose functions are native code: the body names a symbol in
/// the server or in a shared library (`LANGUAGE internal AS
/// 'pg_read_file_all'` is pg_read_file under another name).
const NATIVE_LANGUAGES: &[&str] = &["internal", "c"];

/// Functions a definition statement `name` makes the server run later.
pub(super) fn referenced_functions(name: &str, body: &Value) -> Vec<QualName> {
    let mut found = Vec::new();
    match name {
        "DefineStmt" | "AlterOperatorStmt" | "CreateFdwStmt" | "AlterFdwStmt" => {
            for field in ["definition", "options", "func_options"] {
                for option in list(body.get(field)) {
                    let def = inner(option);
                    if FUNCTION_OPTIONS.contains(&str_field(def, "defname")) {
                        if let Some(f) = function_name(def.get("arg")) {
                            found.push(f);
                        }
                    }
                }
            }
        }
        "CreateCastStmt" | "CreateTransformStmt" => {
            for field in ["func", "fromsql", "tosql"] {
                if let Some(f) = body.get(field).filter(|v| v.is_object()) {
                    found.push(qual_name(f.get("objname")));
                }
            }
        }
        "CreateOpClassStmt" | "AlterOpFamilyStmt" => {
            for item in list(body.get("items")) {
                if let Some(f) = inner(item).get("name").filter(|v| v.is_object()) {
                    found.push(qual_name(f.get("objname")));
                }
            }
        }
        "CreateTrigStmt"
        | "CreateEventTrigStmt"
        | "CreateConversionStmt"
        | "CreatePlangStmt"
        | "CreateAmStmt" => {
            for field in FUNCTION_FIELDS {
                if body
                    .get(*field)
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
                {
                    found.push(qual_name(body.get(*field)));
                }
            }
        }
        _ => {}
    }
    found.retain(|f| !f.name.is_empty());
    found
}

/// A function or type renamed or moved to another schema: a statement
/// later in the same message or transaction may call it by its new name,
/// which the code catalog (read before, or outside the transaction) does
/// not know yet. So the move is judged as calling the function (or casting
/// to the type) now.
pub(super) fn moved_code(name: &str, body: &Value, unit: &mut Unit) {
    let field = match name {
        "RenameStmt" => "rename_type",
        "AlterObjectSchemaStmt" => "object_type",
        _ => return,
    };
    let object = body.get("object").map(inner);
    let names = object.and_then(|o| o.get("objname").or_else(|| o.get("items")));
    let moved = qual_name(names);
    if moved.name.is_empty() {
        return;
    }
    let kind = ObjectType::try_from(int_field(body, field) as i32).ok();
    match kind {
        Some(
            ObjectType::ObjectFunction
            | ObjectType::ObjectProcedure
            | ObjectType::ObjectRoutine
            | ObjectType::ObjectAggregate,
        ) => {
            unit.functions.insert(moved);
        }
        Some(ObjectType::ObjectType | ObjectType::ObjectDomain) => {
            unit.casts.insert(moved);
        }
        _ => {}
    }
}

/// Whether a CREATE FUNCTION / PROCEDURE body is native code.
pub(super) fn native_language(body: &Value) -> bool {
    list(body.get("options")).iter().any(|option| {
        let def = inner(option);
        str_field(def, "defname") == "language"
            && def.get("arg").is_some_and(|a| {
                let language = str_field(inner(a), "sval").to_ascii_lowercase();
                NATIVE_LANGUAGES.contains(&language.as_str())
            })
    })
}

/// For a foreign table or its options, the COPY it amounts to: a
/// `program` option runs a command, a `filename` option reads a server file.
pub(super) fn foreign_copy(name: &str, body: &Value) -> Option<Unit> {
    let mut options: Vec<&Value> = Vec::new();
    match name {
        "CreateForeignTableStmt"
        | "CreateForeignServerStmt"
        | "AlterForeignServerStmt"
        | "CreateUserMappingStmt"
        | "AlterUserMappingStmt"
        | "CreateFdwStmt"
        | "AlterFdwStmt"
        | "ImportForeignSchemaStmt" => options.extend(list(body.get("options"))),
        // ALTER FOREIGN TABLE ... OPTIONS (...), ALTER COLUMN ... OPTIONS.
        "AlterTableStmt" => {
            for cmd in list(body.get("cmds")) {
                if let Some(def) = inner(cmd).get("def") {
                    options.extend(list(inner(def).get("items")));
                }
            }
        }
        _ => {}
    }
    let names: Vec<&str> = options
        .iter()
        .map(|o| str_field(inner(o), "defname"))
        .collect();
    if names.contains(&"program") {
        Some(Unit::new(Kind::CopyFromProgram))
    } else if names.contains(&"filename") {
        Some(Unit::new(Kind::CopyFromFile))
    } else {
        None
    }
}

/// A function named as a DefElem argument: a type-name list or a string.
fn function_name(arg: Option<&Value>) -> Option<QualName> {
    let arg = arg?.get("node").unwrap_or(arg?);
    if let Some(t) = arg.get("TypeName") {
        return Some(qual_name(t.get("names")));
    }
    if let Some(l) = arg.get("List") {
        return Some(qual_name(l.get("items")));
    }
    arg.get("String")
        .map(|s| QualName::bare(str_field(s, "sval")))
}

fn list(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}
