//! Masking's verdicts remembered per session: by exact text, then by the
//! statement's shape under every reading the guard makes of it, so an
//! application's repeated shapes with new literals cost one scan and one
//! lookup instead of a parse.

use crate::policy::lexer::{self, LexSettings};
use pg_query::protobuf::ScanToken;

/// Verdicts remembered by exact text, then by shape (literals left out
/// where they cannot change the verdict: `lexer::guard_shape`); each map
/// is emptied when full.
pub struct Memo<T> {
    limit: usize,
    /// By exact text.
    pub texts: Map<T>,
    /// By shape key.
    pub shapes: Map<T>,
}

/// A memo's map. Its keys come from the client, so the hasher is seeded
/// per map (as std's), but foldhash's: std's SipHash cost a masked
/// statement about 1,300 instructions over its four lookups.
pub type Map<T> = std::collections::HashMap<Vec<u8>, T, foldhash::quality::RandomState>;

impl<T: Clone> Memo<T> {
    /// An empty memo of at most `limit` texts and `limit` shapes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            texts: Default::default(),
            shapes: Default::default(),
        }
    }

    /// Remembers `value` for `text` and, when it has one, its shape key.
    pub fn remember(&mut self, text: &[u8], shape: Option<&[u8]>, value: T) {
        if self.texts.len() >= self.limit {
            self.texts.clear();
        }
        self.texts.insert(text.to_vec(), value.clone());
        if let Some(shape) = shape {
            if self.shapes.len() >= self.limit {
                self.shapes.clear();
            }
            self.shapes.insert(shape.to_vec(), value);
        }
    }
}

/// The key `sql` is remembered under: each reading's guard shape
/// ([`lexer::guard_shape`]), length-prefixed, so two texts share a key only
/// if PostgreSQL's scanner sees the same tokens in them under every reading
/// the guard judges; `None` when a reading does not scan (then nothing is
/// shared by shape).
pub fn shape_key(sql: &str, readings: &[LexSettings]) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(sql.len() * 2);
    for reading in readings {
        let tokens = lexer::scan(sql, *reading).ok()?;
        add_reading(&mut key, sql, &tokens, *reading);
    }
    Some(key)
}

/// [`shape_key`] of a text the guard reads one way, from its tokens.
pub fn one_reading_key(sql: &str, tokens: &[ScanToken], reading: LexSettings) -> Vec<u8> {
    let mut key = Vec::with_capacity(sql.len() * 2);
    add_reading(&mut key, sql, tokens, reading);
    key
}

fn add_reading(key: &mut Vec<u8>, sql: &str, tokens: &[ScanToken], reading: LexSettings) {
    let shape = lexer::guard_shape(sql, tokens, reading);
    key.extend_from_slice(&(shape.len() as u64).to_le_bytes());
    key.extend_from_slice(&shape);
}
