//! Whether a statement text repeats the session's previous one but for its
//! numbers, so that word scans over it may keep their last answer.
//!
//! The scans this serves (`privileges::may_change_privileges`,
//! `sql::names::may_name`) look only at words (runs of letters, digits and
//! `_`), `;` and blanks. Two texts that are the same once every run of
//! ASCII digits is collapsed to one digit have the same words, except that
//! a word holding a digit still holds one (digits are word bytes), and no
//! word those scans look for holds a digit; their boundaries, `;` and
//! blanks are the same. So both scans answer the same for both texts.
//! An application's loop (`... WHERE id = 4711`, then `= 815`) sends just
//! such texts, and each scan cost several hundred instructions a statement.

/// Texts longer than this are not remembered (a session keeps little).
const LONGEST: usize = 512;

/// The previous text of one session.
#[derive(Debug, Default)]
pub(crate) struct PreviousText {
    text: Vec<u8>,
    /// Texts seen so far; the next one is number `seen + 1`.
    seen: u64,
    /// The previous text was too long to be kept.
    unknown: bool,
}

/// One text's place among the session's texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRepeat {
    /// Its number (from 1) among the texts the session sent.
    pub seq: u64,
    /// It is the text numbered `seq - 1` but for its runs of digits.
    pub repeats_previous: bool,
}

impl TextRepeat {
    /// Whether an answer remembered for text number `remembered` holds for
    /// this text.
    pub fn carries(&self, remembered: u64) -> bool {
        self.repeats_previous && remembered.checked_add(1) == Some(self.seq)
    }
}

/// A word scan's answer for the last text it read, kept for a repeat of
/// that text but for its numbers, which it answers alike.
#[derive(Debug, Default)]
pub(crate) struct ScanAnswer {
    /// The text's number among the session's texts, and the answer.
    last: Option<(u64, bool)>,
}

impl ScanAnswer {
    /// `scan(text)`, or the last answer when `text` repeats that text.
    pub(crate) fn of(
        &mut self,
        text: &[u8],
        repeat: Option<TextRepeat>,
        scan: impl FnOnce(&[u8]) -> bool,
    ) -> bool {
        let answer = match (repeat, self.last) {
            (Some(repeat), Some((seq, answer))) if repeat.carries(seq) => answer,
            _ => scan(text),
        };
        self.last = repeat.map(|r| (r.seq, answer));
        answer
    }
}

impl PreviousText {
    /// Takes the session's next text.
    pub(crate) fn next(&mut self, text: &[u8]) -> TextRepeat {
        let repeats_previous =
            !self.unknown && self.seen > 0 && same_but_digit_runs(&self.text, text);
        self.seen += 1;
        // A repeat stands for the same texts as the one kept: no copy.
        if !repeats_previous {
            self.text.clear();
            self.unknown = text.len() > LONGEST;
            if self.unknown {
                // A long text's room is not kept either.
                self.text = Vec::new();
            } else {
                self.text.extend_from_slice(text);
            }
        }
        TextRepeat {
            seq: self.seen,
            repeats_previous,
        }
    }
}

/// Whether `a` and `b` are the same but for the length and value of each
/// run of ASCII digits (a run stays a run: `id = 7` and `id = 4711`, not
/// `id = 7` and `id = x`).
pub(crate) fn same_but_digit_runs(mut a: &[u8], mut b: &[u8]) -> bool {
    loop {
        let mut at = common_prefix(a, b);
        if at == a.len() && at == b.len() {
            return true;
        }
        // The texts part at `at`: only inside a run of digits in both, so
        // back to where that run starts (the prefix is common).
        while at > 0 && a[at - 1].is_ascii_digit() {
            at -= 1;
        }
        let run = |t: &[u8]| t.iter().take_while(|b| b.is_ascii_digit()).count();
        let (in_a, in_b) = (run(&a[at..]), run(&b[at..]));
        if in_a == 0 || in_b == 0 {
            return false;
        }
        a = &a[at + in_a..];
        b = &b[at + in_b..];
    }
}

