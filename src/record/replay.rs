//! `pgward replay SESSION_ID`: a recorded session rendered like a psql
//! transcript: each statement as sent, then what the client received (result
//! tables, command tags, notices, errors) and how long it took.
//!
//! The recording's bytes are the protocol stream the client got; they are
//! framed again here (a frame split across events is joined; a truncated
//! recording ends where it was cut).

use base64::Engine;
use serde_json::Value;
use std::fmt::Write;

/// A table being collected.
#[derive(Default)]
struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

/// A result column: its name, type and format.
struct Column {
    name: String,
    type_oid: u32,
    binary: bool,
}

impl Table {
    fn render(&self, out: &mut String) {
        let names: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        let mut widths: Vec<usize> = names.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (i, v) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(v.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!(" {c:<w$} ", w = widths.get(i).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join("|")
        };
        let _ = writeln!(out, "{}", line(&names).trim_end());
        let _ = writeln!(
            out,
            "{}",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("+")
        );
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row).trim_end());
        }
        let n = self.rows.len();
        let _ = writeln!(out, "({n} row{})\n", if n == 1 { "" } else { "s" });
    }
}

fn cstr(body: &[u8]) -> (String, &[u8]) {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    (
        String::from_utf8_lossy(&body[..end]).into_owned(),
        body.get(end + 1..).unwrap_or_default(),
    )
}

fn columns(body: &[u8]) -> Vec<Column> {
    let count = body
        .get(..2)
        .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize);
    let mut rest = body.get(2..).unwrap_or_default();
    let mut out = Vec::new();
    for _ in 0..count {
        let (name, tail) = cstr(rest);
        // table oid (4), column (2), type oid (4), size (2), modifier (4), format (2)
        let type_oid = tail
            .get(6..10)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let binary = tail.get(16..18).is_some_and(|b| b == [0, 1]);
        out.push(Column {
            name,
            type_oid,
            binary,
        });
        rest = tail.get(18..).unwrap_or_default();
    }
    out
}

/// A binary value of a common type as text; others as `\x` hex.
fn binary_text(type_oid: u32, v: &[u8]) -> String {
    let int = |n: usize| -> Option<i64> {
        let b = v.get(..n).filter(|_| v.len() == n)?;
        Some(match n {
            2 => i16::from_be_bytes([b[0], b[1]]).into(),
            4 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]).into(),
            _ => i64::from_be_bytes(b.try_into().ok()?),
        })
    };
    let text = match type_oid {
        16 => v.first().map(|b| {
            if *b != 0 {
                "t".to_owned()
            } else {
                "f".to_owned()
            }
        }),
        21 => int(2).map(|n| n.to_string()),
        23 | 26 => int(4).map(|n| n.to_string()),
        20 => int(8).map(|n| n.to_string()),
        700 => v
            .try_into()
            .ok()
            .map(|b: [u8; 4]| f32::from_be_bytes(b).to_string()),
        701 => v
            .try_into()
            .ok()
            .map(|b: [u8; 8]| f64::from_be_bytes(b).to_string()),
        18 | 19 | 25 | 1042 | 1043 => std::str::from_utf8(v).ok().map(str::to_owned),
        _ => None,
    };
    text.unwrap_or_else(|| format!("\\x{}", super::chain::hex(v)))
}

fn row(body: &[u8], columns: &[Column]) -> Vec<String> {
    let count = body
        .get(..2)
        .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize);
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..count {
        let Some(len) = body.get(at..at + 4) else {
            break;
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if len < 0 {
            out.push(String::new());
            continue;
        }
        let end = (at + len as usize).min(body.len());
        let v = &body[at..end];
        let column = columns.get(out.len());
        out.push(match column {
            Some(c) if c.binary => binary_text(c.type_oid, v),
            _ => String::from_utf8_lossy(v).into_owned(),
        });
        at = end;
    }
    out
}

fn fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut rest = body;
    let mut out = Vec::new();
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let (v, tail) = cstr(tail);
        out.push((code, v));
        rest = tail;
    }
    out
}

