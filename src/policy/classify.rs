//! Classification: PostgreSQL's own parser (libpg_query) turns a message's
//! text into parse trees, and [`Walker`] turns each tree into the facts rules
//! match ([`Statement`]).
//!
//! The trees are walked generically (every field of every node, through
//! their serde form) rather than through a hand-picked list of fields, so a
//! relation or function call in a place this file never thought of is still
//! found. Only the statement kind and its write targets are read by name.

use super::facts::{Effect, QualName, Statement, Unit};
use super::kind::Kind;
use super::lexer::LexSettings;
use super::params;
use super::parse_error::{capture, SyntaxError};
use super::versions::{self, Newer, GRAMMAR_MAJOR};
use pg_query::protobuf::{ObjectType, TransactionStmtKind, VariableSetKind};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Why a text could not be classified. Rules deny such text (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// PostgreSQL's scanner or parser rejected it.
    #[error("{0}")]
    Syntax(SyntaxError),
    /// It uses syntax newer than the server's version.
    #[error("{0}")]
    NewerSyntax(Newer),
    /// It parsed, but part of it cannot be judged (an SQL function body that
    /// does not parse, a tree too deep to decode).
    #[error("{0}")]
    Unjudgeable(String),
}

/// Parser options matching a session's lexing settings.
fn parser_options(settings: LexSettings) -> pg_query::ParserOptions {
    if settings.standard_conforming_strings {
        pg_query::ParserOptions::DEFAULT
    } else {
        pg_query::ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS
    }
}

/// What classification may know of the session besides the text: facts
/// from the server's reports and from statements pgward allowed earlier.
/// Classification stays pure: the session gathers these and passes them in.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The lexing settings the server will read the text with.
    pub settings: LexSettings,
    /// The session's own backend process id, when known: signalling it
    /// (pg_cancel_backend / pg_terminate_backend) touches no other session.
    pub own_pid: Option<i32>,
    /// Bare names of tables this session created TEMP and that still exist
    /// (see `session::rules`): DROP and TRUNCATE of them are its own business.
    pub own_temp_tables: &'a BTreeSet<String>,
    /// The server's major version: syntax newer than it is refused.
    pub server_major: u32,
}

static NO_TABLES: BTreeSet<String> = BTreeSet::new();

impl Env<'static> {
    /// A session pgward knows nothing about beyond its lexing settings.
    pub fn new(settings: LexSettings) -> Self {
        Self {
            settings,
            own_pid: None,
            own_temp_tables: &NO_TABLES,
            server_major: GRAMMAR_MAJOR,
        }
    }
}

/// Parses `sql` as PostgreSQL would with `settings`, and classifies every
/// statement in it, for a session of which nothing else is known.
pub fn classify(sql: &str, settings: LexSettings) -> Result<Vec<Statement>, ClassifyError> {
    classify_in(sql, &Env::new(settings))
}

/// Parses and classifies `sql` as run in the session `env` describes.
pub fn classify_in(sql: &str, env: &Env<'_>) -> Result<Vec<Statement>, ClassifyError> {
    classify_bound(sql, env, &[])
}

/// Like [`classify_in`], with the parameters of a Bind: `values[n - 1]` is
/// `$n`'s value in UTF-8, as far as it is known.
pub(super) fn classify_bound(
    sql: &str,
    env: &Env<'_>,
    values: &[params::Bound],
) -> Result<Vec<Statement>, ClassifyError> {
    let parsed = parse(sql, env.settings)?;
    let mut statements = Vec::with_capacity(parsed.len());
    for (range, mut tree) in parsed {
        let had_params = params::has_params(&tree);
        params::substitute(&mut tree, values);
        if let Some(newer) = versions::as_server_reads(&mut tree, sql, env.server_major) {
            return Err(ClassifyError::NewerSyntax(newer));
        }
        let mut walker = Walker::new(*env);
        walker.text = sql.get(range.clone());
        let units = walker.statement(&tree)?;
        statements.push(Statement {
            range,
            units,
            effects: walker.effects,
            reads_literals: walker.reads_literals,
            reads_session: walker.reads_session,
            // A value-reading rule may have read a parameter as unknown.
            reads_params: had_params && walker.reads_literals,
        });
    }
    Ok(statements)
}

