//! The catalog queries behind the least-privilege checks. `r` is the role
//! name as a literal ([`crate::upstream::query::literal`]); every query
//! works for any role name as the catalog role, through the privilege
//! inquiry functions.

use crate::upstream::query::CatalogError;

/// The role's OID.
fn role_oid(r: &str) -> String {
    format!("(SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {r})")
}

/// Roles the role is directly a member of that lead to `target` (an OID
/// expression), comma-separated and quoted: what to REVOKE from it.
fn via(r: &str, target: &str) -> String {
    format!(
        "(SELECT pg_catalog.string_agg(pg_catalog.quote_ident(g.rolname), ', ' ORDER BY g.rolname) \
         FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles g ON g.oid = m.roleid \
         WHERE m.member = {oid} AND pg_catalog.pg_has_role(g.oid, {target}, 'MEMBER'))",
        oid = role_oid(r)
    )
}

/// Grantees of `privilege` in `acl` (owner `owner` excluded) through which
/// the role holds it: PUBLIC or roles it is a member of.
fn grantees(r: &str, acl: &str, owner: &str, privilege: &str) -> String {
    format!(
        "(SELECT pg_catalog.string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
         ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END, ', ') \
         FROM pg_catalog.aclexplode({acl}) a WHERE a.privilege_type = '{privilege}' \
         AND a.grantee <> {owner} \
         AND (a.grantee = 0 OR pg_catalog.pg_has_role({r}, a.grantee, 'MEMBER')))"
    )
}

/// Whether the role or a role it is a member of passes `check` (an
/// expression over `g.oid`).
fn any_member_role(r: &str, check: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_roles g \
         WHERE pg_catalog.pg_has_role({r}, g.oid, 'MEMBER') AND {check})"
    )
}

pub(super) fn role_exists(r: &str) -> String {
    format!("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {r}")
}

/// Name, owner, whether the role is (a member of) the owner, and via what.
pub(super) fn database(r: &str) -> String {
    format!(
        "SELECT d.datname, pg_catalog.pg_get_userbyid(d.datdba), \
         pg_catalog.pg_has_role({r}, d.datdba, 'MEMBER'), {via} \
         FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()",
        via = via(r, "d.datdba")
    )
}

/// Superuser and BYPASSRLS roles it reaches.
pub(super) fn attributes(r: &str) -> String {
    format!(
        "SELECT g.rolname, g.rolsuper, g.rolbypassrls, {via} FROM pg_catalog.pg_roles g \
         WHERE (g.rolsuper OR g.rolbypassrls) AND pg_catalog.pg_has_role({r}, g.oid, 'MEMBER') \
         ORDER BY g.rolname <> {r}, g.rolname",
        via = via(r, "g.oid")
    )
}

pub(super) fn owned_tables(r: &str, oids: &str) -> String {
    format!(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), \
         c.relowner = {oid}, pg_catalog.pg_get_userbyid(c.relowner), {via} \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = ANY ({oids}) AND pg_catalog.pg_has_role({r}, c.relowner, 'MEMBER') \
         ORDER BY 1",
        oid = role_oid(r),
        via = via(r, "c.relowner")
    )
}

pub(super) fn owned_schemas(r: &str, oids: &str) -> String {
    format!(
        "SELECT pg_catalog.quote_ident(n.nspname), n.nspowner = {oid}, {via} \
         FROM pg_catalog.pg_namespace n WHERE n.oid IN \
         (SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = ANY ({oids})) \
         AND pg_catalog.pg_has_role({r}, n.nspowner, 'MEMBER') ORDER BY 1",
        oid = role_oid(r),
        via = via(r, "n.nspowner")
    )
}

/// Every schema it can create in: a client can put any schema in its
/// search_path with SET, so "the schemas in its search_path" is all of them.
pub(super) fn create_on_schemas(r: &str) -> String {
    format!(
        "SELECT pg_catalog.quote_ident(n.nspname), \
         pg_catalog.pg_has_role({r}, n.nspowner, 'MEMBER'), {grantees} \
         FROM pg_catalog.pg_namespace n \
         WHERE n.nspname !~ '^pg_(toast|temp_|toast_temp_)' AND {check} ORDER BY 1",
        grantees = grantees(
            r,
            "COALESCE(n.nspacl, pg_catalog.acldefault('n', n.nspowner))",
            "n.nspowner",
            "CREATE"
        ),
        check = any_member_role(r, "pg_catalog.has_schema_privilege(g.oid, n.oid, 'CREATE')")
    )
}

pub(super) fn temp_on_database(r: &str) -> String {
    format!(
        "SELECT {grantees} FROM pg_catalog.pg_database d \
         WHERE d.datname = pg_catalog.current_database() AND {check}",
        grantees = grantees(
            r,
            "COALESCE(d.datacl, pg_catalog.acldefault('d', d.datdba))",
            "d.datdba",
            "TEMPORARY"
        ),
        check = any_member_role(
            r,
            "pg_catalog.has_database_privilege(g.oid, d.oid, 'TEMPORARY')"
        )
    )
}

