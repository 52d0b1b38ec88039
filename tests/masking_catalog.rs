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
