//! Masked tables reached through another relation of the same rows: the
//! partitions of a partitioned table and the children of an inheritance
//! parent hold the masked table's rows under table OIDs of their own, and
//! a rule that names the parent must mask them too (and the other way
//! round: a rule on one partition masks the rows it holds when they are
//! read through the parent).

mod support;

use support::raw::{error_of, Msg, RawClient};
use support::{Backend, Pgward, DB, MASKED_ROLE, PASSWORD, USER};

const SSN: &str = "321-54-9876";
const SSN2: &str = "654-87-1234";

fn table() -> String {
    format!("inh_{:08x}", rand::random::<u32>())
}

/// Every byte the client got, checked for the clear values.
fn assert_clean(what: &str, msgs: &[Msg]) {
    for m in msgs {
        let text = String::from_utf8_lossy(&m.body);
        for secret in [SSN, "54-98", SSN2, "87-12"] {
            assert!(
                !text.contains(secret),
                "{what}: {} carries a clear value: {text:?}",
                char::from(m.tag)
            );
        }
    }
}

/// The DataRows' text, for checking the masked form.
fn rows(msgs: &[Msg]) -> String {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect::<Vec<_>>()
        .join("|")
}

/// `{t}` partitioned (a partition made as such, one attached with other
/// attribute numbers, a sub-partitioned one), `{t}_base` with an
/// inheritance child, `{t}_solo` partitioned with the rule on one
/// partition only.
fn setup(backend: &Backend, t: &str) {
    backend.admin_sql(&format!(
        "CREATE TABLE {t} (id int, ssn text) PARTITION BY RANGE (id); \
         CREATE TABLE {t}_p1 PARTITION OF {t} FOR VALUES FROM (0) TO (100); \
         CREATE TABLE {t}_p2 (junk int, id int, ssn text); \
         ALTER TABLE {t}_p2 DROP COLUMN junk; \
         ALTER TABLE {t} ATTACH PARTITION {t}_p2 FOR VALUES FROM (100) TO (200); \
         CREATE TABLE {t}_p3 PARTITION OF {t} FOR VALUES FROM (200) TO (300) PARTITION BY RANGE (id); \
         CREATE TABLE {t}_p3a PARTITION OF {t}_p3 FOR VALUES FROM (200) TO (300); \
         INSERT INTO {t} VALUES (1, '{SSN}'), (101, '{SSN2}'), (201, '{SSN}'); \
         CREATE TABLE {t}_base (id int, ssn text); \
         CREATE TABLE {t}_child (extra int) INHERITS ({t}_base); \
         INSERT INTO {t}_child VALUES (1, '{SSN}', 7); \
         CREATE TABLE {t}_solo (id int, ssn text) PARTITION BY LIST (id); \
         CREATE TABLE {t}_solo_a PARTITION OF {t}_solo FOR VALUES IN (1); \
         CREATE TABLE {t}_solo_b PARTITION OF {t}_solo FOR VALUES IN (2); \
         INSERT INTO {t}_solo VALUES (1, '{SSN2}'), (2, 'sibling-clear'); \
         GRANT SELECT ON {t}, {t}_p1, {t}_p2, {t}_p3, {t}_p3a, {t}_base, {t}_child, \
           {t}_solo, {t}_solo_a, {t}_solo_b TO {MASKED_ROLE}"
    ));
}

async fn start(backend: &Backend, t: &str) -> Pgward {
    let config = format!(
        "{}\n[masking]\nrefresh = \"1h\"\n[[masking.rules]]\nname = \"ssn\"\n\
         columns = [\"{t}.ssn\", \"{t}_base.ssn\", \"{t}_solo_a.ssn\"]\n\
         strategy = \"partial\"\nkeep_last = 2\n",
        backend.masked_config("", "")
    );
    Pgward::start_in(&config, backend.cluster.dir()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_inheritance_children_are_masked_like_their_parent() {
    let backend = Backend::shared();
    let t = table();
    setup(backend, &t);
    let pw = start(backend, &t).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    for relation in [
        t.clone(),
        format!("{t}_p1"),
        format!("{t}_p2"),
        format!("{t}_p3"),
        format!("{t}_p3a"),
        format!("{t}_base"),
        format!("{t}_child"),
        format!("{t}_solo"),
        format!("{t}_solo_a"),
    ] {
        let sql = format!("SELECT id, ssn FROM {relation}");
        let got = c.simple(&sql).await;
        assert_clean(&sql, &got);
        assert!(error_of(&got).is_none(), "{sql}: {got:?}");
        assert!(rows(&got).contains('*'), "{sql}: {got:?}");
        // The guard knows them as masked too.
        for sql in [
            format!("SELECT upper(ssn) FROM {relation}"),
            format!("SELECT id FROM {relation} WHERE ssn LIKE '3%'"),
        ] {
            let got = c.simple(&sql).await;
            assert_clean(&sql, &got);
            let e = error_of(&got).unwrap_or_else(|| panic!("{sql} ran: {got:?}"));
            assert_eq!(e.sqlstate(), "42501", "{sql}");
        }
    }
    // Never sideways: a sibling of the masked partition holds other rows.
    let got = c.simple(&format!("SELECT ssn FROM {t}_solo_b")).await;
    assert!(rows(&got).contains("sibling-clear"), "{got:?}");
}
