//! The memo answers only as judging afresh would: the scanner agrees with
//! [`same_but_integers`], and a policy that has judged texts before gives
//! every text the outcome a policy with nothing remembered gives it.

use super::super::lexer::{
    guard_shape, guard_shape_keeps_a_literal, scan_uncached, shape, shape_keeps_a_literal,
};
use super::super::rules::{Identity, RuleSet, Verdict};
use super::super::scan_memo::same_but_integers;
use super::super::scan_memo::tests::settings;
use super::super::{Lexing, Outcome, Policy, Session};
use crate::config::policy::compile;
use crate::config::raw::RawPolicy;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Texts with several integers, on top of the scan memo's templates (each
/// with integers next to every kind of token that could reach into a digit
/// run): pgbench's statements, `set_config`, DDL, select-list positions.
const MORE: &[&str] = &[
    "UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 12;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, -4, CURRENT_TIMESTAMP);",
    "SELECT ARRAY[1,2][1:2], 0, 00, 007, 1_000, 0x1F, 0o7, 0b1, 999999999, 1234567890",
    "SELECT set_config('a', '1', false), 5 FROM t WHERE id = 6",
    "CREATE TABLE t5 (a int DEFAULT 5, b numeric(10, 2))",
    "SELECT a, b FROM t WHERE c = 3 ORDER BY 2, 1 LIMIT 5",
    "SELECT DISTINCT ON (1) a, b FROM t GROUP BY 1, (2) HAVING count(*) > 3",
];

fn template(t: usize) -> &'static str {
    let scanned = super::super::scan_memo::tests::TEMPLATES;
    scanned
        .get(t)
        .copied()
        .unwrap_or_else(|| MORE[t - scanned.len()])
}

fn templates() -> usize {
    super::super::scan_memo::tests::TEMPLATES.len() + MORE.len()
}

/// Whenever the memo would call `new` the same as `old` but for digits, the
/// scanner sees the same token kinds, and the shape is the same when it
/// keeps no literal.
fn agrees(old: &str, new: &str, scs: bool) -> Result<bool, TestCaseError> {
    let Ok(tokens) = scan_uncached(old, settings(scs)) else {
        return Ok(false);
    };
    if !same_but_integers(old, &tokens, new) {
        return Ok(false);
    }
    let scanned = scan_uncached(new, settings(scs));
    prop_assert!(scanned.is_ok(), "{old:?} -> {new:?}: {scanned:?}");
    let scanned = scanned.unwrap_or_default();
    let kinds = |t: &[pg_query::protobuf::ScanToken]| t.iter().map(|t| t.token).collect::<Vec<_>>();
    prop_assert_eq!(kinds(&scanned), kinds(&tokens), "{:?} -> {:?}", old, new);
    if !shape_keeps_a_literal(old, &tokens) {
        prop_assert_eq!(
            shape(new, &scanned, settings(scs)),
            shape(old, &tokens, settings(scs)),
            "{:?} -> {:?}",
            old,
            new
        );
    }
    // The masking guard's shape too (its own literal rule: positions).
    if !guard_shape_keeps_a_literal(old, &tokens) {
        prop_assert_eq!(
            guard_shape(new, &scanned, settings(scs)),
            guard_shape(old, &tokens, settings(scs)),
            "{:?} -> {:?}",
            old,
            new
        );
    }
    Ok(true)
}

#[test]
fn a_select_list_position_keeps_the_guard_shape_apart() {
    for sql in [
        "SELECT a, b FROM t ORDER BY 2",
        "SELECT a, b FROM t GROUP BY (1)",
        "SELECT DISTINCT ON (1) a FROM t",
        "SELECT a FROM t WHERE id = 5 ORDER BY a, 2",
    ] {
        let tokens = scan_uncached(sql, settings(true)).expect("scans");
        assert!(guard_shape_keeps_a_literal(sql, &tokens), "{sql}");
        assert!(!shape_keeps_a_literal(sql, &tokens), "{sql}");
    }
    let sql = "SELECT a FROM t WHERE id = 5 ORDER BY a";
    let tokens = scan_uncached(sql, settings(true)).expect("scans");
    assert!(!guard_shape_keeps_a_literal(sql, &tokens));
}

