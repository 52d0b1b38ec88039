//! Code a statement runs without its body being in the statement (issue 12,
//! point 4): objects created directly on PostgreSQL as the superuser
//! (bypassing pgward), or by another pgward session, and then invoked by
//! an identity the built-in rules protect, in the simple and the extended
//! protocol. Each attack must end refused, naming where the code was
//! found, with the guarded table intact; everyday code keeps working.

mod support;

use support::{message, sqlstate, Backend, Pgward};
use tokio_postgres::Client;

/// A fresh name prefix per call: tests share the cluster.
fn fresh() -> String {
    support::fresh_name("cc")
}

/// pgward in front of the shared cluster, with `bob` trusted (a rule
/// before the built-in ones allows him everything).
async fn start() -> Pgward {
    let backend = Backend::shared();
    let config = format!(
        "{}\n[policy]\nrules = [{{ name = \"trusted\", action = \"allow\", users = [\"bob\"] }}]\n",
        backend.config("", "")
    );
    Pgward::start_in(&config, backend.cluster.dir()).await
}

/// Rows of `table`, read directly as the superuser.
fn rows(table: &str) -> i64 {
    Backend::shared()
        .admin_sql(&format!("SELECT count(*) FROM {table}"))
        .trim()
        .parse()
        .expect("a count")
}

/// A table of 20 rows the app role may write.
fn guarded(p: &str) -> String {
    let t = format!("{p}_acc");
    Backend::shared().admin_sql(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text); \
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 20) g; \
         GRANT ALL ON {t} TO app"
    ));
    t
}

/// Runs `sql` through `client` in `protocol`.
async fn run(client: &Client, protocol: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    if protocol == "simple" {
        client.simple_query(sql).await.map(|_| ())
    } else {
        client.execute(sql, &[]).await.map(|_| ())
    }
}

