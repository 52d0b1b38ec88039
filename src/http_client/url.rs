//! `http://` and `https://` URLs, checked before anything connects.

/// An `http[s]://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https`.
    pub tls: bool,
    /// Host name or address (without brackets).
    pub host: String,
    /// Port (80 or 443 by default).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an `http://` or `https://` URL; user info, fragments, white
    /// space and control characters are refused (they have no place in a
    /// request line pgward writes).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        if url.contains('#') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{url:?} has a fragment or white space"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') || authority.is_empty() {
            return Err(format!("{url:?} has no host, or has user info"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed ["))?;
            match after {
                "" => (h, None),
                _ => (
                    h,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| format!("{url:?}: bad port"))?,
                    ),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
        };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// Parses an `https://` URL only (where plain HTTP is never acceptable:
    /// a JWKS carries the keys that prove identities).
    pub fn parse_https(url: &str) -> Result<Self, String> {
        if !url.starts_with("https://") {
            return Err(format!("{url:?} is not an https:// URL"));
        }
        Self::parse(url)
    }

    /// This URL with `path` (which starts with `/`) instead of its own
    /// path, below its own path prefix: `http://h/base` + `/x` is
    /// `http://h/base/x`.
    pub fn join(&self, path: &str) -> Self {
        let base = self.path.trim_end_matches('/');
        Self {
            path: format!("{base}{path}"),
            ..self.clone()
        }
    }

    /// The `Host` header's value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Url;

    #[test]
    fn urls() {
        let u = Url::parse("https://idp.example:8443/.well-known/jwks.json").expect("ok");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "idp.example", 8443)
        );
        assert_eq!(u.path, "/.well-known/jwks.json");
        let u = Url::parse("https://[::1]/k").expect("ok");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 443, "/k")
        );
        assert_eq!(u.host_header(), "[::1]");
        let u = Url::parse("http://127.0.0.1:9187").expect("ok");
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 9187, "/"));
        assert_eq!(u.host_header(), "127.0.0.1:9187");
        assert_eq!(Url::parse("http://h?x=1").expect("ok").path, "/?x=1");
        assert_eq!(Url::parse("http://h").expect("ok").port, 80);
        assert_eq!(
            Url::parse("http://h/base/").expect("ok").join("/x").path,
            "/base/x"
        );
        for bad in [
            "ftp://idp/jwks",
            "https://user@idp/jwks",
            "https:///jwks",
            "https://:80/jwks",
            "https://idp:x/",
            "https://idp:99999/",
            "https://[::1]x/",
            "https://idp/a b",
            "https://idp/a#f",
            "https://idp/a\r\nX: y",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        assert!(Url::parse_https("http://idp/jwks").is_err());
    }
}
