//! Facts the built-in rules need beyond a statement's kind and names: a
//! column dropped, a MERGE action bounded by nothing, another session
//! signalled, and the session's own temporary tables (which it may drop and
//! truncate at will). Read off the tree by field name, like `head`.

use super::classify::{inner, int_field, qual_name, str_field, Walker};
use super::code;
use super::encoding::encoding_is_safe;
use super::facts::{Effect, QualName, Unit};
use super::kind::Kind;
use pg_query::protobuf::{
    AlterTableType, CmdType, DiscardMode, DropBehavior, MergeMatchKind, OnCommitAction,
    TransactionStmtKind, VariableSetKind,
};
use serde_json::{Map, Value};

/// The schema PostgreSQL resolves to the session's own temporary schema.
const PG_TEMP: &str = "pg_temp";
/// The setting that moves where string literals end.
const SCS: &str = "standard_conforming_strings";
/// The setting that decides how the server converts statement text.
const CLIENT_ENCODING: &str = "client_encoding";

impl Walker<'_> {
    /// Statement-level hazards of `name`, after `head` made `unit`.
    pub(super) fn hazards(
        &mut self,
        name: &str,
        body: &Value,
        unit: &mut Unit,
        nested: &mut Vec<Unit>,
    ) {
        let top = self.depth == 1;
        unit.functions
            .extend(code::referenced_functions(name, body));
        code::moved_code(name, body, unit);
        if name == "CreateFunctionStmt" && code::native_language(body) {
            nested.push(Unit::new(Kind::NativeCode));
        }
        nested.extend(code::foreign_copy(name, body));
        match name {
            "AlterTableStmt" => {
                let drops_column = list(body, "cmds").iter().any(|cmd| {
                    int_field(inner(cmd), "subtype") == AlterTableType::AtDropColumn as i64
                });
                if drops_column {
                    let mut drop = Unit::new(Kind::DropColumn);
                    unit.writes.iter().for_each(|w| drop.write(w.clone()));
                    nested.push(drop);
                }
                // ATTACH PARTITION, INHERIT, OF: a table it names may now
                // go with another object.
                let reparents = list(body, "cmds").iter().any(|cmd| {
                    let subtype = int_field(inner(cmd), "subtype");
                    [
                        AlterTableType::AtAttachPartition,
                        AlterTableType::AtAddInherit,
                        AlterTableType::AtAddOf,
                    ]
                    .iter()
                    .any(|t| *t as i64 == subtype)
                });
                if top && reparents {
                    let mut named = Vec::new();
                    super::classify::collect_range_vars(Some(body), &mut |q| named.push(q));
                    for table in named.iter().filter(|t| is_temp_candidate(t)) {
                        self.effects.push(Effect::ForgetTemp(table.name.clone()));
                    }
                }
            }
            "MergeStmt" => unit.unbounded_write = merge_unbounded(body),
            "DropStmt" if top && unit.kind == Kind::DropTable => {
                for table in unit.writes.iter().filter(|w| is_temp_candidate(w)) {
                    self.effects.push(Effect::ForgetTemp(table.name.clone()));
                }
            }
            "AlterRoleSetStmt" | "AlterDatabaseSetStmt" => {
                // A default search_path that lists pg_temp explicitly lets
                // a bare name resolve to a permanent table before the
                // session's temporary one, in every later session.
                self.reads_literals = true;
                if let Some(set) = body.get("setstmt").filter(|v| v.is_object()) {
                    let lists_pg_temp = str_field(set, "name").eq_ignore_ascii_case("search_path")
                        && list(set, "args").iter().any(|a| {
                            let value = inner(a).get("val").and_then(|v| v.get("Sval"));
                            value.is_some_and(|v| search_path_lists_pg_temp(str_field(v, "sval")))
                        });
                    if lists_pg_temp {
                        nested.push(Unit::new(Kind::SearchPathPgTemp));
                    }
                }
            }
            "RenameStmt" if top && unit.kind == Kind::RenameTable => {
                if let Some(table) = range_var(body.get("relation")) {
                    if is_temp_candidate(&table) {
                        self.effects.push(Effect::ForgetTemp(table.name));
                    }
                }
            }
            // A partition, an inheritance child or a typed table goes with
            // its parent or its type (DROP TABLE parent, DROP TYPE ...
            // CASCADE): never counted as the session's own.
            "CreateStmt" if top && !depends_on_another(body) => {
                self.created(body.get("relation"), body, "oncommit")
            }

            "CreateTableAsStmt" | "SelectStmt" if top => {
                let into = body.get("into").or_else(|| body.get("into_clause"));
                if let Some(into) = into.filter(|v| v.is_object()) {
                    self.created(into.get("rel"), into, "on_commit");
                }
            }
            "DiscardStmt"
                if top && int_field(body, "target") == DiscardMode::DiscardTemp as i64 =>
            {
                self.effects.push(Effect::ForgetAllTemp)
            }
            "TransactionStmt" if top => {
                let kind = int_field(body, "kind");
                if [
                    TransactionStmtKind::TransStmtRollback,
                    TransactionStmtKind::TransStmtRollbackTo,
                    TransactionStmtKind::TransStmtPrepare,
                ]
                .iter()
                .any(|k| *k as i64 == kind)
                {
                    self.effects.push(Effect::Rollback);
                }
            }
            "VariableSetStmt"
                if str_field(body, "name").eq_ignore_ascii_case(SCS)
                    && self.sets_unsafe_value(body, is_true) =>
            {
                nested.push(Unit::new(Kind::StandardConformingStringsOff));
            }
            "VariableSetStmt"
                if str_field(body, "name").eq_ignore_ascii_case(CLIENT_ENCODING)
                    && self.sets_unsafe_value(body, encoding_is_safe) =>
            {
                nested.push(Unit::new(Kind::UnjudgeableClientEncoding));
            }
            _ => {}
        }
        match name {
            "VariableSetStmt" if top => {
                let reset_all = int_field(body, "kind") == VariableSetKind::VarResetAll as i64;
                if reset_all || str_field(body, "name").eq_ignore_ascii_case("search_path") {
                    self.effects.push(Effect::SearchPathChanged);
                }
            }
            _ => {}
        }
        if matches!(unit.kind, Kind::DropTable | Kind::Truncate) && self.all_own_temp(unit) {
            unit.kind = match unit.kind {
                Kind::DropTable => Kind::DropTempTable,
                _ => Kind::TruncateTempTable,
            };
        }
        // DROP ... CASCADE drops what depends on the objects named: a typed
        // table with its type, a generated column with its function, a
        // column with its domain, type or collation, foreign tables with
        // their server. pgward cannot see the dependents: a cascade drops
        // tables and columns. (What depends on the session's own
        // temporary tables it made itself, after them.)
        let cascade = int_field(body, "behavior") == DropBehavior::DropCascade as i64;
        if name == "DropStmt" && cascade && unit.kind != Kind::DropTempTable {
            for kind in [Kind::DropTable, Kind::DropColumn] {
                let mut dependents = Unit::new(kind);
                dependents.origin = Some(std::sync::Arc::from(
                    "what DROP ... CASCADE drops with the objects it names",
                ));
                nested.push(dependents);
            }
        }
    }

    /// Hazards of a call of `function` (a FuncCall node's fields in `call`).
    pub(super) fn call_hazards(
        &mut self,
        function: &QualName,
        call: &Map<String, Value>,
        nested: &mut Vec<Unit>,
    ) {
        match function.name.as_str() {
            "pg_terminate_backend" | "pg_cancel_backend"
                if !self.targets_own_backend(call.get("args")) =>
            {
                nested.push(Unit::new(Kind::SignalBackend));
            }
            "set_config" => {
                let args = list_of(call.get("args"));
                let name = args.first().and_then(literal);
                // A search_path change (or a name that may be one) makes a
                // bare table name resolve elsewhere than pg_temp.
                if name
                    .as_deref()
                    .is_none_or(|n| n.eq_ignore_ascii_case("search_path"))
                {
                    self.effects.push(Effect::SearchPathChanged);
                }
                let value = args.get(1).and_then(literal);
                let named = |setting: &str| {
                    name.as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(setting))
                };
                if named(SCS) && !value.as_deref().is_some_and(is_true) {
                    nested.push(Unit::new(Kind::StandardConformingStringsOff));
                }
                if named(CLIENT_ENCODING) && !value.as_deref().is_some_and(encoding_is_safe) {
                    nested.push(Unit::new(Kind::UnjudgeableClientEncoding));
                }
            }
            _ => {}
        }
    }

    /// Whether a SET (a statement, a typed SET of ALTER ROLE / DATABASE /
    /// SYSTEM, a function's SET clause) may set a value `safe` rejects:
    /// any value that is not a literal `safe` accepts, and FROM CURRENT.
    /// RESET and DEFAULT restore what an administrator configured.
    /// (`standard_conforming_strings` must stay on, `client_encoding` one
    /// pgward can judge.)
    fn sets_unsafe_value(&mut self, set: &Value, safe: fn(&str) -> bool) -> bool {
        self.reads_literals = true;
        let kind = int_field(set, "kind");
        if kind == VariableSetKind::VarSetCurrent as i64 {
            return true;
        }
        if kind != VariableSetKind::VarSetValue as i64 {
            return false;
        }
        match list(set, "args") {
            [value] => !literal(value).as_deref().is_some_and(safe),
            _ => true,
        }
    }

    /// Whether a signal's target is provably this session's own backend:
    /// `pg_backend_pid()`, or the literal process id the session reported.
    /// Every other target (another pid, an expression, a subquery) may be
    /// another client's session: pgward's clients share upstream roles, so
    /// "a session of the same role" is no comfort.
    fn targets_own_backend(&mut self, args: Option<&Value>) -> bool {
        let Some([target, ..]) = args.and_then(Value::as_array).map(Vec::as_slice) else {
            return false;
        };
        let target = target.get("node").unwrap_or(target);
        if let Some(call) = target.get("FuncCall") {
            let name = qual_name(call.get("funcname"));
            let no_args = call
                .get("args")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            return name.name == "pg_backend_pid"
                && name.schema.as_deref().is_none_or(|s| s == "pg_catalog")
                && no_args;
        }
        let literal = target
            .get("AConst")
            .and_then(|c| c.get("val"))
            .and_then(|v| v.get("Ival"));
        let Some(literal) = literal else {
            return false;
        };
        self.reads_literals = true;
        self.reads_session = true;
        let pid = literal.get("ival").and_then(Value::as_i64).unwrap_or(0);
        self.env.own_pid.is_some_and(|own| i64::from(own) == pid)
    }

    /// Whether every table `unit` writes is one of the session's own
    /// temporary tables: `pg_temp.name` (always the session's own), or a bare
    /// name the session created TEMP (a bare name resolves to pg_temp first
    /// unless search_path lists pg_temp; the session forgets its tables when
    /// search_path changes).
    fn all_own_temp(&mut self, unit: &Unit) -> bool {
        !unit.writes.is_empty()
            && unit.writes.iter().all(|t| match t.schema.as_deref() {
                Some(PG_TEMP) => true,
                Some(_) => false,
                None => {
                    self.reads_session = true;
                    self.env.own_temp_tables.contains(&t.name)
                }
            })
    }

    /// A table created by `CREATE [TEMP] TABLE` (or AS, or SELECT INTO):
    /// temporary, and so the session's own, if TEMP or in pg_temp, unless it
    /// is dropped at commit.
    fn created(&mut self, relation: Option<&Value>, options: &Value, on_commit: &str) {
        let Some(rel) = relation.filter(|r| r.is_object()) else {
            return;
        };
        let Some(table) = range_var(Some(rel)) else {
            return;
        };
        let temp =
            str_field(rel, "relpersistence") == "t" || table.schema.as_deref() == Some(PG_TEMP);
        let dropped_at_commit =
            int_field(options, on_commit) == OnCommitAction::OncommitDrop as i64;
        if temp && !dropped_at_commit && table.schema.as_deref().is_none_or(|s| s == PG_TEMP) {
            self.effects.push(Effect::CreateTemp(table.name));
        }
    }
}

