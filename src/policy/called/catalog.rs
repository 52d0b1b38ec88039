//! The user-defined code of one database, as its catalog described it when
//! read: only what is not the server's own, indexed by the names statements
//! use, and the verdict-relevant units of each body once judged.

use super::super::facts::{QualName, Unit};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A function a catalog object runs, by OID, with its name (for rules,
/// which name dangerous built-ins, and for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRef {
    /// `pg_proc.oid`.
    pub oid: u32,
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
}

impl CodeRef {
    /// The function's qualified name.
    pub fn qual_name(&self) -> QualName {
        QualName::qualified(&self.schema, &self.name)
    }
}

/// What a function's body is written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Language {
    /// `LANGUAGE sql`: judged like a statement, under both readings of
    /// standard_conforming_strings when it holds a backslash.
    Sql,
    /// `LANGUAGE plpgsql`: its embedded SQL is judged, dynamic SQL opaque.
    Plpgsql,
    /// Any other language (`internal`, `c`, `plpython3u`, ...): opaque.
    Other(String),
}

/// A user-defined function, procedure or aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Its OID, schema and name.
    pub code: CodeRef,
    /// `pg_proc.prokind`: `f`, `p`, `a` or `w`.
    pub kind: char,
    /// Its language.
    pub language: Language,
    /// `pg_get_functiondef` of SQL and PL/pgSQL functions: a CREATE
    /// FUNCTION statement pgward judges like one sent to it.
    pub definition: Option<String>,
    /// An aggregate's support functions (transition, final, combine,
    /// serial, deserial and the moving-aggregate ones).
    pub support: Vec<CodeRef>,
}

/// A user-defined operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Its schema.
    pub schema: String,
    /// Its symbol.
    pub name: String,
    /// `oprcode`, and the `oprrest` / `oprjoin` estimators the planner runs.
    pub functions: Vec<CodeRef>,
}

/// A cast that runs a function, created after initdb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cast {
    /// The source type's name (for messages).
    pub source: String,
    /// The target type's schema.
    pub target_schema: String,
    /// The target type's name.
    pub target: String,
    /// `pg_cast.castcontext`: `e` (explicit only), `a` or `i`.
    pub context: char,
    /// `castfunc`.
    pub function: CodeRef,
}

/// A user trigger (not a foreign key's internal one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The table's schema.
    pub schema: String,
    /// The table (or view, for INSTEAD OF triggers).
    pub table: String,
    /// The trigger's name.
    pub name: String,
    /// `tgfoid`.
    pub function: CodeRef,
}

/// A column default or generation expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDefault {
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// `pg_get_expr(adbin, adrelid)`.
    pub expression: String,
}

/// When code attached to a relation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Whenever a statement names the relation (a view's query, a
    /// row-level security policy).
    Named,
    /// When a statement writes it (a rewrite rule on INSERT / UPDATE /
    /// DELETE, a CHECK constraint).
    Written,
}

/// Code attached to a relation other than triggers and defaults: rewrite
/// rules (a view's query is its `_RETURN` rule), row-level security
/// policies and CHECK constraints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationCode {
    /// The relation's schema.
    pub schema: String,
    /// The relation.
    pub table: String,
    /// What it is, for messages (`the query` of a view, `rule r`, `policy
    /// p`, `check constraint c`).
    pub what: String,
    /// When it runs.
    pub when: When,
    /// A statement to judge: `pg_get_ruledef` (a CREATE RULE, whose actions
    /// are judged), or `SELECT <expression>`.
    pub sql: String,
}

/// What the loader read, before indexing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogParts {
    /// User functions, procedures and aggregates.
    pub functions: Vec<Function>,
    /// User operators.
    pub operators: Vec<Operator>,
    /// Casts with functions, created after initdb.
    pub casts: Vec<Cast>,
    /// User triggers.
    pub triggers: Vec<Trigger>,
    /// Column defaults and generation expressions.
    pub defaults: Vec<ColumnDefault>,
    /// Rewrite rules, views' queries, policies and CHECK constraints.
    pub relation_code: Vec<RelationCode>,
}

/// Which body a memoized judgement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Body {
    /// A function's, by OID.
    Function(u32),
    /// A column default's, by its index in [`CatalogParts::defaults`].
    Default(usize),
    /// Relation code's, by its index in [`CatalogParts::relation_code`].
    Relation(usize),
}

/// A body judged once: its units, or why it cannot be judged.
#[derive(Debug)]
pub(super) struct Judged {
    pub(super) units: Vec<Unit>,
    pub(super) unjudgeable: Option<String>,
}

/// Most bodies whose judgement is remembered (a catalog holds few user
/// functions that statements call; the bound keeps a hostile one small).
const MEMO_SIZE: usize = 16_384;

/// One database's user-defined code, with the generation verdict caches are
/// keyed by. Shared by every session on that database; replaced whole.
#[derive(Debug)]
pub struct CodeCatalog {
    pub(super) parts: CatalogParts,
    generation: u64,
    functions: HashMap<u32, usize>,
    by_name: HashMap<String, Vec<usize>>,
    operators: HashMap<String, Vec<usize>>,
    casts: HashMap<String, Vec<usize>>,
    pub(super) implicit_casts: Vec<usize>,
    triggers: HashMap<String, Vec<usize>>,
    defaults: HashMap<String, Vec<usize>>,
    relation_code: HashMap<String, Vec<usize>>,
    memo: Mutex<HashMap<(Body, u32), Arc<Judged>>>,
}

/// Generations are unique across every catalog of the process, so a
/// verdict cached for one database's catalog never serves another's.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn index<T>(items: &[T], key: impl Fn(&T) -> &str) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        map.entry(key(item).to_owned()).or_default().push(i);
    }
    map
}

