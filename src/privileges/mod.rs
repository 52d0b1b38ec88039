//! Least privilege, checked through the catalog: what a mapped role can do
//! that would let an identity around masking or across other identities,
//! and the exact statements that take it away.
//!
//! Every check asks about the role *and every role it is a member of*
//! (`pg_has_role(..., 'MEMBER')`: what it inherits and what it could SET
//! ROLE to), since pgward's rules refusing SET ROLE is a second line, not
//! the first. The checks run on pgward's catalog connection with the
//! privilege inquiry functions, so the catalog role needs no special rights.

mod cache;
mod sql;

pub(crate) use cache::may_change_privileges;
pub use cache::{masked_tables, Checked, RoleChecks};

use crate::io::FramedStream;
use crate::upstream::query::{literal, query_nullable, CatalogError};

/// A condition of least privilege, in the order they are checked (the
/// first one a role fails is the one a refused login names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Superuser, itself or through a role it is a member of.
    Superuser,
    /// BYPASSRLS: row security does not apply.
    BypassRls,
    /// Owns a table with masked columns (owners bypass grants and RLS).
    OwnsMaskedTable,
    /// Owns the schema of a masked table.
    OwnsMaskedSchema,
    /// Owns the database.
    OwnsDatabase,
    /// Can create objects in a schema: functions and operators that other
    /// identities' statements may resolve to.
    CreateOnSchema,
    /// TEMPORARY on the database: temporary functions and operators.
    TempOnDatabase,
    /// A member of a predefined role that reads every table, other
    /// sessions' statements, or server files.
    DangerousRole,
    /// Can read pg_statistic, which holds column values.
    ReadsStatistics,
}

impl Condition {
    /// The condition as a requirement, for messages.
    pub fn requirement(self) -> &'static str {
        match self {
            Self::Superuser => "is not a superuser",
            Self::BypassRls => "has no BYPASSRLS",
            Self::OwnsMaskedTable => "does not own the masked tables",
            Self::OwnsMaskedSchema => "does not own the masked tables' schemas",
            Self::OwnsDatabase => "does not own the database",
            Self::CreateOnSchema => "has no CREATE on any schema",
            Self::TempOnDatabase => "has no TEMPORARY on the database",
            Self::DangerousRole => {
                "is not a member of pg_read_all_data, pg_read_all_stats, pg_monitor, \
                 pg_read_server_files, pg_write_server_files or pg_execute_server_program"
            }
            Self::ReadsStatistics => "cannot read pg_statistic",
        }
    }
}

/// One thing a role can do that it should not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The condition it fails.
    pub condition: Condition,
    /// What exactly, e.g. `owns table public.customers`.
    pub what: String,
    /// Statements that fix it, run as a superuser (or the owner).
    pub fixes: Vec<String>,
}

/// What the check learned about one role in one database.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The role.
    pub role: String,
    /// Failed conditions, in [`Condition`] order.
    pub findings: Vec<Finding>,
    /// Masked tables (`schema.table`) it can read some column of.
    pub readable_masked: Vec<String>,
    /// Statements the role could run that only pgward's built-in rules
    /// stop, with the rule names.
    pub rules_needed: Vec<String>,
}

impl Report {
    /// The first failed condition, for a refused login.
    pub fn first_failure(&self) -> Option<&Finding> {
        self.findings.first()
    }
}

/// The "fix" of what a role holds as the database's owner: a comment, so
/// that a script of fixes still runs.
const OWNER_NOTE: &str = "-- held as the database's owner: fixed by changing the database's owner";

/// Predefined roles no masked identity's role may reach.
pub const DANGEROUS_ROLES: &[&str] = &[
    "pg_read_all_data",
    "pg_read_all_stats",
    "pg_monitor",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
];

