//! PostgreSQL's own scanner (libpg_query), run with the session's lexing
//! settings, and what pgward derives from its tokens: the statement
//! fingerprint that keys the verdict cache, and the normalized text that
//! regex rules match.
//!
//! Why tokens and not bytes: `SELECT 1` and `select  /* x */ 1` must share a
//! verdict, and `WHERE aid = 7` and `WHERE aid = 8` too (pgbench, ORMs), so
//! comments, spacing and most literals are left out. Why not a lexer of our
//! own: a tokenisation that differs from the server's (a string that ends
//! elsewhere) is a bypass; only PostgreSQL's scanner is trusted to split text
//! as PostgreSQL does.

use super::parse_error::{capture, SyntaxError};
use pg_query::protobuf::{ScanToken, Token};
use std::ops::Range;

extern "C" {
    /// csrc/scanner_settings.c: sets the thread-local setting that
    /// libpg_query's scanner copies at the start of every scan.
    fn pgward_set_standard_conforming_strings(on: bool);
}

/// Session settings that change where tokens begin and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LexSettings {
    /// `standard_conforming_strings`: whether a backslash escapes inside '...'.
    pub standard_conforming_strings: bool,
}

impl Default for LexSettings {
    fn default() -> Self {
        // PostgreSQL's default since 9.1.
        Self {
            standard_conforming_strings: true,
        }
    }
}

/// Runs PostgreSQL's scanner over `sql` as a server with `settings` would
/// (or reuses its answer for a text that differs from the last one scanned
/// on this thread only in an integer's digits: [`super::scan_memo`]).
pub fn scan(sql: &str, settings: LexSettings) -> Result<Vec<ScanToken>, SyntaxError> {
    // Text with no token at all (PostgreSQL's whitespace only) is answered
    // here: pg_query 18.1's scan_tokens builds a slice from a null pointer
    // when the scanner finds nothing (undefined behaviour; an abort in debug).
    if sql
        .bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
    {
        return Ok(Vec::new());
    }
    if let Some(tokens) = super::scan_memo::recall(sql, settings) {
        return Ok(tokens);
    }
    let tokens = scan_uncached(sql, settings)?;
    super::scan_memo::remember(sql, settings, &tokens);
    Ok(tokens)
}

/// [`scan`] without the memo: PostgreSQL's scanner itself.
pub(super) fn scan_uncached(
    sql: &str,
    settings: LexSettings,
) -> Result<Vec<ScanToken>, SyntaxError> {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: writes a thread-local bool; libpg_query's own parse
            // entry points leave it at `true`, its default, as we do here.
            unsafe { pgward_set_standard_conforming_strings(true) };
        }
    }
    let _restore = Restore;
    // SAFETY: as above; the scan below runs on this thread, before `Restore`.
    unsafe { pgward_set_standard_conforming_strings(settings.standard_conforming_strings) };
    capture(|| pg_query::scan_tokens(sql)).map_err(|e| {
        e.unwrap_or_else(|other| SyntaxError {
            message: other.to_string(),
            code: "42601",
            position: None,
        })
    })
}

// Token ids as plain integers, so the per-token tests below are one
// comparison each (this runs on every cached judgement).
const SCONST: i32 = Token::Sconst as i32;
const USCONST: i32 = Token::Usconst as i32;
const ICONST: i32 = Token::Iconst as i32;
const FCONST: i32 = Token::Fconst as i32;
const BCONST: i32 = Token::Bconst as i32;
const XCONST: i32 = Token::Xconst as i32;
const SQL_COMMENT: i32 = Token::SqlComment as i32;
const C_COMMENT: i32 = Token::CComment as i32;
const CREATE: i32 = Token::Create as i32;
const ALTER: i32 = Token::Alter as i32;
const DO: i32 = Token::Do as i32;
const IDENT: i32 = Token::Ident as i32;
const OPEN_PAREN: i32 = Token::Ascii40 as i32;
const ORDER: i32 = Token::Order as i32;
const GROUP: i32 = Token::GroupP as i32;
const DISTINCT: i32 = Token::Distinct as i32;
const BY: i32 = Token::By as i32;
const COMMA: i32 = Token::Ascii44 as i32;

/// Whether a token is a literal (its value left out of shapes).
fn is_literal(token: i32) -> bool {
    matches!(token, SCONST | USCONST | ICONST | FCONST | BCONST | XCONST)
}

fn is_comment(token: i32) -> bool {
    matches!(token, SQL_COMMENT | C_COMMENT)
}

/// Whether literal values may change the verdict, so they must stay in the
/// shape: function bodies (`CREATE FUNCTION ... AS '...'`), DO blocks,
/// and anything else under CREATE / ALTER. DDL is rare; its shapes gain
/// nothing from sharing a cache entry, and exactness is the safe side.
fn literals_matter(tokens: &[ScanToken]) -> bool {
    tokens
        .iter()
        .any(|t| matches!(t.token, CREATE | ALTER | DO))
}