/// Whether an object in `actual` is one a name qualified with `wanted`
/// (or unqualified: any schema) may resolve to. `pg_temp` is every
/// session's temporary schema (`pg_temp_3`), as the catalog lists them.
pub(super) fn schema_matches(wanted: Option<&str>, actual: &str) -> bool {
    match wanted {
        None => true,
        Some("pg_temp") => {
            actual == "pg_temp"
                || actual
                    .strip_prefix("pg_temp_")
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        }
        Some(s) => s == actual,
    }
}

impl CodeCatalog {
    /// Indexes `parts` under a new generation.
    pub fn new(parts: CatalogParts) -> Self {
        let functions = parts
            .functions
            .iter()
            .enumerate()
            .map(|(i, f)| (f.code.oid, i))
            .collect();
        let implicit_casts = parts
            .casts
            .iter()
            .enumerate()
            .filter(|(_, c)| c.context != 'e')
            .map(|(i, _)| i)
            .collect();
        Self {
            by_name: index(&parts.functions, |f| &f.code.name),
            operators: index(&parts.operators, |o| &o.name),
            casts: index(&parts.casts, |c| &c.target),
            triggers: index(&parts.triggers, |t| &t.table),
            defaults: index(&parts.defaults, |d| &d.table),
            relation_code: index(&parts.relation_code, |r| &r.table),
            functions,
            implicit_casts,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            memo: Mutex::new(HashMap::new()),
            parts,
        }
    }

    /// The generation: unique to this catalog value.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What it was built from (a reload that reads the same keeps the old
    /// catalog, and with it the verdicts cached under its generation).
    pub fn parts(&self) -> &CatalogParts {
        &self.parts
    }

    /// The user function with `oid`, if it is one.
    pub(super) fn function(&self, oid: u32) -> Option<&Function> {
        self.functions.get(&oid).map(|&i| &self.parts.functions[i])
    }

    /// Every user function `name` may resolve to.
    pub(super) fn functions_named<'a>(
        &'a self,
        name: &'a QualName,
    ) -> impl Iterator<Item = &'a Function> + 'a {
        matching(&self.by_name, &self.parts.functions, name, |f| {
            &f.code.schema
        })
        .map(|(_, f)| f)
    }

    /// Every user operator `name` may resolve to.
    pub(super) fn operators_named<'a>(
        &'a self,
        name: &'a QualName,
    ) -> impl Iterator<Item = &'a Operator> + 'a {
        matching(&self.operators, &self.parts.operators, name, |o| &o.schema).map(|(_, o)| o)
    }

    /// Every cast with a function to a type `name` may resolve to.
    pub(super) fn casts_to<'a>(
        &'a self,
        name: &'a QualName,
    ) -> impl Iterator<Item = &'a Cast> + 'a {
        matching(&self.casts, &self.parts.casts, name, |c| &c.target_schema).map(|(_, c)| c)
    }

    /// Every trigger on a table `name` may resolve to.
    pub(super) fn triggers_on<'a>(
        &'a self,
        name: &'a QualName,
    ) -> impl Iterator<Item = &'a Trigger> + 'a {
        matching(&self.triggers, &self.parts.triggers, name, |t| &t.schema).map(|(_, t)| t)
    }

    /// Every column default of a table `name` may resolve to, with its
    /// index.
    pub(super) fn defaults_of<'a>(
        &'a self,
        name: &'a QualName,
    ) -> impl Iterator<Item = (usize, &'a ColumnDefault)> + 'a {
        matching(&self.defaults, &self.parts.defaults, name, |d| &d.schema)
    }

    /// Every piece of relation code of a relation `name` may resolve to,
    /// with its index.
    pub(super) fn relation_code_of<'a>(
        &'a self,
        name: &'a QualName,
    ) -> impl Iterator<Item = (usize, &'a RelationCode)> + 'a {
        matching(&self.relation_code, &self.parts.relation_code, name, |r| {
            &r.schema
        })
    }

    /// The judgement of `body` (for a server of major version `major`),
    /// made by `judge` the first time.
    pub(super) fn judged(
        &self,
        body: Body,
        major: u32,
        judge: impl FnOnce() -> Judged,
    ) -> Arc<Judged> {
        if let Some(hit) = self
            .memo
            .lock()
            .ok()
            .and_then(|m| m.get(&(body, major)).cloned())
        {
            return hit;
        }
        let judged = Arc::new(judge());
        if let Ok(mut memo) = self.memo.lock() {
            if memo.len() < MEMO_SIZE {
                memo.insert((body, major), Arc::clone(&judged));
            }
        }
        judged
    }

    /// Whether nothing at all is user-defined (then resolution is skipped).
    pub(super) fn is_empty(&self) -> bool {
        let p = &self.parts;
        p.functions.is_empty()
            && p.operators.is_empty()
            && p.casts.is_empty()
            && p.triggers.is_empty()
            && p.defaults.is_empty()
            && p.relation_code.is_empty()
    }
}

/// The items `index` lists under `name`'s own name whose schema (read by
/// `schema`) `name` may resolve to, with their positions in `items`.
fn matching<'a, T>(
    index: &'a HashMap<String, Vec<usize>>,
    items: &'a [T],
    name: &'a QualName,
    schema: fn(&T) -> &str,
) -> impl Iterator<Item = (usize, &'a T)> + 'a {
    index
        .get(&name.name)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(move |&i| items.get(i).map(|item| (i, item)))
        .filter(move |(_, item)| schema_matches(name.schema.as_deref(), schema(item)))
}
