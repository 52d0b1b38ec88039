//! Bypass attempts against the request-side guard: each must be refused;
//! plain selects of masked columns (masked on the way out) must pass.

use super::*;

fn masked() -> Masked {
    Masked {
        tables: vec![
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
        views: BTreeSet::from([("public".into(), "customer_ssns".into())]),
        functions: BTreeSet::from(["leak".into(), "helper".into()]),
        relations: [
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
    }
}

/// The bypass attempts, shared with the end-to-end test (tests/masking.rs).
const REFUSED_TEXT: &str = include_str!("bypass_attempts.txt");

fn refused() -> Vec<&'static str> {
    REFUSED_TEXT
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect()
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

#[test]
fn bypass_attempts_are_refused() {
    let attempts = refused();
    assert!(attempts.len() >= 60, "{} attempts", attempts.len());
    let m = masked();
    let wrongly_allowed: Vec<&str> = attempts
        .into_iter()
        .filter(|sql| check(sql, LexSettings::default(), &m).is_ok())
        .collect();
    assert!(wrongly_allowed.is_empty(), "allowed: {wrongly_allowed:#?}");
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
