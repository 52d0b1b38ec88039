//! The mask map read from a real catalog: rules resolved to (table OID,
//! attribute number), views over masked columns and user functions found.

mod support;

use pgward::gateway::Gateway;
use support::{Backend, Pgward};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_resolve_to_table_oids_and_attribute_numbers() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    let client = pw.connect().await;
    let t = format!("people_{}", std::process::id());
    client
        .batch_execute(&format!(
            "CREATE TABLE {t} (id int, name text, ssn text, email text); \
             CREATE VIEW {t}_names AS SELECT id, name FROM {t}; \
             CREATE VIEW {t}_ssn AS SELECT id, upper(ssn) AS s FROM {t}; \
             CREATE FUNCTION {t}_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'"
        ))
        .await
        .expect("schema");
    let config_text = format!(
        "{}\n[[masking.rules]]\nname = \"ssn\"\ncolumns = [\"{t}.ssn\"]\nstrategy = \"partial\"\nkeep_last = 4\n\
         [[masking.rules]]\nname = \"mail\"\ncolumns = [\"email\"]\nstrategy = \"email\"\n",
        backend.masked_config("", "")
    );
    let config = pgward::config::Config::parse(&config_text, &backend.cluster.dir().join("m.toml"))
        .expect("config");
    let masking = std::sync::Arc::clone(&config.masking);
    let gw = Gateway::new(config).expect("gateway");
    let mut login = gw.upstreams[support::DB]
        .login_catalog(&[])
        .await
        .expect("login");
    let map = pgward::mask::catalog::load(&mut login.conn, &masking)
        .await
        .expect("catalog");

    let oid: u32 = client
        .query_one(&format!("SELECT '{t}'::regclass::oid"), &[])
        .await
        .expect("oid")
        .get(0);
    let ssn = map.columns.get(&(oid, 3)).expect("ssn is attribute 3");
    assert_eq!(
        (ssn.rule, ssn.column.as_str(), ssn.type_oid),
        (0, "ssn", 25)
    );
    let email = map
        .columns
        .get(&(oid, 4))
        .expect("email by column-name pattern");
    assert_eq!(email.rule, 1);
    assert!(!map.columns.contains_key(&(oid, 2)), "name is clear");
    assert!(
        map.views.contains(&("public".into(), format!("{t}_ssn"))),
        "{:?}",
        map.views
    );
    assert!(!map.views.contains(&("public".into(), format!("{t}_names"))));
    assert!(map.functions.contains(&format!("{t}_fn")));

    // A new table matching a pattern is picked up by the next read.
    client
        .batch_execute(&format!("CREATE TABLE {t}_leads (email text)"))
        .await
        .expect("new table");
    let map = pgward::mask::catalog::load(&mut login.conn, &masking)
        .await
        .expect("catalog");
    assert!(map
        .columns
        .values()
        .any(|c| c.table == format!("{t}_leads") && c.column == "email"));
}

/// A cluster of its own with a table `t` (the tests below lock a catalog
/// table), pgward in front with a mask rule on `t.ssn`, and its map read once.
async fn own_cluster_with_a_masked_table() -> (Backend, Pgward, String, String) {
    let backend = Backend::start(&pgward::cluster::ClusterOptions::default());
    let t = format!("accounts_{}", std::process::id());
    backend.admin_sql(&format!("CREATE TABLE {t} (id int, ssn text, email text)"));
    let rules = format!(
        "{}\n[[masking.rules]]\nname = \"ssn\"\ncolumns = [\"{t}.ssn\"]\nstrategy = \"redact\"\n",
        backend.masked_config("", "")
    );
    let pw = Pgward::start_in(&rules, backend.cluster.dir()).await;
    pw.gateway.masks[support::DB]
        .refresh()
        .await
        .expect("first read");
    (backend, pw, t, rules)
}

