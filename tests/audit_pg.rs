//! The PostgreSQL sink: two pgward instances write their chains into one
//! table; each instance's rows, exported in `seq` order, verify; a row
//! changed in the table is caught.

mod support;

use pgward::record::chain::{generate_key, PublicKey};
use pgward::record::verify::{verify_paths, Tamper};
use support::{Backend, Pgward};

fn config(backend: &Backend, dir: &std::path::Path, table: &str, instance: &str) -> String {
    format!(
        "{}\n[audit]\nenabled = true\nsink = \"postgres\"\npostgres_upstream = \"{}\"\ntable = \"{table}\"\ninstance = \"{instance}\"\nsigning_key_file = \"{}\"\n",
        backend.config("", ""),
        support::DB,
        dir.join("k").display()
    )
}

/// One instance's lines, in order, as an audit file.
async fn export(
    client: &tokio_postgres::Client,
    table: &str,
    instance: &str,
    to: &std::path::Path,
) {
    let rows = client
        .query(
            &format!("SELECT line FROM {table} WHERE instance = $1 ORDER BY seq"),
            &[&instance],
        )
        .await
        .expect("select");
    let text: String = rows.iter().map(|r| r.get::<_, String>(0) + "\n").collect();
    std::fs::create_dir_all(to).expect("dir");
    std::fs::write(to.join("pgward-audit-00000001.jsonl"), text).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_table_and_both_chains_verify() {
    let backend = Backend::shared();
    let dir = tempfile::tempdir().expect("dir");
    let (private, public) = generate_key();
    std::fs::write(dir.path().join("k"), private).expect("key");
    std::fs::write(dir.path().join("k.pub"), public).expect("pub");
    let key = PublicKey::load(&dir.path().join("k.pub")).expect("key");
    let table = format!("audit_{:08x}", rand::random::<u32>());

    let a = Pgward::start_in(&config(backend, dir.path(), &table, "a"), dir.path()).await;
    let b = Pgward::start_in(&config(backend, dir.path(), &table, "b"), dir.path()).await;
    let (ca, cb) = (a.connect().await, b.connect().await);
    for i in 0..20 {
        let (qa, qb) = (
            format!("SELECT {i} AS from_a"),
            format!("SELECT {i} AS from_b"),
        );
        let (x, y) = tokio::join!(ca.simple_query(&qa), cb.simple_query(&qb));
        x.expect("a");
        y.expect("b");
    }
    drop((ca, cb));
    a.shutdown().await;
    b.shutdown().await;

    let plain = Pgward::start(backend).await;
    let client = plain.connect().await;
    for instance in ["a", "b"] {
        let out = dir.path().join(instance);
        export(&client, &table, instance, &out).await;
        let v = verify_paths(&[out], &key, false)
            .expect("readable")
            .unwrap_or_else(|p| panic!("instance {instance}: {p}"));
        assert!(v.lines >= 20 + 4, "{v:?}");
    }
    let from_a: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE instance = 'a' AND line::jsonb ->> 'statement' LIKE '%from_a'"),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(from_a, 20, "records are queryable as JSON");

    // A row changed in the table: the next row's prev no longer matches.
    client
        .execute(
            &format!("UPDATE {table} SET line = replace(line, 'AS from_a', 'AS from_x') WHERE instance = 'a' AND seq = 5"),
            &[],
        )
        .await
        .expect("tamper");
    let out = dir.path().join("a-tampered");
    export(&client, &table, "a", &out).await;
    let problem = verify_paths(&[out], &key, false)
        .expect("readable")
        .expect_err("tampering is caught");
    assert_eq!(problem.kind, Tamper::Modified, "{problem}");
    backend.admin_sql(&format!("DROP TABLE {table}"));
}
