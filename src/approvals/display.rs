//! What approvers are shown of a statement: its justification (a leading
//! `/* reason: ... */` comment) and its Bind parameters decoded for display.
//! Display only: nothing here decides anything (the binding covers the
//! exact bytes).

use super::model::ShownParam;
use crate::policy::encoding::ClientEncoding;

/// Longest justification kept, in characters.
pub const MAX_JUSTIFICATION: usize = 500;
/// Longest displayed parameter value, in characters.
pub const MAX_PARAM: usize = 256;
/// Most parameters displayed (the rest are summed up in one entry).
pub const MAX_PARAMS: usize = 64;
/// What a parameter that may bind to masked data reads as.
pub const WITHHELD: &str = "<withheld>";

/// The justification of a statement: its text must begin (after
/// whitespace) with a block comment whose content, trimmed, begins with
/// `reason:` (any case); the rest, trimmed, is the justification. Control
/// characters read as spaces; cut at [`MAX_JUSTIFICATION`] characters. A
/// comment holding `/*` (PostgreSQL nests them) is not read.
pub fn justification(text: &str) -> Option<String> {
    let rest = text.trim_start().strip_prefix("/*")?;
    let (body, _) = rest.split_once("*/")?;
    if body.contains("/*") {
        return None;
    }
    let body = body.trim();
    let prefix = body.get(..7)?;
    if !prefix.eq_ignore_ascii_case("reason:") {
        return None;
    }
    let reason = bounded(&body[7..]);
    (!reason.is_empty()).then_some(reason)
}

/// An approver's or requester's free text (a reason) as kept: control
/// characters read as spaces, invisible ones shown ([`visible`]), cut at
/// [`MAX_JUSTIFICATION`] characters.
pub fn bounded(text: &str) -> String {
    let clean: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(&visible(&clean), MAX_JUSTIFICATION)
}

