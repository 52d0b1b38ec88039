//! The scanner's last answer on this thread, reused for a text that differs
//! from it only in the digits of one integer literal.
//!
//! Why: in the simple protocol every statement arrives as text with its
//! values inlined (`... WHERE aid = 4711`, then `... WHERE aid = 815`), so
//! the exact-text verdict cache misses and the text is scanned (a third of
//! a judged request's instructions) only to find the shape already cached.
//! The scanner is a pure function of (text, `standard_conforming_strings`),
//! so reusing its output needs no identity, rules or server version in the
//! key, and a memo per thread needs no lock.
//!
//! When reuse is sound: the new text equals the remembered one outside one
//! integer constant token (ICONST) of the remembered one, and that token, in
//! both texts, is a run of 1 to 9 decimal digits (so it fits an int4 and
//! stays ICONST, with no `_`, no `0x` and no sign). Everything before the
//! token is the same bytes, scanned the same way: the token before it ended
//! where the digits start, and no rule of PostgreSQL's scanner continues a
//! token into a digit run differently depending on how many digits there
//! are or which (its patterns use digit classes only; a token that could
//! take the digits, an identifier or a `$n`, would have taken them in the
//! remembered text too, which then had no ICONST there). The digit run is
//! followed by the same byte as before, so it ends where it ended, as the
//! same token; from there the scanner is in its initial state, on the same
//! bytes. So the new text's tokens are the remembered ones, with the
//! token's end and every later offset moved by the change in length. The
//! property test in `tests.rs` checks this against the scanner itself.

use super::lexer::LexSettings;
use pg_query::protobuf::{ScanToken, Token};
use std::cell::RefCell;

const ICONST: i32 = Token::Iconst as i32;
/// Longest digit run that always fits an int4 (the scanner makes longer
/// ones FCONST when they overflow).
const MAX_DIGITS: usize = 9;
/// Texts longer than this are not remembered (copying them would cost more
/// than it saves, and the memo would hold the memory).
const MAX_TEXT: usize = 4096;

#[derive(Default)]
struct Memo {
    settings: Option<LexSettings>,
    text: String,
    tokens: Vec<ScanToken>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// The tokens of `sql` under `settings`, from the memo, when the memo holds
/// a text it can answer for (see the module comment).
pub(super) fn recall(sql: &str, settings: LexSettings) -> Option<Vec<ScanToken>> {
    MEMO.with(|memo| {
        let mut memo = memo.try_borrow_mut().ok()?;
        if memo.settings != Some(settings) {
            return None;
        }
        let tokens = derive(&memo.text, &memo.tokens, sql)?;
        if sql.len() <= MAX_TEXT {
            // The next text likely differs from this one as this one did
            // from the last (the guard scans the text the rules just did).
            memo.text.clear();
            memo.text.push_str(sql);
            memo.tokens.clear();
            memo.tokens.extend_from_slice(&tokens);
        }
        Some(tokens)
    })
}

/// Remembers the scanner's answer for `sql`.
pub(super) fn remember(sql: &str, settings: LexSettings, tokens: &[ScanToken]) {
    MEMO.with(|memo| {
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return;
        };
        if sql.len() > MAX_TEXT {
            memo.settings = None;
            memo.text = String::new();
            memo.tokens = Vec::new();
            return;
        }
        memo.settings = Some(settings);
        memo.text.clear();
        memo.text.push_str(sql);
        memo.tokens.clear();
        memo.tokens.extend_from_slice(tokens);
    })
}

