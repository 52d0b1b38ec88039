//! Parse errors as PostgreSQL reports them: its own message, its SQLSTATE
//! and the cursor position, so a client shows the error exactly as the
//! server would have (psql's `LINE 1: ... ^` marker included). The SQLSTATE
//! and position come from csrc/parse_errors.c, which reads them while
//! libpg_query raises the error.

use std::collections::BTreeSet;
use std::os::raw::c_int;
use std::sync::Mutex;

extern "C" {
    fn pgward_error_capture_begin();
    fn pgward_error_capture_end(code: *mut c_int, position: *mut c_int);
}

/// Text PostgreSQL's scanner or parser rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// PostgreSQL's message.
    pub message: String,
    /// PostgreSQL's SQLSTATE (42601 when libpg_query did not say).
    pub code: &'static str,
    /// 1-based character position in the text, when the parser gave one.
    pub position: Option<u32>,
}

/// Runs a libpg_query call on this thread, turning its error into a
/// [`SyntaxError`] with the SQLSTATE and position it raised.
pub(crate) fn capture<T>(
    call: impl FnOnce() -> Result<T, pg_query::Error>,
) -> Result<T, Result<SyntaxError, pg_query::Error>> {
    struct End(c_int, c_int);
    impl Drop for End {
        fn drop(&mut self) {
            // SAFETY: pops the callback `begin` pushed on this thread's
            // error context stack (a no-op if it is no longer on top) and
            // writes two ints it owns.
            unsafe { pgward_error_capture_end(&mut self.0, &mut self.1) };
        }
    }
    // SAFETY: pushes a thread-local callback record on libpg_query's
    // thread-local error context stack; `End` pops it on every path.
    unsafe { pgward_error_capture_begin() };
    let mut end = End(0, 0);
    let result = call();
    // Pop now, to read what the callback recorded.
    // SAFETY: as in `End::drop`; popping twice is harmless.
    unsafe { pgward_error_capture_end(&mut end.0, &mut end.1) };
    let (code, position) = (end.0, end.1);
    result.map_err(|e| match e {
        pg_query::Error::Parse(message) | pg_query::Error::Scan(message) => Ok(SyntaxError {
            message,
            code: sqlstate(code),
            position: u32::try_from(position).ok().filter(|p| *p > 0),
        }),
        other => Err(other),
    })
}

/// A packed SQLSTATE (PostgreSQL's MAKE_SQLSTATE: six bits per character)
/// as text, interned: parse errors come from a fixed set of ereport calls in
/// libpg_query, so the set stays small; past a bound, or for anything that
/// is not a SQLSTATE, 42601 (syntax_error).
fn sqlstate(packed: c_int) -> &'static str {
    const SYNTAX_ERROR: &str = "42601";
    if packed == 0 {
        return SYNTAX_ERROR;
    }
    let text: String = (0..5)
        .map(|i| char::from(((packed >> (6 * i)) & 0x3f) as u8 + b'0'))
        .collect();
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return SYNTAX_ERROR;
    }
    static SEEN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let Ok(mut seen) = SEEN.lock() else {
        return SYNTAX_ERROR;
    };
    if let Some(known) = seen.get(text.as_str()) {
        return known;
    }
    if seen.len() >= 256 {
        return SYNTAX_ERROR;
    }
    let leaked: &'static str = Box::leak(text.into_boxed_str());
    seen.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(sql: &str) -> SyntaxError {
        capture(|| pg_query::parse(sql, pg_query::ParserOptions::DEFAULT))
            .err()
            .and_then(Result::ok)
            .expect("a syntax error")
    }

    #[test]
    fn parse_errors_carry_postgres_sqlstate_and_position() {
        let e = parse_error("SELECT 1 FROM t WHERE");
        assert_eq!(e.code, "42601");
        assert_eq!(e.message, "syntax error at end of input");
        assert_eq!(e.position, Some(22));
        // Characters, not bytes, as PostgreSQL counts them.
        let e = parse_error("SELECT 'é', ü FRM t");
        assert_eq!(e.position, Some(19), "{e:?}"); // at "t"; 21 in bytes
                                                   // Not every parse error is a syntax error.
        let e = parse_error("CREATE ASSERTION a CHECK (true)");
        assert_eq!((e.code, e.position), ("0A000", Some(1)), "{e:?}");
        let e = parse_error("CREATE ROLE r UNENCRYPTED PASSWORD 'x'");
        assert_eq!(e.code, "0A000", "{e:?}");
        assert_eq!(e.message, "UNENCRYPTED PASSWORD is no longer supported");
        // And a parse that succeeds leaves nothing behind.
        assert!(capture(|| pg_query::parse("SELECT 1", pg_query::ParserOptions::DEFAULT)).is_ok());
        let e = parse_error("SELEC 1");
        assert_eq!((e.code, e.position), ("42601", Some(1)));
    }

    #[test]
    fn packed_sqlstates_unpack() {
        // MAKE_SQLSTATE('4','2','6','0','1')
        let pack = |s: &str| {
            s.bytes()
                .enumerate()
                .map(|(i, b)| (c_int::from(b - b'0') & 0x3f) << (6 * i))
                .sum::<c_int>()
        };
        assert_eq!(sqlstate(pack("42601")), "42601");
        assert_eq!(sqlstate(pack("0A000")), "0A000");
        assert_eq!(sqlstate(0), "42601");
    }
}
