//! Roles end to end: each identity acts as its mapped PostgreSQL role,
//! a masked identity's role must be least-privilege (refused at login with
//! the reason, accepted after the doctor's fixes), startup settings
//! (PGOPTIONS, options=-c) are judged like SET, and databases pgward does
//! not serve say so.

mod support;

use pgward::auth::verifier::ScramVerifier;
use std::process::Command;
use support::{connect_with, message, sqlstate, Backend, Pgward, DB, MASKED_ROLE, PASSWORD, USER};

const CAROL: &str = "carol";
const DAVE: &str = "dave";
/// Unmasked, acting as the masked role (what PostgreSQL shows a role).
const ERIN: &str = "erin";
const OTHER_PASSWORD: &str = "other-secret";
/// The role carol is mapped to; each test changes its privileges.
const PROBE: &str = "lp_probe";

/// The probe role, with only CONNECT (PUBLIC's) and the grants below; its
/// password file.
fn probe_role(backend: &Backend) -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let password = format!("probe-{:016x}", rand::random::<u64>());
        backend.admin_sql(&format!(
            "CREATE ROLE {PROBE} LOGIN PASSWORD '{password}'; \
             CREATE TABLE roles_people (id int PRIMARY KEY, ssn text); \
             ALTER TABLE roles_people OWNER TO app; \
             INSERT INTO roles_people VALUES (1, '123-45-6789'); \
             GRANT SELECT ON roles_people TO {PROBE}, {MASKED_ROLE}"
        ));
        let file = backend.cluster.dir().join("probe.password");
        std::fs::write(&file, format!("{password}\n")).expect("password file");
        file
    })
    .clone()
}

/// alice (dev) acts as app, carol as the probe role, dave (support) and
/// erin (no group) as the masked role; carol and dave see roles_people.ssn
/// masked; bob maps to nothing. `extra` is appended.
fn config(backend: &Backend, extra: &str) -> String {
    let probe = probe_role(backend);
    let upstream = format!(
        "role_map = [{{ groups = [\"dev\"], role = \"app\" }}, \
         {{ users = [\"{CAROL}\"], role = \"{PROBE}\" }}, \
         {{ users = [\"{ERIN}\"], role = \"{MASKED_ROLE}\" }}, \
         {{ groups = [\"support\"], role = \"{MASKED_ROLE}\" }}]\n\
         [upstreams.{DB}.roles.{PROBE}]\npassword_file = \"{}\"",
        probe.display()
    );
    let verifier = ScramVerifier::generate(OTHER_PASSWORD);
    format!(
        "{}\n[users.{CAROL}]\nscram_verifier = \"{verifier}\"\ngroups = [\"support\"]\n\
         [users.{DAVE}]\nscram_verifier = \"{verifier}\"\ngroups = [\"support\"]\n\
         [users.{ERIN}]\nscram_verifier = \"{verifier}\"\n\
         [masking]\nrefresh = \"1h\"\n\
         [[masking.rules]]\nname = \"ssn\"\ncolumns = [\"roles_people.ssn\"]\nstrategy = \"null\"\n\
         groups = [\"support\"]\n{extra}",
        backend.config("", &upstream)
    )
}

async fn start(extra: &str) -> Pgward {
    let backend = Backend::shared();
    Pgward::start_in(&config(backend, extra), backend.cluster.dir()).await
}

async fn login(pw: &Pgward, user: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let password = if user == USER {
        PASSWORD
    } else {
        OTHER_PASSWORD
    };
    connect_with(&pw.client_config(user, password)).await
}

async fn current_user(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("current_user")
        .get(0)
}

