//! The walk misses no statement: the node types and their typed fields are
//! read from libpg_query's own protobuf definitions (through the generated
//! `pg_query::protobuf` types: every `Node` variant is decoded from its
//! oneof tag, and every message-typed field is found by decoding an empty
//! sub-message into it), not from a hand-written list.

use super::{kind_of, single_entry, Env, Walker, FOLDED, TYPED_STATEMENTS};
use crate::policy::kind::Kind;
use crate::policy::lexer::LexSettings;
use pg_query::protobuf::Node;
use prost::Message;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
fn field(tag: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(tag) << 3 | 2, &mut out);
    varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// The node type with oneof tag `tag`, its body decoded from `body`, in the
/// serde form the walker reads.
fn node(tag: u32, body: &[u8]) -> Option<(String, Map<String, Value>)> {
    let decoded = Node::decode(field(tag, body).as_slice()).ok()?;
    let json = serde_json::to_value(&decoded).ok()?;
    let (name, body) = single_entry(json.get("node")?)?;
    Some((name.to_owned(), body.as_object()?.clone()))
}

/// Every node type: name -> (oneof tag, default body).
fn node_types() -> BTreeMap<String, (u32, Map<String, Value>)> {
    (1..1024)
        .filter_map(|tag| node(tag, &[]).map(|(name, body)| (name, (tag, body))))
        .collect()
}

/// Every message-typed field that is not a `Node`: (node, field) -> the
/// names of the node types whose fields match what decoded into it.
fn typed_fields() -> BTreeMap<(String, String), BTreeSet<String>> {
    let types = node_types();
    let shape = |m: &Map<String, Value>| m.keys().cloned().collect::<BTreeSet<_>>();
    let mut found = BTreeMap::new();
    for (name, (tag, default)) in &types {
        for field_tag in 1..64 {
            let Some((_, body)) = node(*tag, &field(field_tag, &[])) else {
                continue;
            };
            for (f, value) in &body {
                if default.get(f) == Some(value) {
                    continue;
                }
                // A typed message decodes to its fields (a Node to a
                // `{"node": ...}` wrapper); a repeated one to a list of them.
                let sub = match value {
                    Value::Object(m) => Some(m),
                    Value::Array(items) => items.first().and_then(Value::as_object),
                    _ => None,
                };
                let Some(sub) = sub.filter(|m| !m.contains_key("node")) else {
                    continue;
                };
                let candidates: BTreeSet<String> = types
                    .iter()
                    .filter(|(_, (_, d))| shape(d) == shape(sub))
                    .map(|(n, _)| n.clone())
                    .collect();
                found.insert((name.clone(), f.clone()), candidates);
            }
        }
    }
    found
}

#[test]
fn the_node_types_are_read_from_libpg_query() {
    let types = node_types();
    assert!(types.len() > 250, "{} node types", types.len());
    for known in [
        "SelectStmt",
        "VariableSetStmt",
        "AlterRoleSetStmt",
        "RangeVar",
    ] {
        assert!(types.contains_key(known), "{known}");
    }
    let typed = typed_fields();
    assert!(
        typed.get(&("SelectStmt".into(), "with_clause".into()))
            == Some(&BTreeSet::from(["WithClause".to_owned()])),
        "{typed:?}"
    );
}

#[test]
fn typed_statement_fields_are_all_walked() {
    let derived: BTreeSet<(String, String, String)> = typed_fields()
        .into_iter()
        .flat_map(|((node, field), types)| {
            types
                .into_iter()
                .filter(|t| t.ends_with("Stmt") && !FOLDED.contains(&t.as_str()))
                .map(move |t| (node.clone(), field.clone(), t))
        })
        // JsonTablePath (a planner node, never in a raw parse tree, and not
        // a Node variant) has the very fields of VariableShowStmt, which no
        // wire-level probe can tell apart.
        .filter(|(node, field, _)| (node.as_str(), field.as_str()) != ("JsonTablePathScan", "path"))
        .collect();
    let listed: BTreeSet<(String, String, String)> = TYPED_STATEMENTS
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect();
    assert_eq!(
        derived, listed,
        "fields that hold a statement as a typed message: walk each (TYPED_STATEMENTS)"
    );
    // And each is walked: a role switch put in it is found.
    let types = node_types();
    for (parent, field, statement) in TYPED_STATEMENTS {
        let mut inner = types[*statement].1.clone();
        if *statement == "VariableSetStmt" {
            inner.insert("name".into(), Value::from("role"));
        }
        let mut body = types[*parent].1.clone();
        body.insert((*field).into(), Value::Object(inner.clone()));
        let units = Walker::new(Env::new(LexSettings::default()))
            .statement_named(parent, &Value::Object(body))
            .expect("walk");
        let expected = kind_of(statement, &Value::Object(inner));
        if *statement == "VariableSetStmt" {
            assert_eq!(expected, Kind::SetRole);
        }
        assert!(
            units[1..].iter().any(|u| u.kind == expected),
            "{parent}.{field}: {units:?}"
        );
    }
}

#[test]
fn every_statement_type_nested_in_a_node_is_a_unit_of_its_own() {
    for (name, (_, default)) in node_types() {
        if !name.ends_with("Stmt") || FOLDED.contains(&name.as_str()) {
            continue;
        }
        // Nested where any Node may go: a CREATE SCHEMA's elements.
        let tree = serde_json::json!({
            "schemaname": "s",
            "schema_elts": [{ "node": { name.clone(): default.clone() } }],
        });
        let units = Walker::new(Env::new(LexSettings::default()))
            .statement_named("CreateSchemaStmt", &tree)
            .expect("walk");
        let expected = kind_of(&name, &Value::Object(default));
        assert!(
            units.len() >= 2 && units[1].kind == expected,
            "{name}: {units:?}"
        );
    }
}
