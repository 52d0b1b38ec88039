//! Who a session runs as once authenticated: the plain data that statement
//! rules and mask rules match (a user name and its groups). Where it came
//! from (the config's user list, a token) is not part of it, so nothing that
//! judges an identity can depend on that.

/// An authenticated client identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The pgward user name.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
}

impl Identity {
    /// An identity from its user name and groups.
    pub fn new(
        user: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            user: user.into(),
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }
}

/// The outcome of client authentication, whichever way it went: who the
/// session runs as, which databases it may open, and what proved it. SCRAM
/// users and token users produce the same value, so everything after
/// authentication (database check, role mapping, rules, masking, the
/// registry) treats them alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// User name and groups.
    pub identity: Identity,
    /// Client database names it may open; `None`: all.
    pub databases: Option<Vec<String>>,
    /// What proved the identity.
    pub credential: Credential,
}

/// How an identity was proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A configured user's SCRAM password.
    Password,
    /// A signed token (boxed: every session keeps its credential, and most
    /// are passwords).
    Token(Box<TokenCredential>),
}

/// What identifies a token, for expiry, revocation and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCredential {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: Option<String>,
    /// `jti`.
    pub jti: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires: i64,
}

impl Authenticated {
    /// A configured user, proved by its password.
    pub fn from_user(user: &crate::config::UserConfig) -> Self {
        Self {
            identity: Identity::new(user.name.clone(), user.groups.clone()),
            databases: (!user.databases.is_empty()).then(|| user.databases.clone()),
            credential: Credential::Password,
        }
    }

    /// A verified token's identity.
    pub fn from_token(t: crate::auth::token::TokenIdentity) -> Self {
        Self {
            identity: Identity::new(t.user, t.groups),
            databases: t.databases,
            credential: Credential::Token(Box::new(TokenCredential {
                issuer: t.issuer,
                subject: t.subject,
                jti: t.jti,
                expires: t.expires,
            })),
        }
    }

    /// Whether it may open this client database.
    pub fn may_open(&self, database: &str) -> bool {
        self.databases
            .as_ref()
            .is_none_or(|dbs| dbs.iter().any(|d| d == database))
    }

    /// The token, when a token proved the identity.
    pub fn token(&self) -> Option<&TokenCredential> {
        match &self.credential {
            Credential::Token(t) => Some(&**t),
            Credential::Password => None,
        }
    }
}