/// Template `t` with each of its digit runs (in order, as many as there are
/// replacements) replaced.
fn with_runs_replaced(t: usize, replacements: &[String]) -> String {
    let old = template(t).as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut next = replacements.iter();
    while i < old.len() {
        if old[i].is_ascii_digit() {
            let end = i + old[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            match next.next() {
                Some(r) => out.extend_from_slice(r.as_bytes()),
                None => out.extend_from_slice(&old[i..end]),
            }
            i = end;
        } else {
            out.push(old[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_scanner_agrees_when_only_digits_change(
        t in 0..templates(),
        replacements in prop::collection::vec("[0-9]{0,11}", 0..12),
        scs in any::<bool>(),
    ) {
        agrees(template(t), &with_runs_replaced(t, &replacements), scs)?;
    }

    #[test]
    fn the_scanner_agrees_on_any_edit_next_to_digits(
        t in 0..templates(),
        replacements in prop::collection::vec("[0-9a-zA-Z_ .$'\"eExX:+/*-]{0,4}", 0..6),
        scs in any::<bool>(),
    ) {
        agrees(template(t), &with_runs_replaced(t, &replacements), scs)?;
    }
}

#[test]
fn several_inlined_values_are_the_same_statement() {
    let old = "UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 12;";
    for new in [
        "UPDATE pgbench_accounts SET abalance = abalance + -1 WHERE aid = 99999;",
        "UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 12;",
    ] {
        assert!(agrees(old, new, true).unwrap(), "{new}");
    }
    for new in [
        "UPDATE pgbench_accounts SET abalance = abalance + -1 WHERE aid = 1234567890;",
        "UPDATE pgbench_accounts SET abalance = abalance + - WHERE aid = 1;",
        "UPDATE pgbench_accounts SET abalance = abalance + -1.5 WHERE aid = 1;",
        "UPDATE pgbench_accounts SET abalance = abalance + -1 WHERE aid = 1 ;",
        "UPDATE pgbench_accounts SET abalance = abalance + -1 WHERE aid = 0x1;",
        "UPDATE pgbench_accounts SET abalance = abalance + -1 WHERE bid = 1;",
        "UPDATE pgbench_accounts SET abalance = abalance + -1 WHERE aid = 1; DROP TABLE t",
    ] {
        assert!(!agrees(old, new, true).unwrap(), "{new}");
    }
}

/// Statements judged one after the other on one thread, each next to others
/// that differ from it only in integers, several of whose verdicts depend
/// on an integer or on the session.
const SEQUENCE: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 815;",
    "SELECT pg_cancel_backend(4242)",
    "SELECT pg_cancel_backend(4243)",
    "SELECT pg_terminate_backend(4242)",
    "SELECT pg_terminate_backend(1)",
    "SELECT pg_cancel_backend(4242)",
    "DELETE FROM t WHERE 1 = 2",
    "DELETE FROM t WHERE 1 = 1",
    "DELETE FROM t WHERE id = 5",
    "UPDATE t SET v = 1 WHERE 2 = 2",
    "UPDATE t SET v = 1 WHERE 2 = 3",
    "SET standard_conforming_strings = 0",
    "SET standard_conforming_strings = 1",
    "SET statement_timeout = 0",
    "SET statement_timeout = 5",
    "SELECT set_config('role', 'x', false), 1",
    "SELECT set_config('role', 'x', false), 2",
    "SELECT set_config('search_path', 'pg_temp', false), 3",
    "CREATE TABLE t1 (a int DEFAULT 1)",
    "CREATE TABLE t1 (a int DEFAULT 2)",
    "ALTER ROLE x CONNECTION LIMIT 1",
    "ALTER ROLE x CONNECTION LIMIT 2",
    "DROP TABLE own_temp",
    "DROP TABLE own_temp",
    "TRUNCATE own_temp",
    "SELECT 1",
    "SELECT 2",
    "SELECT 1; DROP TABLE x",
    "SELECT 2; DROP TABLE x",
    "COPY t TO PROGRAM 'x'",
    "SELECT * FROM t LIMIT 10 OFFSET 20",
    "SELECT * FROM t LIMIT 11 OFFSET 21",
    "PREPARE p1 AS SELECT 1",
    "PREPARE p1 AS SELECT 2",
    "EXECUTE p1(5)",
    "EXECUTE p1(6)",
    "SELECT lo_unlink(1234)",
    "SELECT lo_unlink(4321)",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
];

fn rules() -> Arc<RuleSet> {
    let raw: RawPolicy = toml::from_str("").expect("empty policy");
    Arc::new(compile(&raw).expect("rules"))
}

#[test]
fn a_policy_that_remembers_judges_as_one_that_does_not() {
    let rules = rules();
    let temp: BTreeSet<String> = ["own_temp".to_owned()].into();
    let sessions = [
        Session::new(Lexing::Known(settings(true))),
        Session {
            own_pid: Some(4242),
            own_temp_tables: &temp,
            ..Session::new(Lexing::Known(settings(true)))
        },
        Session::new(Lexing::Known(settings(false))),
    ];
    let who = [
        Identity::new("alice", ["dev"]),
        Identity::new("bob", ["ops"]),
    ];
    let cases = || {
        sessions
            .iter()
            .flat_map(|s| who.iter().map(move |w| (s, w)))
            .flat_map(|(s, w)| SEQUENCE.iter().map(move |sql| (s, w, *sql)))
    };
    // Judged afresh on another thread (the memo is per thread: judging
    // here would replace the entries the remembering policy is to use).
    let expected: Vec<_> = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                cases()
                    .map(|(s, w, sql)| {
                        Policy::new(Arc::clone(&rules)).judge_in(sql.as_bytes(), w, s)
                    })
                    .collect()
            })
            .join()
            .expect("fresh judging")
    });
    let remembering = Policy::new(Arc::clone(&rules));
    for round in 0..3 {
        for ((session, identity, sql), fresh) in cases().zip(&expected) {
            let memo = remembering.judge_in(sql.as_bytes(), identity, session);
            assert_eq!(
                *memo, **fresh,
                "round {round}, {sql:?}, {identity:?}, pid {:?}",
                session.own_pid
            );
        }
    }
}

