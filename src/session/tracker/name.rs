//! Statement and portal names, kept inline when short (drivers' names such
//! as `P0_1` or `s42`), so following them allocates nothing per message.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Longest name kept inline.
const INLINE: usize = 30;

/// A statement or portal name (bytes, as on the wire; empty: unnamed).
#[derive(Clone)]
pub(crate) enum Name {
    /// Up to `INLINE` bytes.
    Inline(u8, [u8; INLINE]),
    /// Longer names.
    Heap(Box<[u8]>),
}

impl Name {
    /// Copies `bytes` into a name.
    pub(crate) fn new(bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            // The unnamed portal or statement: most Binds name one.
            Self::Inline(0, [0u8; INLINE])
        } else if bytes.len() <= INLINE {
            let mut inline = [0u8; INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            // Fits: checked against INLINE (< 256) above.
            Self::Inline(bytes.len() as u8, inline)
        } else {
            Self::Heap(bytes.into())
        }
    }

    /// The name's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Self::Heap(b) => b,
        }
    }

    /// Whether this is the name `other`. Most names compared are the
    /// unnamed one: two empty names compare without a `memcmp` call.
    #[inline]
    pub(crate) fn is(&self, other: &[u8]) -> bool {
        let mine = self.as_bytes();
        mine.len() == other.len() && (other.is_empty() || mine == other)
    }

    /// Whether this is the unnamed statement or portal.
    pub(crate) fn is_unnamed(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl Hash for Name {
    // Must hash exactly like `[u8]`, so maps keyed by `Name` can be looked
    // up with a borrowed slice.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn inline_and_heap_names_look_up_by_slice() {
        let long = vec![b'x'; 64];
        let mut map = HashMap::new();
        map.insert(Name::new(b"P0_1"), 1);
        map.insert(Name::new(&long), 2);
        map.insert(Name::new(b""), 3);
        assert_eq!(map.get(&b"P0_1"[..]), Some(&1));
        assert_eq!(map.get(&long[..]), Some(&2));
        assert!(Name::new(b"").is_unnamed());
        assert_eq!(Name::new(&[b'y'; 30]).as_bytes().len(), 30);
        assert!(matches!(Name::new(&[b'y'; 31]), Name::Heap(_)));
        assert!(Name::new(b"").is(b"") && !Name::new(b"").is(b"a"));
        assert!(Name::new(b"P0_1").is(b"P0_1") && !Name::new(b"P0_1").is(b"P0_2"));
        assert!(!Name::new(b"P0_1").is(b"") && !Name::new(b"P0_1").is(b"P0_10"));
        assert!(Name::new(&long).is(&long) && !Name::new(&long).is(&long[1..]));
    }
}