/// Each statement's byte range and its tree in serde form.
pub(crate) fn parse(
    sql: &str,
    settings: LexSettings,
) -> Result<Vec<(std::ops::Range<usize>, Value)>, ClassifyError> {
    parse_with(sql, settings, pg_query::ParserOptions::DEFAULT)
}

/// [`parse`] in one of libpg_query's parse modes (`mode`: a PL/pgSQL
/// expression or assignment).
pub(super) fn parse_with(
    sql: &str,
    settings: LexSettings,
    mode: pg_query::ParserOptions,
) -> Result<Vec<(std::ops::Range<usize>, Value)>, ClassifyError> {
    let options = parser_options(settings) | mode;
    let result = capture(|| pg_query::parse(sql, options)).map_err(|e| match e {
        Ok(syntax) => ClassifyError::Syntax(syntax),
        Err(other) => ClassifyError::Unjudgeable(other.to_string()),
    })?;
    result
        .protobuf
        .stmts
        .iter()
        .map(|raw| {
            let start = usize::try_from(raw.stmt_location)
                .unwrap_or(0)
                .min(sql.len());
            let end = match usize::try_from(raw.stmt_len) {
                Ok(0) | Err(_) => sql.len(),
                Ok(len) => (start + len).min(sql.len()),
            };
            let tree = serde_json::to_value(&raw.stmt)
                .map_err(|e| ClassifyError::Unjudgeable(e.to_string()))?;
            Ok((start..end, tree))
        })
        .collect()
}

/// Walks one statement tree, collecting units and effects.
pub(super) struct Walker<'a> {
    pub(super) env: Env<'a>,
    /// CTE names in scope: unqualified references to them are not relations.
    scopes: Vec<String>,
    /// Effects on prepared statements, in order.
    pub(super) effects: Vec<Effect>,
    /// Whether a fact was read from a literal's value (see
    /// [`Statement::reads_literals`]). Set by every place that reads one.
    pub(super) reads_literals: bool,
    /// Whether a fact depends on [`Env`] beyond the lexing settings.
    pub(super) reads_session: bool,
    /// How many statements deep the walk is (1: the top-level statement,
    /// whose effects on the session's temporary tables count).
    pub(super) depth: usize,
    /// How many SQL function bodies deep the walk is.
    body_depth: usize,
    /// The top-level statement's text (PL/pgSQL's parser reads a whole
    /// CREATE FUNCTION).
    text: Option<&'a str>,
}

/// Statement nodes that are part of their parent's unit when nested (a
/// subquery is a read of the statement around it), not units of their own.
const FOLDED: &[&str] = &[
    "SelectStmt",
    "SetOperationStmt",
    "ReturnStmt",
    "PlassignStmt",
];

/// Fields that hold a statement as a typed message rather than as a `Node`,
/// which the generic walk (it recognises `{"XStmt": {...}}` wrappers) would
/// pass over as plain fields: (node, field, statement type). `ALTER ROLE x
/// SET role = y` configures a role switch through one of them; statement
/// types folded into their parent's unit ([`FOLDED`]: set operations'
/// arms, PL/pgSQL assignments) are walked as fields. The test
/// `typed_statement_fields_are_all_walked` derives the true list from
/// libpg_query's node types and fails when this one is incomplete.
pub(super) const TYPED_STATEMENTS: &[(&str, &str, &str)] = &[
    ("AlterDefaultPrivilegesStmt", "action", "GrantStmt"),
    ("CreateForeignTableStmt", "base_stmt", "CreateStmt"),
    ("AlterDatabaseSetStmt", "setstmt", "VariableSetStmt"),
    ("AlterRoleSetStmt", "setstmt", "VariableSetStmt"),
    ("AlterSystemStmt", "setstmt", "VariableSetStmt"),
];