#[test]
fn a_reload_is_not_answered_from_the_old_policy() {
    // Same text, two policies: one denies it, one allows it.
    let allow: RawPolicy = toml::from_str("builtin_rules = false").expect("policy");
    let deny: RawPolicy = toml::from_str(
        "builtin_rules = false\n[[rules]]\nname = \"no-accounts\"\naction = \"deny\"\nrelations = [\"pgbench_accounts\"]",
    )
    .expect("policy");
    let session = Session::new(Lexing::Known(settings(true)));
    let who = Identity::new("alice", ["dev"]);
    for (first, then) in [(&allow, &deny), (&deny, &allow)] {
        let first = Policy::new(Arc::new(compile(first).expect("rules")));
        let then = Policy::new(Arc::new(compile(then).expect("rules")));
        let a = first.judge_in(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            &who,
            &session,
        );
        let b = then.judge_in(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 2",
            &who,
            &session,
        );
        assert_ne!(a.verdict, b.verdict);
    }
}

/// A policy, a session, an identity and the memo key they make.
fn memo_setup() -> (
    Policy,
    Session<'static>,
    Identity,
    super::super::text_key::Rest,
) {
    let p = Policy::new(rules());
    let session = Session::new(Lexing::Known(settings(true)));
    let who = Identity::new("alice", ["dev"]);
    let rest = super::super::text_key::Rest {
        standard_conforming_strings: true,
        server_major: session.server_major,
        generation: 0,
        audience: p.rules.audience(&who),
    };
    (p, session, who, rest)
}