/// How many bytes `a` and `b` start with alike, compared eight at a time
/// (where two words differ, the first differing byte is found from their
/// XOR, not byte by byte).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut at = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) else {
            break;
        };
        // Little-endian: the lowest set bit is in the first differing byte.
        let differ = u64::from_le_bytes(x) ^ u64::from_le_bytes(y);
        if differ != 0 {
            return at + (differ.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while at < n && a[at] == b[at] {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privileges::may_change_privileges;
    use crate::sql::names::may_name;
    use proptest::prelude::*;

    #[test]
    fn runs_of_digits_may_differ_and_nothing_else() {
        assert!(same_but_digit_runs(b"WHERE aid = 4711;", b"WHERE aid = 7;"));
        assert!(same_but_digit_runs(b"t1 = 2", b"t99 = 0"));
        assert!(!same_but_digit_runs(
            b"WHERE aid = 4711;",
            b"WHERE aid = x;"
        ));
        assert!(!same_but_digit_runs(b"WHERE aid = 1;", b"WHERE aid = 1"));
        assert!(!same_but_digit_runs(b"a1b", b"ab"));
        assert!(!same_but_digit_runs(b"GRANT", b"GRANT1"));
    }

    #[test]
    fn numbers_follow_the_texts_and_long_texts_are_not_kept() {
        let mut previous = PreviousText::default();
        let first = previous.next(b"SELECT 1");
        assert_eq!(
            first,
            TextRepeat {
                seq: 1,
                repeats_previous: false
            }
        );
        let second = previous.next(b"SELECT 22");
        assert!(second.repeats_previous && second.carries(1) && !second.carries(0));
        let long = vec![b'x'; LONGEST + 1];
        assert!(!previous.next(&long).repeats_previous);
        assert!(
            !previous.next(&long).repeats_previous,
            "a long text is not kept"
        );
        assert_eq!(previous.text.capacity(), 0);
        assert!(!previous.next(b"SELECT 3").repeats_previous);
    }

    /// Every run of digits made one `0`.
    fn collapsed(t: &[u8]) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::new();
        for &b in t {
            if !(b.is_ascii_digit() && out.last().is_some_and(u8::is_ascii_digit)) {
                out.push(if b.is_ascii_digit() { b'0' } else { b });
            }
        }
        out
    }

    proptest! {
        /// The word-at-a-time prefix is the byte-by-byte one.
        #[test]
        fn the_common_prefix_is_counted_byte_by_byte(
            a in proptest::collection::vec(prop::sample::select(vec![b'a', b'b', b'1', 0x80, 0xff]), 0..40),
            b in proptest::collection::vec(prop::sample::select(vec![b'a', b'b', b'1', 0x80, 0xff]), 0..40),
            shared in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let (a, b) = ([&shared[..], &a].concat(), [&shared[..], &b].concat());
            let bytewise = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            prop_assert_eq!(common_prefix(&a, &b), bytewise);
        }

        /// The comparison is the one its definition gives.
        #[test]
        fn the_same_as_comparing_collapsed_texts(
            a in "[ab1290; ]{0,24}",
            b in "[ab1290; ]{0,24}",
            prefix in "[a-z0-9 ]{0,20}",
        ) {
            let (a, b) = (format!("{prefix}{a}"), format!("{prefix}{b}"));
            prop_assert_eq!(
                same_but_digit_runs(a.as_bytes(), b.as_bytes()),
                collapsed(a.as_bytes()) == collapsed(b.as_bytes())
            );
        }

        /// The scans that keep their answer for a repeat answer the same.
        #[test]
        fn the_word_scans_answer_alike_for_a_repeat(
            words in proptest::collection::vec(
                "(GRANT|role|User|prepare|DEALLOCATE|close|discard|declare|owner|[a-z_]{1,6}|[0-9]{1,4}|;|--x\n|/\\* c \\*/|'s'| |\\(|\\))",
                0..12,
            ),
            digits in proptest::collection::vec("[0-9]{1,5}", 12),
        ) {
            let a = words.concat();
            let mut digits = digits.iter();
            // Each run of digits of `a` replaced by another run.
            let mut b = String::new();
            let mut in_run = false;
            for c in a.chars() {
                if c.is_ascii_digit() {
                    if !in_run {
                        b.push_str(digits.next().map_or("0", |d| d.as_str()));
                    }
                    in_run = true;
                } else {
                    in_run = false;
                    b.push(c);
                }
            }
            prop_assert!(same_but_digit_runs(a.as_bytes(), b.as_bytes()));
            prop_assert_eq!(may_change_privileges(a.as_bytes()), may_change_privileges(b.as_bytes()));
            prop_assert_eq!(may_name(a.as_bytes()), may_name(b.as_bytes()));
        }
    }
}
