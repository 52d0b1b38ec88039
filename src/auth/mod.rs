//! Authentication: SCRAM or a signed token towards clients, the stored
//! credential towards servers.

pub mod backend;
pub mod client;
pub mod identity;
pub mod require;
pub mod scram_client;
pub mod token;
pub mod verifier;

use crate::config::UserConfig;
use crate::error::SessionError;
use crate::io::FramedStream;
use identity::Authenticated;
use std::collections::BTreeMap;

/// Authenticates the client as `user_name`: with a token when the name is a
/// token user's (`[tokens]`), with SCRAM otherwise (unknown names included,
/// against a fake verifier). Either way the result is one
/// [`Authenticated`] value.
pub async fn authenticate(
    conn: &mut FramedStream,
    scram: &client::ScramEngines,
    users: &BTreeMap<String, UserConfig>,
    tokens: &token::TokenAuth,
    user_name: &str,
) -> Result<Authenticated, SessionError> {
    if tokens.is_token_user(user_name) {
        let presented = token::login::read_token(conn, user_name).await?;
        return match tokens.verify(&presented, user_name).await {
            Ok(t) => {
                tracing::info!(
                    user = user_name,
                    issuer = %t.issuer,
                    subject = t.subject.as_deref().unwrap_or(""),
                    jti = t.jti.as_deref().unwrap_or(""),
                    expires = %token::utc(t.expires),
                    "token accepted"
                );
                Ok(Authenticated::from_token(t))
            }
            Err(e) => {
                tracing::info!(user = user_name, reason = %e, "token refused");
                Err(SessionError::TokenRefused {
                    user: user_name.to_owned(),
                    reason: e.to_string(),
                })
            }
        };
    }
    let user = users.get(user_name);
    client::authenticate(conn, scram, user_name, user).await?;
    let user = user.ok_or_else(|| SessionError::AuthFailed(user_name.to_owned()))?;
    Ok(Authenticated::from_user(user))
}
