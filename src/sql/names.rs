//! SQL statements that create or remove prepared statements and portals
//! (PREPARE, DEALLOCATE, DECLARE, CLOSE, DISCARD ALL). They share their
//! namespaces with the extended protocol's statements and portals, so the
//! conversation tracker must follow them to know what a later Bind, Describe
//! or Execute names.

/// What one statement of a Query does to the namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameEffect {
    /// `PREPARE name AS ...`.
    Prepare(Vec<u8>),
    /// `DEALLOCATE name`.
    Deallocate(Vec<u8>),
    /// `DEALLOCATE ALL`.
    DeallocateAll,
    /// `DECLARE name CURSOR ...`; `hold`: WITH HOLD (survives its transaction).
    Declare {
        /// Cursor (portal) name.
        name: Vec<u8>,
        /// WITH HOLD.
        hold: bool,
    },
    /// `CLOSE name`.
    Close(Vec<u8>),
    /// `CLOSE ALL`.
    CloseAll,
    /// `DISCARD ALL`: every prepared statement and portal goes.
    DiscardAll,
}

/// `CURSOR_OPT_HOLD` in PostgreSQL's parsenodes.h.
const CURSOR_OPT_HOLD: i32 = 0x0020;
/// `DISCARD_ALL` in PostgreSQL's DiscardMode.
const DISCARD_ALL: i32 = 1;

/// Whether `text` may hold one of the statements above: they are
/// statements of their own, so their keyword starts the text or follows a
/// `;` (after whitespace and comments). Every `;` is tried, those inside
/// strings too, so a keyword cannot hide behind a `;` in a string; a false
/// positive only costs a parse. Ordinary statements cost a scan for `;`.
pub(crate) fn may_name(text: &[u8]) -> bool {
    let mut start = 0;
    loop {
        if keyword_at(text, skip_blank(text, start)) {
            return true;
        }
        match memchr::memchr(b';', &text[start..]) {
            Some(i) => start += i + 1,
            None => return false,
        }
    }
}

/// Skips whitespace and comments (nested block comments, as PostgreSQL's
/// scanner reads them) from `at`.
fn skip_blank(text: &[u8], mut at: usize) -> usize {
    loop {
        match text.get(at..) {
            Some([b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b', ..]) => at += 1,
            Some([b'-', b'-', ..]) => {
                at = text[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(text.len(), |i| at + i + 1);
            }
            Some([b'/', b'*', ..]) => {
                let mut depth = 0usize;
                while at < text.len() {
                    if text[at..].starts_with(b"/*") {
                        depth += 1;
                        at += 2;
                    } else if text[at..].starts_with(b"*/") {
                        depth -= 1;
                        at += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        at += 1;
                    }
                }
            }
            _ => return at,
        }
    }
}

/// Whether one of the keywords, as a whole word, starts at `at`.
fn keyword_at(text: &[u8], at: usize) -> bool {
    const WORDS: [&[u8]; 5] = [b"prepare", b"deallocate", b"declare", b"close", b"discard"];
    let word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    // Most statements start with none of the words' first letters.
    if !text
        .get(at)
        .is_some_and(|&b| matches!(b | 0x20, b'p' | b'd' | b'c'))
    {
        return false;
    }
    WORDS.iter().any(|w| {
        text.get(at..at + w.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(w))
            && text.get(at + w.len()).is_none_or(|&n| !word_byte(n))
    })
}

/// The effects of each statement of `text`, by the statement's position in
/// the message (each statement is answered by its own CommandComplete).
/// Text that does not parse has none: the server rejects it too.
pub(crate) fn effects(text: &[u8]) -> Vec<(usize, NameEffect)> {
    if !may_name(text) {
        return Vec::new();
    }
    let Ok(sql) = std::str::from_utf8(text) else {
        return Vec::new();
    };
    let Ok(parsed) = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) else {
        return Vec::new();
    };
    use pg_query::NodeEnum;
    let mut out = Vec::new();
    for (i, raw) in parsed.protobuf.stmts.iter().enumerate() {
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            continue;
        };
        let effect = match node {
            NodeEnum::PrepareStmt(p) => NameEffect::Prepare(p.name.clone().into_bytes()),
            NodeEnum::DeallocateStmt(d) if d.isall || d.name.is_empty() => {
                NameEffect::DeallocateAll
            }
            NodeEnum::DeallocateStmt(d) => NameEffect::Deallocate(d.name.clone().into_bytes()),
            NodeEnum::DeclareCursorStmt(d) => NameEffect::Declare {
                name: d.portalname.clone().into_bytes(),
                hold: d.options & CURSOR_OPT_HOLD != 0,
            },
            NodeEnum::ClosePortalStmt(c) if c.portalname.is_empty() => NameEffect::CloseAll,
            NodeEnum::ClosePortalStmt(c) => NameEffect::Close(c.portalname.clone().into_bytes()),
            NodeEnum::DiscardStmt(d) if d.target == DISCARD_ALL => NameEffect::DiscardAll,
            _ => continue,
        };
        out.push((i, effect));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_per_statement() {
        let e = effects(
            b"SELECT 1; PREPARE s1 AS SELECT 2; DECLARE c CURSOR WITH HOLD FOR SELECT 3; \
              CLOSE ALL; deallocate s1; DEALLOCATE ALL; DISCARD ALL; CLOSE c",
        );
        assert_eq!(
            e,
            vec![
                (1, NameEffect::Prepare(b"s1".to_vec())),
                (
                    2,
                    NameEffect::Declare {
                        name: b"c".to_vec(),
                        hold: true
                    }
                ),
                (3, NameEffect::CloseAll),
                (4, NameEffect::Deallocate(b"s1".to_vec())),
                (5, NameEffect::DeallocateAll),
                (6, NameEffect::DiscardAll),
                (7, NameEffect::Close(b"c".to_vec())),
            ]
        );
        assert!(effects(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1").is_empty());
        assert!(!may_name(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"
        ));
        assert!(may_name(b"select 1; PrEpArE x as select 1"));
        assert!(may_name(b"/**/close c"));
        assert!(may_name(b"/* /* nested */ ; */ -- x\n DEALLOCATE ALL"));
        assert!(
            may_name(b"select ';/*'; prepare p as select 1"),
            "a ; in a string"
        );
        assert!(!may_name(b"select closed_at, prepared_by from t"));
        assert!(!may_name(b"select 1 where x = 'prepare'"));
        assert_eq!(
            effects(b"declare \"Q\" cursor for select 1"),
            vec![(
                0,
                NameEffect::Declare {
                    name: b"Q".to_vec(),
                    hold: false
                }
            )]
        );
    }
}