impl<'a> Walker<'a> {
    pub(super) fn new(env: Env<'a>) -> Self {
        Self {
            env,
            scopes: Vec::new(),
            effects: Vec::new(),
            reads_literals: false,
            reads_session: false,
            depth: 0,
            body_depth: 0,
            text: None,
        }
    }

    /// Classifies a `{"node": {"XStmt": {...}}}` (or `{"XStmt": {...}}`) tree:
    /// its own unit first, then the units nested in it.
    pub(super) fn statement(&mut self, tree: &Value) -> Result<Vec<Unit>, ClassifyError> {
        let tree = tree.get("node").unwrap_or(tree);
        let Some((name, body)) = single_entry(tree) else {
            return Ok(vec![Unit::new(Kind::Other)]);
        };
        self.statement_named(name, body)
    }

    pub(super) fn statement_named(
        &mut self,
        name: &str,
        body: &Value,
    ) -> Result<Vec<Unit>, ClassifyError> {
        self.depth += 1;
        let units = self.statement_units(name, body);
        self.depth -= 1;
        units
    }

    fn statement_units(&mut self, name: &str, body: &Value) -> Result<Vec<Unit>, ClassifyError> {
        let mut unit = head(name, body);
        let mut nested = Vec::new();
        self.hazards(name, body, &mut unit, &mut nested);
        // Statements whose target is a statement of its own: judge it whole.
        let inner_field = match name {
            "ExplainStmt" | "PrepareStmt" => Some("query"),
            _ => None,
        };
        // A typed statement field (ALTER ROLE ... SET): a unit of its own.
        let typed = TYPED_STATEMENTS
            .iter()
            .find(|(parent, _, _)| *parent == name);
        if let Some((_, field, kind)) = typed {
            if let Some(statement) = body.get(*field).filter(|v| v.is_object()) {
                nested.extend(self.statement_named(kind, statement)?);
            }
        }
        if let Some(field) = inner_field {
            if let Some(inner) = body.get(field).filter(|v| !v.is_null()) {
                let inner_units = self.statement(inner)?;
                if name == "PrepareStmt" {
                    let prepared = str_field(body, "name").to_owned();
                    self.effects.push(Effect::Prepare {
                        name: prepared,
                        units: Arc::new(inner_units.clone()),
                    });
                }
                nested.extend(inner_units);
            }
        }
        match name {
            "ExecuteStmt" => self
                .effects
                .push(Effect::Execute(str_field(body, "name").into())),
            "DeallocateStmt" => self.effects.push(Effect::Deallocate(
                (!bool_field(body, "isall")).then(|| str_field(body, "name").to_owned()),
            )),
            "DiscardStmt" if int_field(body, "target") == 1 => {
                self.effects.push(Effect::DiscardAll)
            }
            "CreateFunctionStmt" => nested.extend(self.sql_function_body(body)?),
            // The file name (a literal) decides between a server file and
            // STDIN / STDOUT.
            "CopyStmt" => self.reads_literals = true,
            _ => {}
        }
        if let Value::Object(map) = body {
            let skip = inner_field.or(typed.map(|(_, field, _)| *field));
            self.walk_fields(map, skip, &mut unit, &mut nested)?;
        }
        let mut units = Vec::with_capacity(1 + nested.len());
        units.push(unit);
        units.extend(nested);
        Ok(units)
    }

    /// Collects relations and function calls under `value` into `unit`, and
    /// nested statements into `nested`.
    fn walk(
        &mut self,
        value: &Value,
        unit: &mut Unit,
        nested: &mut Vec<Unit>,
    ) -> Result<(), ClassifyError> {
        let map = match value {
            Value::Array(items) => {
                for item in items {
                    self.walk(item, unit, nested)?;
                }
                return Ok(());
            }
            Value::Object(map) => map,
            _ => return Ok(()),
        };
        if map.contains_key("relname") && map.contains_key("relpersistence") {
            self.relation(map, unit);
            return Ok(());
        }
        if let Some((name, body)) = single_entry(value) {
            if name.ends_with("Stmt") && !FOLDED.contains(&name) {
                nested.extend(self.statement_named(name, body)?);
                return Ok(());
            }
            super::called::collect_code_names(name, body, unit);
        }
        if map.contains_key("funcname") && map.contains_key("agg_star") {
            let function = qual_name(map.get("funcname"));
            if function.name == "set_config" {
                self.reads_literals = true;
                nested.push(set_config_unit(map.get("args")));
            }
            self.call_hazards(&function, map, nested);
            unit.functions.insert(function);
        }
        self.walk_fields(map, None, unit, nested)
    }