fn text<'a>(sql: &'a str, t: &ScanToken) -> &'a [u8] {
    let (a, b) = (t.start.max(0) as usize, t.end.max(0) as usize);
    sql.as_bytes().get(a..b).unwrap_or_default()
}

/// A statement's shape: its token stream with comments and spacing dropped
/// and literals replaced by a placeholder, except where their value can
/// change the verdict (see [`literals_matter`], and the first argument of
/// `set_config`, which may name `role`). Shapes are compared byte for byte,
/// so two statements share a cached verdict only if PostgreSQL's scanner
/// sees the same tokens in them (no hash collision can join two shapes).
pub fn shape(sql: &str, tokens: &[ScanToken], settings: LexSettings) -> Vec<u8> {
    shape_keeping(sql, tokens, settings, false)
}

/// The shape masking's guard caches its verdicts under: as [`shape`], but
/// in a statement with ORDER BY, GROUP BY or DISTINCT ON an integer that
/// could be a select-list position stays (`ORDER BY 2` may sort by a
/// masked column where `ORDER BY 1` does not). PostgreSQL reads a position
/// only from a bare integer constant as a list item, so after `BY`, `,` or
/// `(` (parentheses fold away: `ORDER BY (2)` is a position); `id = 42`
/// still shares its shape.
pub fn guard_shape(sql: &str, tokens: &[ScanToken], settings: LexSettings) -> Vec<u8> {
    shape_keeping(sql, tokens, settings, ordinals(tokens))
}

/// Whether integers may be select-list positions in `tokens` (see
/// [`guard_shape`]).
fn ordinals(tokens: &[ScanToken]) -> bool {
    tokens
        .iter()
        .any(|t| matches!(t.token, ORDER | GROUP | DISTINCT))
}

fn shape_keeping(
    sql: &str,
    tokens: &[ScanToken],
    settings: LexSettings,
    integers: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + tokens.len() * 3);
    out.push(u8::from(settings.standard_conforming_strings));
    for (t, bytes, keep) in shaped(sql, tokens, integers) {
        // Token ids fit in 16 bits (PostgreSQL has under 1,000 of them);
        // each kept text is length-prefixed, so the encoding is unambiguous.
        out.extend_from_slice(&(t.token as u16).to_le_bytes());
        if keep {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        } else {
            out.extend_from_slice(&u32::MAX.to_le_bytes());
        }
    }
    out
}

/// Whether [`shape`] keeps the text of any literal of `sql`: when it keeps
/// none, texts whose tokens differ only in their literals' text have the
/// same shape (the verdict memo relies on this).
pub fn shape_keeps_a_literal(sql: &str, tokens: &[ScanToken]) -> bool {
    keeps_a_literal(sql, tokens, false)
}

/// As [`shape_keeps_a_literal`], for [`guard_shape`].
pub fn guard_shape_keeps_a_literal(sql: &str, tokens: &[ScanToken]) -> bool {
    keeps_a_literal(sql, tokens, ordinals(tokens))
}

fn keeps_a_literal(sql: &str, tokens: &[ScanToken], integers: bool) -> bool {
    shaped(sql, tokens, integers).any(|(t, _, keep)| keep && is_literal(t.token))
}

pub use super::scan_memo::{free_literals, same_but_integers, same_but_literals, Span};

/// The tokens a shape is made of (comments dropped), each with its text and
/// whether the shape keeps that text: one place decides, for the shape and
/// for [`shape_keeps_a_literal`].
fn shaped<'a>(
    sql: &'a str,
    tokens: &'a [ScanToken],
    integers: bool,
) -> impl Iterator<Item = (&'a ScanToken, &'a [u8], bool)> {
    let keep_all = literals_matter(tokens);
    let mut after_set_config = 0u8;
    let mut previous = 0;
    tokens
        .iter()
        .filter(|t| !is_comment(t.token))
        .map(move |t| {
            let bytes = text(sql, t);
            let keep = keep_all
                || !is_literal(t.token)
                || after_set_config == 2
                || (integers && t.token == ICONST && matches!(previous, BY | COMMA | OPEN_PAREN));
            previous = t.token;
            // Tracks `set_config` `(` <literal>: the literal names the setting.
            after_set_config = match (after_set_config, t.token) {
                (_, IDENT) if bytes.eq_ignore_ascii_case(b"set_config") => 1,
                (1, OPEN_PAREN) => 2,
                _ => 0,
            };
            (t, bytes, keep)
        })
}

