//! The exact-text verdict cache's key, and a borrowed form of it to look
//! up with, so a lookup (one per judged Query or Parse) copies nothing:
//! only an insert, after a statement was judged afresh, owns the text.
//!
//! The cache takes any `Q` its key borrows as; a key cannot borrow as a
//! tuple of references, so both forms borrow as one trait object
//! ([`KeyView`]) whose hash and equality are those of its parts.

use super::rules::Audience;
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// The text, the lexing setting, the server's major version, the code
/// catalog's generation and the rules that apply to the identity.
pub(super) struct TextKey {
    text: Box<[u8]>,
    rest: Rest,
}

/// Everything in a key besides the text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Rest {
    pub(super) standard_conforming_strings: bool,
    pub(super) server_major: u32,
    /// The code catalog's generation (0: none).
    pub(super) generation: u64,
    pub(super) audience: Audience,
}

/// A key to look up with, borrowing its text.
pub(super) struct Lookup<'a> {
    pub(super) text: &'a [u8],
    pub(super) rest: &'a Rest,
}

impl Lookup<'_> {
    /// The key to insert under.
    pub(super) fn to_owned(&self) -> TextKey {
        TextKey {
            text: self.text.into(),
            rest: self.rest.clone(),
        }
    }
}

/// The parts a key is compared and hashed by.
pub(super) trait KeyView {
    fn parts(&self) -> (&[u8], &Rest);
}

impl KeyView for TextKey {
    fn parts(&self) -> (&[u8], &Rest) {
        (&self.text, &self.rest)
    }
}

impl KeyView for Lookup<'_> {
    fn parts(&self) -> (&[u8], &Rest) {
        (self.text, self.rest)
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for TextKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}

// The owned key hashes and compares exactly as its borrowed form (the map
// finds an entry by the one's hash and compares it with the other).
impl Hash for TextKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn KeyView).hash(state);
    }
}

impl PartialEq for TextKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for TextKey {}

#[cfg(test)]
mod tests {
    use super::*;

    type Cache = moka::sync::Cache<TextKey, u32, foldhash::fast::RandomState>;

    #[test]
    fn a_borrowed_key_finds_only_its_own_entry() {
        let cache: Cache = moka::sync::Cache::builder()
            .max_capacity(100)
            .build_with_hasher(foldhash::fast::RandomState::default());
        let rest = |scs, major, bits| Rest {
            standard_conforming_strings: scs,
            server_major: major,
            generation: 0,
            audience: Audience::Small(bits),
        };
        let base = rest(true, 15, 3);
        let key = |text: &'static [u8], rest| (text, rest);
        let entries = [
            key(b"SELECT 1", rest(true, 15, 3)),
            key(b"SELECT 1", rest(false, 15, 3)),
            key(b"SELECT 1", rest(true, 16, 3)),
            key(b"SELECT 1", rest(true, 15, 1)),
            key(b"SELECT 2", rest(true, 15, 3)),
            // Another code catalog: another entry.
            key(
                b"SELECT 1",
                Rest {
                    generation: 9,
                    ..rest(true, 15, 3)
                },
            ),
        ];
        for (n, (text, rest)) in entries.iter().enumerate() {
            let lookup = Lookup { text, rest };
            assert_eq!(cache.get(&lookup as &dyn KeyView), None);
            cache.insert(lookup.to_owned(), n as u32);
        }
        for (n, (text, rest)) in entries.iter().enumerate() {
            let lookup = Lookup { text, rest };
            assert_eq!(cache.get(&lookup as &dyn KeyView), Some(n as u32));
        }
        let other = Lookup {
            text: b"SELECT 3",
            rest: &base,
        };
        assert_eq!(cache.get(&other as &dyn KeyView), None);
    }
}
