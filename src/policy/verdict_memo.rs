//! The verdicts of recently judged statements on this thread, reused for a
//! statement that repeats one of them, or differs from it only in the
//! digits of its integer literals.
//!
//! Why: in the simple protocol the values are inlined (`... WHERE aid =
//! 4711`, then `... = 815`), so the exact-text verdict cache misses, and
//! even with the scan memo a statement cost a token derivation, a shape and
//! two lookups in the shared caches, about 4,700 instructions of the ~16,000
//! a relayed transaction took. A memo hit costs a hash of the text and one
//! comparison walk.
//!
//! Sound because it answers only as the shared caches would:
//! - The key holds everything their keys hold besides the text or shape:
//!   the policy (whose caches these are: a reload builds a new policy with
//!   a new id, never reused), the lexing setting, the server's major
//!   version, the code catalog's generation and the rules' audience.
//! - An exact repeat reuses any outcome that may be cached at all (the text
//!   cache's condition: it read nothing from the session).
//! - A text that differs only in integer digits
//!   ([`super::scan_memo::same_but_integers`]: the scanner sees the same
//!   tokens) reuses an outcome only when the shape cache would hold it for
//!   both: the outcome read no literal's value (`by_shape`), and the shape
//!   keeps no literal's text, so both texts have the same shape.
//!
//! Asked before the text is converted: under `client_encoding` UTF8 (and
//! SQL_ASCII, read alike) `Policy::judge_any` asks with the bytes as the
//! client sent them, before its NUL check and UTF-8 validation, and judges
//! as before only on a miss. Sound because a hit is only for bytes those
//! steps pass unchanged: an entry's text is a `String` (valid UTF-8) with
//! no NUL ([`remember`] takes none), and a hit needs the bytes to be that
//! text, or that text with runs of ASCII digits replaced by runs of ASCII
//! digits ([`same_but_literals`]). An ASCII byte is never part of a
//! multi-byte UTF-8 sequence, so each replaced run lies between characters
//! of the text: the bytes are its characters with some ASCII ones replaced
//! by ASCII ones, valid UTF-8, and no digit is NUL. So the NUL check passes
//! them, the conversion returns them as they are, and the memo is asked
//! with the same key and text as it would be after the conversion. Any
//! other byte that differs (a non-digit, invalid UTF-8, a NUL where a digit
//! was) is no hit, and the text is judged the ordinary way.
//!
//! Entries live in a few slots picked by a hash of the text with its digits
//! left out, so texts that differ only in digits meet in one slot, and a
//! thread serving several kinds of statement keeps one of each.

use super::lexer::shape_keeps_a_literal;
use super::scan_memo::{free_literals, same_but_literals, Span};
use super::text_key::Rest;
use super::Outcome;
use pg_query::protobuf::ScanToken;
use std::cell::RefCell;
use std::sync::Arc;

/// Slots per thread (a power of two): a workload's few statement kinds
/// rarely share one.
const SLOTS: usize = 32;
/// Texts longer than this are not remembered: a slot's memory stays small
/// (32 slots of at most this text and its tokens), and long texts are rare
/// in the loops this is for.
const MAX_TEXT: usize = 1024;

struct Entry {
    policy: u64,
    rest: Rest,
    text: String,
    /// The text's integer literals whose digits may differ
    /// ([`super::scan_memo::free_literals`]) when texts differing in
    /// integer digits may reuse the outcome; `None` when only an exact
    /// repeat may.
    literals: Option<Vec<Span>>,
    outcome: Arc<Outcome>,
}

/// One thread's slots.
struct Slots {
    entries: [Option<Entry>; SLOTS],
    /// The slot last recalled or filled, tried before any hash: a thread
    /// serving one kind of statement (a benchmark's, a batch job's) then
    /// answers without reading the text twice. Only an order of trying:
    /// the entry is compared in full wherever it is.
    last: usize,
}

thread_local! {
    static SLOTS_OF_THREAD: RefCell<Slots> = const {
        RefCell::new(Slots {
            entries: [const { None }; SLOTS],
            last: 0,
        })
    };
}

