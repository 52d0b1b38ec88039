//! Reads one database's user-defined code ([`CatalogParts`]) over a
//! metadata connection of pgward's own: functions (with the definitions of
//! SQL and PL/pgSQL ones), aggregates' support functions, operators, casts,
//! triggers and column defaults. Only what is not the server's own: objects
//! outside pg_catalog and information_schema, or inside them with OIDs from
//! 16384 (FirstNormalObjectId) on.

use crate::io::FramedStream;
use crate::policy::called::{
    Cast, CatalogParts, CodeRef, ColumnDefault, Function, Language, Operator, RelationCode,
    Trigger, When,
};
use crate::upstream::query::{query, query_nullable, CatalogError};
use std::collections::{BTreeMap, HashMap};

/// Whether the object with OID `oid` in schema `n.nspname` is user code.
macro_rules! user {
    ($oid:literal) => {
        concat!(
            "(n.nspname NOT IN ('pg_catalog', 'information_schema') OR ",
            $oid,
            " >= 16384)"
        )
    };
}

const FUNCTIONS_SQL: &str = concat!(
    "SELECT p.oid, n.nspname, p.proname, p.prokind, l.lanname, \
     CASE WHEN l.lanname IN ('sql', 'plpgsql') AND p.prokind IN ('f', 'p') \
     THEN pg_catalog.pg_get_functiondef(p.oid) END \
     FROM pg_catalog.pg_proc p \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     JOIN pg_catalog.pg_language l ON l.oid = p.prolang WHERE ",
    user!("p.oid")
);

const AGGREGATES_SQL: &str = concat!(
    "SELECT a.aggfnoid::pg_catalog.oid, f.oid, fn.nspname, f.proname \
     FROM pg_catalog.pg_aggregate a \
     JOIN pg_catalog.pg_proc p ON p.oid = a.aggfnoid \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     CROSS JOIN LATERAL (VALUES (a.aggtransfn::pg_catalog.oid), (a.aggfinalfn::pg_catalog.oid), \
     (a.aggcombinefn::pg_catalog.oid), (a.aggserialfn::pg_catalog.oid), \
     (a.aggdeserialfn::pg_catalog.oid), (a.aggmtransfn::pg_catalog.oid), \
     (a.aggminvtransfn::pg_catalog.oid), (a.aggmfinalfn::pg_catalog.oid)) AS x(fn) \
     JOIN pg_catalog.pg_proc f ON f.oid = x.fn \
     JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace WHERE ",
    user!("p.oid")
);

const OPERATORS_SQL: &str = concat!(
    "SELECT n.nspname, o.oprname, f.oid, fn.nspname, f.proname \
     FROM pg_catalog.pg_operator o \
     JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
     CROSS JOIN LATERAL (VALUES (o.oprcode::pg_catalog.oid), (o.oprrest::pg_catalog.oid), \
     (o.oprjoin::pg_catalog.oid)) AS x(fn) \
     JOIN pg_catalog.pg_proc f ON f.oid = x.fn \
     JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace WHERE ",
    user!("o.oid")
);

/// Casts with a function made after initdb, under their target type's name
/// and under the name of every domain over it (a cast to a domain runs the
/// cast to its base type).
const CASTS_SQL: &str = "SELECT st.typname, tn.nspname, tt.typname, c.castcontext, \
     f.oid, fn.nspname, f.proname \
     FROM pg_catalog.pg_cast c \
     JOIN pg_catalog.pg_type st ON st.oid = c.castsource \
     JOIN pg_catalog.pg_type t ON t.oid = c.casttarget \
     JOIN pg_catalog.pg_type tt ON tt.oid = t.oid \
       OR (tt.typtype = 'd' AND tt.typbasetype = t.oid) \
     JOIN pg_catalog.pg_namespace tn ON tn.oid = tt.typnamespace \
     JOIN pg_catalog.pg_proc f ON f.oid = c.castfunc \
     JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace \
     WHERE c.oid >= 16384";