    /// Walks every field of a node but `skip`, minding the scope of its
    /// WITH clause if it has one.
    fn walk_fields(
        &mut self,
        map: &Map<String, Value>,
        skip: Option<&str>,
        unit: &mut Unit,
        nested: &mut Vec<Unit>,
    ) -> Result<(), ClassifyError> {
        let Some(with) = map.get("with_clause").filter(|w| !w.is_null()) else {
            for (field, v) in map {
                if Some(field.as_str()) != skip {
                    self.walk(v, unit, nested)?;
                }
            }
            return Ok(());
        };
        // WITH: a CTE's name hides a table of that name in the statement it
        // belongs to, in later CTEs, and (WITH RECURSIVE) in itself; never
        // before it, and never outside.
        let base = self.scopes.len();
        let ctes: &[Value] = with
            .get("ctes")
            .and_then(Value::as_array)
            .map_or(&[], |v| v);
        let names: Vec<String> = ctes
            .iter()
            .map(|c| str_field(inner(c), "ctename").to_owned())
            .collect();
        let recursive = bool_field(with, "recursive");
        if recursive {
            self.scopes.extend(names.iter().cloned());
        }
        let mut result = Ok(());
        for (cte, name) in ctes.iter().zip(&names) {
            result = result.and_then(|()| self.walk(inner(cte), unit, nested));
            if !recursive {
                self.scopes.push(name.clone());
            }
        }
        for (field, v) in map {
            if field != "with_clause" && Some(field.as_str()) != skip {
                result = result.and_then(|()| self.walk(v, unit, nested));
            }
        }
        self.scopes.truncate(base);
        result
    }

    fn relation(&self, map: &Map<String, Value>, unit: &mut Unit) {
        let schema = map.get("schemaname").and_then(Value::as_str).unwrap_or("");
        let name = map.get("relname").and_then(Value::as_str).unwrap_or("");
        if schema.is_empty() && self.scopes.iter().any(|s| s == name) {
            return;
        }
        unit.relations.insert(QualName::qualified(schema, name));
    }

