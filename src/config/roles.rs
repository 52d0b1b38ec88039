//! Identity to role: which PostgreSQL role pgward logs in as for each
//! identity on each upstream, and the credential it holds for that role.
//!
//! The choice is deterministic: an explicit per-user role
//! (`[users.NAME] roles = { upstream = "role" }`) first, then the upstream's
//! `role_map` entries in the order written, the first whose `users` names
//! the identity (or is `"*"`) or whose `groups` shares a group with it. An
//! identity nothing maps is refused at login; a `users = ["*"]` entry is the
//! explicit way to give everyone a role.

use super::raw::{RawRole, RawRoleMapping};
use super::{field_err, secret_from, ConfigError, Secret};
use std::collections::BTreeMap;
use std::path::Path;

/// A role pgward may log in as, and the password it holds for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCredential {
    /// The PostgreSQL role name.
    pub name: String,
    /// Its password, when the server asks for one.
    pub password: Option<Secret>,
}

/// One `role_map` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMapping {
    /// Identities it maps (`*`: every identity).
    pub users: Vec<String>,
    /// Groups it maps.
    pub groups: Vec<String>,
    /// The role they log in as.
    pub role: String,
}

impl RoleMapping {
    fn matches(&self, user: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == "*" || u == user)
            || self.groups.iter().any(|g| groups.contains(g))
    }
}

/// Which identities a failed least-privilege check refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeastPrivilege {
    /// Identities with masked columns are refused; for the others the
    /// findings are logged as warnings.
    Masked,
    /// Identities with masked columns are refused; the others' roles are
    /// not checked at login (the doctor still reports them).
    MaskedOnly,
    /// Every identity is refused.
    Strict,
}

/// An upstream's roles and who acts as which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMap {
    /// Roles with their held credentials, by name. The upstream's own
    /// `user` (the catalog role) is not in here unless written.
    pub credentials: BTreeMap<String, RoleCredential>,
    /// The mappings in order.
    pub mappings: Vec<RoleMapping>,
    /// What a failed privilege check refuses.
    pub least_privilege: LeastPrivilege,
}

impl RoleMap {
    /// The role an identity acts as here: `explicit` (the user's own choice
    /// for this upstream) first, then the first mapping that matches.
    /// `None`: nothing maps it, and the login is refused.
    pub fn role_for<'a>(
        &'a self,
        user: &str,
        groups: &[String],
        explicit: Option<&'a str>,
    ) -> Option<&'a str> {
        explicit.or_else(|| {
            self.mappings
                .iter()
                .find(|m| m.matches(user, groups))
                .map(|m| m.role.as_str())
        })
    }
}

/// Builds an upstream's role map; `catalog_role` is its own `user`, which
/// mappings may name (logging in with the upstream's own password).
pub(super) fn role_map_from_raw(
    upstream: &str,
    catalog_role: &str,
    roles: BTreeMap<String, RawRole>,
    mappings: Vec<RawRoleMapping>,
    least_privilege: Option<&str>,
    base: &Path,
) -> Result<RoleMap, ConfigError> {
    let f = |leaf: &str| format!("upstreams.{upstream}.{leaf}");
    let mut credentials = BTreeMap::new();
    for (name, r) in roles {
        if name.is_empty() {
            return Err(field_err(f("roles"), "a role name must not be empty"));
        }
        let field = |leaf: &str| f(&format!("roles.{name}.{leaf}"));
        let password = secret_from(
            r.password_env,
            r.password_file,
            base,
            &field("password_env"),
            &field("password_file"),
        )?;
        credentials.insert(name.clone(), RoleCredential { name, password });
    }
    let mut typed = Vec::new();
    for (i, m) in mappings.into_iter().enumerate() {
        let field = |leaf: &str| f(&format!("role_map[{i}].{leaf}"));
        if m.users.is_empty() && m.groups.is_empty() {
            return Err(field_err(
                field("users"),
                "names no identity and no group (write users = [\"*\"] to map everyone)",
            ));
        }
        check_role_known(&credentials, catalog_role, &m.role, &field("role"))?;
        typed.push(RoleMapping {
            users: m.users,
            groups: m.groups,
            role: m.role,
        });
    }
    let least_privilege = match least_privilege {
        None | Some("masked") => LeastPrivilege::Masked,
        Some("strict") => LeastPrivilege::Strict,
        Some("masked_only") => LeastPrivilege::MaskedOnly,
        Some(other) => {
            return Err(field_err(
                f("least_privilege"),
                format!("{other:?} is not one of masked, masked_only, strict"),
            ))
        }
    };
    Ok(RoleMap {
        credentials,
        mappings: typed,
        least_privilege,
    })
}

/// A mapping may name a role of `roles` or the upstream's own `user`.
pub(super) fn check_role_known(
    credentials: &BTreeMap<String, RoleCredential>,
    catalog_role: &str,
    role: &str,
    field: &str,
) -> Result<(), ConfigError> {
    if role == catalog_role || credentials.contains_key(role) {
        return Ok(());
    }
    Err(field_err(
        field,
        format!(
            "role {role:?} has no credential: add it to [upstreams.NAME.roles] \
             (or name the upstream's own user, {catalog_role:?})"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(users: &[&str], groups: &[&str], role: &str) -> RoleMapping {
        RoleMapping {
            users: users.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            role: role.into(),
        }
    }

    #[test]
    fn the_first_matching_mapping_decides_after_an_explicit_role() {
        let map = RoleMap {
            credentials: BTreeMap::new(),
            mappings: vec![
                mapping(&[], &["dba"], "owner"),
                mapping(&["carol"], &["support"], "support"),
                mapping(&["*"], &[], "app"),
            ],
            least_privilege: LeastPrivilege::Masked,
        };
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // In both groups: the first mapping wins, whatever the group order.
        assert_eq!(
            map.role_for("dave", &groups(&["support", "dba"]), None),
            Some("owner")
        );
        assert_eq!(map.role_for("carol", &[], None), Some("support"));
        assert_eq!(map.role_for("erin", &[], None), Some("app"));
        assert_eq!(
            map.role_for("dave", &groups(&["dba"]), Some("support")),
            Some("support")
        );
        let strict = RoleMap {
            mappings: vec![mapping(&[], &["dba"], "owner")],
            ..map
        };
        assert_eq!(strict.role_for("erin", &groups(&["dev"]), None), None);
    }
}