/// User triggers under the name of their table and of every table a write
/// reaches it from: inheritance parents (and partitioned tables), and
/// tables whose deletes or updates a foreign key cascades to it.
const TRIGGERS_SQL: &str = "WITH RECURSIVE reach(rel, tgname, fn, target) AS ( \
       SELECT t.tgrelid, t.tgname, t.tgfoid, t.tgrelid FROM pg_catalog.pg_trigger t \
       WHERE NOT t.tgisinternal \
       UNION \
       SELECT r.rel, r.tgname, r.fn, e.parent FROM reach r JOIN ( \
         SELECT i.inhrelid AS child, i.inhparent AS parent FROM pg_catalog.pg_inherits i \
         UNION ALL \
         SELECT k.conrelid, k.confrelid FROM pg_catalog.pg_constraint k WHERE k.contype = 'f' \
         AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd')) \
       ) e ON e.child = r.target) \
     SELECT n.nspname, c.relname, x.tgname, f.oid, fn.nspname, f.proname \
     FROM reach x \
     JOIN pg_catalog.pg_class c ON c.oid = x.target \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_proc f ON f.oid = x.fn \
     JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace";

const DEFAULTS_SQL: &str = "SELECT n.nspname, c.relname, a.attname, \
     pg_catalog.pg_get_expr(d.adbin, d.adrelid) \
     FROM pg_catalog.pg_attrdef d \
     JOIN pg_catalog.pg_class c ON c.oid = d.adrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Rewrite rules (views' queries among them: their `_RETURN` rules) with
/// their event (`1`: SELECT).
const RULES_SQL: &str = "SELECT n.nspname, c.relname, r.rulename, r.ev_type, \
     pg_catalog.pg_get_ruledef(r.oid) \
     FROM pg_catalog.pg_rewrite r \
     JOIN pg_catalog.pg_class c ON c.oid = r.ev_class \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Row-level security policies' expressions.
const POLICIES_SQL: &str = "SELECT n.nspname, c.relname, p.polname, \
     pg_catalog.pg_get_expr(p.polqual, p.polrelid), \
     pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) \
     FROM pg_catalog.pg_policy p \
     JOIN pg_catalog.pg_class c ON c.oid = p.polrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace";

/// CHECK constraints of tables.
const CHECKS_SQL: &str = "SELECT n.nspname, c.relname, k.conname, \
     pg_catalog.pg_get_expr(k.conbin, k.conrelid) \
     FROM pg_catalog.pg_constraint k \
     JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE k.contype = 'c' AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// CHECK constraints of the domains a table's columns are of (directly, as
/// arrays, or through domains over domains), as the table's: writing the
/// column runs them. `pg_get_expr(conbin, 0)` reads them with `VALUE`.
const DOMAIN_CHECKS_SQL: &str = "WITH RECURSIVE doms(top, dom) AS ( \
       SELECT t.oid, t.oid FROM pg_catalog.pg_type t WHERE t.typtype = 'd' \
       UNION SELECT d.top, t.typbasetype FROM doms d \
       JOIN pg_catalog.pg_type t ON t.oid = d.dom WHERE t.typtype = 'd') \
     SELECT DISTINCT n.nspname, c.relname, k.conname, \
     pg_catalog.pg_get_expr(k.conbin, 0) \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_type at ON at.oid = a.atttypid \
     JOIN doms d ON d.top = a.atttypid OR d.top = at.typelem \
     JOIN pg_catalog.pg_constraint k ON k.contypid = d.dom AND k.contype = 'c' \
     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Reads the catalog over `conn` in one snapshot.
