//! Bypass attempts against the request-side guard: each must be refused;
//! plain selects of masked columns (masked on the way out) must pass.

use super::*;

fn masked() -> Masked {
    Masked::with_catalog(
        vec![
            (
                "public".into(),
                "customers".into(),
                BTreeSet::from(["ssn".into(), "email".into()]),
            ),
            (
                "crm".into(),
                "leads".into(),
                BTreeSet::from(["phone".into()]),
            ),
        ],
        BTreeSet::from([("public".into(), "customer_ssns".into())]),
        BTreeSet::from(["leak".into(), "helper".into()]),
        [
            ("public", "customers"),
            ("public", "customer_ssns"),
            ("public", "orders"),
            ("public", "other"),
            ("public", "other_schema_table_without_masks"),
            ("crm", "leads"),
        ]
        .iter()
        .map(|(s, n)| ((*s).to_owned(), (*n).to_owned()))
        .collect(),
    )
}

/// The bypass attempts, shared with the end-to-end test (tests/masking.rs).
const REFUSED_TEXT: &str = include_str!("bypass_attempts.txt");

fn refused() -> Vec<&'static str> {
    cases(REFUSED_TEXT)
}

const ALLOWED: &[&str] = &[
    "SELECT ssn FROM customers",
    "SELECT name, ssn, email FROM customers",
    "SELECT * FROM customers",
    "SELECT c.* FROM customers c",
    "SELECT c.ssn AS s, c.name FROM customers c WHERE c.id = 3",
    "SELECT ssn FROM customers ORDER BY name LIMIT 10",
    "SELECT name FROM customers ORDER BY 1",
    "SELECT count(*) FROM customers",
    "SELECT name FROM customers WHERE id > 10 GROUP BY name",
    "TABLE customers",
    "SELECT * FROM orders WHERE total > 10",
    "SELECT upper(name) FROM customers",
    "SELECT now(), pg_catalog.lower('X')",
    "INSERT INTO customers (name, ssn, email) VALUES ('a', 'b', 'c')",
    "UPDATE customers SET ssn = 'x' WHERE id = 1",
    "DELETE FROM customers WHERE id = 1",
    "SELECT phone FROM crm.leads",
    "SELECT ssn FROM other_schema_table_without_masks",
];

/// Asserts that every one of at least `at_least` cases is refused.
fn all_refused(attempts: Vec<&str>, at_least: usize) {
    assert!(attempts.len() >= at_least, "{} attempts", attempts.len());
    let m = masked();
    let wrongly_allowed: Vec<&str> = attempts
        .into_iter()
        .filter(|sql| check(sql, LexSettings::default(), &m).is_ok())
        .collect();
    assert!(wrongly_allowed.is_empty(), "allowed: {wrongly_allowed:#?}");
}

#[test]
fn bypass_attempts_are_refused() {
    all_refused(refused(), 60);
}

#[test]
fn bare_selects_of_masked_columns_pass() {
    let m = masked();
    for sql in ALLOWED {
        if let Err(Leak { why, .. }) = check(sql, LexSettings::default(), &m) {
            panic!("{sql}: {why}");
        }
    }
}

#[test]
fn relations_newer_than_the_map_wait_for_a_refresh() {
    let m = masked();
    for sql in [
        "SELECT upper(email) FROM new_leads",
        "SELECT * FROM crm.new_table",
    ] {
        let leak = check(sql, LexSettings::default(), &m).expect_err(sql);
        assert!(leak.stale, "{sql}: {leak:?}");
    }
    // CTE names are not relations, and a table being created is not read.
    check(
        "WITH x AS (SELECT 1) SELECT * FROM x",
        LexSettings::default(),
        &m,
    )
    .expect("cte");
    check("CREATE TABLE brand_new (a int)", LexSettings::default(), &m).expect("create");
    check(
        "CREATE TABLE t2 AS SELECT * FROM orders",
        LexSettings::default(),
        &m,
    )
    .expect("ctas");
    let leak = check(
        "CREATE TABLE t2 AS SELECT email FROM new_leads",
        LexSettings::default(),
        &m,
    )
    .expect_err("reads a relation newer than the map");
    assert!(leak.stale);
    // Laundering is refused for what it is, not as a stale map.
    let leak = check(
        "CREATE TABLE t3 AS SELECT ssn FROM customers",
        LexSettings::default(),
        &m,
    )
    .expect_err("laundering");
    assert!(!leak.stale, "{leak:?}");
}