/// Whether a search_path value (one element, or a comma-separated list as
/// in a startup parameter) names pg_temp explicitly: then pg_temp is
/// searched where it is listed, not first, and a bare name may resolve to a
/// permanent table although the session has a temporary table of that name.
pub fn search_path_lists_pg_temp(value: &str) -> bool {
    value.split(',').any(|part| {
        let part = part.trim().trim_matches('"').to_ascii_lowercase();
        part == PG_TEMP || part.starts_with("pg_temp_")
    })
}

/// The text of a string or integer constant (`'on'`, `1`, `on` as an
/// identifier in SET, which the grammar makes a string).
fn literal(value: &Value) -> Option<String> {
    let constant = value.get("node").unwrap_or(value).get("AConst")?;
    let val = constant.get("val")?;
    if let Some(s) = val.get("Sval") {
        return Some(str_field(s, "sval").to_owned());
    }
    val.get("Ival").map(|i| {
        i.get("ival")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string()
    })
}

fn list_of(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// PostgreSQL's `parse_bool` for true: a prefix of "true" or "yes", "on",
/// "1", any case. Anything else (false, unknown, invalid) is not true.
fn is_true(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    !v.is_empty() && ("true".starts_with(&v) || "yes".starts_with(&v) || v == "on" || v == "1")
}

/// Whether a CREATE TABLE makes a table that is dropped with another object:
/// a partition (`PARTITION OF`), an inheritance child (`INHERITS`), a
/// typed table (`OF type`).
fn depends_on_another(body: &Value) -> bool {
    let set = |field: &str| body.get(field).is_some_and(|v| !v.is_null());
    !list(body, "inh_relations").is_empty() || set("partbound") || set("of_typename")
}

/// The effect on the session's temporary tables of what a statement runs
/// besides its own top-level unit, whose effects `hazards` worked out by
/// name: `units` are its units (the statement's own first, then those
/// nested in it and those of the code it calls), `effects` its effects.
/// A nested or called unit that may drop, rename, move or re-parent a
/// table (a function's `DROP TABLE pg_temp.t`, a cascade) forgets every
/// temporary table; one that may change search_path (a function's `SET
/// search_path`, `set_config` of it or of a name pgward cannot read) stops
/// the tracking, as a top-level one does. So does EXECUTE of a prepared
/// statement, whose called code runs unfollowed.
pub(super) fn temp_effect(units: &[Unit], effects: &[Effect]) -> Option<Effect> {
    let mut effect = None;
    if effects.iter().any(|e| matches!(e, Effect::Execute(_))) {
        effect = Some(Effect::ForgetAllTemp);
    }
    for unit in units.iter().skip(1) {
        let sets = matches!(
            unit.kind,
            Kind::Set | Kind::Reset | Kind::SetRole | Kind::SetSessionAuthorization
        );
        let path = unit
            .setting
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case("search_path"));
        if sets && path {
            return Some(Effect::SearchPathChanged);
        }
        let reshapes = unit.kind.in_family("drop")
            || unit.kind.in_family("rename")
            || matches!(
                unit.kind,
                Kind::AlterTable
                    | Kind::AlterExtension
                    | Kind::AlterOther
                    | Kind::Discard
                    | Kind::Do
                    | Kind::OpaqueCode
            );
        if reshapes {
            effect = Some(Effect::ForgetAllTemp);
        }
    }
    effect
}