pub(crate) async fn load(conn: &mut FramedStream) -> Result<CatalogParts, CatalogError> {
    query(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    // Names in definitions and defaults come out schema-qualified unless in
    // pg_catalog: resolution then matches the exact schema.
    query(conn, "SET LOCAL search_path = pg_catalog").await?;
    let parts = read(conn).await;
    query(conn, "COMMIT").await?;
    parts
}

async fn read(conn: &mut FramedStream) -> Result<CatalogParts, CatalogError> {
    let mut parts = CatalogParts::default();
    for row in query_nullable(conn, FUNCTIONS_SQL).await? {
        let [Some(oid), Some(schema), Some(name), Some(kind), Some(language), definition] =
            row.as_slice()
        else {
            return Err(CatalogError::Malformed("functions"));
        };
        parts.functions.push(Function {
            code: CodeRef {
                oid: number(oid)?,
                schema: schema.clone(),
                name: name.clone(),
            },
            kind: kind.chars().next().unwrap_or('f'),
            language: match language.as_str() {
                "sql" => Language::Sql,
                "plpgsql" => Language::Plpgsql,
                other => Language::Other(other.to_owned()),
            },
            definition: definition.clone(),
            support: Vec::new(),
        });
    }
    let mut support: HashMap<u32, Vec<CodeRef>> = HashMap::new();
    for row in query(conn, AGGREGATES_SQL).await? {
        let [aggregate, rest @ ..] = row.as_slice() else {
            return Err(CatalogError::Malformed("aggregates"));
        };
        support
            .entry(number(aggregate)?)
            .or_default()
            .push(code_ref(rest)?);
    }
    for f in &mut parts.functions {
        f.support = support.remove(&f.code.oid).unwrap_or_default();
    }
    let mut operators: BTreeMap<(String, String), Vec<CodeRef>> = BTreeMap::new();
    for row in query(conn, OPERATORS_SQL).await? {
        let [schema, name, rest @ ..] = row.as_slice() else {
            return Err(CatalogError::Malformed("operators"));
        };
        let functions = operators.entry((schema.clone(), name.clone())).or_default();
        let code = code_ref(rest)?;
        if !functions.contains(&code) {
            functions.push(code);
        }
    }
    parts.operators = operators
        .into_iter()
        .map(|((schema, name), functions)| Operator {
            schema,
            name,
            functions,
        })
        .collect();
    for row in query(conn, CASTS_SQL).await? {
        let [source, target_schema, target, context, rest @ ..] = row.as_slice() else {
            return Err(CatalogError::Malformed("casts"));
        };
        parts.casts.push(Cast {
            source: source.clone(),
            target_schema: target_schema.clone(),
            target: target.clone(),
            context: context.chars().next().unwrap_or('i'),
            function: code_ref(rest)?,
        });
    }
    for row in query(conn, TRIGGERS_SQL).await? {
        let [schema, table, name, rest @ ..] = row.as_slice() else {
            return Err(CatalogError::Malformed("triggers"));
        };
        parts.triggers.push(Trigger {
            schema: schema.clone(),
            table: table.clone(),
            name: name.clone(),
            function: code_ref(rest)?,
        });
    }
    read_relation_code(conn, &mut parts.relation_code).await?;
    for row in query(conn, DEFAULTS_SQL).await? {
        let [schema, table, column, expression] = row.as_slice() else {
            return Err(CatalogError::Malformed("defaults"));
        };
        parts.defaults.push(ColumnDefault {
            schema: schema.clone(),
            table: table.clone(),
            column: column.clone(),
            expression: expression.clone(),
        });
    }
    Ok(parts)
}

async fn read_relation_code(
    conn: &mut FramedStream,
    out: &mut Vec<RelationCode>,
) -> Result<(), CatalogError> {
    let mut add = |schema: &str, table: &str, what: String, when: When, sql: String| {
        out.push(RelationCode {
            schema: schema.to_owned(),
            table: table.to_owned(),
            what,
            when,
            sql,
        });
    };
    for row in query(conn, RULES_SQL).await? {
        let [schema, table, name, event, definition] = row.as_slice() else {
            return Err(CatalogError::Malformed("rules"));
        };
        let (what, when) = match event.as_str() {
            "1" => ("the query".to_owned(), When::Named),
            _ => (format!("rule {name}"), When::Written),
        };
        add(schema, table, what, when, definition.clone());
    }
    for row in query_nullable(conn, POLICIES_SQL).await? {
        let [Some(schema), Some(table), Some(name), qual, check] = row.as_slice() else {
            return Err(CatalogError::Malformed("policies"));
        };
        let expressions: Vec<&str> = [qual, check]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !expressions.is_empty() {
            let sql = format!("SELECT {}", expressions.join(", "));
            add(schema, table, format!("policy {name}"), When::Named, sql);
        }
    }
    for (rows, what) in [
        (query(conn, CHECKS_SQL).await?, "check constraint"),
        (
            query(conn, DOMAIN_CHECKS_SQL).await?,
            "domain check constraint",
        ),
    ] {
        for row in rows {
            let [schema, table, name, expression] = row.as_slice() else {
                return Err(CatalogError::Malformed("checks"));
            };
            let sql = format!("SELECT {expression}");
            add(schema, table, format!("{what} {name}"), When::Written, sql);
        }
    }
    Ok(())
}

/// `oid, schema, name` of a function.
fn code_ref(cells: &[String]) -> Result<CodeRef, CatalogError> {
    let [oid, schema, name] = cells else {
        return Err(CatalogError::Malformed("function reference"));
    };
    Ok(CodeRef {
        oid: number(oid)?,
        schema: schema.clone(),
        name: name.clone(),
    })
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, CatalogError> {
    text.parse().map_err(|_| CatalogError::Malformed("number"))
}
