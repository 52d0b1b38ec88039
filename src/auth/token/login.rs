//! The wire side of a token login: AuthenticationCleartextPassword, only
//! over TLS, and a PasswordMessage large enough for identity-provider
//! tokens. What the token proves is `TokenAuth::verify`'s business.

use crate::error::SessionError;
use crate::io::FramedStream;
use crate::wire::encode;
use crate::wire::frontend::FrontendKind;
use crate::wire::Framer;
use bytes::BytesMut;

/// The largest PasswordMessage read: a 16 KiB token, its NUL and the
/// frame header fit. Checked by the framer before anything is allocated.
pub const MAX_PASSWORD_MESSAGE: usize = super::jwt::MAX_TOKEN_LEN + 5;

/// Asks the client for its token and returns it. Over a connection without
/// TLS the token is never asked for (it would cross the network in clear
/// text): the login is refused with a message saying why.
pub async fn read_token(conn: &mut FramedStream, user: &str) -> Result<String, SessionError> {
    if !conn.stream.is_tls() {
        return Err(SessionError::TokenNeedsTls(user.to_owned()));
    }
    let mut out = BytesMut::new();
    encode::authentication_cleartext_password(&mut out);
    conn.send(&out).await?;
    let frame = conn
        .read_frame(&Framer::new(MAX_PASSWORD_MESSAGE))
        .await
        .map_err(SessionError::from_client_read)?;
    if FrontendKind::of(frame.tag()) != FrontendKind::Password {
        return Err(SessionError::Protocol("expected a password message".into()));
    }
    password(frame.body())
        .map(str::to_owned)
        .ok_or_else(|| SessionError::Protocol("malformed password message".into()))
}

/// A PasswordMessage body: UTF-8 text ended by its one NUL.
fn password(body: &[u8]) -> Option<&str> {
    let text = body.strip_suffix(&[0])?;
    if text.contains(&0) {
        return None;
    }
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn password_bodies() {
        assert_eq!(super::password(b"abc\0"), Some("abc"));
        assert_eq!(super::password(b"\0"), Some(""));
        assert_eq!(super::password(b"abc"), None);
        assert_eq!(super::password(b"a\0b\0"), None);
        assert_eq!(super::password(b"\xff\0"), None);
    }
}