#[test]
fn inlined_values_are_answered_from_the_memo() {
    let (p, session, who, rest) = memo_setup();
    let first = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;";
    let next = "SELECT abalance FROM pgbench_accounts WHERE aid = 815;";
    assert!(super::recall(p.id, &rest, next.as_bytes()).is_none());
    let judged = p.judge_in(first.as_bytes(), &who, &session);
    let recalled = super::recall(p.id, &rest, next.as_bytes()).expect("remembered");
    assert!(Arc::ptr_eq(&judged, &recalled));
    // Not for another policy, another setting, or a text that differs in
    // more than digits.
    assert!(super::recall(p.id + 1, &rest, next.as_bytes()).is_none());
    let other = super::super::text_key::Rest {
        standard_conforming_strings: false,
        ..rest.clone()
    };
    assert!(super::recall(p.id, &other, next.as_bytes()).is_none());
    assert!(super::recall(
        p.id,
        &rest,
        b"SELECT abalance FROM pgbench_accounts WHERE bid = 815;"
    )
    .is_none());
    // A verdict that read the session's state is not remembered at all.
    let mine = Session {
        own_pid: Some(4242),
        ..Session::new(Lexing::Known(settings(true)))
    };
    p.judge_in(b"SELECT pg_cancel_backend(4242)", &who, &mine);
    assert!(super::recall(p.id, &rest, b"SELECT pg_cancel_backend(4242)").is_none());
}

#[test]
fn digit_twins_share_a_slot_and_a_workloads_statements_do_not() {
    use super::slot;
    assert_eq!(
        slot(b"UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 12;"),
        slot(b"UPDATE pgbench_accounts SET abalance = abalance + -1 WHERE aid = 99999;"),
    );
    // pgbench's tpcb-like transaction: five statements, five slots.
    let statements = [
        "UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 12;",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12;",
        "UPDATE pgbench_tellers SET tbalance = tbalance + -4711 WHERE tid = 3;",
        "UPDATE pgbench_branches SET bbalance = bbalance + -4711 WHERE bid = 1;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 12, -4711, CURRENT_TIMESTAMP);",
    ];
    let slots: BTreeSet<usize> = statements.iter().map(|s| slot(s.as_bytes())).collect();
    assert_eq!(slots.len(), statements.len());
}

#[test]
fn the_slot_tried_first_answers_only_its_own_statement() {
    let (p, session, who, rest) = memo_setup();
    let select = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;";
    let delete = "DELETE FROM pgbench_accounts WHERE aid = 4711;";
    assert_ne!(
        super::slot(select.as_bytes()),
        super::slot(delete.as_bytes())
    );
    let selected = p.judge_in(select.as_bytes(), &who, &session);
    let deleted = p.judge_in(delete.as_bytes(), &who, &session);
    // The DELETE's slot is tried first now; the SELECT is still its own.
    let again = super::recall(
        p.id,
        &rest,
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
    );
    assert!(Arc::ptr_eq(&again.expect("remembered"), &selected));
    let again = super::recall(p.id, &rest, b"DELETE FROM pgbench_accounts WHERE aid = 7;");
    assert!(Arc::ptr_eq(&again.expect("remembered"), &deleted));
    // A statement of neither kind gets neither, whichever slot is tried.
    assert!(super::recall(p.id, &rest, b"DELETE FROM pgbench_tellers WHERE tid = 7;").is_none());
    assert!(super::recall(
        p.id,
        &rest,
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 7 OR true;"
    )
    .is_none());
}

