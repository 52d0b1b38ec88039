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

/// Whether `text` may hold one of the statements above: a scan for the
/// keywords as whole words, so ordinary statements cost no parse. A false
/// positive costs a parse; a keyword cannot hide from it (a keyword is
/// always a whole word to the scanner too; identifiers and strings may only
/// add matches).
pub(crate) fn may_name(text: &[u8]) -> bool {
    const WORDS: [&[u8]; 5] = [b"prepare", b"deallocate", b"declare", b"close", b"discard"];
    let word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    text.iter().enumerate().any(|(i, &b)| {
        matches!(b | 0x20, b'p' | b'd' | b'c')
            && (i == 0 || !word_byte(text[i - 1]))
            && WORDS.iter().any(|w| {
                text.get(i..i + w.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(w))
                    && text.get(i + w.len()).is_none_or(|&n| !word_byte(n))
            })
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
        assert!(!may_name(b"select closed_at, prepared_by from t"));
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
