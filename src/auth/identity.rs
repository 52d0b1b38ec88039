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
