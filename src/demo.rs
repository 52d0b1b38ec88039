//! `pgward demo`: a throwaway PostgreSQL with sample personal data, pgward in
//! front of it, and the psql command to try. Runs until Ctrl-C, then cleans up.

use anyhow::Context;
use pgward::auth::verifier::ScramVerifier;
use pgward::cluster::{Cluster, ClusterOptions};
use pgward::config::Config;
use pgward::gateway::Gateway;
use pgward::server::{shutdown_signal, Server};
use std::path::Path;

/// The sample schema: customers with the kind of data masking protects.
const SAMPLE_SQL: &str = "
CREATE TABLE customers (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  ssn text NOT NULL,
  card_number text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email, ssn, card_number) VALUES
  ('Ada Lovelace', 'ada@example.com', '123-45-6789', '4111111111111111'),
  ('Alan Turing', 'alan@example.org', '987-65-4321', '5500000000000004'),
  ('Grace Hopper', 'grace@example.net', '111-22-3333', '340000000000009');
CREATE TABLE orders (
  id serial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers(id),
  total numeric(10,2) NOT NULL
);
INSERT INTO orders (customer_id, total) VALUES (1, 19.99), (2, 5.00), (1, 42.00), (3, 7.50);
";

const DEMO_USER: &str = "alice";
const DEMO_PASSWORD: &str = "alice-demo";

pub async fn run(port: Option<u16>) -> anyhow::Result<()> {
    eprintln!("starting a throwaway PostgreSQL cluster...");
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default()))
        .await?
        .context("cannot start PostgreSQL")?;
    let app_password = format!("app-{:016x}", rand::random::<u64>());
    cluster.create_owned_database("app", &app_password, "shop")?;
    cluster.psql("shop", &format!("SET ROLE app; {SAMPLE_SQL}"))?;

    let port = match port {
        Some(p) => p,
        None if std::net::TcpListener::bind("127.0.0.1:6432").is_ok() => 6432,
        None => pgward::cluster::free_port()?,
    };
    let config_path = cluster.dir().join("pgward.toml");
    write_config(&config_path, port, cluster.port(), &app_password)?;
    // The backend password reaches pgward through the environment, as in production.
    std::env::set_var("PGWARD_DEMO_UPSTREAM_PASSWORD", &app_password);
    let config = Config::load(&config_path)?;
    let server = Server::bind(Gateway::new(config)?).await?;
    let addr = server.local_addr()?;
    println!();
    println!(
        "pgward is listening on {addr}, in front of PostgreSQL on port {}.",
        cluster.port()
    );
    println!("Try (password: {DEMO_PASSWORD}):");
    println!();
    println!(
        "    psql \"postgresql://{DEMO_USER}@127.0.0.1:{}/shop\"",
        addr.port()
    );
    println!();
    println!("    shop=> SELECT name, email, ssn, card_number FROM customers;   -- masked");
    println!("    shop=> SELECT upper(ssn) FROM customers;   -- refused: would unmask");
    println!("    shop=> DELETE FROM orders;                 -- refused: no WHERE clause");
    println!("    shop=> BEGIN; UPDATE orders SET total = 0 WHERE id = 1; TRUNCATE orders;");
    println!("    shop=> COMMIT;                             -- rolls back, as after any error");
    println!();
    println!("The client never sees the backend password; pgward logs in for it.");
    println!("Rules: the built-in set (docs/policy.md), plus one of the demo's own: the");
    println!("support group needs approval to change customers. Masking: alice is in the");
    println!("support group, which sees ssn, email and card_number masked (docs/masking.md).");
    println!(
        "Config: {}   Press Ctrl-C to stop and clean up.",
        config_path.display()
    );
    server.run(shutdown_signal()).await;
    drop(cluster);
    eprintln!("stopped; the throwaway cluster is removed");
    Ok(())
}

fn write_config(path: &Path, port: u16, pg_port: u16, _app_password: &str) -> anyhow::Result<()> {
    let text = format!(
        r#"# Written by `pgward demo`.
[server]
listen = "127.0.0.1:{port}"

[upstreams.shop]
host = "127.0.0.1"
port = {pg_port}
dbname = "shop"
user = "app"
password_env = "PGWARD_DEMO_UPSTREAM_PASSWORD"
sslmode = "disable"
role_map = [{{ users = ["*"], role = "app" }}]

[users.{DEMO_USER}]
scram_verifier = "{verifier}"
groups = ["support"]

# The built-in rules (docs/policy.md) apply after these.
[policy]
builtin_rules = true

[[policy.rules]]
name = "support-changes-customers-with-approval"
action = "require_approval"
groups = ["support"]
kinds = ["dml"]
relations = ["customers"]

[[policy.rules]]
name = "log-pii-reads"
action = "log"
text_regex = "(?i)\\b(ssn|card_number)\\b"

# Masking (docs/masking.md): the support group sees these columns masked.
[[masking.rules]]
name = "ssn-last-4"
columns = ["public.customers.ssn"]
strategy = "partial"
keep_last = 4
groups = ["support"]

[[masking.rules]]
name = "email-domain"
columns = ["public.customers.email"]
strategy = "email"
groups = ["support"]

[[masking.rules]]
name = "card"
columns = ["public.customers.card_number"]
strategy = "partial"
keep_last = 4
fill = "x"
groups = ["support"]
"#,
        verifier = ScramVerifier::generate(DEMO_PASSWORD)
    );
    std::fs::write(path, text)?;
    Ok(())
}
