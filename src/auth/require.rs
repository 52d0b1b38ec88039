//! Which authentication pgward accepts from an upstream before it hands
//! over the credential it holds (libpq 16's `require_auth`), and the order
//! the exchange must follow.
//!
//! The threat: anything that answers on the upstream's address (a spoofed
//! DNS name, a hijacked port, a server on the path when TLS is off or not
//! verified) can ask for the password in clear text and receive it, or say
//! AuthenticationOk without authenticating at all and receive the clients'
//! statements. By default only SCRAM-SHA-256 is accepted, its server
//! signature must verify (proof that the server holds the verifier, not
//! just a copy of the conversation), and over TLS with sslmode require or
//! verify-full the exchange must be bound to the TLS channel
//! (SCRAM-SHA-256-PLUS), so a man in the middle terminating TLS cannot relay
//! it. A pure state machine, tested without I/O.

use std::fmt;

/// One way a server may authenticate pgward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (with or without channel binding).
    ScramSha256,
    /// MD5 challenge-response (the hash is password-equivalent).
    Md5,
    /// The password in clear text.
    Password,
    /// No authentication at all (trust).
    None,
}

impl AuthMethod {
    /// Parses a `require_auth` entry.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "scram-sha-256" => Self::ScramSha256,
            "md5" => Self::Md5,
            "password" => Self::Password,
            "none" => Self::None,
            _ => return None,
        })
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ScramSha256 => "scram-sha-256",
            Self::Md5 => "md5",
            Self::Password => "password",
            Self::None => "none",
        })
    }
}

/// An upstream's authentication requirements, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// Methods the server may use.
    pub allowed: Vec<AuthMethod>,
    /// SCRAM must be bound to the TLS channel.
    pub channel_binding: bool,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            allowed: vec![AuthMethod::ScramSha256],
            channel_binding: false,
        }
    }
}

/// Why a login was stopped; the text goes to pgward's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthRefused(pub String);

/// Where an upstream's authentication exchange stands.
#[derive(Debug, Default)]
pub struct AuthProgress {
    method: Option<AuthMethod>,
    server_verified: bool,
    ok: bool,
}

impl AuthProgress {
    /// The server asks for `method` (before pgward answers). Refused when
    /// the policy does not allow it or an exchange already started.
    pub fn request(&mut self, policy: &AuthPolicy, method: AuthMethod) -> Result<(), AuthRefused> {
        if self.ok {
            return Err(AuthRefused(format!(
                "the server asks for {method} authentication after AuthenticationOk"
            )));
        }
        if let Some(started) = self.method {
            return Err(AuthRefused(format!(
                "the server asks for {method} authentication during a {started} exchange"
            )));
        }
        if !policy.allowed.contains(&method) {
            return Err(AuthRefused(format!(
                "the server asks for {method} authentication, which require_auth ({}) does not allow; \
                 pgward sent nothing",
                list(&policy.allowed)
            )));
        }
        self.method = Some(method);
        Ok(())
    }

    /// The server's SCRAM signature verified.
    pub fn server_verified(&mut self) {
        self.server_verified = true;
    }

    /// AuthenticationOk arrived.
    pub fn ok(&mut self, policy: &AuthPolicy) -> Result<(), AuthRefused> {
        if self.ok {
            return Err(AuthRefused("a second AuthenticationOk".into()));
        }
        match self.method {
            None if !policy.allowed.contains(&AuthMethod::None) => {
                return Err(AuthRefused(format!(
                    "the server accepted the login without authentication, which require_auth \
                     ({}) does not allow",
                    list(&policy.allowed)
                )))
            }
            Some(AuthMethod::ScramSha256) if !self.server_verified => {
                return Err(AuthRefused(
                    "AuthenticationOk before the server's SCRAM signature was verified".into(),
                ))
            }
            _ => {}
        }
        self.ok = true;
        Ok(())
    }

    /// A message that only follows authentication (ParameterStatus,
    /// BackendKeyData, ReadyForQuery) arrived.
    pub fn after_ok(&self, what: &str) -> Result<(), AuthRefused> {
        if self.ok {
            Ok(())
        } else {
            Err(AuthRefused(format!("{what} before AuthenticationOk")))
        }
    }
}

fn list(methods: &[AuthMethod]) -> String {
    methods
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[AuthMethod]) -> AuthPolicy {
        AuthPolicy {
            allowed: allowed.to_vec(),
            channel_binding: false,
        }
    }

    #[test]
    fn the_default_accepts_a_verified_scram_exchange_only() {
        let p = AuthPolicy::default();
        let mut a = AuthProgress::default();
        a.request(&p, AuthMethod::ScramSha256).expect("scram");
        assert!(a.ok(&p).is_err(), "no server signature yet");
        a.server_verified();
        a.ok(&p).expect("verified");
        a.after_ok("ReadyForQuery").expect("ready");
        for m in [AuthMethod::Password, AuthMethod::Md5] {
            let err = AuthProgress::default().request(&p, m).unwrap_err();
            assert!(err.0.contains("does not allow"), "{err}");
        }
        let err = AuthProgress::default().ok(&p).unwrap_err();
        assert!(err.0.contains("without authentication"), "{err}");
    }

    #[test]
    fn methods_named_in_the_policy_are_accepted_once_and_in_order() {
        let p = policy(&[AuthMethod::Password, AuthMethod::None]);
        let mut a = AuthProgress::default();
        assert!(a.after_ok("ParameterStatus").is_err());
        a.request(&p, AuthMethod::Password).expect("allowed");
        assert!(
            a.request(&p, AuthMethod::Password).is_err(),
            "a second request"
        );
        a.ok(&p).expect("ok");
        assert!(a.request(&p, AuthMethod::Password).is_err(), "after ok");
        assert!(a.ok(&p).is_err(), "a second ok");
        AuthProgress::default().ok(&p).expect("trust allowed");
    }
}