    /// The statements of a `LANGUAGE sql` function body given as a string:
    /// parsed and judged like any other statement. Bodies in other languages
    /// are opaque (rules can still match `create_function`).
    fn sql_function_body(&mut self, body: &Value) -> Result<Vec<Unit>, ClassifyError> {
        // The language and the body may both be literals.
        self.reads_literals = true;
        let mut language = None;
        let mut text = None;
        for option in body
            .get("options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let def = inner(option);
            match str_field(def, "defname") {
                "language" => {
                    language = def
                        .get("arg")
                        .map(|a| str_field(inner(a), "sval").to_owned())
                }
                "as" => {
                    let items = def
                        .get("arg")
                        .map(inner)
                        .and_then(|l| l.get("items"))
                        .and_then(Value::as_array);
                    // One item is a body; two are a C object file and symbol.
                    if let Some([item]) = items.map(Vec::as_slice) {
                        text = Some(str_field(inner(item), "sval").to_owned());
                    }
                }
                _ => {}
            }
        }
        let Some(text) = text else {
            return Ok(Vec::new());
        };
        match language.as_deref() {
            None => {}
            Some(l) if l.eq_ignore_ascii_case("sql") => {}
            Some(l) if l.eq_ignore_ascii_case("plpgsql") => {
                let create = self.text.filter(|_| self.depth == 1);
                return self.plpgsql_body(create, &text);
            }
            // Other languages are opaque: rules match `create_function`.
            Some(_) => return Ok(Vec::new()),
        }
        // The body is parsed again at every call, under the function's own
        // SET clause or the caller's standard_conforming_strings at that
        // moment: judge every reading it can have (the units of both, so
        // the stricter verdict wins). A reading that does not parse is one
        // under which the function cannot run; none parsing is refused.
        // Each level of nested bodies doubles the work: bound it.
        const MAX_BODY_DEPTH: usize = 8;
        if self.body_depth >= MAX_BODY_DEPTH {
            return Err(ClassifyError::Unjudgeable(
                "SQL function bodies are nested too deeply to judge".into(),
            ));
        }
        let readings: &[bool] = if text.contains('\\') {
            &[true, false]
        } else {
            &[self.env.settings.standard_conforming_strings]
        };
        let mut units = Vec::new();
        let mut first_error = None;
        let mut parsed_any = false;
        let outer = self.env.settings;
        self.body_depth += 1;
        for &scs in readings {
            let settings = LexSettings {
                standard_conforming_strings: scs,
            };
            match parse(&text, settings) {
                Ok(mut parsed) => {
                    parsed_any = true;
                    self.env.settings = settings;
                    // The server parses the body with its own grammar too.
                    let server = self.env.server_major;
                    let newer = parsed
                        .iter_mut()
                        .find_map(|(_, tree)| versions::as_server_reads(tree, &text, server))
                        .or_else(|| {
                            let tokens = super::lexer::scan(&text, settings).ok()?;
                            versions::in_tokens(&text, &tokens, server)
                        });
                    if let Some(newer) = newer {
                        first_error = Some(ClassifyError::NewerSyntax(newer));
                        break;
                    }
                    for (_, tree) in parsed {
                        match self.statement(&tree) {
                            Ok(more) => units.extend(more),
                            Err(e) => first_error = first_error.or(Some(e)),
                        }
                    }
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        self.env.settings = outer;
        self.body_depth -= 1;
        match (parsed_any, first_error) {
            (true, Some(e @ (ClassifyError::Unjudgeable(_) | ClassifyError::NewerSyntax(_)))) => {
                Err(e)
            }
            (true, _) => Ok(units),
            (false, e) => Err(ClassifyError::Unjudgeable(format!(
                "the SQL function body cannot be parsed: {}",
                e.map_or_else(String::new, |e| e.to_string())
            ))),
        }
    }
}

/// `set_config(name, ...)` changes a setting like SET does; with `role` or
/// `session_authorization` it is SET ROLE. A name that is not a literal may
/// be either, so it counts as SET ROLE (the stricter reading).
fn set_config_unit(args: Option<&Value>) -> Unit {
    let first = args
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .map(inner);
    let literal = first
        .and_then(|c| c.get("val"))
        .and_then(|v| v.get("Sval"))
        .and_then(|s| s.get("sval"))
        .and_then(Value::as_str);
    let (kind, setting) = match literal.map(str::to_ascii_lowercase) {
        Some(name) if name == "role" => (Kind::SetRole, Some(name)),
        Some(name) if name == "session_authorization" => {
            (Kind::SetSessionAuthorization, Some(name))
        }
        Some(name) => (Kind::Set, Some(name)),
        None => (Kind::SetRole, None),
    };
    let mut unit = Unit::new(kind);
    unit.setting = setting;
    unit
}

/// The statement's own kind, write targets and flags, read by field name.
fn head(name: &str, body: &Value) -> Unit {
    let mut unit = Unit::new(kind_of(name, body));
    for field in [
        "relation",
        "relations",
        "into",
        "into_clause",
        "view",
        "sequence",
        "table",
    ] {
        if matches!(
            unit.kind,
            Kind::Select
                | Kind::CopyTo
                | Kind::CopyToFile
                | Kind::CopyToProgram
                | Kind::Lock
                | Kind::Explain
                | Kind::Prepare
        ) {
            break;
        }
        collect_range_vars(body.get(field), &mut |q| unit.write(q));
    }
    if let (Kind::Update | Kind::Delete, Some(w)) = (unit.kind, body.get("where_clause")) {
        unit.unbounded_write = w.is_null();
    }
    if name == "DropStmt" {
        for object in body
            .get("objects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if matches!(
                unit.kind,
                Kind::DropTable
                    | Kind::DropView
                    | Kind::DropMaterializedView
                    | Kind::DropIndex
                    | Kind::DropSequence
            ) {
                unit.write(qual_name(inner(object).get("items")));
            }
        }
    }
    if name == "VariableSetStmt" || name == "VariableShowStmt" {
        let setting = str_field(body, "name");
        unit.setting = (!setting.is_empty()).then(|| setting.to_owned());
    }
    unit
}

/// Every RangeVar under `value` (a write target may be nested, as in
/// `CREATE TABLE AS`'s IntoClause).
pub(super) fn collect_range_vars(value: Option<&Value>, f: &mut dyn FnMut(QualName)) {
    match value {
        Some(Value::Object(map)) if map.contains_key("relname") => {
            let schema = map.get("schemaname").and_then(Value::as_str).unwrap_or("");
            let name = map.get("relname").and_then(Value::as_str).unwrap_or("");
            f(QualName::qualified(schema, name));
        }
        Some(Value::Object(map)) => map.values().for_each(|v| collect_range_vars(Some(v), f)),
        Some(Value::Array(items)) => items.iter().for_each(|v| collect_range_vars(Some(v), f)),
        _ => {}
    }
}

fn kind_of(name: &str, body: &Value) -> Kind {
    match name {
        "SelectStmt" if body.get("into_clause").is_some_and(|v| !v.is_null()) => {
            Kind::CreateTableAs
        }
        "SelectStmt" | "SetOperationStmt" => Kind::Select,
        "InsertStmt" => Kind::Insert,
        "UpdateStmt" => Kind::Update,
        "DeleteStmt" => Kind::Delete,
        "MergeStmt" => Kind::Merge,
        "CopyStmt" => copy_kind(body),
        "CreateStmt" | "CreateForeignTableStmt" => Kind::CreateTable,
        "CreateTableAsStmt" if object_type(body, "objtype") == Some(ObjectType::ObjectMatview) => {
            Kind::CreateMaterializedView
        }
        "CreateTableAsStmt" => Kind::CreateTableAs,
        "ViewStmt" => Kind::CreateView,
        "RefreshMatViewStmt" => Kind::RefreshMaterializedView,
        "IndexStmt" => Kind::CreateIndex,
        "CreateSchemaStmt" => Kind::CreateSchema,
        "CreatedbStmt" => Kind::CreateDatabase,
        "CreateFunctionStmt" => Kind::CreateFunction,
        "CreateTrigStmt" | "CreateEventTrigStmt" => Kind::CreateTrigger,
        "RuleStmt" => Kind::CreateRule,
        "CreateExtensionStmt" => Kind::CreateExtension,
        "CreateRoleStmt" => Kind::CreateRole,
        "CreateSeqStmt" => Kind::CreateSequence,
        "CompositeTypeStmt" | "CreateEnumStmt" | "CreateRangeStmt" | "CreateDomainStmt" => {
            Kind::CreateType
        }
        "DefineStmt" if object_type(body, "kind") == Some(ObjectType::ObjectType) => {
            Kind::CreateType
        }
        "CreatePolicyStmt" => Kind::CreatePolicy,
        "AlterTableStmt" => Kind::AlterTable,
        "AlterRoleStmt" | "AlterRoleSetStmt" => Kind::AlterRole,
        "AlterDatabaseStmt" | "AlterDatabaseSetStmt" | "AlterDatabaseRefreshCollStmt" => {
            Kind::AlterDatabase
        }
        "AlterFunctionStmt" => Kind::AlterFunction,
        "AlterExtensionStmt" | "AlterExtensionContentsStmt" => Kind::AlterExtension,
        "AlterSystemStmt" => Kind::AlterSystem,
        "DropStmt" => drop_kind(object_type(body, "remove_type")),
        "DropdbStmt" => Kind::DropDatabase,
        "DropRoleStmt" => Kind::DropRole,
        "DropOwnedStmt" => Kind::DropOwned,
        "TruncateStmt" => Kind::Truncate,
        "RenameStmt" => match object_type(body, "rename_type") {
            Some(
                ObjectType::ObjectTable
                | ObjectType::ObjectForeignTable
                | ObjectType::ObjectView
                | ObjectType::ObjectMatview
                | ObjectType::ObjectSequence
                // ALTER INDEX ... RENAME renames whatever relation has the
                // name, a table too (tablecmds.c allows it "for historical
                // reasons"); pgward cannot tell an index's name from a
                // table's.
                | ObjectType::ObjectIndex,
            ) => Kind::RenameTable,
            Some(ObjectType::ObjectColumn) => Kind::RenameColumn,
            _ => Kind::Rename,
        },
        "CommentStmt" => Kind::Comment,
        "SecLabelStmt" => Kind::SecurityLabel,
        "GrantStmt" if bool_field(body, "is_grant") => Kind::Grant,
        "GrantStmt" => Kind::Revoke,
        "GrantRoleStmt" if bool_field(body, "is_grant") => Kind::GrantRole,
        "GrantRoleStmt" => Kind::RevokeRole,
        "AlterDefaultPrivilegesStmt" => Kind::AlterDefaultPrivileges,
        "ReassignOwnedStmt" => Kind::ReassignOwned,
        "DoStmt" => Kind::Do,
        "CallStmt" => Kind::Call,
        "VariableSetStmt" => set_kind(body),
        "VariableShowStmt" => Kind::Show,
        "VacuumStmt" if bool_field(body, "is_vacuumcmd") => Kind::Vacuum,
        "VacuumStmt" => Kind::Analyze,
        "ClusterStmt" => Kind::Cluster,
        "ReindexStmt" => Kind::Reindex,
        "CheckPointStmt" => Kind::Checkpoint,
        "LockStmt" => Kind::Lock,
        "ListenStmt" => Kind::Listen,
        "NotifyStmt" => Kind::Notify,
        "UnlistenStmt" => Kind::Unlisten,
        "LoadStmt" => Kind::Load,
        "TransactionStmt" => transaction_kind(body),
        "ConstraintsSetStmt" => Kind::SetConstraints,
        "PrepareStmt" => Kind::Prepare,
        "ExecuteStmt" => Kind::Execute,
        "DeallocateStmt" => Kind::Deallocate,
        "ExplainStmt" => Kind::Explain,
        "DiscardStmt" => Kind::Discard,
        "DeclareCursorStmt" => Kind::DeclareCursor,
        "FetchStmt" => Kind::Fetch,
        "ClosePortalStmt" => Kind::CloseCursor,
        "ImportForeignSchemaStmt" => Kind::ImportForeignSchema,
        other if other.starts_with("Create") || other.starts_with("Define") => Kind::CreateOther,
        other if other.starts_with("Alter") => Kind::AlterOther,
        other if other.starts_with("Drop") => Kind::DropOther,
        _ => Kind::Other,
    }
}

fn copy_kind(body: &Value) -> Kind {
    let from = bool_field(body, "is_from");
    let program = bool_field(body, "is_program");
    let file = !str_field(body, "filename").is_empty();
    match (from, program, file) {
        (true, true, _) => Kind::CopyFromProgram,
        (false, true, _) => Kind::CopyToProgram,
        (true, false, true) => Kind::CopyFromFile,
        (false, false, true) => Kind::CopyToFile,
        (true, false, false) => Kind::CopyFrom,
        (false, false, false) => Kind::CopyTo,
    }
}

fn drop_kind(object: Option<ObjectType>) -> Kind {
    match object {
        Some(ObjectType::ObjectTable | ObjectType::ObjectForeignTable) => Kind::DropTable,
        Some(ObjectType::ObjectView) => Kind::DropView,
        Some(ObjectType::ObjectMatview) => Kind::DropMaterializedView,
        Some(ObjectType::ObjectIndex) => Kind::DropIndex,
        Some(ObjectType::ObjectSequence) => Kind::DropSequence,
        Some(ObjectType::ObjectSchema) => Kind::DropSchema,
        Some(
            ObjectType::ObjectFunction
            | ObjectType::ObjectProcedure
            | ObjectType::ObjectRoutine
            | ObjectType::ObjectAggregate,
        ) => Kind::DropFunction,
        Some(ObjectType::ObjectExtension) => Kind::DropExtension,
        Some(ObjectType::ObjectType | ObjectType::ObjectDomain) => Kind::DropType,
        Some(ObjectType::ObjectTrigger | ObjectType::ObjectEventTrigger) => Kind::DropTrigger,
        Some(ObjectType::ObjectRule) => Kind::DropRule,
        Some(ObjectType::ObjectPolicy) => Kind::DropPolicy,
        Some(ObjectType::ObjectDatabase) => Kind::DropDatabase,
        _ => Kind::DropOther,
    }
}

fn set_kind(body: &Value) -> Kind {
    let kind = VariableSetKind::try_from(int_field(body, "kind") as i32).ok();
    let name = str_field(body, "name");
    match kind {
        Some(VariableSetKind::VarReset | VariableSetKind::VarResetAll) => Kind::Reset,
        _ if name.eq_ignore_ascii_case("role") => Kind::SetRole,
        _ if name.eq_ignore_ascii_case("session_authorization") => Kind::SetSessionAuthorization,
        _ => Kind::Set,
    }
}

fn transaction_kind(body: &Value) -> Kind {
    match TransactionStmtKind::try_from(int_field(body, "kind") as i32) {
        Ok(TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart) => {
            Kind::Begin
        }
        Ok(TransactionStmtKind::TransStmtCommit) => Kind::Commit,
        Ok(TransactionStmtKind::TransStmtSavepoint) => Kind::Savepoint,
        Ok(TransactionStmtKind::TransStmtRelease) => Kind::ReleaseSavepoint,
        Ok(TransactionStmtKind::TransStmtRollbackTo) => Kind::RollbackToSavepoint,
        Ok(TransactionStmtKind::TransStmtPrepare) => Kind::PrepareTransaction,
        Ok(TransactionStmtKind::TransStmtCommitPrepared) => Kind::CommitPrepared,
        Ok(TransactionStmtKind::TransStmtRollbackPrepared) => Kind::RollbackPrepared,
        _ => Kind::Rollback,
    }
}

/// `{"Name": {...}}` -> ("Name", {...}) when the object has exactly one entry.
pub(crate) fn single_entry(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// The body of a `{"node": {"Type": body}}` or `{"Type": body}` wrapper.
pub(crate) fn inner(value: &Value) -> &Value {
    let value = value.get("node").unwrap_or(value);
    single_entry(value).map_or(value, |(_, body)| body)
}

/// A dotted name from a list of String nodes (`funcname`, DROP objects).
pub(crate) fn qual_name(list: Option<&Value>) -> QualName {
    let parts: Vec<&str> = list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| str_field(inner(p), "sval"))
        .collect();
    match parts.as_slice() {
        [] => QualName::bare(""),
        [name] => QualName::bare(name),
        [.., schema, name] => QualName::qualified(schema, name),
    }
}

pub(crate) fn str_field<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn bool_field(v: &Value, field: &str) -> bool {
    v.get(field).and_then(Value::as_bool).unwrap_or(false)
}

pub(crate) fn int_field(v: &Value, field: &str) -> i64 {
    v.get(field).and_then(Value::as_i64).unwrap_or(0)
}

fn object_type(body: &Value, field: &str) -> Option<ObjectType> {
    ObjectType::try_from(int_field(body, field) as i32).ok()
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod walk_tests;
