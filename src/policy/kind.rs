//! Statement kinds: the names rules use in `kinds = [...]`, one per
//! PostgreSQL statement type pgward tells apart, plus families that name
//! several at once.

macro_rules! kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// What a statement (or a statement nested in one) does.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl Kind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The name rules use.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)*
                }
            }
        }
    };
}

kinds! {
    Select => "select",
    Insert => "insert",
    Update => "update",
    Delete => "delete",
    Merge => "merge",
    CopyFrom => "copy_from",
    CopyTo => "copy_to",
    CopyFromFile => "copy_from_file",
    CopyToFile => "copy_to_file",
    CopyFromProgram => "copy_from_program",
    CopyToProgram => "copy_to_program",
    CreateTable => "create_table",
    CreateTableAs => "create_table_as",
    CreateView => "create_view",
    CreateMaterializedView => "create_materialized_view",
    RefreshMaterializedView => "refresh_materialized_view",
    CreateIndex => "create_index",
    CreateSchema => "create_schema",
    CreateDatabase => "create_database",
    CreateFunction => "create_function",
    CreateTrigger => "create_trigger",
    CreateRule => "create_rule",
    CreateExtension => "create_extension",
    CreateRole => "create_role",
    CreateSequence => "create_sequence",
    CreateType => "create_type",
    CreatePolicy => "create_policy",
    CreateOther => "create_other",
    AlterTable => "alter_table",
    AlterRole => "alter_role",
    AlterDatabase => "alter_database",
    AlterFunction => "alter_function",
    AlterExtension => "alter_extension",
    AlterOther => "alter_other",
    DropTable => "drop_table",
    DropView => "drop_view",
    DropMaterializedView => "drop_materialized_view",
    DropIndex => "drop_index",
    DropSequence => "drop_sequence",
    DropSchema => "drop_schema",
    DropDatabase => "drop_database",
    DropFunction => "drop_function",
    DropRole => "drop_role",
    DropExtension => "drop_extension",
    DropType => "drop_type",
    DropTrigger => "drop_trigger",
    DropRule => "drop_rule",
    DropPolicy => "drop_policy",
    DropOwned => "drop_owned",
    DropColumn => "drop_column",
    DropTempTable => "drop_temp_table",
    DropOther => "drop_other",
    Truncate => "truncate",
    TruncateTempTable => "truncate_temp_table",
    RenameTable => "rename_table",
    RenameColumn => "rename_column",
    Rename => "rename_other",
    Comment => "comment",
    SecurityLabel => "security_label",
    Grant => "grant",
    Revoke => "revoke",
    GrantRole => "grant_role",
    RevokeRole => "revoke_role",
    AlterDefaultPrivileges => "alter_default_privileges",
    ReassignOwned => "reassign_owned",
    Do => "do",
    Call => "call",
    SignalBackend => "signal_backend",
    SearchPathPgTemp => "search_path_pg_temp",
    StandardConformingStringsOff => "standard_conforming_strings_off",
    UnjudgeableClientEncoding => "client_encoding_unjudgeable",
    NativeCode => "native_code",
    OpaqueCode => "opaque_code",
    Set => "set",
    Reset => "reset",
    SetRole => "set_role",
    SetSessionAuthorization => "set_session_authorization",
    Show => "show",
    AlterSystem => "alter_system",
    Vacuum => "vacuum",
    Analyze => "analyze",
    Cluster => "cluster",
    Reindex => "reindex",
    Checkpoint => "checkpoint",
    Lock => "lock",
    Listen => "listen",
    Notify => "notify",
    Unlisten => "unlisten",
    Load => "load",
    Begin => "begin",
    Commit => "commit",
    Rollback => "rollback",
    Savepoint => "savepoint",
    ReleaseSavepoint => "release_savepoint",
    RollbackToSavepoint => "rollback_to_savepoint",
    PrepareTransaction => "prepare_transaction",
    CommitPrepared => "commit_prepared",
    RollbackPrepared => "rollback_prepared",
    SetConstraints => "set_constraints",
    Prepare => "prepare",
    Execute => "execute",
    Deallocate => "deallocate",
    Explain => "explain",
    Discard => "discard",
    DeclareCursor => "declare_cursor",
    Fetch => "fetch",
    CloseCursor => "close_cursor",
    ImportForeignSchema => "import_foreign_schema",
    Other => "other",
}

/// Named groups of kinds, usable in `kinds = [...]` too.
pub const FAMILIES: &[(&str, &str)] = &[
    ("dml", "insert, update, delete, merge"),
    ("copy", "every copy_* kind"),
    ("create", "every create_* kind"),
    ("alter", "every alter_* kind except alter_system"),
    ("drop", "every drop_* kind"),
    ("rename", "rename_table, rename_column, rename_other"),
    (
        "ddl",
        "create, alter and drop families, truncate, rename, comment",
    ),
    ("transaction", "begin, commit, rollback and savepoint kinds"),
];

impl Kind {
    /// Whether this kind belongs to `family` (see [`FAMILIES`]).
    pub fn in_family(self, family: &str) -> bool {
        let name = self.name();
        match family {
            "dml" => matches!(
                self,
                Kind::Insert | Kind::Update | Kind::Delete | Kind::Merge
            ),
            "copy" => name.starts_with("copy_"),
            "create" => name.starts_with("create_"),
            "alter" => name.starts_with("alter_") && self != Kind::AlterSystem,
            "drop" => name.starts_with("drop_"),
            "rename" => name.starts_with("rename_"),
            "ddl" => {
                ["create", "alter", "drop"]
                    .iter()
                    .any(|f| self.in_family(f))
                    || self.in_family("rename")
                    || matches!(
                        self,
                        Kind::Truncate | Kind::TruncateTempTable | Kind::Comment
                    )
            }
            "transaction" => matches!(
                self,
                Kind::Begin
                    | Kind::Commit
                    | Kind::Rollback
                    | Kind::Savepoint
                    | Kind::ReleaseSavepoint
                    | Kind::RollbackToSavepoint
                    | Kind::PrepareTransaction
                    | Kind::CommitPrepared
                    | Kind::RollbackPrepared
            ),
            _ => false,
        }
    }

    /// The kinds a rule's `kinds` entry names: one kind or a family.
    pub fn resolve(entry: &str) -> Option<Vec<Kind>> {
        if let Some(k) = Kind::ALL.iter().find(|k| k.name() == entry) {
            return Some(vec![*k]);
        }
        FAMILIES.iter().any(|(f, _)| *f == entry).then(|| {
            Kind::ALL
                .iter()
                .copied()
                .filter(|k| k.in_family(entry))
                .collect()
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Kind {
    /// Whether a statement of this kind may change the code the database
    /// runs (functions, operators, triggers, rules, defaults, ...): the code
    /// catalog is read again once it ran (`upstream::code`).
    pub fn changes_schema(self) -> bool {
        let name = self.name();
        ["create_", "alter_", "drop_", "rename_"]
            .iter()
            .any(|p| name.starts_with(p))
            || matches!(
                self,
                Kind::Comment | Kind::ImportForeignSchema | Kind::ReassignOwned
            )
    }
}
