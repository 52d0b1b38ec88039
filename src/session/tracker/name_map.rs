//! Statements or portals by name, the unnamed one in a field of its own.
//!
//! Most drivers bind every query to the unnamed portal (and many parse it
//! into the unnamed statement): keeping that one out of the hash map spares
//! a hash, a probe and an insert per Bind, and the transaction end's sweep
//! of the map. A `NameMap` behaves exactly like a map keyed by the name's
//! bytes, the empty name included.

use super::Name;
use std::collections::HashMap;

/// Names are hashed on every Bind and Execute of a named portal or
/// statement: a fast keyed hash (seeded per map), not SipHash.
type Hasher = foldhash::fast::RandomState;

/// Values by name; the unnamed (empty) name is kept apart.
#[derive(Debug)]
pub(super) struct NameMap<T> {
    unnamed: Option<T>,
    named: HashMap<Name, T, Hasher>,
}

impl<T> Default for NameMap<T> {
    fn default() -> Self {
        Self {
            unnamed: None,
            named: HashMap::default(),
        }
    }
}

impl<T> NameMap<T> {
    /// The value under `name`.
    pub(super) fn get(&self, name: &[u8]) -> Option<&T> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else if self.named.is_empty() {
            // An empty map skips the hash (most sessions name nothing).
            None
        } else {
            self.named.get(name)
        }
    }

    /// The value under `name`, to change it.
    pub(super) fn get_mut(&mut self, name: &[u8]) -> Option<&mut T> {
        if name.is_empty() {
            self.unnamed.as_mut()
        } else if self.named.is_empty() {
            None
        } else {
            self.named.get_mut(name)
        }
    }

    /// Puts `value` under `name`, dropping what was there.
    pub(super) fn insert(&mut self, name: Name, value: T) {
        if name.is_unnamed() {
            self.unnamed = Some(value);
        } else {
            self.named.insert(name, value);
        }
    }

    /// Drops the value under `name`, if any.
    pub(super) fn remove(&mut self, name: &[u8]) {
        if name.is_empty() {
            self.unnamed = None;
        } else if !self.named.is_empty() {
            self.named.remove(name);
        }
    }

    /// Drops every value.
    pub(super) fn clear(&mut self) {
        self.unnamed = None;
        self.named.clear();
    }

    /// Keeps only the values `keep` says to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        if self.unnamed.as_ref().is_some_and(|v| !keep(v)) {
            self.unnamed = None;
        }
        if !self.named.is_empty() {
            self.named.retain(|_, v| keep(v));
        }
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
}
