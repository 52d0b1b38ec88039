//! Client encodings. The server converts a statement from the session's
//! client_encoding before lexing it, so pgward must judge the text the
//! conversion yields: UTF8 as it is, single-byte encodings transcoded with
//! the server's own tables ([`super::encoding_tables`]). Multi-byte
//! encodings in which a byte of a character can be `\` or `'` (SJIS, BIG5,
//! GBK, GB18030, UHC, JOHAB), and every other encoding pgward has no exact
//! converter for, cannot be judged: text in them is refused unless it is
//! pure ASCII, which every PostgreSQL client encoding reads alike (no byte
//! below 0x80 can continue a character that never began), and requests to
//! switch to them are refused by a built-in rule.

use super::encoding_tables::SINGLE_BYTE;
use std::borrow::Cow;

/// How pgward reads the text of a session with some client_encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEncoding {
    /// UTF8 (or SQL_ASCII, whose bytes the server passes through): judged
    /// as UTF-8.
    Utf8,
    /// A single-byte encoding: its name and what bytes 0x80..=0xFF become.
    SingleByte(&'static str, &'static [u16; 128]),
    /// An encoding pgward cannot judge (its name as given).
    Unjudgeable(String),
}

/// Why a text cannot be judged in its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable {
    /// SQLSTATE (22021 or 22P05, as the server would say).
    pub code: &'static str,
    /// The client's message.
    pub message: String,
}

/// PostgreSQL's aliases (encnames.c) for the encodings pgward can judge,
/// in its normalized form: lower case, letters and digits only.
const ALIASES: &[(&str, &str)] = &[
    ("utf8", "UTF8"),
    ("unicode", "UTF8"),
    ("sqlascii", "SQL_ASCII"),
    ("latin1", "LATIN1"),
    ("iso88591", "LATIN1"),
    ("latin2", "LATIN2"),
    ("iso88592", "LATIN2"),
    ("latin3", "LATIN3"),
    ("iso88593", "LATIN3"),
    ("latin4", "LATIN4"),
    ("iso88594", "LATIN4"),
    ("latin5", "LATIN5"),
    ("iso88599", "LATIN5"),
    ("latin6", "LATIN6"),
    ("iso885910", "LATIN6"),
    ("latin7", "LATIN7"),
    ("iso885913", "LATIN7"),
    ("latin8", "LATIN8"),
    ("iso885914", "LATIN8"),
    ("latin9", "LATIN9"),
    ("iso885915", "LATIN9"),
    ("latin10", "LATIN10"),
    ("iso885916", "LATIN10"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("win1250", "WIN1250"),
    ("windows1250", "WIN1250"),
    ("win1251", "WIN1251"),
    ("windows1251", "WIN1251"),
    ("win", "WIN1251"),
    ("win1252", "WIN1252"),
    ("windows1252", "WIN1252"),
    ("win1253", "WIN1253"),
    ("windows1253", "WIN1253"),
    ("win1254", "WIN1254"),
    ("windows1254", "WIN1254"),
    ("win1255", "WIN1255"),
    ("windows1255", "WIN1255"),
    ("win1256", "WIN1256"),
    ("windows1256", "WIN1256"),
    ("win1257", "WIN1257"),
    ("windows1257", "WIN1257"),
    ("win1258", "WIN1258"),
    ("windows1258", "WIN1258"),
    ("abc", "WIN1258"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("vscii", "WIN1258"),
    ("win866", "WIN866"),
    ("windows866", "WIN866"),
    ("alt", "WIN866"),
    ("win874", "WIN874"),
    ("windows874", "WIN874"),
    ("koi8", "KOI8R"),
    ("koi8r", "KOI8R"),
    ("koi8u", "KOI8U"),
];

impl ClientEncoding {
    /// Its name: `UTF8`, the single-byte encoding's canonical name, or the
    /// name an unjudgeable one was given as.
    pub fn name(&self) -> &str {
        match self {
            Self::Utf8 => "UTF8",
            Self::SingleByte(name, _) => name,
            Self::Unjudgeable(name) => name,
        }
    }

    /// The encoding a client_encoding name (any of PostgreSQL's spellings:
    /// `latin1`, `ISO-8859-1`, `"Win1252"`) stands for.
    pub fn named(name: &str) -> Self {
        let normalized: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let canonical = ALIASES
            .iter()
            .find(|(alias, _)| *alias == normalized)
            .map(|(_, c)| *c);
        match canonical {
            Some("UTF8" | "SQL_ASCII") => Self::Utf8,
            Some(c) => SINGLE_BYTE.iter().find(|(n, _)| *n == c).map_or_else(
                || Self::Unjudgeable(name.to_owned()),
                |(n, t)| Self::SingleByte(n, t),
            ),
            None => Self::Unjudgeable(name.to_owned()),
        }
    }

    /// The text the server lexes, as UTF-8: `bytes` converted as the
    /// server converts them, or why that cannot be judged.
    pub fn to_utf8<'a>(&self, bytes: &'a [u8]) -> Result<Cow<'a, str>, Untranslatable> {
        match self {
            Self::Utf8 => std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|_| Untranslatable {
                code: "22021",
                message: "statement denied by pgward: its text is not valid UTF-8".into(),
            }),
            Self::SingleByte(name, table) => {
                if bytes.is_ascii() {
                    // ASCII is the same text in every one of them.
                    return Ok(Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default()));
                }
                let mut out = String::with_capacity(bytes.len() * 2);
                for &b in bytes {
                    let c = if b < 0x80 {
                        Some(char::from(b))
                    } else {
                        char::from_u32(u32::from(table[usize::from(b - 0x80)])).filter(|c| *c != '\0')
                    };
                    let Some(c) = c else {
                        return Err(Untranslatable {
                            code: "22P05",
                            message: format!(
                                "character with byte sequence 0x{b:02x} in encoding \"{name}\" has no equivalent in encoding \"UTF8\""
                            ),
                        });
                    };
                    out.push(c);
                }
                Ok(Cow::Owned(out))
            }
            Self::Unjudgeable(_) if bytes.is_ascii() => {
                Ok(Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default()))
            }
            Self::Unjudgeable(name) => Err(Untranslatable {
                code: "22021",
                message: format!(
                    "statement denied by pgward: the session's client_encoding \"{name}\" is one pgward cannot judge, and the text is not pure ASCII"
                ),
            }),
        }
    }
}

