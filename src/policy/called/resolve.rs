//! Resolution: from a statement's units to the code they run, recursively,
//! each body judged once per catalog generation.

use super::catalog::{Body, CodeCatalog, CodeRef, Function, Judged, Language, When};
use crate::policy::classify::{classify_in, Env};
use crate::policy::facts::{QualName, Unit};
use crate::policy::kind::Kind;
use crate::policy::lexer::LexSettings;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

/// Most function levels followed (a function calling a function ...);
/// code deeper than this is opaque.
pub(super) const MAX_DEPTH: usize = 8;
/// Most pieces of code one statement's resolution visits; past it the rest
/// is opaque (a hostile catalog cannot make a statement's judgement
/// unbounded).
pub(super) const MAX_VISITS: usize = 2048;

/// The units of the code `units` run (not `units` themselves), found in
/// `catalog` and judged for a server of major version `major`.
pub(crate) fn resolve(catalog: &CodeCatalog, units: &[Unit], major: u32) -> Vec<Unit> {
    if catalog.is_empty() {
        return Vec::new();
    }
    let mut r = Resolver {
        catalog,
        major,
        visited: HashSet::new(),
        visits: 0,
        out: Vec::new(),
    };
    let top: Arc<str> = Arc::from("this statement");
    if units.iter().any(|u| evaluates_expressions(u.kind)) {
        for &i in &catalog.implicit_casts {
            let cast = &catalog.parts.casts[i];
            let via = format!(
                "function {} of the implicit cast from {} to {}.{}, which this statement may apply",
                cast.function.qual_name(),
                cast.source,
                cast.target_schema,
                cast.target
            );
            r.code(&cast.function, 0, via.into());
        }
    }
    for unit in units {
        r.unit(unit, 0, &top);
    }
    r.out
}

struct Resolver<'a> {
    catalog: &'a CodeCatalog,
    major: u32,
    /// Functions (by OID) and defaults (by index) already followed.
    visited: HashSet<Body>,
    visits: usize,
    out: Vec<Unit>,
}

/// Statement kinds whose running evaluates expressions (where an implicit
/// cast may apply).
fn evaluates_expressions(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Select
            | Kind::Insert
            | Kind::Update
            | Kind::Delete
            | Kind::Merge
            | Kind::Call
            | Kind::CopyFrom
            | Kind::CopyFromFile
            | Kind::CopyFromProgram
            | Kind::CopyTo
            | Kind::CopyToFile
            | Kind::CopyToProgram
            | Kind::CreateTableAs
            | Kind::CreateMaterializedView
            | Kind::RefreshMaterializedView
            | Kind::DeclareCursor
            | Kind::Explain
    )
}

/// Kinds that fire the triggers of the tables they write, and those that
/// move a table (a later statement of the same transaction writes it under
/// a name the catalog does not know yet: its triggers are judged now).
fn fires_triggers(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::RenameTable
            | Kind::AlterOther
            | Kind::Insert
            | Kind::Update
            | Kind::Delete
            | Kind::Merge
            | Kind::Truncate
            | Kind::CopyFrom
            | Kind::CopyFromFile
            | Kind::CopyFromProgram
    )
}

/// Kinds that fill column defaults or compute generated columns.
fn fills_defaults(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Insert
            | Kind::Update
            | Kind::Merge
            | Kind::CopyFrom
            | Kind::CopyFromFile
            | Kind::CopyFromProgram
    )
}