/// The normalized text of the tokens inside `range`: comments removed, every
/// literal replaced by `?`, one space between tokens. Regex rules match this,
/// so their verdict depends on nothing the fingerprint leaves out.
pub fn normalized(sql: &str, tokens: &[ScanToken], range: Range<usize>) -> String {
    let keep_all = literals_matter(tokens);
    let mut out = String::with_capacity(range.len());
    for t in tokens.iter().filter(|t| {
        let start = t.start.max(0) as usize;
        !is_comment(t.token) && range.contains(&start)
    }) {
        if !out.is_empty() {
            out.push(' ');
        }
        if is_literal(t.token) && !keep_all {
            out.push('?');
        } else {
            out.push_str(&String::from_utf8_lossy(text(sql, t)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(sql: &str) -> Vec<u8> {
        let s = LexSettings::default();
        guard_shape(sql, &scan(sql, s).expect("scans"), s)
    }

    #[test]
    fn the_guard_shape_keeps_positions_and_drops_other_literals() {
        // A select-list position chooses a column.
        for (a, b) in [
            (
                "SELECT a, b FROM t ORDER BY 1",
                "SELECT a, b FROM t ORDER BY 2",
            ),
            (
                "SELECT a, b FROM t GROUP BY 1",
                "SELECT a, b FROM t GROUP BY 2",
            ),
            (
                "SELECT DISTINCT ON (1) a, b FROM t",
                "SELECT DISTINCT ON (2) a, b FROM t",
            ),
        ] {
            assert_ne!(guard(a), guard(b), "{a} / {b}");
        }
        // Elsewhere literals are left out, as in the rules' shape.
        assert_eq!(
            guard("SELECT a FROM t WHERE id = 1 AND n = 'x'"),
            guard("SELECT a FROM t WHERE id = 22 AND n = 'yy'")
        );
        assert_eq!(
            guard("SELECT a FROM t WHERE id = 1 ORDER BY a LIMIT 10 OFFSET 'x'"),
            guard("SELECT a FROM t WHERE id = 7 ORDER BY a LIMIT 20 OFFSET 'y'")
        );
        assert_ne!(
            guard("SELECT a, b FROM t ORDER BY a, (1)"),
            guard("SELECT a, b FROM t ORDER BY a, (2)")
        );
    }

    fn fp(sql: &str, scs: bool, _: &()) -> Vec<u8> {
        let s = LexSettings {
            standard_conforming_strings: scs,
        };
        shape(sql, &scan(sql, s).unwrap(), s)
    }

    #[test]
    fn literals_comments_and_spacing_do_not_matter() {
        let k = ();
        let base = fp("SELECT abalance FROM t WHERE aid = 1", true, &k);
        assert_eq!(
            base,
            fp(
                "SELECT  abalance /* c */ FROM t\nWHERE aid = 99 -- x",
                true,
                &k
            )
        );
        assert_ne!(base, fp("SELECT abalance FROM u WHERE aid = 1", true, &k));
        assert_ne!(base, fp("SELECT abalance FROM t WHERE aid = 1", false, &k));
    }

    #[test]
    fn verdict_bearing_literals_stay() {
        let k = ();
        assert_ne!(
            fp("SELECT set_config('role', 'x', false)", true, &k),
            fp("SELECT set_config('app.user', 'x', false)", true, &k)
        );
        assert_eq!(
            fp("SELECT set_config('app.user', 'x', false)", true, &k),
            fp("SELECT set_config('app.user', 'y', false)", true, &k)
        );
        assert_ne!(
            fp(
                "CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
                true,
                &k
            ),
            fp(
                "CREATE FUNCTION f() RETURNS int AS 'DELETE FROM t' LANGUAGE sql",
                true,
                &k
            )
        );
    }

    #[test]
    fn the_setting_moves_where_a_string_ends() {
        let sql = r"SELECT 'a\' ; DROP TABLE t; --'";
        let on = scan(sql, LexSettings::default()).unwrap();
        let off = scan(
            sql,
            LexSettings {
                standard_conforming_strings: false,
            },
        )
        .unwrap();
        assert!(on.len() > off.len(), "on: {on:?} off: {off:?}");
        // And the setting is back to its default afterwards.
        assert_eq!(scan(sql, LexSettings::default()).unwrap(), on);
    }

    #[test]
    fn empty_and_blank_text_have_no_tokens() {
        for sql in ["", " ", "\n\t\r\x0b\x0c "] {
            assert_eq!(
                scan(sql, LexSettings::default()).unwrap(),
                vec![],
                "{sql:?}"
            );
        }
        assert_eq!(
            scan("-- only a comment", LexSettings::default())
                .unwrap()
                .len(),
            1
        );
        assert_eq!(scan("/* c */", LexSettings::default()).unwrap().len(), 1);
    }

    #[test]
    fn normalized_text() {
        let sql = "SELECT a, 'x' FROM t /* hi */ WHERE b = 42; DELETE FROM u";
        let tokens = scan(sql, LexSettings::default()).unwrap();
        assert_eq!(
            normalized(sql, &tokens, 0..42),
            "SELECT a , ? FROM t WHERE b = ?"
        );
    }
}
