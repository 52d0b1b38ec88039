//! Rewriting a DataRow: only the masked cells change; everything between
//! them is copied once, in runs; a row with no masked cell is not touched.

use super::strategy::{BinaryKind, HashKey, Strategy};
use bytes::{BufMut, BytesMut};
use std::sync::Arc;

/// How one result column is masked.
#[derive(Debug, Clone)]
pub struct ColumnMask {
    /// The strategy.
    pub strategy: Arc<Strategy>,
    /// Whether the column travels in binary format.
    pub binary: bool,
    /// The column's binary layout (for binary format).
    pub kind: BinaryKind,
}

/// The masking of one result: an entry per column, `None` for clear ones.
#[derive(Debug, Clone, Default)]
pub struct RowPlan {
    /// Per column, in order.
    pub columns: Vec<Option<ColumnMask>>,
}

impl RowPlan {
    /// Whether any column is masked.
    pub fn masks_anything(&self) -> bool {
        self.columns.iter().any(Option::is_some)
    }
}

/// A DataRow that does not match its result's column count or layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DataRow does not match its RowDescription")]
pub struct RowMismatch;

/// Applies `plan` to one whole DataRow message (`raw`: tag, length, body),
/// appending the row to send to `out` (the relay's outgoing buffer: no
/// allocation of its own). Returns the cells it masked (NULLs stay NULL
/// and are not counted). On error nothing is appended.
pub fn rewrite_into(
    raw: &[u8],
    plan: &RowPlan,
    key: &HashKey,
    out: &mut BytesMut,
) -> Result<u64, RowMismatch> {
    let start = out.len();
    let result = write_row(raw, plan, key, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_row(
    raw: &[u8],
    plan: &RowPlan,
    key: &HashKey,
    out: &mut BytesMut,
) -> Result<u64, RowMismatch> {
    if !plan.masks_anything() {
        out.extend_from_slice(raw);
        return Ok(0);
    }
    let body = raw.get(5..).ok_or(RowMismatch)?;
    let count = body.get(..2).ok_or(RowMismatch)?;
    let count =
        usize::try_from(i16::from_be_bytes([count[0], count[1]])).map_err(|_| RowMismatch)?;
    if count != plan.columns.len() {
        return Err(RowMismatch);
    }
    let row_start = out.len();
    out.reserve(raw.len() + 64);
    out.put_u8(b'D');
    out.put_i32(0);
    // `copied` is the end of body bytes already in `out`.
    let mut copied = 0;
    let mut at = 2;
    let mut masked = 0;
    for column in &plan.columns {
        let len_bytes = body.get(at..at + 4).ok_or(RowMismatch)?;
        let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let value_len = usize::try_from(len).unwrap_or(0);
        let end = at + 4 + value_len;
        if end > body.len() {
            return Err(RowMismatch);
        }
        if let (Some(mask), true) = (column, len >= 0) {
            out.extend_from_slice(&body[copied..at]);
            let value = &body[at + 4..end];
            // Length placeholder, value written in place, length patched.
            let len_at = out.len();
            out.put_i32(0);
            let written = if mask.binary {
                match mask.strategy.mask_binary(value, mask.kind, key) {
                    Some(v) => {
                        out.extend_from_slice(&v);
                        true
                    }
                    None => false,
                }
            } else {
                mask.strategy.append_text(value, key, out)
            };
            let len = if written {
                i32::try_from(out.len() - len_at - 4).map_err(|_| RowMismatch)?
            } else {
                out.truncate(len_at + 4);
                -1
            };
            out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            copied = end;
            masked += 1;
        }
        at = end;
    }
    if at != body.len() {
        return Err(RowMismatch);
    }
    out.extend_from_slice(&body[copied..]);
    let len = i32::try_from(out.len() - row_start - 1).map_err(|_| RowMismatch)?;
    out[row_start + 1..row_start + 5].copy_from_slice(&len.to_be_bytes());
    Ok(masked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Frame, Framer};
    use bytes::Bytes;

    /// The relay's path: rewrite into a fresh outgoing buffer.
    fn rewrite(frame: Frame, plan: &RowPlan, key: &HashKey) -> Result<Bytes, RowMismatch> {
        let mut out = BytesMut::new();
        rewrite_into(frame.raw(), plan, key, &mut out)?;
        Ok(out.freeze())
    }

    fn data_row(cells: &[Option<&[u8]>]) -> Frame {
        let mut b = BytesMut::new();
        b.put_u8(b'D');
        b.put_i32(0);
        b.put_i16(cells.len() as i16);
        for c in cells {
            match c {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.extend_from_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        let len = (b.len() - 1) as i32;
        b[1..5].copy_from_slice(&len.to_be_bytes());
        Framer::new(1 << 20).next_frame(&mut b).unwrap().unwrap()
    }

    fn text_mask(s: Strategy) -> Option<ColumnMask> {
        Some(ColumnMask {
            strategy: Arc::new(s),
            binary: false,
            kind: BinaryKind::Text,
        })
    }

    #[test]
    fn only_masked_cells_change() {
        let key = HashKey::default();
        let plan = RowPlan {
            columns: vec![
                None,
                text_mask(Strategy::Redact("X".into())),
                None,
                text_mask(Strategy::Null),
            ],
        };
        let row = data_row(&[Some(b"1"), Some(b"secret"), None, Some(b"also")]);
        let out = rewrite(row, &plan, &key).unwrap();
        let expected = data_row(&[Some(b"1"), Some(b"X"), None, None]);
        assert_eq!(out, expected.into_raw());
        // NULL stays NULL.
        let row = data_row(&[Some(b"1"), None, None, None]);
        let out = rewrite(row.clone(), &plan, &key).unwrap();
        assert_eq!(out, row.into_raw());
    }

    #[test]
    fn clear_rows_pass_unchanged_and_bad_rows_are_refused() {
        let key = HashKey::default();
        let row = data_row(&[Some(b"a"), Some(b"b")]);
        let raw = row.raw().clone();
        let out = rewrite(
            row,
            &RowPlan {
                columns: vec![None, None],
            },
            &key,
        )
        .unwrap();
        // (The relay does not even call the rewrite for a result with no
        // masked column: such rows stream untouched.)
        assert_eq!(out, raw, "unchanged");
        let plan = RowPlan {
            columns: vec![None, text_mask(Strategy::Null), None],
        };
        assert_eq!(
            rewrite(data_row(&[Some(b"a"), Some(b"b")]), &plan, &key),
            Err(RowMismatch)
        );
    }
}
