//! The hand-written JSON is byte for byte what serde_json writes for the
//! derived `Serialize` of the same record.

use super::*;
use crate::record::event::{Decision, Shared, TokenFields};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn by_serde(record: &Record) -> String {
    serde_json::to_string(&Line {
        time: super::super::event::rfc3339(record.time),
        event: &record.event,
    })
    .unwrap()
}

fn by_hand(record: &Record) -> String {
    let mut out = Vec::new();
    write_record(&mut out, record);
    String::from_utf8(out).unwrap()
}

fn session(application_name: Option<String>, token: bool) -> Shared<SessionRecord> {
    Shared(Arc::new(SessionRecord::new(SessionFields {
        session: 42,
        user: "al\"ice\\".into(),
        groups: vec!["dev".into(), "ops\n".into()],
        role: "app".into(),
        client: Some("127.0.0.1:5000".into()),
        database: "appdb".into(),
        upstream: "main".into(),
        application_name,
        token: token.then(|| TokenFields {
            issuer: "https://issuer".into(),
            subject: None,
            jti: Some("j\u{1}".into()),
        }),
    })))
}

fn statement() -> StatementFields {
    StatementFields {
        message: "query",
        index: None,
        statement: None,
        params: None,
        approval: None,
        decision: Decision::Allowed,
        refused_by: None,
        rule: None,
        reason: None,
        held_by: None,
        held_ms: None,
        tag: None,
        rows: None,
        bytes_sent: 0,
        duration_us: None,
        sqlstate: None,
        tx_status: "idle",
        rules_version: 1,
    }
}

fn at(micros: u64, event: Event) -> Record {
    Record {
        time: SystemTime::UNIX_EPOCH + Duration::from_micros(micros),
        event,
    }
}

#[test]
fn every_kind_of_record_matches_serde() {
    let full = StatementFields {
        message: "execute",
        index: Some(3),
        statement: Some(Text::Shared(Arc::from(
            &b"SELECT '\xff\xfe' -- \x7f\t\"x\""[..],
        ))),
        params: Some(Shared(Arc::new(vec![
            Some("1".into()),
            None,
            Some("\u{0}é".into()),
        ]))),
        approval: Some(ApprovalFields {
            ticket: "t-1".into(),
            outcome: "approved",
            approvers: vec!["bob".into(), "carol".into()],
            grant: Some("g-9".into()),
        }),
        decision: Decision::Refused,
        refused_by: Some("rules".into()),
        rule: Some("no-drop".into()),
        reason: Some("statement denied by pgward rule \"no-drop\"".into()),
        held_by: Some("approvals".into()),
        held_ms: Some(1500),
        tag: Some("SELECT 1".into()),
        rows: Some(u64::MAX),
        bytes_sent: 77,
        duration_us: Some(12),
        sqlstate: Some("42501".into()),
        tx_status: "failed",
        rules_version: 9,
    };
    let records = [
        at(
            0,
            Event::SessionStart {
                session: session(None, false),
            },
        ),
        at(
            1_764_580_216_123_456,
            Event::SessionStart {
                session: session(Some("psql \u{2028}".into()), true),
            },
        ),
        at(
            951_782_400_000_001,
            Event::SessionEnd {
                session: session(None, true),
                reason: "client closed the connection".into(),
                statements: 3,
                bytes_sent: 0,
                duration_ms: 5,
            },
        ),
        at(
            5,
            Event::Statement {
                session: session(None, false),
                statement: Box::new(statement()),
            },
        ),
        at(
            6,
            Event::Statement {
                session: session(None, true),
                statement: Box::new(full),
            },
        ),
        at(
            7,
            Event::Statement {
                session: session(None, false),
                statement: Box::new(StatementFields {
                    statement: Some(Text::Owned("SELECT 2".into())),
                    approval: Some(ApprovalFields {
                        ticket: "t".into(),
                        outcome: "held",
                        approvers: Vec::new(),
                        grant: None,
                    }),
                    params: Some(Shared(Arc::new(Vec::new()))),
                    ..statement()
                }),
            },
        ),
        at(8, Event::Reload { rules_version: 12 }),
    ];
    for r in &records {
        assert_eq!(by_hand(r), by_serde(r));
    }
}

#[test]
fn chained_lines_are_the_object_after_seq_and_prev() {
    let r = at(5, Event::Reload { rules_version: 1 });
    let mut head = crate::record::chain::Head::genesis();
    let mut line = Vec::new();
    head.begin(&mut line);
    write_members(&mut line, &r);
    head.seal(&line);
    let mut other = crate::record::chain::Head::genesis();
    assert_eq!(String::from_utf8(line).unwrap(), other.chain(&by_serde(&r)));
    assert_eq!(head, other);
}

proptest! {
    #[test]
    fn any_text_escapes_like_serde(
        text in any::<String>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        micros in 0u64..4_102_444_800_000_000,
    ) {
        let r = at(micros, Event::Statement {
            session: session(Some(text.clone()), false),
            statement: Box::new(StatementFields {
                statement: Some(Text::Shared(Arc::from(bytes.as_slice()))),
                reason: Some(text.clone()),
                params: Some(Shared(Arc::new(vec![Some(text)]))),
                ..statement()
            }),
        });
        prop_assert_eq!(by_hand(&r), by_serde(&r));
    }
}