/// Serialises the tests that change the probe role's privileges.
static PROBE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_acts_as_its_mapped_role() {
    let _probe = PROBE_LOCK.lock().await;
    let pw = start("").await;
    let alice = login(&pw, USER).await.expect("alice");
    assert_eq!(current_user(&alice).await, "app");
    let dave = login(&pw, DAVE).await.expect("dave");
    assert_eq!(current_user(&dave).await, MASKED_ROLE);
    let carol = login(&pw, CAROL).await.expect("carol");
    assert_eq!(current_user(&carol).await, PROBE);
    // Masking still applies on top of the role's own grants.
    let row = dave
        .query_one("SELECT ssn FROM roles_people WHERE id = 1", &[])
        .await
        .expect("masked read");
    assert_eq!(row.get::<_, Option<String>>(0), None);
    // An identity no mapping covers is refused, not given a default role.
    let e = connect_with(&{
        let mut c = pw.client_config("bob", "bob-secret");
        c.dbname("otherdb");
        c
    })
    .await
    .expect_err("unmapped");
    assert_eq!(sqlstate(&e), "28000");
    assert_eq!(
        message(&e),
        "pgward maps no database role for \"bob\" on database \"otherdb\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_roles_statements_are_not_visible_in_pg_stat_activity() {
    let backend = Backend::shared();
    let pw = start("").await;
    let alice = login(&pw, USER).await.expect("alice");
    let marker = format!("secret-{:016x}", rand::random::<u64>());
    alice
        .simple_query(&format!("SELECT '{marker}'"))
        .await
        .expect("query");
    // Wait until the server shows alice's statement (as a superuser sees it).
    let seen = format!("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND query NOT LIKE '%pg_stat_activity%'");
    while backend.admin_sql(&seen).trim() != "1" {
        tokio::task::yield_now().await;
    }
    let activity = "SELECT usename::text, query FROM pg_stat_activity WHERE usename = 'app'";
    // PostgreSQL shows another role's sessions without their statements.
    let erin = login(&pw, ERIN).await.expect("erin");
    assert_eq!(current_user(&erin).await, MASKED_ROLE);
    let rows = erin.query(activity, &[]).await.expect("pg_stat_activity");
    assert!(!rows.is_empty());
    // A masked identity reads none of it: its application_name may hold
    // what code it ran copied from a masked column.
    let dave = login(&pw, DAVE).await.expect("dave");
    let e = dave.query(activity, &[]).await.expect_err("masked");
    assert_eq!(sqlstate(&e), "42501");
    for row in rows {
        let query: Option<String> = row.get(1);
        assert_eq!(query.as_deref(), Some("<insufficient privilege>"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_default_set_by_one_identity_leaves_the_others_alone() {
    let pw = start("").await;
    let alice = login(&pw, USER).await.expect("alice");
    alice
        .batch_execute("ALTER ROLE CURRENT_USER SET statement_timeout = '4242s'")
        .await
        .expect("alter role");
    let show = |c: tokio_postgres::Client| async move {
        let row = c
            .query_one("SHOW statement_timeout", &[])
            .await
            .expect("show");
        row.get::<_, String>(0)
    };
    let dave = login(&pw, DAVE).await.expect("dave");
    let alice_again = login(&pw, USER).await.expect("alice");
    assert_eq!(show(alice_again).await, "4242s");
    assert_ne!(show(dave).await, "4242s");
    alice
        .batch_execute("ALTER ROLE CURRENT_USER RESET statement_timeout")
        .await
        .expect("reset");
}

/// Applies `grant` (as a superuser), expects carol's login refused naming
/// `reason`, runs the doctor's fixes for the probe role, and expects the
/// login accepted.
async fn refused_then_fixed(grant: &str, reason: &str) {
    let backend = Backend::shared();
    let _probe = PROBE_LOCK.lock().await;
    probe_role(backend);
    backend.admin_sql(grant);
    let pw = start("").await;
    let e = login(&pw, CAROL).await.expect_err(grant);
    assert_eq!(sqlstate(&e), "42501", "{grant}");
    assert!(
        message(&e).starts_with(&format!(
            "pgward refuses to log in as role \"{PROBE}\" for an identity with masked columns: \
             the role must be one that {reason}"
        )),
        "{grant}: {}",
        message(&e)
    );
    let config =
        pgward::config::Config::parse(&pw.config_text, &backend.cluster.dir().join("doctor.toml"))
            .expect("config");
    let diagnosis = pgward::doctor::diagnose(config).await.expect("doctor");
    assert!(diagnosis.failed(), "{grant}");
    let fixes = diagnosis.fixes(DB, PROBE);
    assert!(
        !fixes.is_empty(),
        "{grant}: no fixes\n{}",
        pgward::doctor::render(&diagnosis)
    );
    backend.admin_sql(&fixes.join("\n"));
    // The fix happened outside pgward: a reload makes logins check again.
    pw.reload_text(&pw.config_text).expect("reload");
    let carol = login(&pw, CAROL)
        .await
        .unwrap_or_else(|e| panic!("{grant}: still refused after {fixes:?}: {}", message(&e)));
    assert_eq!(current_user(&carol).await, PROBE);
    let config =
        pgward::config::Config::parse(&pw.config_text, &backend.cluster.dir().join("doctor.toml"))
            .expect("config");
    let after = pgward::doctor::diagnose(config).await.expect("doctor");
    assert!(!after.failed(), "{}", pgward::doctor::render(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_of_the_masked_table_is_refused_until_fixed() {
    refused_then_fixed(
        &format!("ALTER TABLE roles_people OWNER TO {PROBE}"),
        "does not own the masked tables",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_on_a_schema_is_refused_until_fixed() {
    refused_then_fixed(
        &format!("GRANT CREATE ON SCHEMA public TO {PROBE}"),
        "has no CREATE on any schema",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_on_the_database_is_refused_until_fixed() {
    refused_then_fixed(
        &format!("GRANT TEMPORARY ON DATABASE {DB} TO {PROBE}"),
        "has no TEMPORARY on the database",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statistics_reader_is_refused_until_fixed() {
    refused_then_fixed(
        &format!("GRANT pg_read_all_stats TO {PROBE}"),
        "is not a member of pg_read_all_data",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_through_another_role_is_found() {
    refused_then_fixed(
        &format!(
            "CREATE ROLE lp_monitors NOLOGIN NOINHERIT; GRANT pg_monitor TO lp_monitors; \
             GRANT lp_monitors TO {PROBE}"
        ),
        "is not a member of pg_read_all_data",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superuser_and_bypassrls_are_refused_until_fixed() {
    refused_then_fixed(
        &format!("ALTER ROLE {PROBE} SUPERUSER"),
        "is not a superuser",
    )
    .await;
    refused_then_fixed(&format!("ALTER ROLE {PROBE} BYPASSRLS"), "has no BYPASSRLS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privilege_statement_through_pgward_makes_logins_check_again() {
    let _probe = PROBE_LOCK.lock().await;
    let pw = start("").await;
    login(&pw, CAROL).await.expect("carol passes first");
    // The schema's owner grants through pgward: no reload is needed for
    // the next login to be checked again.
    let alice = login(&pw, USER).await.expect("alice");
    alice
        .batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {PROBE}"))
        .await
        .expect("grant");
    let e = login(&pw, CAROL).await.expect_err("now with CREATE");
    assert!(
        message(&e).contains("has no CREATE on any schema"),
        "{}",
        message(&e)
    );
    alice
        .batch_execute(&format!("REVOKE CREATE ON SCHEMA public FROM {PROBE}"))
        .await
        .expect("revoke");
    login(&pw, CAROL).await.expect("carol passes again");
}

fn psql(pw: &Pgward, user: &str, options: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .arg(format!(
            "postgresql://{user}@127.0.0.1:{}/{DB}?sslmode=disable",
            pw.addr.port()
        ))
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env(
            "PGPASSWORD",
            if user == USER {
                PASSWORD
            } else {
                OTHER_PASSWORD
            },
        )
        .env("PGOPTIONS", options)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgoptions_settings_work_and_identity_switches_do_not() {
    let pw = start("").await;
    let out = psql(
        &pw,
        USER,
        "-c search_path=app,public -c statement_timeout=5s",
        "SHOW search_path; SHOW statement_timeout",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app,public\n5s\n");
    // The same through tokio-postgres's options.
    let mut config = pw.client_config(USER, PASSWORD);
    config.options("-c search_path=app,public -c statement_timeout=5s");
    let client = connect_with(&config).await.expect("options");
    let row = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .expect("show");
    assert_eq!(row.get::<_, String>(0), "5s");
    for (options, named) in [
        ("-c role=postgres", "options -c role"),
        (
            "-c session_authorization=postgres",
            "options -c session_authorization",
        ),
        (
            "-c session_replication_role=replica",
            "options -c session_replication_role",
        ),
        (
            "-c standard_conforming_strings=off",
            "options -c standard_conforming_strings",
        ),
        ("-c client_encoding=SJIS", "options -c client_encoding"),
    ] {
        let out = psql(&pw, USER, options, "SELECT 1");
        assert!(!out.status.success(), "{options}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("\"{named}\"")),
            "{options}: {stderr}"
        );
    }
    let out = psql(&pw, USER, "-D /tmp", "SELECT 1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("only -c name=value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_a_setting_applies_to_options_too() {
    let pw = start(
        "[[policy.rules]]\nname = \"stay-read-only\"\naction = \"deny\"\n\
         settings = [\"default_transaction_read_only\"]\n",
    )
    .await;
    let out = psql(
        &pw,
        USER,
        "-c default_transaction_read_only=off",
        "SELECT 1",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("startup parameter \"options -c default_transaction_read_only\"")
            && stderr.contains("stay-read-only"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_databases_say_so_and_the_catch_all_routes_them() {
    let pw = start("").await;
    let mut c = pw.client_config(USER, PASSWORD);
    c.dbname("postgres");
    let e = connect_with(&c).await.expect_err("not configured");
    assert_eq!(sqlstate(&e), "3D000");
    assert_eq!(
        message(&e),
        "database \"postgres\" is not configured in pgward"
    );
    let backend = Backend::shared();
    let catch_all =
        config(backend, "").replace("[databases]\n", &format!("[databases]\n\"*\" = \"{DB}\"\n"));
    let pw = Pgward::start_in(&catch_all, backend.cluster.dir()).await;
    let mut c = pw.client_config(USER, PASSWORD);
    c.dbname("postgres");
    let client = connect_with(&c).await.expect("catch-all");
    let row = client
        .query_one("SELECT current_database()::text, current_user::text", &[])
        .await
        .expect("where");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("postgres".into(), "app".into())
    );
    // A masked identity only opens databases whose column map pgward reads.
    let mut masked = pw.client_config(DAVE, OTHER_PASSWORD);
    masked.dbname("postgres");
    let e = connect_with(&masked)
        .await
        .expect_err("masked on catch-all");
    assert_eq!(sqlstate(&e), "42501");
}