/// The tokens of `new`, given that `old` scans to `tokens`, when they differ
/// only inside one integer literal (or not at all).
pub(super) fn derive(old: &str, tokens: &[ScanToken], new: &str) -> Option<Vec<ScanToken>> {
    let (a, b) = (old.as_bytes(), new.as_bytes());
    if a == b {
        return Some(tokens.to_vec());
    }
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let room = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(room)
        .take_while(|(x, y)| x == y)
        .count();
    // The changed bytes of `old`: [prefix, a.len() - suffix).
    let changed_end = a.len() - suffix;
    // The one token that holds them. An insertion at a token's edge counts
    // as inside it; where two tokens meet (`=5`), the later one is tried
    // too. The digit checks below settle which, if any, it is.
    let first = tokens.partition_point(|t| offset(t.end) < prefix);
    let (i, new_end) = [first, first + 1]
        .into_iter()
        .find_map(|i| inside(tokens.get(i)?, prefix, changed_end, a, b).map(|end| (i, end)))?;
    debug_assert!(new_end <= b.len());
    let delta = i32::try_from(b.len()).ok()? - i32::try_from(a.len()).ok()?;
    let mut out = tokens.to_vec();
    out[i].end += delta;
    for later in &mut out[i + 1..] {
        later.start += delta;
        later.end += delta;
    }
    Some(out)
}

/// Whether `new` scans to the same tokens as `old` (which scans to
/// `tokens`) but for the digits of its integer literals: every integer
/// literal of 1 to 9 digits may hold other digits in `new` (1 to 9 of
/// them), everything else is the same bytes. The module comment's argument,
/// applied literal after literal: up to a literal both texts are the same
/// bytes, so the scanner reaches the literal in the same state; the digit
/// run ends before the same non-digit byte, as the same kind of token; from
/// there the scanner is in its initial state again, on the same bytes up to
/// the next literal. The verdict memo uses this for texts that, as in the
/// simple protocol, inline several values (`UPDATE ... SET v = v + 5 WHERE
/// id = 7`), where [`derive`] allows one.
pub fn same_but_integers(old: &str, tokens: &[ScanToken], new: &str) -> bool {
    free_literals(old, tokens)
        .is_some_and(|literals| same_but_literals(old.as_bytes(), &literals, new.as_bytes()))
}

/// Where an integer literal of a text starts and ends (byte offsets).
pub type Span = (u32, u32);

/// The integer literals of `old` (which scans to `tokens`) whose digits
/// [`same_but_integers`] lets differ, in order: ICONST tokens of 1 to 9
/// decimal digits, not followed by a digit, none overlapping the one before.
/// A literal of another form (`1_000`, `0x1F`, ten digits), or one followed
/// by a digit, must match byte for byte, as the text around it. A pure
/// function of the text and its tokens, so a memo computes it once, when it
/// remembers a text, and compares each later text by the spans alone.
/// `None` when a token lies outside the text (tokens of another text).
pub fn free_literals(old: &str, tokens: &[ScanToken]) -> Option<Vec<Span>> {
    let a = old.as_bytes();
    let digits = |s: &[u8]| (1..=MAX_DIGITS).contains(&s.len()) && s.iter().all(u8::is_ascii_digit);
    let mut spans = Vec::new();
    let mut done = 0;
    for t in tokens.iter().filter(|t| t.token == ICONST) {
        let (start, end) = (offset(t.start), offset(t.end));
        let literal = a.get(start..end)?;
        if start < done || !digits(literal) || a.get(end).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        spans.push((u32::try_from(start).ok()?, u32::try_from(end).ok()?));
        done = end;
    }
    Some(spans)
}

/// Whether `b` is `a` with the digits of each literal in `literals` (from
/// [`free_literals`] of `a`) replaced by 1 to 9 digits, and every other
/// byte the same: [`same_but_integers`] with the literals found beforehand.
/// `a == b` answers yes.
pub fn same_but_literals(a: &[u8], literals: &[Span], b: &[u8]) -> bool {
    // `a[done_a..]` and `b[done_b..]` are still to be matched.
    let (mut done_a, mut done_b) = (0, 0);
    for &(start, end) in literals {
        let (start, end) = (start as usize, end as usize);
        let (Some(before), Some(gap)) = (a.get(done_a..start), start.checked_sub(done_a)) else {
            return false;
        };
        if b.get(done_b..done_b + gap) != Some(before) {
            return false;
        }
        done_b += gap;
        let run = b[done_b..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=MAX_DIGITS).contains(&run) {
            return false;
        }
        done_a = end;
        done_b += run;
    }
    a.get(done_a..) == b.get(done_b..)
}