/// A name that could denote one of the session's temporary tables.
fn is_temp_candidate(table: &QualName) -> bool {
    table.schema.as_deref().is_none_or(|s| s == PG_TEMP)
}

fn list<'v>(body: &'v Value, field: &str) -> &'v [Value] {
    list_of(body.get(field))
}

fn range_var(value: Option<&Value>) -> Option<QualName> {
    let rel = value?.as_object()?;
    let name = rel.get("relname")?.as_str()?;
    let schema = rel.get("schemaname").and_then(Value::as_str).unwrap_or("");
    Some(QualName::qualified(schema, name))
}

/// Whether a MERGE has an UPDATE or DELETE action that no condition bounds,
/// like UPDATE / DELETE without WHERE: an action without `AND condition`
/// that is either `WHEN NOT MATCHED BY SOURCE` (every target row the source
/// does not match: all of them, for an empty source) or whose join condition
/// names no column of the target (`ON true`, `ON s.x = 1`: every target
/// row matches). Unqualified columns in ON count as the source's: write
/// `target.col` (or its alias) to bound the action by the target's rows.
fn merge_unbounded(body: &Value) -> bool {
    let target = body.get("relation").map_or("", |r| {
        let alias = r.get("alias").map_or("", |a| str_field(a, "aliasname"));
        if alias.is_empty() {
            str_field(r, "relname")
        } else {
            alias
        }
    });
    let on_names_target = names_column_of(body.get("join_condition"), target);
    list(body, "merge_when_clauses").iter().any(|clause| {
        let clause = inner(clause);
        let command = int_field(clause, "command_type");
        let writes = command == CmdType::CmdUpdate as i64 || command == CmdType::CmdDelete as i64;
        let conditioned = clause.get("condition").is_some_and(|c| !c.is_null());
        let by_source =
            int_field(clause, "match_kind") == MergeMatchKind::MergeWhenNotMatchedBySource as i64;
        writes && !conditioned && (by_source || !on_names_target)
    })
}

/// Whether `value` holds a column reference qualified by `table`.
fn names_column_of(value: Option<&Value>, table: &str) -> bool {
    match value {
        Some(Value::Object(map)) => {
            if let Some(fields) = map.get("ColumnRef").and_then(|c| c.get("fields")) {
                let parts: Vec<&str> = fields
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| str_field(inner(f), "sval"))
                    .collect();
                // table.col, or schema.table.col (db.schema.table.col too).
                if parts.len() >= 2 && parts[parts.len() - 2] == table {
                    return true;
                }
            }
            map.values().any(|v| names_column_of(Some(v), table))
        }
        Some(Value::Array(items)) => items.iter().any(|v| names_column_of(Some(v), table)),
        _ => false,
    }
}
