//! What classification finds out about a statement: the facts rules match.

use super::kind::Kind;
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

/// A possibly schema-qualified name (relation or function), as PostgreSQL's
/// parser left it: folded to lower case unless it was quoted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualName {
    /// The schema, when the statement wrote one.
    pub schema: Option<String>,
    /// The object's own name.
    pub name: String,
}

impl QualName {
    /// An unqualified name.
    pub fn bare(name: &str) -> Self {
        Self {
            schema: None,
            name: name.to_owned(),
        }
    }

    /// `schema.name`, or `name` alone.
    pub fn qualified(schema: &str, name: &str) -> Self {
        Self {
            schema: (!schema.is_empty()).then(|| schema.to_owned()),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for QualName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One thing a statement does: the statement itself, or a statement nested
/// in it (a data-modifying CTE, the target of EXPLAIN or PREPARE, a CREATE
/// RULE action, a statement in an SQL function body). Rules judge each unit;
/// the strictest verdict wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The statement kind.
    pub kind: Kind,
    /// Every relation the unit names (read or written); CTE references left out.
    pub relations: BTreeSet<QualName>,
    /// The relations it writes, creates, alters or drops.
    pub writes: BTreeSet<QualName>,
    /// Functions it calls by name.
    pub functions: BTreeSet<QualName>,
    /// An UPDATE or DELETE without a WHERE clause.
    pub unbounded_write: bool,
    /// For SET / RESET / SHOW: the setting's name.
    pub setting: Option<String>,
    /// Operators it uses, by name (`=`, `public.~>>`), including those a
    /// construct uses implicitly by name (`IN`, `BETWEEN`, `CASE x WHEN`,
    /// `JOIN ... USING`): resolved against the catalog's user-defined ones.
    pub operators: BTreeSet<QualName>,
    /// Types it casts to (`::t`, `CAST(x AS t)`): user-defined casts to
    /// them run their functions.
    pub casts: BTreeSet<QualName>,
    /// Where the unit comes from when it is not in the statement's text
    /// (`in the body of function public.f called by this statement`):
    /// called code found through the catalog (see `policy::called`).
    pub origin: Option<std::sync::Arc<str>>,
}

impl Unit {
    /// A unit of `kind` with no facts yet.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            relations: BTreeSet::new(),
            writes: BTreeSet::new(),
            functions: BTreeSet::new(),
            unbounded_write: false,
            setting: None,
            operators: BTreeSet::new(),
            casts: BTreeSet::new(),
            origin: None,
        }
    }

    /// Records a relation the unit writes.
    pub fn write(&mut self, name: QualName) {
        self.relations.insert(name.clone());
        self.writes.insert(name);
    }
}

/// What a statement does to the session's SQL-level prepared statements,
/// which pgward follows so that EXECUTE inherits PREPARE's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `PREPARE name AS ...`: the prepared statement's own units.
    Prepare {
        /// Statement name.
        name: String,
        /// What executing it does.
        units: Arc<Vec<Unit>>,
    },
    /// `EXECUTE name`.
    Execute(String),
    /// `DEALLOCATE name`, or `DEALLOCATE ALL` (`None`).
    Deallocate(Option<String>),
    /// `DISCARD ALL`: forgets every prepared statement (and temp table).
    DiscardAll,
    /// `CREATE TEMP TABLE name` (not ON COMMIT DROP), or a table created in
    /// `pg_temp`: the session's own, once the server has created it.
    CreateTemp(String),
    /// A table name that may no longer be one of the session's temporary
    /// tables (DROP TABLE, ALTER TABLE ... RENAME).
    ForgetTemp(String),
    /// `DISCARD TEMP`: forget every temp table.
    ForgetAllTemp,
    /// SET / RESET / set_config of `search_path` (or RESET ALL): a bare name
    /// may now resolve elsewhere than `pg_temp`, so the session's bare temp
    /// table names stop counting as its own for the rest of the session.
    SearchPathChanged,
    /// ROLLBACK, ROLLBACK TO SAVEPOINT, PREPARE TRANSACTION: temporary
    /// tables created in the open transaction may be gone.
    Rollback,
}

/// One top-level statement of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Its byte range in the message text.
    pub range: Range<usize>,
    /// The statement's own unit first, then nested ones.
    pub units: Vec<Unit>,
    /// Its effects on prepared statements, in order.
    pub effects: Vec<Effect>,
    /// Whether any of its facts was read from the value of a literal (the
    /// setting `set_config` names, a COPY file name, a function body). Its
    /// verdict may then differ from that of a statement with the same tokens
    /// and other literals, so it is never cached by shape. Where literals
    /// sit is a matter of the tree's shape, and the tree's shape one of the
    /// tokens', so a statement that reads none shares its shape only with
    /// statements that read none either: their facts are equal.
    pub reads_literals: bool,
    /// Whether any of its facts depends on the session (its own temporary
    /// tables, its own process id): then its verdict is never cached.
    pub reads_session: bool,
    /// Whether it holds `$n` parameters and reads values: its verdict
    /// (judged with every parameter unknown, the worst) may be milder with
    /// the values a Bind brings (see [`crate::policy::Policy::judge_bound`]).
    pub reads_params: bool,
}