pub(super) fn dangerous_roles(r: &str) -> String {
    let names = super::DANGEROUS_ROLES
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT t.rolname, {via} FROM pg_catalog.pg_roles t \
         WHERE t.rolname IN ({names}) AND t.rolname <> {r} \
         AND pg_catalog.pg_has_role({r}, t.oid, 'MEMBER') ORDER BY 1",
        via = via(r, "t.oid")
    )
}

pub(super) fn reads_statistics(r: &str) -> String {
    format!(
        "SELECT {grantees} FROM pg_catalog.pg_class c \
         WHERE c.oid = 'pg_catalog.pg_statistic'::pg_catalog.regclass AND {check}",
        grantees = grantees(
            r,
            "COALESCE(c.relacl, pg_catalog.acldefault('r', c.relowner))",
            "c.relowner",
            "SELECT"
        ),
        check = any_member_role(
            r,
            "pg_catalog.has_any_column_privilege(g.oid, c.oid, 'SELECT')"
        )
    )
}

pub(super) fn readable(r: &str, oids: &str) -> String {
    format!(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = ANY ({oids}) AND pg_catalog.has_any_column_privilege({r}, c.oid, 'SELECT') \
         ORDER BY 1"
    )
}

/// What the role can do that only a built-in rule stops, as booleans in
/// [`RULES_NEEDED`] order.
pub(super) fn abilities(r: &str) -> String {
    let member = |role: &str| format!("pg_catalog.pg_has_role({r}, '{role}', 'MEMBER')");
    let user_tables = |check: &str| {
        format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND {check})"
        )
    };
    let superuser = any_member_role(r, "g.rolsuper");
    format!(
        "SELECT {superuser}, {superuser} OR {program}, \
         {superuser} OR {read_files} OR {write_files}, {superuser} OR {signal}, {owns}, \
         {truncate}, {write}, {create}",
        program = member("pg_execute_server_program"),
        read_files = member("pg_read_server_files"),
        write_files = member("pg_write_server_files"),
        signal = member("pg_signal_backend"),
        owns = user_tables(&format!(
            "pg_catalog.pg_has_role({r}, c.relowner, 'MEMBER')"
        )),
        truncate = user_tables(&format!(
            "pg_catalog.has_table_privilege({r}, c.oid, 'TRUNCATE')"
        )),
        write = user_tables(&format!(
            "(pg_catalog.has_table_privilege({r}, c.oid, 'UPDATE') \
             OR pg_catalog.has_table_privilege({r}, c.oid, 'DELETE'))"
        )),
        create = "EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n \
                  WHERE n.nspname !~ '^pg_(toast|temp_|toast_temp_)' AND "
            .to_owned()
            + &format!("pg_catalog.has_schema_privilege({r}, n.oid, 'CREATE'))"),
    )
}

/// For each ability of [`abilities`], what the rules stop.
const RULES_NEEDED: &[&str] = &[
    "ALTER SYSTEM, pg_reload_conf(), SET session_replication_role \
     (no-alter-system, no-reload-conf, no-session-replication-role)",
    "COPY ... PROGRAM (no-copy-program)",
    "COPY to or from server files, pg_read_file() (no-server-files, no-server-file-functions)",
    "pg_terminate_backend() of other sessions (no-signal-other-sessions)",
    "DROP TABLE, DROP COLUMN, ALTER TABLE ... RENAME of its tables \
     (no-drop, no-drop-column, no-rename-tables)",
    "TRUNCATE (no-truncate)",
    "UPDATE and DELETE without WHERE (no-unbounded-write)",
    "functions whose bodies pgward cannot read: LANGUAGE internal or c, EXECUTE of a string \
     (no-native-functions, no-opaque-code)",
];

pub(super) fn rules_needed(abilities: &[Option<String>]) -> Vec<String> {
    abilities
        .iter()
        .zip(RULES_NEEDED)
        .filter(|(flag, _)| truth(flag))
        .map(|(_, rule)| (*rule).to_owned())
        .collect()
}

/// A boolean cell.
pub(super) fn truth(cell: &Option<String>) -> bool {
    cell.as_deref() == Some("t")
}

/// The only row of a reply.
pub(super) fn one_row(rows: Vec<Vec<Option<String>>>) -> Result<Vec<Option<String>>, CatalogError> {
    let mut rows = rows.into_iter();
    match (rows.next(), rows.next()) {
        (Some(row), None) => Ok(row),
        _ => Err(CatalogError::Malformed("expected one row")),
    }
}

/// `'{1,2}'::pg_catalog.oid[]`.
pub(super) fn oid_array(oids: &[u32]) -> String {
    let list = oids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    format!("'{{{list}}}'::pg_catalog.oid[]")
}

/// An identifier as `quote_ident` writes it, for the fix statements.
pub(super) fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    // Reserved words that make plausible role or schema names.
    const RESERVED: &[&str] = &[
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "both",
        "case",
        "check",
        "column",
        "constraint",
        "create",
        "current_role",
        "current_user",
        "default",
        "do",
        "end",
        "for",
        "from",
        "grant",
        "group",
        "in",
        "limit",
        "not",
        "null",
        "only",
        "or",
        "order",
        "select",
        "session_user",
        "table",
        "to",
        "user",
        "using",
        "where",
        "with",
    ];
    if plain && !RESERVED.contains(&name) {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
