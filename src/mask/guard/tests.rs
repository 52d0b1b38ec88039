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

const REFUSED: &[&str] = &[
    // Expressions, functions, casts, operators.
    "SELECT ssn || '' FROM customers",
    "SELECT upper(ssn) FROM customers",
    "SELECT ssn::text FROM customers",
    "SELECT CAST(ssn AS bytea) FROM customers",
    "SELECT ssn COLLATE \"C\" FROM customers",
    "SELECT substr(ssn, 1, 3) FROM customers",
    "SELECT length(email) FROM customers",
    "SELECT md5(ssn) FROM customers",
    "SELECT format('%s', ssn) FROM customers",
    "SELECT concat(name, ssn) FROM customers",
    "SELECT coalesce(ssn, 'x') FROM customers",
    "SELECT CASE WHEN ssn LIKE '1%' THEN 1 END FROM customers",
    "SELECT ssn = '123-45-6789' FROM customers",
    "SELECT (ssn) || 'x' FROM customers",
    // Aggregates and windows.
    "SELECT string_agg(ssn, ',') FROM customers",
    "SELECT array_agg(email) FROM customers",
    "SELECT min(ssn) FROM customers",
    "SELECT count(DISTINCT ssn) FROM customers",
    "SELECT json_agg(ssn) FROM customers",
    "SELECT rank() OVER (ORDER BY ssn) FROM customers",
    "SELECT name FROM customers WINDOW w AS (PARTITION BY email)",
    // Constructors.
    "SELECT ARRAY[ssn] FROM customers",
    "SELECT ROW(ssn, name) FROM customers",
    "SELECT json_build_object('s', ssn) FROM customers",
    "SELECT jsonb_build_array(email) FROM customers",
    "SELECT xmlelement(name x, ssn) FROM customers",
    // Predicates and ordering (inference).
    "SELECT name FROM customers WHERE ssn = '123-45-6789'",
    "SELECT name FROM customers WHERE ssn LIKE '123%'",
    "SELECT name FROM customers WHERE ssn > '5'",
    "SELECT name FROM customers c JOIN orders o ON o.ssn = c.ssn",
    "SELECT name FROM customers GROUP BY ssn, name",
    "SELECT name, count(*) FROM customers GROUP BY name HAVING max(ssn) > '5'",
    "SELECT name FROM customers ORDER BY ssn",
    "SELECT ssn FROM customers ORDER BY 1",
    "SELECT ssn AS s FROM customers ORDER BY s",
    "SELECT DISTINCT ssn FROM customers",
    "SELECT DISTINCT ON (email) name FROM customers",
    "SELECT name FROM customers WHERE EXISTS (SELECT 1 FROM customers c2 WHERE c2.ssn < customers.ssn)",
    // Whole-row references.
    "SELECT c FROM customers c",
    "SELECT customers FROM customers",
    "SELECT row_to_json(c) FROM customers c",
    "SELECT c::text FROM customers c",
    "SELECT to_jsonb(customers.*) FROM customers",
    "SELECT (c).ssn FROM customers c",
    "SELECT name FROM customers c WHERE c IS NOT NULL",
    // Subqueries, CTEs, set operations, LATERAL.
    "SELECT (SELECT ssn FROM customers LIMIT 1)",
    "SELECT * FROM (SELECT ssn FROM customers) s",
    "WITH x AS (SELECT ssn FROM customers) SELECT * FROM x",
    "SELECT ssn FROM customers UNION SELECT 'x'",
    "SELECT 'x' UNION ALL SELECT email FROM customers",
    "SELECT * FROM orders o, LATERAL (SELECT ssn FROM customers c WHERE c.id = o.id) l",
    "SELECT name FROM customers WHERE id IN (SELECT id FROM customers WHERE ssn > '5')",
    // Quoting, case, qualification, other schemas.
    "SELECT \"ssn\" || '' FROM customers",
    "SELECT SSN || '' FROM Customers",
    "SELECT public.customers.ssn || '' FROM public.customers",
    "SELECT x.phone || '' FROM crm.leads x",
    "SELECT upper(phone) FROM leads",
    // Data laundering.
    "CREATE TABLE copy AS SELECT ssn FROM customers",
    "SELECT ssn INTO TEMP copy FROM customers",
    "CREATE VIEW v AS SELECT ssn FROM customers",
    "CREATE TEMP VIEW customers2 AS SELECT * FROM customers",
    "INSERT INTO other SELECT ssn FROM customers",
    "UPDATE other SET v = (SELECT ssn FROM customers LIMIT 1)",
    "UPDATE customers SET name = ssn",
    "DELETE FROM customers WHERE ssn = '1' ",
    "DELETE FROM customers WHERE id = 1 RETURNING *",
    "UPDATE customers SET name = 'x' WHERE id = 1 RETURNING ssn",
    "COPY customers TO STDOUT",
    "COPY (SELECT ssn FROM customers) TO STDOUT",
    "PREPARE p AS SELECT ssn FROM customers",
    "DECLARE c CURSOR FOR SELECT ssn FROM customers",
    "EXPLAIN ANALYZE SELECT ssn FROM customers",
    // Views over masked columns, user functions, SQL-text functions.
    "SELECT * FROM customer_ssns",
    "SELECT name FROM public.customer_ssns",
    "SELECT leak()",
    "SELECT public.helper(1)",
    "SELECT name FROM customers WHERE helper(id)",
    "SELECT query_to_xml('SELECT ssn FROM customers', true, false, '')",
    "SELECT * FROM ts_stat('SELECT to_tsvector(ssn) FROM customers')",
    // Unparsable text is refused, not waved through.
    "SELECT ssn FROM customers WHERE",
];

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
    assert!(REFUSED.len() >= 60, "{} attempts", REFUSED.len());
    let m = masked();
    let wrongly_allowed: Vec<&str> = REFUSED
        .iter()
        .copied()
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
