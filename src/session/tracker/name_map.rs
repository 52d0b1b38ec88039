//! Statements or portals by name, the unnamed one in a field of its own.
//!
//! Most drivers bind every query to the unnamed portal (and many parse it
//! into the unnamed statement): keeping that one out of the hash map spares
//! a hash, a probe and an insert per Bind, and the transaction end's sweep
//! of the map. A `NameMap` behaves exactly like a map keyed by the name's
//! bytes, the empty name included.
//!
//! A session's few named entries (a driver's handful of prepared
//! statements) are kept in a short list and found by comparing names: a
//! lookup in the hash map cost about 110 instructions (keyed hash, probe,
//! compare), twice per Bind of a named statement, against a length compare
//! and a short `memcmp` per entry. Past [`FEW`] entries they move into the
//! hash map, so a session with thousands of names still finds one in
//! constant time (and a client cannot make lookups cost more than
//! [`FEW`] compares before the hash takes over).

use super::Name;
use std::collections::HashMap;

/// Names are hashed on every Bind and Execute of a named portal or
/// statement once there are many: a fast keyed hash (seeded per map), not
/// SipHash.
type Hasher = foldhash::fast::RandomState;

/// Named entries kept in the list, at most; more go to the hash map.
const FEW: usize = 8;

/// Values by name; the unnamed (empty) name is kept apart.
#[derive(Debug)]
pub(super) struct NameMap<T> {
    unnamed: Option<T>,
    /// The named entries while there are at most [`FEW`] (and `many` is
    /// empty); each name at most once.
    few: Vec<(Name, T)>,
    /// All the named entries once there were more than [`FEW`] (`few` is
    /// then empty).
    many: HashMap<Name, T, Hasher>,
}

impl<T> Default for NameMap<T> {
    fn default() -> Self {
        Self {
            unnamed: None,
            few: Vec::new(),
            many: HashMap::default(),
        }
    }
}

impl<T> NameMap<T> {
    /// The value under `name`.
    #[inline]
    pub(super) fn get(&self, name: &[u8]) -> Option<&T> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else if self.many.is_empty() {
            // An empty list costs no compare (most sessions name nothing).
            self.few.iter().find(|(n, _)| n.is(name)).map(|(_, v)| v)
        } else {
            self.many.get(name)
        }
    }

    /// The value under `name`, to change it.
    #[inline]
    pub(super) fn get_mut(&mut self, name: &[u8]) -> Option<&mut T> {
        if name.is_empty() {
            self.unnamed.as_mut()
        } else if self.many.is_empty() {
            self.few
                .iter_mut()
                .find(|(n, _)| n.is(name))
                .map(|(_, v)| v)
        } else {
            self.many.get_mut(name)
        }
    }

    /// Puts `value` under `name`, dropping what was there.
    pub(super) fn insert(&mut self, name: Name, value: T) {
        if name.is_unnamed() {
            self.unnamed = Some(value);
        } else if !self.many.is_empty() {
            self.many.insert(name, value);
        } else if let Some(slot) = self.few.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else if self.few.len() < FEW {
            self.few.push((name, value));
        } else {
            // One more than the list holds: all of them go to the map.
            self.many.reserve(FEW + 1);
            self.many.extend(self.few.drain(..));
            self.many.insert(name, value);
            self.few = Vec::new();
        }
    }

    /// Drops the value under `name`, if any.
    #[inline]
    pub(super) fn remove(&mut self, name: &[u8]) {
        if name.is_empty() {
            self.unnamed = None;
        } else if !self.many.is_empty() {
            self.many.remove(name);
        } else if let Some(at) = self.few.iter().position(|(n, _)| n.is(name)) {
            // Order means nothing here.
            self.few.swap_remove(at);
        }
    }

    /// Drops every value.
    pub(super) fn clear(&mut self) {
        self.unnamed = None;
        self.few.clear();
        self.many.clear();
    }

    /// Keeps only the values `keep` says to.
    #[inline]
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        if self.unnamed.as_ref().is_some_and(|v| !keep(v)) {
            self.unnamed = None;
        }
        if !self.few.is_empty() {
            self.few.retain(|(_, v)| keep(v));
        }
        if !self.many.is_empty() {
            self.many.retain(|_, v| keep(v));
        }
    }

    /// How many named entries there are (tests).
    #[cfg(test)]
    fn named_len(&self) -> usize {
        self.few.len() + self.many.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unnamed_entry_behaves_like_any_other_name() {
        let mut map = NameMap::default();
        assert_eq!(map.get(b""), None);
        map.insert(Name::new(b""), 1);
        map.insert(Name::new(b"p"), 2);
        assert_eq!((map.get(b""), map.get(b"p")), (Some(&1), Some(&2)));
        // Replaced, like a map entry.
        map.insert(Name::new(b""), 3);
        assert_eq!(map.get(b""), Some(&3));
        if let Some(v) = map.get_mut(b"") {
            *v = 4;
        }
        assert_eq!(map.get(b""), Some(&4));
        map.remove(b"");
        assert_eq!((map.get(b""), map.get(b"p")), (None, Some(&2)));
        map.insert(Name::new(b""), 5);
        map.retain(|v| *v == 2);
        assert_eq!((map.get(b""), map.get(b"p")), (None, Some(&2)));
        map.insert(Name::new(b""), 6);
        map.retain(|v| *v == 6);
        assert_eq!((map.get(b""), map.get(b"p")), (Some(&6), None));
        map.insert(Name::new(b"q"), 7);
        map.clear();
        assert_eq!((map.get(b""), map.get(b"q")), (None, None));
        map.remove(b"missing");
        assert_eq!(map.get_mut(b"missing"), None);
    }

    #[test]
    fn many_names_behave_like_few() {
        let mut map = NameMap::default();
        let names: Vec<Vec<u8>> = (0..3 * FEW).map(|i| format!("s{i}").into_bytes()).collect();
        for (i, n) in names.iter().enumerate() {
            map.insert(Name::new(n), i);
            // Every name so far is found, whichever side holds it.
            for (j, m) in names[..=i].iter().enumerate() {
                assert_eq!(map.get(m), Some(&j));
            }
            assert_eq!(map.get(b"missing"), None);
            assert_eq!(map.named_len(), i + 1);
        }
        assert!(map.few.is_empty() && !map.many.is_empty());
        // Replacing keeps one entry per name.
        map.insert(Name::new(b"s3"), 100);
        assert_eq!((map.get(b"s3"), map.named_len()), (Some(&100), 3 * FEW));
        map.remove(b"s3");
        assert_eq!((map.get(b"s3"), map.named_len()), (None, 3 * FEW - 1));
        map.retain(|v| v % 2 == 0);
        assert_eq!(map.get(b"s4"), Some(&4));
        assert_eq!(map.get(b"s5"), None);
        if let Some(v) = map.get_mut(b"s4") {
            *v = 44;
        }
        assert_eq!(map.get(b"s4"), Some(&44));
        // Cleared, the list takes names again.
        map.clear();
        assert_eq!((map.get(b"s4"), map.named_len()), (None, 0));
        map.insert(Name::new(b"a"), 1);
        map.insert(Name::new(b"b"), 2);
        map.insert(Name::new(b"a"), 3);
        assert!(map.many.is_empty());
        assert_eq!(
            (map.get(b"a"), map.get(b"b"), map.named_len()),
            (Some(&3), Some(&2), 2)
        );
        map.remove(b"a");
        assert_eq!(
            (map.get(b"a"), map.get(b"b"), map.named_len()),
            (None, Some(&2), 1)
        );
        map.retain(|_| false);
        assert_eq!(map.named_len(), 0);
    }
}