/// (what the superuser creates, the attack, the rule, what the message says)
fn attacks(p: &str, t: &str) -> Vec<(String, String, &'static str, String)> {
    vec![
        (
            format!("CREATE FUNCTION {p}_wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM {t}'"),
            format!("SELECT {p}_wipe()"),
            "no-unbounded-write",
            format!("in the body of function public.{p}_wipe called by this statement"),
        ),
        (
            format!(
                "CREATE FUNCTION {p}_atomic() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM {t}; END"
            ),
            format!("SELECT public.{p}_atomic()"),
            "no-unbounded-write",
            format!("function public.{p}_atomic"),
        ),
        (
            format!(
                "CREATE PROCEDURE {p}_purge() LANGUAGE plpgsql AS $$ BEGIN TRUNCATE {t}; END $$"
            ),
            format!("CALL {p}_purge()"),
            "no-truncate",
            format!("in the body of function public.{p}_purge called by this statement"),
        ),
        (
            format!(
                "CREATE FUNCTION {p}_dropper(text, text) RETURNS bool LANGUAGE sql \
                 AS 'DROP TABLE {t}; SELECT true'; \
                 CREATE OPERATOR ~>> (LEFTARG = text, RIGHTARG = text, FUNCTION = {p}_dropper)"
            ),
            "SELECT 'a' ~>> 'b'".into(),
            "no-drop",
            "behind operator public.~>> used by this statement".into(),
        ),
        (
            "CREATE OPERATOR ~>>> (RIGHTARG = text, FUNCTION = pg_read_file)".into(),
            "SELECT ~>>> '/etc/passwd'::text".into(),
            "no-server-file-functions",
            "function pg_catalog.pg_read_file behind operator public.~>>>".into(),
        ),
        (
            format!(
                "CREATE FUNCTION {p}_step(int, int) RETURNS int LANGUAGE sql \
                 AS 'DELETE FROM {t}; SELECT $1 + $2'; \
                 CREATE AGGREGATE {p}_sum(int) (SFUNC = {p}_step, STYPE = int, INITCOND = '0')"
            ),
            format!("SELECT {p}_sum(id) FROM {t}"),
            "no-unbounded-write",
            format!("a support function of aggregate function public.{p}_sum"),
        ),
        (
            format!(
                "CREATE TYPE {p}_mood AS ENUM ('x'); \
                 CREATE FUNCTION {p}_tomood(int) RETURNS {p}_mood LANGUAGE sql \
                 AS 'DELETE FROM {t}; SELECT ''x''::{p}_mood'; \
                 CREATE CAST (int AS {p}_mood) WITH FUNCTION {p}_tomood(int)"
            ),
            format!("SELECT 1::{p}_mood"),
            "no-unbounded-write",
            format!("of the cast from int4 to public.{p}_mood"),
        ),
        (
            format!(
                "CREATE TABLE {p}_orders (id int); GRANT ALL ON {p}_orders TO app; \
                 CREATE FUNCTION {p}_trg() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN TRUNCATE {t}; RETURN NEW; END $$; \
                 CREATE TRIGGER {p}_t BEFORE INSERT ON {p}_orders FOR EACH ROW EXECUTE FUNCTION {p}_trg()"
            ),
            format!("INSERT INTO {p}_orders VALUES (1)"),
            "no-truncate",
            format!("of trigger {p}_t on public.{p}_orders, which this statement writes"),
        ),
        (
            format!(
                "CREATE FUNCTION {p}_next() RETURNS int LANGUAGE sql AS 'DELETE FROM {t} RETURNING 1'; \
                 CREATE TABLE {p}_tickets (id int, n int DEFAULT {p}_next()); \
                 GRANT ALL ON {p}_tickets TO app"
            ),
            format!("INSERT INTO {p}_tickets (id) VALUES (1)"),
            "no-unbounded-write",
            format!("called by the default of column public.{p}_tickets.n, which this statement fills"),
        ),
        (
            format!(
                "CREATE FUNCTION {p}_readall(text) RETURNS text LANGUAGE internal STRICT AS 'pg_read_file_all'"
            ),
            format!("SELECT {p}_readall('/etc/passwd')"),
            "no-opaque-code",
            "it is in LANGUAGE internal".into(),
        ),
        (
            format!(
                "CREATE FUNCTION {p}_dyn() RETURNS void LANGUAGE plpgsql \
                 AS $$ BEGIN EXECUTE 'TRUNCATE ' || '{t}'; END $$"
            ),
            format!("SELECT {p}_dyn()"),
            "no-opaque-code",
            format!("in the body of function public.{p}_dyn"),
        ),
        (
            format!(
                "CREATE FUNCTION {p}_vwipe() RETURNS int LANGUAGE sql AS 'DELETE FROM {t} RETURNING 1'; \
                 CREATE VIEW {p}_v AS SELECT {p}_vwipe() AS n; GRANT SELECT ON {p}_v TO app"
            ),
            format!("SELECT n FROM {p}_v"),
            "no-unbounded-write",
            format!("called by the query of public.{p}_v, which this statement reads"),
        ),
        (
            format!(
                "CREATE TABLE {p}_ruled (id int); GRANT ALL ON {p}_ruled TO app; \
                 CREATE RULE {p}_r AS ON INSERT TO {p}_ruled DO ALSO DELETE FROM {t}"
            ),
            format!("INSERT INTO {p}_ruled VALUES (1)"),
            "no-unbounded-write",
            format!("in rule {p}_r of public.{p}_ruled, which this statement writes"),
        ),
        (
            format!(
                "CREATE FUNCTION {p}_ok(int) RETURNS bool LANGUAGE sql AS 'DELETE FROM {t}; SELECT true'; \
                 CREATE TABLE {p}_checked (id int CHECK ({p}_ok(id))); GRANT ALL ON {p}_checked TO app"
            ),
            format!("INSERT INTO {p}_checked VALUES (1)"),
            "no-unbounded-write",
            format!("check constraint {p}_checked_id_check of public.{p}_checked"),
        ),
        (
            // A domain's CHECK runs whenever a column of it (or of an array
            // of it, or of a domain over it) is written.
            format!(
                "CREATE FUNCTION {p}_dok(int) RETURNS bool LANGUAGE sql AS 'DELETE FROM {t}; SELECT true'; \
                 CREATE DOMAIN {p}_d AS int CHECK ({p}_dok(VALUE)); \
                 CREATE DOMAIN {p}_dd AS {p}_d; \
                 CREATE TABLE {p}_dom (id int, v {p}_dd[]); GRANT ALL ON {p}_dom TO app"
            ),
            format!("INSERT INTO {p}_dom VALUES (1, NULL)"),
            "no-unbounded-write",
            format!("domain check constraint {p}_d_check of public.{p}_dom"),
        ),
        (
            format!(
                "CREATE FUNCTION {p}_outer() RETURNS void LANGUAGE plpgsql \
                 AS $$ BEGIN PERFORM {p}_inner(); END $$; \
                 CREATE FUNCTION {p}_inner() RETURNS void LANGUAGE sql AS 'UPDATE {t} SET v = NULL'"
            ),
            format!("SELECT 1 FROM {t} WHERE id = 1 AND {p}_outer() IS NULL"),
            "no-unbounded-write",
            format!("function public.{p}_inner called by function public.{p}_outer"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_created_behind_pgward_s_back_is_judged_when_called() {
    let p = fresh();
    let t = guarded(&p);
    let cases = attacks(&p, &t);
    for (setup, _, _, _) in &cases {
        Backend::shared().admin_sql(setup);
    }
    // Started after the objects exist: its first catalog read sees them.
    let pw = start().await;
    for protocol in ["simple", "extended"] {
        for (_, attack, rule, says) in &cases {
            let client = pw.connect().await;
            let what = format!("[{protocol}] {attack}");
            let e = run(&client, protocol, attack).await.expect_err(&what);
            assert_eq!(sqlstate(&e), "42501", "{what}: {e:?}");
            let m = message(&e);
            assert!(
                m.contains(&format!("pgward rule \"{rule}\"")),
                "{what}: {m}"
            );
            assert!(m.contains(says.as_str()), "{what}: {m:?} lacks {says:?}");
            assert_eq!(rows(&t), 20, "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_another_session_or_ddl_brought_in_is_judged_at_once() {
    let p = fresh();
    let t = guarded(&p);
    let pw = start().await;
    let alice = pw.connect().await;
    // The catalog is read now, before the functions below exist.
    alice
        .simple_query("SELECT 1")
        .await
        .expect("first statement");
    // A trusted identity creates a function through pgward ...
    let mut bob = pw.client_config("bob", "bob-secret");
    bob.dbname("otherdb");
    let bob = support::connect_with(&bob).await.expect("bob");
    bob.simple_query(&format!(
        "CREATE FUNCTION {p}_bobs() RETURNS void LANGUAGE sql AS 'DELETE FROM {t}'"
    ))
    .await
    .expect("bob may");
    for protocol in ["simple", "extended"] {
        let e = run(&alice, protocol, &format!("SELECT {p}_bobs()"))
            .await
            .expect_err("bob's function");
        assert!(message(&e).contains("no-unbounded-write"), "{e:?}");
        assert!(message(&e).contains(&format!("public.{p}_bobs")), "{e:?}");
    }
    // ... also inside a transaction (pgward's catalog reads see it once it
    // committed) ...
    bob.batch_execute(&format!(
        "BEGIN; CREATE FUNCTION {p}_later() RETURNS void LANGUAGE sql AS 'TRUNCATE {t}'; COMMIT"
    ))
    .await
    .expect("bob may");
    for protocol in ["simple", "extended"] {
        let e = run(&alice, protocol, &format!("SELECT {p}_later()"))
            .await
            .expect_err("bob's committed function");
        assert!(message(&e).contains("no-truncate"), "{e:?}");
    }
    bob.simple_query("BEGIN").await.expect("begin");
    bob.simple_query(&format!(
        "CREATE FUNCTION {p}_slow() RETURNS void LANGUAGE sql AS 'TRUNCATE {t}'"
    ))
    .await
    .expect("bob may");
    // Alice's statement has the catalog read while the function is not
    // committed yet: bob's COMMIT must make it stale again.
    alice.simple_query("SELECT 1").await.expect("meanwhile");
    bob.simple_query("COMMIT").await.expect("commit");
    let e = run(&alice, "simple", &format!("SELECT {p}_slow()"))
        .await
        .expect_err("committed after its own statement");
    assert!(message(&e).contains("no-truncate"), "{e:?}");
    // ... and one created directly on the server becomes known with the
    // next DDL through pgward (of this session or any other).
    Backend::shared().admin_sql(&format!(
        "CREATE FUNCTION {p}_direct() RETURNS void LANGUAGE sql AS 'TRUNCATE {t}'"
    ));
    alice
        .simple_query(&format!("CREATE TABLE {p}_x (a int)"))
        .await
        .expect("DDL");
    for protocol in ["simple", "extended"] {
        let e = run(&alice, protocol, &format!("SELECT {p}_direct()"))
            .await
            .expect_err("the direct function");
        assert!(message(&e).contains("no-truncate"), "{e:?}");
    }
    assert_eq!(rows(&t), 20);
}

/// A statement prepared while the code it calls was harmless runs the code
/// of now: redefined since (through pgward), its next Bind and Execute
/// (no Parse: the client keeps the statement) are judged with the
/// catalog read after the change, not the one of its Parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_is_judged_with_the_code_of_now() {
    let p = fresh();
    let t = guarded(&p);
    let pw = start().await;
    let mut bob = pw.client_config("bob", "bob-secret");
    bob.dbname("otherdb");
    let bob = support::connect_with(&bob).await.expect("bob");
    bob.simple_query(&format!(
        "CREATE FUNCTION {p}_calm() RETURNS int LANGUAGE sql AS 'SELECT 1'"
    ))
    .await
    .expect("bob may");
    let alice = pw.connect().await;
    let statement = alice
        .prepare(&format!("SELECT {p}_calm()"))
        .await
        .expect("a harmless statement");
    for _ in 0..2 {
        alice
            .query(&statement, &[])
            .await
            .expect("harmless, it runs");
    }
    bob.simple_query(&format!(
        "CREATE OR REPLACE FUNCTION {p}_calm() RETURNS int LANGUAGE sql \
         AS 'DELETE FROM {t} RETURNING 1'"
    ))
    .await
    .expect("bob may");
    let e = alice
        .query(&statement, &[])
        .await
        .expect_err("the code it calls now deletes");
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("no-unbounded-write"), "{e:?}");
    assert_eq!(rows(&t), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_code_keeps_working() {
    let p = fresh();
    let t = guarded(&p);
    Backend::shared().admin_sql(&format!(
        "CREATE FUNCTION {p}_count() RETURNS int LANGUAGE sql AS 'SELECT count(*)::int FROM {t}'; \
         CREATE FUNCTION {p}_count_pl() RETURNS bigint LANGUAGE plpgsql \
           AS $$ DECLARE n bigint; BEGIN SELECT count(*) INTO n FROM {t}; RETURN n; END $$; \
         CREATE TABLE {p}_audit (what text); GRANT ALL ON {p}_audit TO app; \
         CREATE TABLE {p}_items (id serial PRIMARY KEY, at timestamptz DEFAULT now(), name text); \
         GRANT ALL ON {p}_items TO app; GRANT ALL ON SEQUENCE {p}_items_id_seq TO app; \
         CREATE FUNCTION {p}_log() RETURNS trigger LANGUAGE plpgsql \
           AS $$ BEGIN INSERT INTO {p}_audit VALUES (TG_OP || ' ' || NEW.name); RETURN NEW; END $$; \
         CREATE TRIGGER {p}_logged AFTER INSERT ON {p}_items FOR EACH ROW EXECUTE FUNCTION {p}_log()"
    ));
    let pw = start().await;
    for protocol in ["simple", "extended"] {
        let client = pw.connect().await;
        for sql in [
            format!("SELECT {p}_count()"),
            format!("SELECT {p}_count_pl()"),
            format!("INSERT INTO {p}_items (name) VALUES ('{protocol}')"),
            format!("SELECT id, at FROM {p}_items WHERE name = '{protocol}'"),
            // Created and then called in the same session.
            format!(
                "CREATE FUNCTION {p}_mine_{protocol}() RETURNS int LANGUAGE sql AS 'SELECT 41 + 1'"
            ),
            format!("SELECT {p}_mine_{protocol}()"),
        ] {
            run(&client, protocol, &sql)
                .await
                .unwrap_or_else(|e| panic!("[{protocol}] {sql}: {e:?}"));
        }
    }
    assert_eq!(rows(&format!("{p}_audit")), 2);
    assert_eq!(rows(&t), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_catalog_refuses_instead_of_judging_blind() {
    let backend = Backend::shared();
    // Sessions log in as the masked role (its own password); pgward's
    // catalog reads log in as the upstream's user, whose password is wrong.
    let wrong = backend.cluster.dir().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").expect("password file");
    let config = backend
        .config(
            "",
            &format!(
                "role_map = [{{ users = [\"*\"], role = \"{}\" }}]",
                support::MASKED_ROLE
            ),
        )
        .replace(
            &format!("password_file = \"{}\"", backend.password_file.display()),
            &format!("password_file = \"{}\"", wrong.display()),
        );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let client = pw.connect().await;
    for protocol in ["simple", "extended"] {
        let e = run(&client, protocol, "SELECT 1")
            .await
            .expect_err("judged without its catalog");
        assert_eq!(sqlstate(&e), "53000", "{e:?}");
        assert!(message(&e).contains("code catalog"), "{e:?}");
    }
    // With called code off, nothing is read and the statement runs.
    let off = Pgward::start_in(
        &format!("{config}\n[policy]\ncalled_code = false\n"),
        backend.cluster.dir(),
    )
    .await;
    let client = off.connect().await;
    for protocol in ["simple", "extended"] {
        run(&client, protocol, "SELECT 1")
            .await
            .expect("no catalog needed");
    }
}
