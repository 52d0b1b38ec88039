//! Simple queries over pgward's own connections (the catalog reads of
//! masking and of the least-privilege checks): never a client's session.

use crate::io::FramedStream;
use crate::wire::backend::notice_field;
use crate::wire::{encode, Framer};
use bytes::BytesMut;

/// Why the catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The connection failed.
    #[error("catalog connection: {0}")]
    Io(String),
    /// The server refused a catalog query.
    #[error("catalog query failed: {0}")]
    Query(String),
    /// A reply did not have the expected shape.
    #[error("unexpected catalog reply: {0}")]
    Malformed(&'static str),
    /// The map could not be read within `masking.catalog_timeout`.
    #[error("the column map could not be read within masking.catalog_timeout ({0:?})")]
    Timeout(std::time::Duration),
}

/// Most bytes one catalog query's reply may have (a catalog with a million
/// columns is some 100 MiB of rows).
const MAX_CATALOG_REPLY: usize = 256 << 20;

/// Runs one simple query; every value as text, NULL as `None`.
pub(crate) async fn query_nullable(
    conn: &mut FramedStream,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, CatalogError> {
    let mut out = BytesMut::new();
    encode::query(&mut out, sql);
    conn.send(&out)
        .await
        .map_err(|e| CatalogError::Io(e.to_string()))?;
    let framer = Framer::new(1 << 24);
    let mut rows = Vec::new();
    let mut error = None;
    let mut received = 0usize;
    loop {
        let frame = conn
            .read_frame(&framer)
            .await
            .map_err(|e| CatalogError::Io(e.to_string()))?;
        // The rows are kept until the map is built: a server that never stops
        // sending them must not grow pgward without bound.
        received += frame.raw().len();
        if received > MAX_CATALOG_REPLY {
            return Err(CatalogError::Malformed(
                "a catalog reply larger than 256 MiB",
            ));
        }
        match frame.tag() {
            b'D' => rows.push(text_cells(frame.body()).ok_or(CatalogError::Malformed("DataRow"))?),
            b'E' => {
                error = Some(
                    match crate::upstream::error::check_error_response(frame.body()) {
                        Some(_) => crate::upstream::error::MALFORMED_MESSAGE.to_owned(),
                        None => notice_field(frame.view(), b'M')
                            .map(|m| String::from_utf8_lossy(m).into_owned())
                            .unwrap_or_default(),
                    },
                )
            }
            b'Z' => break,
            _ => {}
        }
    }
    match error {
        Some(e) => Err(CatalogError::Query(e)),
        None => Ok(rows),
    }
}

fn text_cells(body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = usize::try_from(i16::from_be_bytes([*body.first()?, *body.get(1)?])).ok()?;
    let mut at = 2;
    let mut cells = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        // -1 is NULL; any other negative length is malformed.
        let Ok(len) = usize::try_from(len) else {
            if len != -1 {
                return None;
            }
            cells.push(None);
            continue;
        };
        cells.push(Some(
            String::from_utf8_lossy(body.get(at..at + len)?).into_owned(),
        ));
        at += len;
    }
    Some(cells)
}

/// Runs one simple query; every value as text, NULL read as the empty
/// string (for catalog columns that are never NULL).
pub(crate) async fn query(
    conn: &mut FramedStream,
    sql: &str,
) -> Result<Vec<Vec<String>>, CatalogError> {
    Ok(query_nullable(conn, sql)
        .await?
        .into_iter()
        .map(|row| row.into_iter().map(Option::unwrap_or_default).collect())
        .collect())
}

/// `text` as a SQL string literal that reads the same whatever
/// standard_conforming_strings is: `E'...'` with quotes and backslashes
/// escaped.
pub(crate) fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `value` as a dollar-quoted literal whose tag is chosen at random and
/// checked absent from the value, so no content can end the literal (and
/// nothing in it is escaped: any size, any settings).
pub(crate) fn dollar_quoted(value: &str) -> String {
    loop {
        let tag = format!("$pgward_{:016x}$", rand::random::<u64>());
        if !value.contains(&tag) {
            return format!("{tag}{value}{tag}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_quoted_literals_cannot_be_closed_by_their_value() {
        let evil = "$pgward_0000000000000000$'); DROP TABLE t; --";
        let l = dollar_quoted(evil);
        let tag_len = l[1..].find('$').map(|i| i + 2).unwrap();
        let tag = &l[..tag_len];
        assert!(l.starts_with(tag) && l.ends_with(tag) && !evil.contains(tag));
        assert_eq!(&l[tag_len..l.len() - tag_len], evil);
    }

    #[test]
    fn cells_read_null_and_refuse_bad_lengths() {
        let mut row = vec![0, 2];
        row.extend_from_slice(&(-1i32).to_be_bytes());
        row.extend_from_slice(&2i32.to_be_bytes());
        row.extend_from_slice(b"ok");
        assert_eq!(text_cells(&row), Some(vec![None, Some("ok".into())]));
        let mut bad = vec![0, 1];
        bad.extend_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(text_cells(&bad), None);
        assert_eq!(text_cells(&[0, 1, 0, 0, 0, 9, b'x']), None);
    }

    #[test]
    fn literals_read_the_same_under_both_string_settings() {
        assert_eq!(literal("o'k\\"), "E'o\\'k\\\\'");
    }
}