/// Bytes of a text's start that pick its slot (with its length).
const SLOT_PREFIX: usize = 24;

/// The slot of texts that differ from `sql` only in digits: FNV-1a over
/// the first [`SLOT_PREFIX`] bytes that are not digits and the number of
/// bytes that are not digits, which digit changes keep. Only a slot choice
/// (the entry is compared in full), so it reads as little as tells the
/// statements of a workload apart; counting runs many bytes at a time.
fn slot(bytes: &[u8]) -> usize {
    // A branch-free sum, which the compiler runs many bytes at a time.
    let digits: usize = bytes
        .iter()
        .map(|&b| usize::from(b.wrapping_sub(b'0') < 10))
        .sum();
    let mut h: u32 = 0x811c_9dc5 ^ (bytes.len() - digits) as u32;
    let mut taken = 0;
    for &b in bytes {
        if b.is_ascii_digit() {
            continue;
        }
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        taken += 1;
        if taken == SLOT_PREFIX {
            break;
        }
    }
    // A finalizer, so the low bits depend on every byte.
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    h ^= h >> 12;
    h as usize & (SLOTS - 1)
}

/// The remembered outcome for `sql` under (`policy`, `rest`), if one may be
/// reused (see the module comment). `sql`: the text as the server lexes it,
/// or the bytes a UTF8 client sent, not yet checked (see "Asked before the
/// text is converted").
pub(super) fn recall(policy: u64, rest: &Rest, sql: &[u8]) -> Option<Arc<Outcome>> {
    if sql.len() > MAX_TEXT {
        return None;
    }
    SLOTS_OF_THREAD.with(|slots| {
        let mut slots = slots.try_borrow_mut().ok()?;
        let reusable = |entry: &Entry| {
            entry.policy == policy
                && entry.rest == *rest
                && match &entry.literals {
                    // Also true when the texts are the same.
                    Some(literals) => same_but_literals(entry.text.as_bytes(), literals, sql),
                    None => entry.text.as_bytes() == sql,
                }
        };
        let last = slots.last;
        if let Some(entry) = slots.entries[last].as_ref().filter(|e| reusable(e)) {
            return Some(Arc::clone(&entry.outcome));
        }
        let at = slot(sql);
        let entry = slots.entries[at].as_ref().filter(|e| reusable(e))?;
        let outcome = Arc::clone(&entry.outcome);
        slots.last = at;
        Some(outcome)
    })
}

/// Remembers the outcome judged for `sql`. `tokens`: its tokens, when it was
/// scanned (an outcome from the exact-text cache was not).
pub(super) fn remember(
    policy: u64,
    rest: &Rest,
    sql: &str,
    tokens: Option<&[ScanToken]>,
    outcome: &Arc<Outcome>,
) {
    // No NUL: bytes recalled before the NUL check rely on it (module
    // comment); judging refuses such texts before they get here anyway.
    if sql.len() > MAX_TEXT || !outcome.by_text || memchr::memchr(0, sql.as_bytes()).is_some() {
        return;
    }
    let literals = match tokens {
        Some(tokens)
            if outcome.by_shape && !tokens.is_empty() && !shape_keeps_a_literal(sql, tokens) =>
        {
            free_literals(sql, tokens)
        }
        _ => None,
    };
    SLOTS_OF_THREAD.with(|slots| {
        let Ok(mut slots) = slots.try_borrow_mut() else {
            return;
        };
        let at = slot(sql.as_bytes());
        slots.last = at;
        let entry = &mut slots.entries[at];
        // The allocations of the entry replaced are reused.
        let mut text = entry.take().map(|old| old.text).unwrap_or_default();
        text.clear();
        text.push_str(sql);
        *entry = Some(Entry {
            policy,
            rest: rest.clone(),
            text,
            literals,
            outcome: Arc::clone(outcome),
        });
    });
}

#[cfg(test)]
mod tests;