impl Resolver<'_> {
    /// Follows what `unit` (reached through `by`) runs.
    fn unit(&mut self, unit: &Unit, depth: usize, by: &Arc<str>) {
        let catalog = self.catalog;
        for name in &unit.functions {
            for f in catalog.functions_named(name) {
                let via = format!("function {} called by {by}", f.code.qual_name());
                self.function(f, depth, via.into());
            }
            // `mood(x)` is a cast to mood when no function has that name.
            self.casts(name, depth, by);
        }
        for name in &unit.operators {
            for op in catalog.operators_named(name) {
                for code in &op.functions {
                    let via = format!(
                        "function {} behind operator {}.{} used by {by}",
                        code.qual_name(),
                        op.schema,
                        op.name
                    );
                    self.code(code, depth, via.into());
                }
            }
        }
        for name in &unit.casts {
            self.casts(name, depth, by);
        }
        let writes = fires_triggers(unit.kind);
        for relation in &unit.relations {
            let written = writes && unit.writes.contains(relation);
            for (i, code) in catalog.relation_code_of(relation) {
                if code.when == When::Written && !written {
                    continue;
                }
                let verb = if written { "writes" } else { "reads" };
                let via = || {
                    format!(
                        "{} of {}.{}, which {by} {verb}",
                        code.what, code.schema, code.table
                    )
                };
                // Writing a view writes the relations its query reads
                // (an automatically updatable view): their triggers,
                // defaults and rules run too.
                let through = (written && code.when == When::Named).then_some(unit.kind);
                self.expression(Body::Relation(i), depth, via, &code.sql, through);
            }
        }
        if !writes {
            return;
        }
        for table in &unit.writes {
            for t in catalog.triggers_on(table) {
                let via = format!(
                    "function {} of trigger {} on {}.{}, which {by} writes",
                    t.function.qual_name(),
                    t.name,
                    t.schema,
                    t.table
                );
                self.code(&t.function, depth, via.into());
            }
            if !fills_defaults(unit.kind) {
                continue;
            }
            for (i, d) in catalog.defaults_of(table) {
                let via = || {
                    format!(
                        "the default of column {}.{}.{}, which {by} fills",
                        d.schema, d.table, d.column
                    )
                };
                let sql = format!("SELECT {}", d.expression);
                self.expression(Body::Default(i), depth, via, &sql, None);
            }
        }
    }

    /// Code attached to a relation (`sql`: a statement to judge, a CREATE
    /// RULE whose own unit keeps only what runs), reached through `via`;
    /// with `write`, a view's query through which a statement of that kind
    /// writes the relations the query reads.
    fn expression(
        &mut self,
        body: Body,
        depth: usize,
        via: impl FnOnce() -> String,
        sql: &str,
        write: Option<Kind>,
    ) {
        if !self.visit(body) {
            return;
        }
        let via: Arc<str> = via().into();
        let major = self.major;
        let judged = self.catalog.judged(body, major, || {
            without_head(judge_text(sql, major), Kind::CreateRule)
        });
        self.judged(&judged, depth, &via, &format!("in {via}"));
        if let (Some(kind), Some(query)) = (write, judged.units.first()) {
            let mut base = Unit::new(kind);
            query.relations.iter().for_each(|r| base.write(r.clone()));
            let by: Arc<str> = format!("a write through {via}").into();
            self.unit(&base, depth + 1, &by);
        }
    }

    /// The casts to a type `name` may name.
    fn casts(&mut self, name: &QualName, depth: usize, by: &Arc<str>) {
        for cast in self.catalog.casts_to(name) {
            let via = format!(
                "function {} of the cast from {} to {}.{} in {by}",
                cast.function.qual_name(),
                cast.source,
                cast.target_schema,
                cast.target
            );
            self.code(&cast.function, depth, via.into());
        }
    }

    /// Whether `body` is seen for the first time (and may be followed).
    fn visit(&mut self, body: Body) -> bool {
        self.visited.insert(body)
    }

    /// A function a catalog object runs: a user function is followed, a
    /// built-in one is named, so the rules that name built-ins match it.
    fn code(&mut self, code: &CodeRef, depth: usize, via: Arc<str>) {
        match self.catalog.function(code.oid) {
            Some(f) => self.function(f, depth, via),
            None => {
                let mut unit = Unit::new(Kind::Select);
                unit.functions.insert(code.qual_name());
                unit.origin = Some(via);
                self.out.push(unit);
            }
        }
    }

    fn function(&mut self, f: &Function, depth: usize, via: Arc<str>) {
        if !self.visit(Body::Function(f.code.oid)) {
            return;
        }
        self.visits += 1;
        if depth >= MAX_DEPTH || self.visits > MAX_VISITS {
            self.opaque(f, &via, "called code nests too deeply for pgward to follow");
            return;
        }
        if f.kind == 'a' {
            for support in &f.support {
                let inner = format!(
                    "function {}, a support function of aggregate {via}",
                    support.qual_name()
                );
                self.code(support, depth + 1, inner.into());
            }
            return;
        }
        let definition = match (&f.language, &f.definition) {
            (Language::Sql | Language::Plpgsql, Some(d)) => d,
            (Language::Other(language), _) => {
                let why = format!("it is in LANGUAGE {language}, which pgward cannot see into");
                self.opaque(f, &via, &why);
                return;
            }
            _ => {
                self.opaque(f, &via, "its definition could not be read");
                return;
            }
        };
        let major = self.major;
        let judged = self.catalog.judged(Body::Function(f.code.oid), major, || {
            judge_definition(definition, major)
        });
        self.judged(&judged, depth, &via, &format!("in the body of {via}"));
    }

    /// Adds the units of a judged body, reached through `via`, and follows
    /// the code they run in turn.
    fn judged(&mut self, judged: &Judged, depth: usize, via: &Arc<str>, origin: &str) {
        let origin: Arc<str> = Arc::from(origin);
        if let Some(why) = &judged.unjudgeable {
            let mut unit = Unit::new(Kind::OpaqueCode);
            unit.origin = Some(format!("{via}: {why}").into());
            self.out.push(unit);
        }
        for unit in &judged.units {
            let mut unit = unit.clone();
            unit.origin = Some(Arc::clone(&origin));
            self.unit(&unit, depth + 1, via);
            self.out.push(unit);
        }
    }

    fn opaque(&mut self, f: &Function, via: &str, why: &str) {
        let mut unit = Unit::new(Kind::OpaqueCode);
        // Named, so a rule of the configuration can allow chosen ones.
        unit.functions.insert(f.code.qual_name());
        unit.origin = Some(format!("{via}: {why}").into());
        self.out.push(unit);
    }
}