/// The transcript of a recording's events.
pub fn render(events: &[Value]) -> String {
    let mut out = String::new();
    let mut stream: Vec<u8> = Vec::new();
    let mut table: Option<Table> = None;
    let mut sent_at: Option<u64> = None;
    for e in events {
        let t = e.get("t_us").and_then(Value::as_u64).unwrap_or(0);
        match e.get("kind").and_then(Value::as_str) {
            Some("start") => {
                let _ = writeln!(
                    out,
                    "-- session {} of {} on {} from {}, started {}\n",
                    e["session"],
                    e["user"].as_str().unwrap_or("?"),
                    e["database"].as_str().unwrap_or("?"),
                    e["client"].as_str().unwrap_or("?"),
                    e["time"].as_str().unwrap_or("?"),
                );
            }
            Some("request") => {
                let text = e["text"].as_str().unwrap_or_default();
                match e["message"].as_str() {
                    Some("parse") => {
                        let _ = writeln!(out, "-- prepare: {text}");
                    }
                    _ => {
                        let _ = writeln!(out, "=> {text}");
                    }
                }
                sent_at.get_or_insert(t);
            }
            Some("out") => {
                let data = e["data"].as_str().unwrap_or_default();
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) {
                    stream.extend_from_slice(&bytes);
                }
                let mut at = 0;
                while let Some(header) = stream.get(at..at + 5) {
                    let len =
                        u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                    let Some(body) = stream.get(at + 5..at + 1 + len.max(4)) else {
                        break;
                    };
                    message(&mut out, header[0], body, &mut table, &mut sent_at, t);
                    at += 1 + len.max(4);
                }
                stream.drain(..at);
            }
            Some("bind") => {
                // Rows of a statement described before its Bind come in the
                // Bind's formats.
                let formats: Vec<i64> = e["result_formats"]
                    .as_array()
                    .map(|f| f.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                if let Some(tb) = &mut table {
                    for (i, c) in tb.columns.iter_mut().enumerate() {
                        c.binary = match formats.as_slice() {
                            [] => false,
                            [one] => *one == 1,
                            many => many.get(i) == Some(&1),
                        };
                    }
                }
            }
            Some("truncated") => {
                let _ = writeln!(
                    out,
                    "[recording truncated: {}]",
                    e["why"].as_str().unwrap_or("cap reached")
                );
            }
            Some("end") => {
                let _ = writeln!(out, "-- session ended after {:.3} s", t as f64 / 1e6);
            }
            _ => {}
        }
    }
    out
}

fn message(
    out: &mut String,
    tag: u8,
    body: &[u8],
    table: &mut Option<Table>,
    sent_at: &mut Option<u64>,
    t: u64,
) {
    match tag {
        b'T' => {
            *table = Some(Table {
                columns: columns(body),
                rows: Vec::new(),
            })
        }
        b'D' => {
            if let Some(tb) = table {
                let r = row(body, &tb.columns);
                tb.rows.push(r);
            }
        }
        b'C' => {
            let (tag, _) = cstr(body);
            match table.take() {
                Some(tb) => tb.render(out),
                None => {
                    let _ = writeln!(out, "{tag}");
                }
            }
        }
        b'E' | b'N' => {
            if let Some(tb) = table.take() {
                tb.render(out);
            }
            let f = fields(body);
            let get = |c: u8| f.iter().find(|(k, _)| *k == c).map(|(_, v)| v.as_str());
            let _ = writeln!(
                out,
                "{}:  {} ({})",
                get(b'S').unwrap_or(if tag == b'E' { "ERROR" } else { "NOTICE" }),
                get(b'M').unwrap_or_default(),
                get(b'C').unwrap_or_default()
            );
        }
        b'A' => {
            let channel = body.get(4..).map(|b| cstr(b).0).unwrap_or_default();
            let _ = writeln!(out, "Asynchronous notification \"{channel}\" received.");
        }
        b'Z' => {
            if let Some(start) = sent_at.take() {
                let _ = writeln!(
                    out,
                    "Time: {:.3} ms\n",
                    t.saturating_sub(start) as f64 / 1000.0
                );
            }
        }
        _ => {}
    }
}
