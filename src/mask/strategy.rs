//! Mask strategies: what a masked cell becomes, in text and in binary
//! format. Pure functions over one value.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How a masked column's values are replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// A fixed string (text columns).
    Redact(String),
    /// SQL NULL (any column).
    Null,
    /// Keep the first / last characters, replace the rest with `fill`.
    Partial {
        /// Characters kept at the start.
        keep_first: usize,
        /// Characters kept at the end.
        keep_last: usize,
        /// Replacement character.
        fill: char,
    },
    /// Keep the domain of an e-mail address: `****@example.com`.
    Email,
    /// A deterministic token: HMAC-SHA256 of the value under a secret key,
    /// so equal values give equal tokens (joins and GROUP BY still line up)
    /// and nobody without the key can map a token back.
    Hash,
    /// A fixed value of the column's own type, given as PostgreSQL text.
    Constant(String),
}

/// Key for [`Strategy::Hash`].
#[derive(Clone, Default)]
pub struct HashKey(Vec<u8>);

impl HashKey {
    /// A key from secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

/// How a column's binary values look, for the strategies that can write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    /// text, varchar, bpchar, name, citext...: binary is the UTF-8 bytes.
    Text,
    /// int2.
    Int2,
    /// int4.
    Int4,
    /// int8.
    Int8,
    /// Anything else: masked cells in binary format become NULL.
    Other,
}

impl BinaryKind {
    /// The kind for a type OID (built-in types only).
    pub fn of(type_oid: u32) -> Self {
        match type_oid {
            25 | 1043 | 1042 | 19 => Self::Text,
            21 => Self::Int2,
            23 => Self::Int4,
            20 => Self::Int8,
            _ => Self::Other,
        }
    }
}

impl Strategy {
    /// The masked value of `value` (text format). `None` is SQL NULL.
    pub fn mask_text(&self, value: &[u8], key: &HashKey) -> Option<Vec<u8>> {
        match self {
            Self::Redact(s) | Self::Constant(s) => Some(s.as_bytes().to_vec()),
            Self::Null => None,
            Self::Partial {
                keep_first,
                keep_last,
                fill,
            } => Some(partial(value, *keep_first, *keep_last, *fill).into_bytes()),
            Self::Email => Some(email(value).into_bytes()),
            Self::Hash => Some(token(value, key).into_bytes()),
        }
    }

    /// The masked value in binary format for a column of `kind`: a valid
    /// value of the type, or NULL where no valid one can be written.
    pub fn mask_binary(&self, value: &[u8], kind: BinaryKind, key: &HashKey) -> Option<Vec<u8>> {
        match (kind, self) {
            (_, Self::Null) => None,
            (BinaryKind::Text, _) => self.mask_text(value, key),
            (BinaryKind::Int2, Self::Constant(s)) => s
                .trim()
                .parse::<i16>()
                .ok()
                .map(|v| v.to_be_bytes().to_vec()),
            (BinaryKind::Int4, Self::Constant(s)) => s
                .trim()
                .parse::<i32>()
                .ok()
                .map(|v| v.to_be_bytes().to_vec()),
            (BinaryKind::Int8, Self::Constant(s)) => s
                .trim()
                .parse::<i64>()
                .ok()
                .map(|v| v.to_be_bytes().to_vec()),
            _ => None,
        }
    }
}

fn partial(value: &[u8], keep_first: usize, keep_last: usize, fill: char) -> String {
    let text = String::from_utf8_lossy(value);
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    if keep_first + keep_last >= n {
        // Too short to keep anything and still hide something: hide all.
        return std::iter::repeat_n(fill, n).collect();
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_first || i >= n - keep_last {
                *c
            } else {
                fill
            }
        })
        .collect()
}

fn email(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    match text.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => format!("****@{domain}"),
        _ => "****".into(),
    }
}

fn token(value: &[u8], key: &HashKey) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.0) else {
        return "****".into();
    };
    mac.update(value);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("h:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_in_text() {
        let key = HashKey::new(b"k".to_vec());
        let m = |s: Strategy, v: &str| {
            s.mask_text(v.as_bytes(), &key)
                .map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(
            m(Strategy::Redact("[hidden]".into()), "x"),
            Some("[hidden]".into())
        );
        assert_eq!(m(Strategy::Null, "x"), None);
        let last4 = Strategy::Partial {
            keep_first: 0,
            keep_last: 4,
            fill: '*',
        };
        assert_eq!(
            m(last4.clone(), "4111111111111111"),
            Some("************1111".into())
        );
        assert_eq!(
            m(last4, "123"),
            Some("***".into()),
            "short values are hidden whole"
        );
        let first1 = Strategy::Partial {
            keep_first: 1,
            keep_last: 0,
            fill: '•',
        };
        assert_eq!(
            m(first1, "Ådäm"),
            Some("Å•••".into()),
            "characters, not bytes"
        );
        assert_eq!(
            m(Strategy::Email, "ada@example.com"),
            Some("****@example.com".into())
        );
        assert_eq!(m(Strategy::Email, "not-an-address"), Some("****".into()));
        let a = m(Strategy::Hash, "123-45-6789").unwrap();
        assert_eq!(
            a,
            m(Strategy::Hash, "123-45-6789").unwrap(),
            "deterministic"
        );
        assert_ne!(a, m(Strategy::Hash, "123-45-6780").unwrap());
        assert!(a.starts_with("h:") && a.len() == 34, "{a}");
        let other_key = Strategy::Hash.mask_text(b"123-45-6789", &HashKey::new(b"j".to_vec()));
        assert_ne!(Some(a.into_bytes()), other_key, "keyed");
    }

    #[test]
    fn strategies_in_binary_stay_valid_for_the_type() {
        let key = HashKey::default();
        let c = Strategy::Constant("0".into());
        assert_eq!(
            c.mask_binary(&7i32.to_be_bytes(), BinaryKind::Int4, &key),
            Some(vec![0, 0, 0, 0])
        );
        assert_eq!(
            c.mask_binary(&7i64.to_be_bytes(), BinaryKind::Int8, &key),
            Some(vec![0; 8])
        );
        assert_eq!(
            Strategy::Email.mask_binary(b"a@b.c", BinaryKind::Text, &key),
            Some(b"****@b.c".to_vec())
        );
        assert_eq!(
            Strategy::Redact("x".into()).mask_binary(&[1, 2], BinaryKind::Other, &key),
            None
        );
        assert_eq!(
            Strategy::Redact("x".into()).mask_binary(&[1, 2], BinaryKind::Int4, &key),
            None
        );
    }
}
