//! Session errors: each knows which side caused it, and `sqlstate` is the one
//! place that maps an error to the SQLSTATE a client sees.

use crate::io::ReadError;
use crate::sqlstate::Sqlstate;

/// Which side of pgward an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client sent something wrong or failed to authenticate.
    Client,
    /// The upstream server failed or refused.
    Backend,
    /// pgward itself (configuration, shutdown, timeouts).
    Internal,
}

/// Why a session ended or a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client broke the protocol.
    #[error("{0}")]
    Protocol(String),
    /// The startup packet names no user.
    #[error("no PostgreSQL user name specified in startup packet")]
    MissingUser,
    /// The client's SCRAM proof did not match, or the user does not exist.
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    /// A token user's token was refused (the reason says why).
    #[error("token authentication failed for user \"{user}\": {reason}")]
    TokenRefused {
        /// The user name logging in.
        user: String,
        /// What was wrong with the token.
        reason: String,
    },
    /// A token user connected without TLS; the token was not asked for.
    #[error("user \"{0}\" logs in with a token, which pgward accepts only over TLS (sslmode=require or stronger), so that it never crosses the network in clear text")]
    TokenNeedsTls(String),
    /// The client asked for a database pgward does not map.
    #[error("database \"{0}\" is not configured in pgward")]
    UnknownDatabase(String),
    /// No role mapping covers the identity on the database's upstream.
    #[error("pgward maps no database role for \"{user}\" on database \"{database}\"")]
    NoRole {
        /// The identity.
        user: String,
        /// The client's database name.
        database: String,
    },
    /// A StartupMessage parameter (or an `options` setting) pgward refuses.
    #[error("{message}")]
    StartupParameter {
        /// The SQLSTATE.
        code: crate::sqlstate::Sqlstate,
        /// Names the parameter, and why.
        message: String,
    },
    /// A masked identity asked for a database reached only through the
    /// catch-all, whose columns pgward has not mapped.
    #[error("database \"{0}\" is reached through pgward's catch-all mapping, which identities with masked columns may not use")]
    MaskedCatchAll(String),
    /// The mapped role fails the least-privilege check.
    #[error("{0}")]
    RoleNotLeastPrivilege(String),
    /// The user may not open this database.
    #[error("permission denied for database \"{0}\"")]
    DatabaseNotAllowed(String),
    /// The connection limit is reached.
    #[error("sorry, too many clients already")]
    TooManyClients,
    /// TLS is required and the client did not ask for it.
    #[error("pgward requires an encrypted connection (sslmode=require or stronger)")]
    TlsRequired,
    /// A startup request pgward deliberately does not support.
    #[error("{0}")]
    Unsupported(String),
    /// TLS or authentication took longer than server.startup_timeout.
    #[error("canceling authentication due to timeout")]
    StartupTimeout,
    /// No traffic for server.idle_timeout.
    #[error("terminating connection due to idle-session timeout")]
    IdleTimeout,
    /// pgward is shutting down.
    #[error("terminating connection due to administrator command")]
    Shutdown,
    /// An administrator (or a grant's end) ended the session.
    #[error("terminating connection: {0}")]
    Terminated(String),
    /// pgward could not reach or log in to the upstream.
    #[error("pgward could not connect to upstream \"{upstream}\"")]
    BackendUnavailable {
        /// Upstream name.
        upstream: String,
        /// The reason, for pgward's log only (it may name the backend role).
        detail: String,
    },
    /// The upstream refused the session with its own error.
    #[error("{message}")]
    BackendRefused {
        /// The server's SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The upstream connection broke mid-session.
    #[error("server connection lost: {0}")]
    BackendLost(String),
    /// The upstream sent something that is not valid protocol.
    #[error("invalid message from server: {0}")]
    BackendProtocol(String),
    /// The client's socket failed.
    #[error("client connection: {0}")]
    ClientIo(#[from] std::io::Error),
    /// The audit trail cannot take the session's records, and its identity
    /// fails closed.
    #[error("pgward cannot record this session: the audit queue is full")]
    AuditUnavailable,
    /// The thread that relays the session could not take it or stopped.
    #[error("pgward's relay loop: {0}")]
    RelayLoop(String),
}

impl SessionError {
    /// Which side caused the error.
    pub fn origin(&self) -> Origin {
        match self {
            Self::Protocol(_)
            | Self::MissingUser
            | Self::AuthFailed(_)
            | Self::TokenRefused { .. }
            | Self::TokenNeedsTls(_)
            | Self::UnknownDatabase(_)
            | Self::NoRole { .. }
            | Self::MaskedCatchAll(_)
            | Self::StartupParameter { .. }
            | Self::DatabaseNotAllowed(_)
            | Self::TlsRequired
            | Self::Unsupported(_)
            | Self::ClientIo(_) => Origin::Client,
            Self::BackendUnavailable { .. }
            | Self::BackendRefused { .. }
            | Self::BackendLost(_)
            | Self::BackendProtocol(_) => Origin::Backend,
            Self::TooManyClients
            | Self::RoleNotLeastPrivilege(_)
            | Self::StartupTimeout
            | Self::IdleTimeout
            | Self::Shutdown
            | Self::Terminated(_)
            | Self::AuditUnavailable
            | Self::RelayLoop(_) => Origin::Internal,
        }
    }

    /// The SQLSTATE a client receives for this error.
    pub fn sqlstate(&self) -> &str {
        let code = match self {
            Self::Protocol(_) | Self::BackendProtocol(_) => Sqlstate::PROTOCOL_VIOLATION,
            Self::AuthFailed(_) | Self::TokenRefused { .. } => Sqlstate::INVALID_PASSWORD,
            Self::MissingUser | Self::TlsRequired | Self::TokenNeedsTls(_) => {
                Sqlstate::INVALID_AUTHORIZATION
            }
            Self::UnknownDatabase(_) => Sqlstate::INVALID_CATALOG_NAME,
            Self::DatabaseNotAllowed(_)
            | Self::RoleNotLeastPrivilege(_)
            | Self::MaskedCatchAll(_) => Sqlstate::INSUFFICIENT_PRIVILEGE,
            Self::NoRole { .. } => Sqlstate::INVALID_AUTHORIZATION,
            Self::StartupParameter { code, .. } => *code,
            Self::TooManyClients => Sqlstate::TOO_MANY_CONNECTIONS,
            Self::Unsupported(_) => Sqlstate::FEATURE_NOT_SUPPORTED,
            Self::StartupTimeout => Sqlstate::QUERY_CANCELED,
            Self::IdleTimeout => Sqlstate::IDLE_SESSION_TIMEOUT,
            Self::Shutdown | Self::Terminated(_) => Sqlstate::ADMIN_SHUTDOWN,
            Self::BackendUnavailable { .. } => Sqlstate::UNABLE_TO_CONNECT,
            Self::BackendLost(_) | Self::ClientIo(_) => Sqlstate::CONNECTION_FAILURE,
            Self::AuditUnavailable | Self::RelayLoop(_) => Sqlstate::INSUFFICIENT_RESOURCES,
            // The server's own code, passed through.
            Self::BackendRefused { code, .. } => return code,
        };
        code.as_str()
    }

    /// Reading from the client failed: framing errors are protocol violations.
    pub fn from_client_read(e: ReadError) -> Self {
        match e {
            ReadError::Io(io) => Self::ClientIo(io),
            ReadError::Closed => Self::ClientIo(std::io::ErrorKind::UnexpectedEof.into()),
            ReadError::Frame(f) => Self::Protocol(f.to_string()),
            ReadError::Startup(s) => Self::Protocol(s.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_match_postgresql() {
        assert_eq!(SessionError::AuthFailed("a".into()).sqlstate(), "28P01");
        assert_eq!(
            SessionError::UnknownDatabase("d".into()).sqlstate(),
            "3D000"
        );
        assert_eq!(SessionError::TooManyClients.sqlstate(), "53300");
        assert_eq!(
            SessionError::AuthFailed("bob".into()).to_string(),
            "password authentication failed for user \"bob\""
        );
        assert_eq!(SessionError::Shutdown.origin(), Origin::Internal);
    }
}