/// Texts as a client's bytes, each next to others that differ from it in a
/// digit's place only: by other digits, by a byte that is not valid UTF-8,
/// by a NUL, by a letter, and by text whose reading depends on the client
/// encoding (`é` as UTF-8 is `Ã©` to a LATIN1 session).
const BYTES: &[&[u8]] = &[
    b"SELECT * FROM \"tab\xc3\xa9\" WHERE id = 1",
    b"SELECT * FROM \"tab\xc3\xa9\" WHERE id = 22",
    b"SELECT * FROM \"tab\xc3\xa9\" WHERE id = \xff",
    b"SELECT * FROM \"tab\xc3\xa9\" WHERE id = 3\xff",
    b"SELECT * FROM \"tab\xc3\xa9\" WHERE id = \xc3",
    b"SELECT * FROM \"tab\xc3\xa9\" WHERE id = \x00",
    b"SELECT * FROM \"tab\xc3\xa9\" WHERE id = 4\x00",
    b"SELECT * FROM \"tab\xc3\xa9\" WHERE id = x",
    b"SELECT * FROM \"tab\xc3\xa9\" WHERE id = 5",
    b"SELECT * FROM \"tab\xc3\" WHERE id = 5",
    b"SELECT * FROM \"tab\xe9\" WHERE id = 6",
    b"SELECT * FROM \"tab\xe9\" WHERE id = 7",
    b"SELECT * FROM \"tab\xc3\xa9\" WHERE id = 8",
    b"SELECT * FROM ok WHERE id = 9",
    b"SELECT * FROM ok WHERE id = \xe9",
    b"SELECT * FROM ok WHERE id = 10",
    b"SELECT * FROM ok WHERE id = \\11",
    b"SELECT 'a\\'' FROM ok WHERE id = 12",
    b"SELECT 'a\\'' FROM ok WHERE id = 13",
];