/// Whether pgward can judge statements sent in the client encoding `name`
/// (a startup parameter, `options`, SET, set_config, ALTER ROLE / DATABASE
/// ... SET): UTF8, SQL_ASCII and the single-byte encodings. SJIS, BIG5,
/// GBK, GB18030, UHC, JOHAB (a byte of a character can be `\` or `'`), the
/// EUC family and MULE_INTERNAL (no exact converter in pgward) and unknown
/// names are not.
pub fn encoding_is_safe(name: &str) -> bool {
    !matches!(ClientEncoding::named(name), ClientEncoding::Unjudgeable(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_postgres_spellings() {
        for (name, safe) in [
            ("UTF8", true),
            ("utf-8", true),
            ("Unicode", true),
            ("SQL_ASCII", true),
            ("LATIN1", true),
            ("iso-8859-1", true),
            ("ISO_8859_15", true),
            ("latin9", true),
            ("WIN1252", true),
            ("windows-1251", true),
            ("koi8-u", true),
            ("ISO_8859_5", true),
            ("WIN866", true),
            ("SJIS", false),
            ("Shift_JIS", false),
            ("mskanji", false),
            ("win932", false),
            ("BIG5", false),
            ("GBK", false),
            ("windows936", false),
            ("GB18030", false),
            ("UHC", false),
            ("JOHAB", false),
            ("EUC_JP", false),
            ("MULE_INTERNAL", false),
            ("nonsense", false),
            ("", false),
        ] {
            assert_eq!(encoding_is_safe(name), safe, "{name}");
        }
    }

    #[test]
    fn single_byte_text_is_transcoded_as_the_server_does() {
        let latin9 = ClientEncoding::named("LATIN9");
        assert_eq!(latin9.to_utf8(b"SELECT '\xa4'").unwrap(), "SELECT '€'");
        let latin1 = ClientEncoding::named("LATIN1");
        assert_eq!(
            latin1.to_utf8(b"SELECT '\xe9\x80'").unwrap(),
            "SELECT 'é\u{80}'"
        );
        let win1252 = ClientEncoding::named("WIN1252");
        assert_eq!(win1252.to_utf8(b"\x80").unwrap(), "€");
        assert_eq!(win1252.to_utf8(b"\x81").unwrap_err().code, "22P05");
        // Bytes that are UTF-8 sequences are just characters here.
        assert_eq!(latin1.to_utf8("ぁ".as_bytes()).unwrap(), "ã\u{81}\u{81}");
    }

    #[test]
    fn unjudgeable_encodings_pass_only_ascii() {
        let sjis = ClientEncoding::named("SJIS");
        assert_eq!(
            sjis.to_utf8(b"SET client_encoding = 'UTF8'").unwrap(),
            "SET client_encoding = 'UTF8'"
        );
        // The E'ぁ\' in UTF-8 bytes: to SJIS, 0x81 0x5C is one
        // character, and the backslash is gone. Refused.
        let text = "SELECT E'ぁ\\'; DROP TABLE t; --'";
        assert_eq!(sjis.to_utf8(text.as_bytes()).unwrap_err().code, "22021");
    }
}