static NO_TABLES: BTreeSet<String> = BTreeSet::new();

/// Units of `sql` judged as a statement of a session pgward knows nothing
/// about (the body runs under the function's settings, not the caller's:
/// no temporary table counts as the caller's own).
fn judge_text(sql: &str, major: u32) -> Judged {
    let env = Env {
        settings: LexSettings {
            standard_conforming_strings: true,
        },
        own_pid: None,
        own_temp_tables: &NO_TABLES,
        server_major: major,
    };
    match classify_in(sql, &env) {
        Ok(statements) => Judged {
            units: statements.into_iter().flat_map(|s| s.units).collect(),
            unjudgeable: None,
        },
        Err(e) => Judged {
            units: Vec::new(),
            unjudgeable: Some(format!("it cannot be judged ({e})")),
        },
    }
}

/// A CREATE FUNCTION statement (`pg_get_functiondef`) judged as a body: the
/// units of what it runs (the CREATE's own unit keeps only the calls in its
/// parameters' defaults, which run at each call too). SQL bodies are read
/// under both settings of standard_conforming_strings when they hold a
/// backslash, PL/pgSQL through libpg_query's PL/pgSQL parser, as at CREATE.
fn judge_definition(definition: &str, major: u32) -> Judged {
    without_head(judge_text(definition, major), Kind::CreateFunction)
}

/// `judged` with its first unit, when of kind `head` (the CREATE that
/// holds the code), reduced to what it reads and calls when it runs (a
/// function's parameter defaults; a rule's condition, and a view's query,
/// which the walk folds into the CREATE RULE's own unit).
fn without_head(mut judged: Judged, head_kind: Kind) -> Judged {
    if let Some(head) = judged.units.first_mut() {
        if head.kind == head_kind {
            let mut calls = Unit::new(Kind::Select);
            calls.relations = std::mem::take(&mut head.relations);
            calls.functions = std::mem::take(&mut head.functions);
            calls.operators = std::mem::take(&mut head.operators);
            calls.casts = std::mem::take(&mut head.casts);
            *head = calls;
        }
    }
    judged
}