#[test]
fn bytes_recalled_before_conversion_are_judged_as_converted() {
    use super::super::encoding::ClientEncoding;
    let raw: RawPolicy = toml::from_str(
        "[[rules]]\nname = \"no-tab\"\naction = \"deny\"\nrelations = [\"tab\u{e9}\"]",
    )
    .expect("policy");
    let rules = Arc::new(compile(&raw).expect("rules"));
    let encodings = [
        ClientEncoding::Utf8,
        ClientEncoding::named("LATIN1"),
        ClientEncoding::named("SJIS"),
    ];
    let lexings = [
        Lexing::Known(settings(true)),
        Lexing::Known(settings(false)),
        Lexing::Uncertain(settings(true)),
    ];
    let who = Identity::new("alice", ["dev"]);
    let cases = || {
        encodings
            .iter()
            .flat_map(|e| lexings.iter().map(move |l| (e, *l)))
            .flat_map(|(e, l)| BYTES.iter().map(move |text| (e, l, *text)))
    };
    let session = |encoding, lexing| Session {
        client_encoding: encoding,
        ..Session::new(lexing)
    };
    let expected: Vec<_> = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                cases()
                    .map(|(e, l, text)| {
                        Policy::new(Arc::clone(&rules)).judge_in(text, &who, &session(e, l))
                    })
                    .collect()
            })
            .join()
            .expect("fresh judging")
    });
    // The cases fail as they should: the rule denies `tabé` read as UTF-8
    // only, invalid UTF-8 and NUL are refused.
    let code = |o: &Outcome| match &o.verdict {
        Verdict::Deny(d) => d.code,
        _ => "allowed",
    };
    assert_eq!(code(&expected[0]), "42501");
    assert_eq!(code(&expected[2]), "22021");
    assert_eq!(code(&expected[5]), "22021");
    assert_eq!(code(&expected[13]), "allowed");
    let latin1 = lexings.len() * BYTES.len();
    assert_eq!(code(&expected[latin1]), "allowed", "tabÃ© is not tabé");
    let remembering = Policy::new(Arc::clone(&rules));
    for round in 0..3 {
        for ((e, l, text), fresh) in cases().zip(&expected) {
            let memo = remembering.judge_in(text, &who, &session(e, l));
            assert_eq!(
                *memo,
                **fresh,
                "round {round}, {:?}, {e:?}, {l:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}

#[test]
fn a_digit_twin_that_is_not_utf8_or_holds_a_nul_is_no_hit() {
    let (p, session, who, rest) = memo_setup();
    let judged = p.judge_in(
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
        &who,
        &session,
    );
    assert!(matches!(judged.verdict, Verdict::Allow(_)));
    for twin in [
        &b"SELECT abalance FROM pgbench_accounts WHERE aid = \xff;"[..],
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 47\xc3;",
        b"SELECT abalance FROM pgbench_accounts WHERE aid = \x00;",
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 1\x00;",
    ] {
        assert!(super::recall(p.id, &rest, twin).is_none(), "{twin:?}");
        let outcome = p.judge_in(twin, &who, &session);
        assert!(
            matches!(&outcome.verdict, Verdict::Deny(d) if d.code == "22021"),
            "{twin:?}: {:?}",
            outcome.verdict
        );
    }
    // A text with a NUL is never remembered, even if asked to.
    let nul = "SELECT 1\0";
    super::remember(p.id, &rest, nul, None, &judged);
    assert!(super::recall(p.id, &rest, nul.as_bytes()).is_none());
}

#[test]
fn a_kept_audience_counts_only_for_the_policy_that_made_it() {
    let deny_for = |group: &str| {
        let raw: RawPolicy = toml::from_str(&format!(
            "builtin_rules = false\n[[rules]]\nname = \"no-delete\"\naction = \"deny\"\n\
             groups = [\"{group}\"]\nkinds = [\"delete\"]"
        ))
        .expect("policy");
        Policy::new(Arc::new(compile(&raw).expect("rules")))
    };
    let (ops, dev) = (deny_for("ops"), deny_for("dev"));
    let who = Identity::new("alice", ["dev"]);
    let denied = |o: &Outcome| matches!(o.verdict, Verdict::Deny(_));
    // Under the ops policy no rule applies to alice; under dev's one does.
    let kept = ops.audience_of(&who);
    assert!(ops.made(&kept) && !dev.made(&kept));
    let session = Session {
        audience: Some(&kept),
        ..Session::new(Lexing::Known(settings(true)))
    };
    for _ in 0..2 {
        assert!(!denied(&ops.judge_in(
            b"DELETE FROM t WHERE id = 1",
            &who,
            &session
        )));
        assert!(denied(&dev.judge_in(
            b"DELETE FROM t WHERE id = 2",
            &who,
            &session
        )));
        let own = dev.audience_of(&who);
        let with_own = Session {
            audience: Some(&own),
            ..session
        };
        assert!(denied(&dev.judge_in(
            b"DELETE FROM t WHERE id = 3",
            &who,
            &with_own
        )));
    }
}

#[test]
fn a_recall_by_parts_answers_as_judging_would_and_only_then() {
    use super::super::encoding::ClientEncoding;
    let (p, session, who, _) = memo_setup();
    let kept = p.audience_of(&who);
    let major = session.server_major;
    let recall = |text: &str, lexing, encoding: &ClientEncoding, generation, audience| {
        p.recall(
            text.as_bytes(),
            lexing,
            encoding,
            major,
            generation,
            audience,
        )
    };
    let known = Lexing::Known(settings(true));
    let first = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;";
    let next = "SELECT abalance FROM pgbench_accounts WHERE aid = 815;";
    assert!(recall(next, known, &ClientEncoding::Utf8, 0, &kept).is_none());
    let judged = p.judge_in(first.as_bytes(), &who, &session);
    let recalled = recall(next, known, &ClientEncoding::Utf8, 0, &kept).expect("remembered");
    assert!(
        Arc::ptr_eq(&judged, &recalled),
        "the outcome judge_in gives"
    );
    assert!(Arc::ptr_eq(
        &recalled,
        &p.judge_in(next.as_bytes(), &who, &session)
    ));
    // Nothing for any part that differs from what the memo was filled
    // under: the catalog, the setting, settings that may change before the
    // text is lexed, a client encoding judged by conversion, an audience
    // another policy worked out.
    assert!(recall(next, known, &ClientEncoding::Utf8, 7, &kept).is_none());
    let off = Lexing::Known(settings(false));
    assert!(recall(next, off, &ClientEncoding::Utf8, 0, &kept).is_none());
    let uncertain = Lexing::Uncertain(settings(true));
    assert!(recall(next, uncertain, &ClientEncoding::Utf8, 0, &kept).is_none());
    let latin1 = ClientEncoding::named("LATIN1");
    assert!(!matches!(latin1, ClientEncoding::Utf8));
    assert!(recall(next, known, &latin1, 0, &kept).is_none());
    let other = Policy::new(rules());
    let theirs = other.audience_of(&who);
    assert!(recall(next, known, &ClientEncoding::Utf8, 0, &theirs).is_none());
}