/// A superuser connection that holds a lock on a catalog table the map
/// read reads, so a read started now waits until `COMMIT`.
async fn hold_catalog_reads(backend: &Backend) -> tokio_postgres::Client {
    let (admin, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} password={} dbname={}",
            backend.cluster.port(),
            pgward::cluster::SUPERUSER,
            backend.cluster.password(),
            support::DB
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("admin connection");
    tokio::spawn(conn);
    admin
        .batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_depend IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    admin
}

/// Waits until some session waits on a lock (the held catalog read).
async fn until_a_read_waits(admin: &tokio_postgres::Client) {
    let waiting = async {
        loop {
            let n: i64 = admin
                .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted", &[])
                .await
                .expect("pg_locks")
                .get(0);
            if n > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the catalog read waits on the lock");
}

/// A map read that began under the old mask rules and ends after a reload
/// is not the map a masked login is checked against: its columns name rules
/// by their place in the old list, and it knows nothing of the columns the
/// new rules mask. The read is held open by a lock on a catalog table it
/// reads; the reload and the login's `ensure` come while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_read_under_replaced_rules_is_read_again_after_a_reload() {
    let (backend, pw, t, old_rules) = own_cluster_with_a_masked_table().await;
    let map = std::sync::Arc::clone(&pw.gateway.masks[support::DB]);
    let admin = hold_catalog_reads(&backend).await;
    // A read under the old rules starts and waits on the lock.
    map.invalidate();
    until_a_read_waits(&admin).await;

    // While it waits, a reload masks a second column, and a login asks
    // for the map.
    pw.reload_text(&format!(
        "{old_rules}[[masking.rules]]\nname = \"mail\"\ncolumns = [\"{t}.email\"]\nstrategy = \"redact\"\n"
    ))
    .expect("reload");
    let ensured = tokio::spawn({
        let map = std::sync::Arc::clone(&map);
        async move { map.ensure().await }
    });
    admin.batch_execute("COMMIT").await.expect("unlock");
    let got = ensured.await.expect("task").expect("a map");

    assert!(
        got.answers_for(&pw.gateway.masking.load_full()),
        "the map is one read under the rules in force"
    );
    let oid: u32 = admin
        .query_one(&format!("SELECT '{t}'::regclass::oid"), &[])
        .await
        .expect("oid")
        .get(0);
    let email = got.columns.get(&(oid, 3)).expect("email is masked now");
    assert_eq!(
        email.rule, 1,
        "by the new rule, at its place in the new list"
    );
    assert_eq!(got.columns.get(&(oid, 2)).map(|c| c.rule), Some(0));
}

/// Every masked statement asks for a background refresh while the map is
/// due: while one runs (here held on a catalog lock), asking again starts
/// no task; once it is done, the next ask starts a read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_background_refresh_runs_at_a_time() {
    let (backend, pw, _t, _rules) = own_cluster_with_a_masked_table().await;
    let map = std::sync::Arc::clone(&pw.gateway.masks[support::DB]);
    let before = map.current().expect("a map");
    let admin = hold_catalog_reads(&backend).await;
    map.invalidate();
    until_a_read_waits(&admin).await;

    let metrics = tokio::runtime::Handle::current().metrics();
    let alive = metrics.num_alive_tasks();
    for _ in 0..1000 {
        map.refresh_in_background();
    }
    // (A little room for tasks of the runtime's own that come and go.)
    assert!(
        metrics.num_alive_tasks() < alive + 10,
        "{} tasks alive after 1000 asks, {alive} before",
        metrics.num_alive_tasks()
    );

    admin.batch_execute("COMMIT").await.expect("unlock");
    let read = async {
        loop {
            match map.current() {
                Some(m) if !std::sync::Arc::ptr_eq(&m, &before) => break m,
                _ => tokio::task::yield_now().await,
            }
        }
    };
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("the held read completes");
    // Once it is done (its task ends just after the map is stored), asking
    // again reads again.
    let again = async {
        loop {
            map.invalidate();
            match map.current() {
                Some(m) if !std::sync::Arc::ptr_eq(&m, &first) => break,
                _ => tokio::task::yield_now().await,
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), again)
        .await
        .expect("a later ask starts another read");
}