/// Checks `role` in the database `conn` is logged in to; `masked_tables`
/// are the OIDs of the tables with masked columns there.
pub(crate) async fn check_role(
    conn: &mut FramedStream,
    role: &str,
    masked_tables: &[u32],
) -> Result<Report, CatalogError> {
    let r = literal(role);
    let oids = sql::oid_array(masked_tables);
    let mut report = Report {
        role: role.to_owned(),
        ..Report::default()
    };
    let exists = query_nullable(conn, &sql::role_exists(&r)).await?;
    if exists.is_empty() {
        return Err(CatalogError::Query(format!(
            "role \"{role}\" does not exist"
        )));
    }
    let db = sql::one_row(query_nullable(conn, &sql::database(&r)).await?)?;
    let [db_name, db_owner, db_owned_by_role, db_via] = db.as_slice() else {
        return Err(CatalogError::Malformed("database row"));
    };
    let db_name = db_name.clone().unwrap_or_default();
    // The owner the fixes hand objects to: the database's owner, or when
    // that is this role, a new role for migrations.
    let (new_owner, owner_exists) = if sql::truth(db_owned_by_role) {
        let mut candidate = format!("{db_name}_owner");
        if candidate == role {
            candidate = format!("{db_name}_migrations");
        }
        let exists = !query_nullable(conn, &sql::role_exists(&literal(&candidate)))
            .await?
            .is_empty();
        (candidate, exists)
    } else {
        (db_owner.clone().unwrap_or_default(), true)
    };
    let ident = sql::quote_ident(role);
    let owner_ident = sql::quote_ident(&new_owner);
    let create_owner = |fixes: &mut Vec<String>| {
        if !owner_exists {
            fixes.insert(0, format!("CREATE ROLE {owner_ident} NOLOGIN;"));
        }
    };
    // No membership to revoke: the role holds it as the database's owner
    // (pg_database_owner), and it goes with the database's ownership.
    let revoke_via = |via: &Option<String>| {
        Some(via.as_ref().map_or_else(
            || OWNER_NOTE.to_owned(),
            |v| format!("REVOKE {v} FROM {ident};"),
        ))
    };

    let attributes = query_nullable(conn, &sql::attributes(&r)).await?;
    // A superuser is a member of every role: the superusers it "reaches"
    // restate its own attribute.
    let itself_superuser = attributes.iter().any(|row| {
        row.first().is_some_and(|n| n.as_deref() == Some(role))
            && row.get(1).is_some_and(sql::truth)
    });
    for row in attributes {
        let [name, superuser, bypass, via] = row.as_slice() else {
            return Err(CatalogError::Malformed("role attributes"));
        };
        let name = name.clone().unwrap_or_default();
        let direct = name == role;
        if itself_superuser && !direct {
            continue;
        }
        for (flag, condition, attribute) in [
            (superuser, Condition::Superuser, "SUPERUSER"),
            (bypass, Condition::BypassRls, "BYPASSRLS"),
        ] {
            if !sql::truth(flag) {
                continue;
            }
            let (what, fix) = if direct {
                (
                    format!("has {attribute}"),
                    Some(format!("ALTER ROLE {ident} NO{attribute};")),
                )
            } else {
                (
                    format!("is a member of {name}, which has {attribute}"),
                    revoke_via(via),
                )
            };
            report.findings.push(Finding {
                condition,
                what,
                fixes: fix.into_iter().collect(),
            });
        }
    }
    for row in query_nullable(conn, &sql::owned_tables(&r, &oids)).await? {
        let [table, direct, owner, via] = row.as_slice() else {
            return Err(CatalogError::Malformed("owned tables"));
        };
        let table = table.clone().unwrap_or_default();
        let mut fixes = if sql::truth(direct) {
            vec![format!("ALTER TABLE {table} OWNER TO {owner_ident};")]
        } else {
            revoke_via(via).into_iter().collect()
        };
        if sql::truth(direct) {
            create_owner(&mut fixes);
        }
        let owner = owner.clone().unwrap_or_default();
        report.findings.push(Finding {
            condition: Condition::OwnsMaskedTable,
            what: format!("owns masked table {table} (owner {owner})"),
            fixes,
        });
    }
    for row in query_nullable(conn, &sql::owned_schemas(&r, &oids)).await? {
        let [schema, direct, via] = row.as_slice() else {
            return Err(CatalogError::Malformed("owned schemas"));
        };
        let schema = schema.clone().unwrap_or_default();
        let mut fixes = if sql::truth(direct) {
            vec![format!("ALTER SCHEMA {schema} OWNER TO {owner_ident};")]
        } else {
            revoke_via(via).into_iter().collect()
        };
        if sql::truth(direct) {
            create_owner(&mut fixes);
        }
        report.findings.push(Finding {
            condition: Condition::OwnsMaskedSchema,
            what: format!("owns schema {schema} of a masked table"),
            fixes,
        });
    }
    if sql::truth(db_owned_by_role) {
        let db_ident = sql::quote_ident(&db_name);
        let direct = db_owner.as_deref() == Some(role);
        let fixes = if direct {
            let mut fixes = vec![format!("ALTER DATABASE {db_ident} OWNER TO {owner_ident};")];
            create_owner(&mut fixes);
            fixes
        } else {
            revoke_via(db_via).into_iter().collect()
        };
        report.findings.push(Finding {
            condition: Condition::OwnsDatabase,
            what: format!("owns database {db_ident}"),
            fixes,
        });
    }
    for row in query_nullable(conn, &sql::create_on_schemas(&r)).await? {
        let [schema, owned, grantees] = row.as_slice() else {
            return Err(CatalogError::Malformed("schema privileges"));
        };
        let schema = schema.clone().unwrap_or_default();
        let mut fixes = Vec::new();
        if let Some(g) = grantees {
            fixes.push(format!("REVOKE CREATE ON SCHEMA {schema} FROM {g};"));
        }
        if sql::truth(owned) {
            create_owner(&mut fixes);
            fixes.push(format!("ALTER SCHEMA {schema} OWNER TO {owner_ident};"));
        }
        report.findings.push(Finding {
            condition: Condition::CreateOnSchema,
            what: format!("has CREATE on schema {schema}"),
            fixes,
        });
    }
    for row in query_nullable(conn, &sql::temp_on_database(&r)).await? {
        let [grantees] = row.as_slice() else {
            return Err(CatalogError::Malformed("database privileges"));
        };
        let db_ident = sql::quote_ident(&db_name);
        report.findings.push(Finding {
            condition: Condition::TempOnDatabase,
            what: format!("has TEMPORARY on database {db_ident}"),
            fixes: vec![grantees.as_ref().map_or_else(
                || OWNER_NOTE.to_owned(),
                |g| format!("REVOKE TEMPORARY ON DATABASE {db_ident} FROM {g};"),
            )],
        });
    }
    for row in query_nullable(conn, &sql::dangerous_roles(&r)).await? {
        let [name, via] = row.as_slice() else {
            return Err(CatalogError::Malformed("role memberships"));
        };
        report.findings.push(Finding {
            condition: Condition::DangerousRole,
            what: format!("is a member of {}", name.clone().unwrap_or_default()),
            fixes: revoke_via(via).into_iter().collect(),
        });
    }
    for row in query_nullable(conn, &sql::reads_statistics(&r)).await? {
        let [grantees] = row.as_slice() else {
            return Err(CatalogError::Malformed("pg_statistic privileges"));
        };
        report.findings.push(Finding {
            condition: Condition::ReadsStatistics,
            what: "can read pg_catalog.pg_statistic".into(),
            fixes: grantees
                .iter()
                .map(|g| format!("REVOKE SELECT ON pg_catalog.pg_statistic FROM {g};"))
                .collect(),
        });
    }
    // Several paths can fail one condition; keep the checking order.
    report.findings.sort_by_key(|f| f.condition);
    // A superuser passes every privilege check, so the findings after it
    // only restate it (and their fixes would be wrong): it alone is fixed.
    if report
        .findings
        .iter()
        .any(|f| f.condition == Condition::Superuser)
    {
        report
            .findings
            .retain(|f| matches!(f.condition, Condition::Superuser | Condition::BypassRls));
    }
    for row in query_nullable(conn, &sql::readable(&r, &oids)).await? {
        if let Some(Some(table)) = row.first() {
            report.readable_masked.push(table.clone());
        }
    }
    let abilities = sql::one_row(query_nullable(conn, &sql::abilities(&r)).await?)?;
    report.rules_needed = sql::rules_needed(&abilities);
    Ok(report)
}