#[test]
fn refusals_name_the_column() {
    let Err(Leak { why, .. }) = check(
        "SELECT ssn || '' FROM customers",
        LexSettings::default(),
        &masked(),
    ) else {
        panic!("allowed");
    };
    assert!(why.contains("ssn"), "{why}");
}

/// The resolution cases, shared with tests/masking_resolution.rs.
const RESOLUTION_REFUSED: &str = include_str!("resolution_refused.txt");
const RESOLUTION_ALLOWED: &str = include_str!("resolution_allowed.txt");

fn cases(text: &'static str) -> Vec<&'static str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn renamed_merged_and_whole_row_references_are_refused() {
    all_refused(cases(RESOLUTION_REFUSED), 80);
}

#[test]
fn what_applications_send_passes() {
    let m = masked();
    let refused: Vec<String> = cases(RESOLUTION_ALLOWED)
        .into_iter()
        .filter_map(|sql| {
            check(sql, LexSettings::default(), &m)
                .err()
                .map(|l| format!("{sql}: {}", l.why))
        })
        .collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
}

#[test]
fn refusals_say_what_was_resolved() {
    let m = masked();
    for (sql, says) in [
        (
            "SELECT s || '' FROM customers AS c(i, n, s)",
            "column s is masked",
        ),
        (
            "SELECT 1 FROM customers JOIN orders USING (ssn)",
            "USING (ssn)",
        ),
        (
            "SELECT 1 FROM customers NATURAL JOIN orders",
            "NATURAL JOIN",
        ),
        (
            "SELECT j FROM (customers JOIN orders USING (id)) j",
            "whole-row reference to j",
        ),
        (
            "SELECT s.ssn FROM (SELECT ssn FROM customers) s",
            "through a subquery",
        ),
        (
            "INSERT INTO customers (id) VALUES (1) ON CONFLICT (ssn) DO NOTHING",
            "ON CONFLICT (ssn)",
        ),
    ] {
        let leak = check(sql, LexSettings::default(), &m).expect_err(sql);
        assert!(leak.why.contains(says), "{sql}: {}", leak.why);
    }
}

#[test]
fn a_qualifier_resolves_to_its_own_relation_only_when_it_is_unambiguous() {
    let m = masked();
    let ok = |sql: &str| check(sql, LexSettings::default(), &m).is_ok();
    assert!(ok("SELECT o.ssn FROM orders o WHERE o.ssn > '5'"));
    assert!(ok(
        "SELECT 1 FROM orders customers WHERE customers.ssn > '5'"
    ));
    // The same alias for a masked table in another scope: masked.
    assert!(!ok(
        "SELECT 1 FROM orders o WHERE o.ssn > (SELECT max(o.id)::text FROM customers o)"
    ));
    // A CTE is a relation whose own body was judged: it carries no masked
    // value out.
    assert!(ok(
        "WITH w AS (SELECT 1 AS ssn) SELECT 1 FROM customers, w WHERE w.ssn > 0"
    ));
    assert!(!ok(
        "WITH w AS (SELECT ssn FROM customers) SELECT 1 FROM customers, w WHERE w.ssn > '0'"
    ));
    // An unknown qualifier (a function's alias) falls back to the name.
    assert!(!ok(
        "SELECT 1 FROM customers, generate_series(1, 2) AS g WHERE g.ssn > 0"
    ));
    // EXCLUDED is only the proposed row where a relation is not called that.
    assert!(!ok("UPDATE customers excluded SET name = excluded.ssn"));
}

#[test]
fn a_star_over_an_unaliased_subquery_with_masked_outputs_is_refused() {
    let m = masked();
    // PostgreSQL 16 syntax (the rules refuse it for older servers).
    for sql in [
        "SELECT * FROM (SELECT id, ssn FROM customers)",
        "SELECT * FROM orders, LATERAL (SELECT ssn FROM customers WHERE customers.id = orders.id)",
    ] {
        let leak = check(sql, LexSettings::default(), &m).expect_err(sql);
        assert!(leak.why.contains("a * over a subquery"), "{}", leak.why);
    }
    let sql = "SELECT count(*) FROM (SELECT id, ssn FROM customers)";
    check(sql, LexSettings::default(), &m).expect(sql);
}