/// Whether `c` changes how the text around it is displayed without being
/// seen itself: control characters (a carriage return, an escape sequence's
/// ESC), bidirectional overrides and isolates (which reorder what a
/// terminal or browser shows, "Trojan Source"), zero-width characters,
/// line and paragraph separators, the soft hyphen and the byte-order mark.
/// Newline and tab only start lines and columns.
fn hides(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `text` as approvers are shown it (the page, the CLI, webhooks): each
/// character that would change the display without being seen (see
/// `hides`) written as `<U+XXXX>`, so what an approver reads is what runs.
/// A `\r\n` line end reads as a newline.
pub fn visible(text: &str) -> String {
    if !text.chars().any(hides) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && chars.peek() == Some(&'\n') {
            continue;
        }
        if hides(c) {
            out.push_str(&format!("<U+{:04X}>", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` cut at `max` characters, marked when cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!(
            "{}... ({} more characters)",
            &s[..at],
            s[at..].chars().count()
        ),
        None => s.to_owned(),
    }
}

/// The parameters as shown: `params` are (format, value) pairs in order,
/// `type_of(i)` parameter `i`'s type OID when known. With `withhold`,
/// every non-NULL value reads `<withheld>` (it may be masked data).
pub fn show_params(
    params: &[(i16, Option<&[u8]>)],
    type_of: impl Fn(usize) -> Option<u32>,
    withhold: bool,
    encoding: &ClientEncoding,
) -> Vec<ShownParam> {
    let mut shown: Vec<ShownParam> = params
        .iter()
        .take(MAX_PARAMS)
        .enumerate()
        .map(|(i, (format, value))| {
            let oid = type_of(i);
            ShownParam {
                type_name: oid.and_then(type_name).map(str::to_owned),
                format: if *format == 0 { "text" } else { "binary" }.into(),
                value: value.map(|v| {
                    if withhold {
                        WITHHELD.to_owned()
                    } else if *format == 0 {
                        cut(&decoded(v, encoding), MAX_PARAM)
                    } else {
                        binary(oid, v)
                    }
                }),
            }
        })
        .collect();
    if params.len() > MAX_PARAMS {
        shown.push(ShownParam {
            type_name: None,
            format: "text".into(),
            value: Some(format!("... {} more parameters", params.len() - MAX_PARAMS)),
        });
    }
    shown
}

/// Text in the client's encoding as the server will read it (converted to
/// UTF-8 as the server converts it); bytes it cannot convert are shown as
/// `\x` hex rather than replaced, so an approver never reads a character
/// that is not there, and characters that would change the display unseen
/// as `<U+XXXX>` ([`visible`]).
pub fn decoded(text: &[u8], encoding: &ClientEncoding) -> String {
    match encoding.to_utf8(text) {
        Ok(t) => visible(&t),
        Err(_) => format!(
            "<bytes not valid in the session's client_encoding> \\x{}",
            crate::record::chain::hex(text)
        ),
    }
}

/// Names of the types decoded here.
fn type_name(oid: u32) -> Option<&'static str> {
    Some(match oid {
        16 => "bool",
        17 => "bytea",
        19 => "name",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        700 => "float4",
        701 => "float8",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1114 => "timestamp",
        1184 => "timestamptz",
        2950 => "uuid",
        _ => return None,
    })
}

/// A binary value by its type, else hex; cut at [`MAX_PARAM`].
fn binary(oid: Option<u32>, v: &[u8]) -> String {
    let fixed = |n: usize| (v.len() == n).then_some(v);
    let decoded = match oid {
        Some(16) => fixed(1).map(|b| (b[0] != 0).to_string()),
        Some(21) => fixed(2).map(|b| i16::from_be_bytes([b[0], b[1]]).to_string()),
        Some(23) => fixed(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]).to_string()),
        Some(20) => fixed(8).map(|b| i64::from_be_bytes(eight(b)).to_string()),
        Some(700) => fixed(4).map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]).to_string()),
        Some(701) => fixed(8).map(|b| f64::from_be_bytes(eight(b)).to_string()),
        Some(19 | 25 | 1042 | 1043) => Some(cut(&String::from_utf8_lossy(v), MAX_PARAM)),
        Some(2950) => fixed(16).map(|b| {
            let h = crate::record::chain::hex(b);
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        }),
        Some(1082) => fixed(4).map(|b| {
            let days = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            match days {
                i32::MAX => "infinity".into(),
                i32::MIN => "-infinity".into(),
                d => date(i64::from(d)),
            }
        }),
        Some(1114 | 1184) => fixed(8).map(|b| {
            let micros = i64::from_be_bytes(eight(b));
            match micros {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                m => {
                    let (days, rest) = (m.div_euclid(86_400_000_000), m.rem_euclid(86_400_000_000));
                    let secs = rest / 1_000_000;
                    let zone = if oid == Some(1184) { "+00" } else { "" };
                    format!(
                        "{} {:02}:{:02}:{:02}.{:06}{zone}",
                        date(days),
                        secs / 3600,
                        secs / 60 % 60,
                        secs % 60,
                        rest % 1_000_000
                    )
                }
            }
        }),
        _ => None,
    };
    decoded.unwrap_or_else(|| {
        let shown = &v[..v.len().min(MAX_PARAM / 2)];
        let mut s = format!("\\x{}", crate::record::chain::hex(shown));
        if shown.len() < v.len() {
            s.push_str(&format!("... ({} bytes)", v.len()));
        }
        s
    })
}

fn eight(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// Days since 2000-01-01 as `YYYY-MM-DD` (proleptic Gregorian; the civil
/// date algorithm of H. Hinnant).
fn date(days_since_2000: i64) -> String {
    let (y, m, d) = crate::auth::token::civil_from_days(days_since_2000 + 10_957);
    if y <= 0 {
        format!("{:04}-{m:02}-{d:02} BC", 1 - y)
    } else {
        format!("{y:04}-{m:02}-{d:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_would_change_the_display_unseen_is_shown() {
        // A statement whose carriage return, escape sequence or bidi
        // override would make a terminal or a page show other text.
        let text =
            "DELETE FROM t; --\r UPDATE t SET v = 1 /* \u{1b}[8m \u{202e}x\u{2066} */\r\nSELECT\t1";
        let shown = decoded(text.as_bytes(), &ClientEncoding::Utf8);
        assert_eq!(
            shown,
            "DELETE FROM t; --<U+000D> UPDATE t SET v = 1 /* <U+001B>[8m <U+202E>x<U+2066> */\nSELECT\t1"
        );
        assert!(!shown.chars().any(hides));
        let p = show_params(
            &[(0, Some(b"a\rb".as_slice()))],
            |_| Some(25),
            false,
            &ClientEncoding::Utf8,
        );
        assert_eq!(p[0].value.as_deref(), Some("a<U+000D>b"));
        assert_eq!(bounded("ok \u{202e}kcab"), "ok <U+202E>kcab");
        assert_eq!(visible("plain"), "plain");
    }

    #[test]
    fn justifications() {
        let j = |t: &str| justification(t);
        assert_eq!(
            j("/* reason: INC-42 fix */ UPDATE t").as_deref(),
            Some("INC-42 fix")
        );
        assert_eq!(j("  \n/*Reason:x*/UPDATE t").as_deref(), Some("x"));
        assert_eq!(j("UPDATE t /* reason: late */"), None);
        assert_eq!(j("/* why: x */ UPDATE t"), None);
        assert_eq!(j("/* reason: */ UPDATE t"), None);
        assert_eq!(j("/* reason: a /* nested */ b */ UPDATE t"), None);
        assert_eq!(j("/* reason: unterminated UPDATE t"), None);
        assert_eq!(
            j("/* reason: a\u{1b}[31mb */ x").as_deref(),
            Some("a [31mb")
        );
        let long = format!("/* reason: {} */ x", "é".repeat(MAX_JUSTIFICATION + 10));
        let got = j(&long).expect("long");
        assert!(got.starts_with(&"é".repeat(MAX_JUSTIFICATION)));
        assert!(got.ends_with("(10 more characters)"));
    }

    #[test]
    fn binary_values_by_type() {
        let one = |oid: u32, v: &[u8]| {
            show_params(&[(1, Some(v))], |_| Some(oid), false, &ClientEncoding::Utf8)[0]
                .value
                .clone()
                .expect("value")
        };
        assert_eq!(one(23, &42i32.to_be_bytes()), "42");
        assert_eq!(one(20, &(-7i64).to_be_bytes()), "-7");
        assert_eq!(one(21, &3i16.to_be_bytes()), "3");
        assert_eq!(one(16, &[1]), "true");
        assert_eq!(one(701, &1.5f64.to_be_bytes()), "1.5");
        assert_eq!(one(700, &2.5f32.to_be_bytes()), "2.5");
        assert_eq!(one(25, b"hi"), "hi");
        assert_eq!(one(17, &[0xde, 0xad]), "\\xdead");
        assert_eq!(one(1082, &0i32.to_be_bytes()), "2000-01-01");
        assert_eq!(one(1082, &(-1i32).to_be_bytes()), "1999-12-31");
        assert_eq!(one(1082, &8_766i32.to_be_bytes()), "2024-01-01");
        assert_eq!(
            one(1184, &(86_400_000_000i64 + 3_723_000_001).to_be_bytes()),
            "2000-01-02 01:02:03.000001+00"
        );
        assert_eq!(
            one(2950, &[0x12; 16]),
            "12121212-1212-1212-1212-121212121212"
        );
        // A wrong length for its type, or an unknown type: hex.
        assert_eq!(one(23, &[1, 2]), "\\x0102");
        assert_eq!(one(99_999, &[0xff]), "\\xff");
        let long = one(17, &[0u8; 1000]);
        assert!(long.ends_with("... (1000 bytes)"), "{long}");
    }

    #[test]
    fn text_nulls_withheld_and_many() {
        let params = [(0i16, Some(&b"secret"[..])), (0, None)];
        let shown = show_params(&params, |_| None, false, &ClientEncoding::Utf8);
        assert_eq!(shown[0].value.as_deref(), Some("secret"));
        assert_eq!(shown[0].format, "text");
        assert_eq!(shown[1].value, None);
        let hidden = show_params(&params, |_| Some(25), true, &ClientEncoding::Utf8);
        assert_eq!(hidden[0].value.as_deref(), Some(WITHHELD));
        assert_eq!(hidden[0].type_name.as_deref(), Some("text"));
        assert_eq!(hidden[1].value, None, "NULL stays NULL");
        let many: Vec<(i16, Option<&[u8]>)> = (0..100).map(|_| (0, Some(&b"x"[..]))).collect();
        let shown = show_params(&many, |_| None, false, &ClientEncoding::Utf8);
        assert_eq!(shown.len(), MAX_PARAMS + 1);
        assert_eq!(
            shown[MAX_PARAMS].value.as_deref(),
            Some("... 36 more parameters")
        );
    }

    #[test]
    fn text_is_shown_as_the_server_reads_it_in_the_client_encoding() {
        // LATIN1 0xE9 is é: shown as é, not as a replacement character.
        let latin1 = ClientEncoding::named("LATIN1");
        assert_eq!(decoded(b"SELECT 'caf\xe9'", &latin1), "SELECT 'café'");
        let shown = show_params(&[(0, Some(&b"\xe9t\xe9"[..]))], |_| None, false, &latin1);
        assert_eq!(shown[0].value.as_deref(), Some("été"));
        // Bytes that are not valid UTF-8 in a UTF8 session are shown as
        // they are, in hex, never replaced by a character that is not there.
        let bad = decoded(b"SELECT '\xff'", &ClientEncoding::Utf8);
        assert!(bad.ends_with("\\x53454c4543542027ff27"), "{bad}");
        assert!(!bad.contains('\u{fffd}'));
    }
}
