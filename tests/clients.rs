//! The stock PostgreSQL clients through pgward: psql running a script and
//! pgbench in every query mode.

mod support;

use std::process::{Command, Output};
use support::{Backend, Pgward, PASSWORD};

/// A client program from the cluster's installation, aimed at pgward.
fn client(backend: &Backend, program: &str) -> Command {
    let mut cmd = Command::new(backend.cluster.program(program));
    cmd.env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

fn run(mut cmd: Command) -> Output {
    let out = cmd.output().expect("spawn client");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_a_script() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    let script = backend.cluster.dir().join("script.sql");
    std::fs::write(
        &script,
        r#"\set ON_ERROR_STOP on
CREATE TEMP TABLE people (id serial PRIMARY KEY, name text NOT NULL, born date);
INSERT INTO people (name, born) VALUES ('Ada', '1815-12-10'), ('Alan', '1912-06-23');
\copy people (name, born) FROM stdin
Grace	1906-12-09
\.
BEGIN;
UPDATE people SET name = upper(name) WHERE id = 1;
SAVEPOINT s;
SELECT 1/0;
"#,
    )
    .expect("script");
    // The script stops at the division by zero (ON_ERROR_STOP): psql exits 3.
    let out = {
        let mut cmd = client(backend, "psql");
        cmd.arg(pw.dsn()).args(["-X", "-f"]).arg(&script);
        cmd.output().expect("psql")
    };
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("division by zero"));

    std::fs::write(
        &script,
        r#"\set ON_ERROR_STOP on
CREATE TEMP TABLE people (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO people (name) SELECT 'person ' || g FROM generate_series(1, 1000) g;
\copy people (name) FROM stdin
last one
\.
BEGIN;
SAVEPOINT s;
DELETE FROM people WHERE id <= 10;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT count(*) AS n FROM people \gset
\echo rows=:n
\copy (SELECT name FROM people WHERE id = 1001) TO stdout
"#,
    )
    .expect("script");
    let mut cmd = client(backend, "psql");
    cmd.arg(pw.dsn()).args(["-X", "-q", "-f"]).arg(&script);
    let out = String::from_utf8_lossy(&run(cmd).stdout).into_owned();
    assert!(out.contains("rows=1001"), "{out}");
    assert!(out.contains("last one"), "{out}");
}

/// Runs pgbench through pgward and returns its report.
fn pgbench(backend: &Backend, pw: &Pgward, args: &[&str]) -> String {
    let mut cmd = client(backend, "pgbench");
    cmd.args(args).arg(pw.dsn());
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// The number after `label` in a pgbench report line.
fn report_number(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_init_then_select_only_in_every_mode() {
    let backend = Backend::shared();
    // The built-in rules stay on (no DROP TABLE, no TRUNCATE); one rule of
    // the config's own lets the `dev` group reset pgbench's tables, which
    // `pgbench -i` and pgbench's own pre-run clean-up need.
    let config = format!(
        "{}\n{}",
        backend.config("", ""),
        r#"
[[policy.rules]]
name = "dev-may-reset-pgbench"
action = "allow"
groups = ["dev"]
kinds = ["drop_table", "truncate"]
relations = ["pgbench_*"]
"#
    );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let pw = std::sync::Arc::new(pw);
    let init = {
        let mut cmd = client(backend, "pgbench");
        cmd.args(["-i", "-q", "-s", "1"]).arg(pw.dsn());
        tokio::task::spawn_blocking(move || run(cmd))
            .await
            .expect("init")
    };
    assert!(init.status.success());
    for mode in ["simple", "extended", "prepared"] {
        let report = {
            let pw = std::sync::Arc::clone(&pw);
            tokio::task::spawn_blocking(move || {
                pgbench(
                    backend,
                    &pw,
                    &["-S", "-M", mode, "-c", "4", "-j", "2", "-T", "3"],
                )
            })
            .await
            .expect("pgbench")
        };
        let processed = report_number(&report, "number of transactions actually processed:");
        let failed = report_number(&report, "number of failed transactions:");
        assert!(processed > 0, "{mode}: {report}");
        assert_eq!(failed, 0, "{mode}: {report}");
    }
    // The default TPC-B-like script writes inside transactions.
    let report = tokio::task::spawn_blocking(move || {
        pgbench(backend, &pw, &["-c", "2", "-t", "200", "-M", "prepared"])
    })
    .await
    .expect("pgbench");
    assert_eq!(
        report_number(&report, "number of transactions actually processed:"),
        400
    );
}
