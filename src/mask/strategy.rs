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
        let mut out = Vec::new();
        self.append_text(value, key, &mut out).then_some(out)
    }

    /// Appends the masked value of `value` (text format) to `out`; `false`
    /// means SQL NULL (nothing appended). Writes straight into the row being
    /// built: no allocation per cell on the hot path.
    pub fn append_text(&self, value: &[u8], key: &HashKey, out: &mut impl Extend<u8>) -> bool {
        match self {
            Self::Redact(s) | Self::Constant(s) => out.extend(s.bytes()),
            Self::Null => return false,
            Self::Partial {
                keep_first,
                keep_last,
                fill,
            } => partial(value, *keep_first, *keep_last, *fill, out),
            Self::Email => match value.iter().rposition(|b| *b == b'@') {
                Some(at) if at + 1 < value.len() => {
                    out.extend(*b"****");
                    out.extend(value[at..].iter().copied());
                }
                _ => out.extend(*b"****"),
            },
            Self::Hash => token(value, key, out),
        }
        true
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

fn partial(
    value: &[u8],
    keep_first: usize,
    keep_last: usize,
    fill: char,
    out: &mut impl Extend<u8>,
) {
    if value.is_ascii() && fill.is_ascii() {
        // One byte per character: slices, no decoding.
        let n = value.len();
        if keep_first + keep_last >= n {
            out.extend(std::iter::repeat_n(fill as u8, n));
        } else {
            out.extend(value[..keep_first].iter().copied());
            out.extend(std::iter::repeat_n(fill as u8, n - keep_first - keep_last));
            out.extend(value[n - keep_last..].iter().copied());
        }
        return;
    }
    let text = String::from_utf8_lossy(value);
    let n = text.chars().count();
    let mut buf = [0u8; 4];
    let fill = fill.encode_utf8(&mut buf).as_bytes();
    if keep_first + keep_last >= n {
        // Too short to keep anything and still hide something: hide all.
        for _ in 0..n {
            out.extend(fill.iter().copied());
        }
        return;
    }
    let mut c_buf = [0u8; 4];
    for (i, c) in text.chars().enumerate() {
        if i < keep_first || i >= n - keep_last {
            out.extend(c.encode_utf8(&mut c_buf).bytes());
        } else {
            out.extend(fill.iter().copied());
        }
    }
}

fn token(value: &[u8], key: &HashKey, out: &mut impl Extend<u8>) {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.0) else {
        out.extend(*b"****");
        return;
    };
    mac.update(value);
    let digest = mac.finalize().into_bytes();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend(*b"h:");
    for b in &digest[..16] {
        out.extend([HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
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