/// Where token `t` of `a` ends in `b`, if `t` is an integer literal of
/// 1 to 9 digits that holds the changed bytes `a[prefix..changed_end]` and
/// is still such a literal in `b`.
fn inside(t: &ScanToken, prefix: usize, changed_end: usize, a: &[u8], b: &[u8]) -> Option<usize> {
    let (start, end) = (offset(t.start), offset(t.end));
    if t.token != ICONST || start > prefix || changed_end > end {
        return None;
    }
    let new_end = (end + b.len()).checked_sub(a.len())?;
    let digits = |s: &[u8]| (1..=MAX_DIGITS).contains(&s.len()) && s.iter().all(u8::is_ascii_digit);
    (digits(a.get(start..end)?) && digits(b.get(start..new_end)?)).then_some(new_end)
}

fn offset(at: i32) -> usize {
    usize::try_from(at).unwrap_or(0)
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::lexer::{scan_uncached, LexSettings};
    use super::{derive, offset, same_but_integers, ICONST, MAX_DIGITS};
    use pg_query::protobuf::ScanToken;
    use proptest::prelude::*;

    /// Texts with integers next to every kind of token that could reach
    /// into a digit run: identifiers, quoted identifiers, parameters,
    /// numerics, `..`, strings, comments, operators, dollar quotes (the
    /// verdict memo's tests use them too).
    pub(in crate::policy) const TEMPLATES: &[&str] = &[
        "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
        "select a1 from t where x=5 and y<>42 or z in (1,22,333)",
        "SELECT $1, 7, \"q\"8, t.c9 FROM t LIMIT 10 OFFSET 20",
        "SELECT 1.5, 2e3, 3..4, .5, 6 FROM t -- 7\n WHERE a = 8 /* 9 */ + 10",
        "SELECT 'a1', E'b\\'2', $$ 3 $$, $x$ 4 $x$, U&'5', B'0101', X'1f', 12",
        "UPDATE t SET v = v + 123456789 WHERE id = 0 RETURNING id::int4 - 1",
        "SELECT ARRAY[1,2][1:2], 0, 00, 007, 1_000, 0x1F, 0o7, 0b1, 999999999",
        "select-1, +2, -3, 4-5, 6*7/8%9^10 from u",
    ];

    /// The lexing settings with `standard_conforming_strings` = `scs`.
    pub(in crate::policy) fn settings(scs: bool) -> LexSettings {
        LexSettings {
            standard_conforming_strings: scs,
        }
    }

    /// Whenever the memo answers, the scanner answers the same.
    fn agrees(old: &str, new: &str, scs: bool) -> Result<bool, TestCaseError> {
        let Ok(tokens) = scan_uncached(old, settings(scs)) else {
            return Ok(false);
        };
        let Some(derived) = derive(old, &tokens, new) else {
            return Ok(false);
        };
        let scanned = scan_uncached(new, settings(scs));
        prop_assert_eq!(
            scanned.as_ref().ok(),
            Some(&derived),
            "{:?} -> {:?}",
            old,
            new
        );
        Ok(true)
    }

    /// Template `t` with `cut` bytes at `at` replaced by `with`: the memo
    /// and the scanner agree on it.
    fn edited_agrees(
        t: usize,
        at: prop::sample::Index,
        cut: usize,
        with: &str,
        scs: bool,
    ) -> Result<bool, TestCaseError> {
        let old = TEMPLATES[t];
        let start = at.index(old.len() + 1);
        let end = (start + cut).min(old.len());
        agrees(old, &format!("{}{with}{}", &old[..start], &old[end..]), scs)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn derived_tokens_are_the_scanners(
            t in 0..TEMPLATES.len(),
            at in any::<prop::sample::Index>(),
            cut in 0usize..4,
            with in "[0-9a-zA-Z_ .$'\"eExX:+/*-]{0,4}",
            scs in any::<bool>(),
        ) {
            edited_agrees(t, at, cut, &with, scs)?;
        }

        #[test]
        fn digit_changes_are_reused_when_sound(
            t in 0..TEMPLATES.len(),
            at in any::<prop::sample::Index>(),
            cut in 0usize..3,
            with in "[0-9]{0,3}",
            scs in any::<bool>(),
        ) {
            edited_agrees(t, at, cut, &with, scs)?;
        }
    }

    /// `same_but_integers` as it was before the literals were found
    /// beforehand (one walk over the tokens per comparison): the reference
    /// the split into [`super::free_literals`] and
    /// [`super::same_but_literals`] must agree with.
    fn reference(old: &str, tokens: &[ScanToken], new: &str) -> bool {
        let (a, b) = (old.as_bytes(), new.as_bytes());
        let digits =
            |s: &[u8]| (1..=MAX_DIGITS).contains(&s.len()) && s.iter().all(u8::is_ascii_digit);
        let (mut done_a, mut done_b) = (0, 0);
        for t in tokens.iter().filter(|t| t.token == ICONST) {
            let (start, end) = (offset(t.start), offset(t.end));
            let Some(literal) = a.get(start..end) else {
                return false;
            };
            if start < done_a || !digits(literal) || a.get(end).is_some_and(u8::is_ascii_digit) {
                continue;
            }
            let gap = start - done_a;
            if b.get(done_b..done_b + gap) != Some(&a[done_a..start]) {
                return false;
            }
            done_b += gap;
            let run = b[done_b..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if !(1..=MAX_DIGITS).contains(&run) {
                return false;
            }
            done_a = end;
            done_b += run;
        }
        a[done_a..] == b[done_b..]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Finding the literals once answers as walking the tokens each
        /// time did, for edits anywhere, of digits or of anything else.
        #[test]
        fn literals_found_beforehand_answer_as_the_tokens_did(
            t in 0..TEMPLATES.len(),
            at in any::<prop::sample::Index>(),
            cut in 0usize..4,
            with in "[0-9a-zA-Z_ .$'\"eExX:+/*-]{0,4}|[0-9]{1,10}",
            scs in any::<bool>(),
        ) {
            let old = TEMPLATES[t];
            let start = at.index(old.len() + 1);
            let end = (start + cut).min(old.len());
            let new = format!("{}{with}{}", &old[..start], &old[end..]);
            let tokens = scan_uncached(old, settings(scs)).unwrap_or_default();
            prop_assert_eq!(
                same_but_integers(old, &tokens, &new),
                reference(old, &tokens, &new),
                "{:?} -> {:?}", old, new
            );
        }
    }

    #[test]
    fn tokens_of_another_text_let_nothing_differ() {
        let old = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;";
        let tokens = scan_uncached(old, settings(true)).expect("scans");
        let short = "SELECT 1";
        assert!(super::free_literals(short, &tokens).is_none());
        assert!(!same_but_integers(short, &tokens, short));
        let spans = super::free_literals(old, &tokens).expect("literals");
        assert_eq!(spans, vec![(50, 54)]);
        assert!(super::same_but_literals(
            old.as_bytes(),
            &spans,
            old.as_bytes()
        ));
    }

    #[test]
    fn pgbench_texts_reuse_the_scan() {
        let old = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;";
        for new in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 815;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 99999;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
        ] {
            assert!(agrees(old, new, true).unwrap(), "{new}");
        }
        for new in [
            // Out of int4's range, or no longer an integer.
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1234567890;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4_711;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 0x11;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 47.11;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = ;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4711 ;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = a4711;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $4711;",
            "SELECT abalance FROM pgbench_accounts WHERE bid = 4711;",
        ] {
            assert!(!agrees(old, new, true).unwrap(), "{new}");
        }
    }
}
