//! SQLSTATEs pgward sends, by name: the one typed place they come from
//! (PostgreSQL's errcodes.txt gives the codes and names).

/// A SQLSTATE: the five characters clients switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sqlstate(&'static str);

impl Sqlstate {
    /// 00000 successful_completion (pgward's own notices).
    pub const SUCCESSFUL_COMPLETION: Self = Self("00000");
    /// 08001 sqlclient_unable_to_establish_sqlconnection.
    pub const UNABLE_TO_CONNECT: Self = Self("08001");
    /// 08006 connection_failure.
    pub const CONNECTION_FAILURE: Self = Self("08006");
    /// 08P01 protocol_violation.
    pub const PROTOCOL_VIOLATION: Self = Self("08P01");
    /// 0A000 feature_not_supported.
    pub const FEATURE_NOT_SUPPORTED: Self = Self("0A000");
    /// 26000 invalid_sql_statement_name.
    pub const INVALID_SQL_STATEMENT_NAME: Self = Self("26000");
    /// 28000 invalid_authorization_specification.
    pub const INVALID_AUTHORIZATION: Self = Self("28000");
    /// 28P01 invalid_password.
    pub const INVALID_PASSWORD: Self = Self("28P01");
    /// 34000 invalid_cursor_name.
    pub const INVALID_CURSOR_NAME: Self = Self("34000");
    /// 3D000 invalid_catalog_name.
    pub const INVALID_CATALOG_NAME: Self = Self("3D000");
    /// 42501 insufficient_privilege.
    pub const INSUFFICIENT_PRIVILEGE: Self = Self("42501");
    /// 42601 syntax_error.
    pub const SYNTAX_ERROR: Self = Self("42601");
    /// 53300 too_many_connections.
    pub const TOO_MANY_CONNECTIONS: Self = Self("53300");
    /// insufficient_resources (the audit trail cannot take a record)
    pub const INSUFFICIENT_RESOURCES: Self = Self("53000");
    /// 55000 object_not_in_prerequisite_state.
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: Self = Self("55000");
    /// 57014 query_canceled.
    pub const QUERY_CANCELED: Self = Self("57014");
    /// 57P01 admin_shutdown.
    pub const ADMIN_SHUTDOWN: Self = Self("57P01");
    /// 57P05 idle_session_timeout.
    pub const IDLE_SESSION_TIMEOUT: Self = Self("57P05");

    /// A code that policy code carries as text (its rule tables): taken as
    /// is when it has SQLSTATE's shape, else 42501.
    pub fn from_code(code: &'static str) -> Self {
        if code.len() == 5
            && code
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            Self(code)
        } else {
            Self::INSUFFICIENT_PRIVILEGE
        }
    }

    /// The five characters.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for Sqlstate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Sqlstate;

    #[test]
    fn codes_have_their_shape() {
        assert_eq!(Sqlstate::from_code("25P02").as_str(), "25P02");
        assert_eq!(
            Sqlstate::from_code("nope"),
            Sqlstate::INSUFFICIENT_PRIVILEGE
        );
    }
}
