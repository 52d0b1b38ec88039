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

/// The demo's identities: name, groups, and the role each acts as.
const IDENTITIES: &[(&str, &str, &str)] = &[
    ("alice", "support", "shop_support"),
    ("bob", "app", "shop_app"),
    ("dora", "dba", "shop_owner"),
];

/// Least-privilege roles: the owner runs migrations and owns everything;
/// the application reads and writes the tables; support reads them (masked
/// by pgward) and may change customers with approval; pgward's own catalog
/// role reads nothing but the catalog. No role but the owner may create
/// anything: PostgreSQL 15's public schema gives PUBLIC no CREATE, and the
/// database's TEMPORARY is taken from PUBLIC.
const ROLES: &[&str] = &["shop_owner", "shop_app", "shop_support", "pgward_catalog"];

const GRANTS_SQL: &str = "
REVOKE TEMPORARY ON DATABASE shop FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON customers, orders TO shop_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO shop_app;
GRANT SELECT, UPDATE ON customers TO shop_support;
GRANT SELECT ON orders TO shop_support;
";

pub async fn run(port: Option<u16>) -> anyhow::Result<()> {
    eprintln!("starting a throwaway PostgreSQL cluster...");
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default()))
        .await?
        .context("cannot start PostgreSQL")?;
    for role in ROLES {
        let password = format!("{role}-{:016x}", rand::random::<u64>());
        cluster.psql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        )?;
        // Files, so that `pgward doctor` can read the same config.
        std::fs::write(
            cluster.dir().join(format!("{role}.password")),
            format!("{password}\n"),
        )?;
    }
    cluster.psql("postgres", "CREATE DATABASE shop OWNER shop_owner")?;
    cluster.psql(
        "shop",
        &format!("SET ROLE shop_owner; {SAMPLE_SQL} RESET ROLE; {GRANTS_SQL}"),
    )?;

    let port = match port {
        Some(p) => p,
        None if std::net::TcpListener::bind("127.0.0.1:6432").is_ok() => 6432,
        None => pgward::cluster::free_port()?,
    };
    let config_path = cluster.dir().join("pgward.toml");
    write_config(&config_path, port, cluster.port())?;
    let config = Config::load(&config_path)?;
    let server = Server::bind(Gateway::new(config)?).await?;
    let addr = server.local_addr()?;
    println!();
    println!(
        "pgward is listening on {addr}, in front of PostgreSQL on port {}.",
        cluster.port()
    );
    println!("Try (alice's password: alice-demo):");
    println!();
    println!(
        "    psql \"postgresql://alice@127.0.0.1:{}/shop\"",
        addr.port()
    );
    println!();
    println!("    shop=> SELECT name, email, ssn, card_number FROM customers;   -- masked");
    println!("    shop=> SELECT upper(ssn) FROM customers;   -- refused: would unmask");
    println!("    shop=> DELETE FROM orders;                 -- refused: no WHERE clause");
    println!("    shop=> BEGIN; UPDATE orders SET total = 0 WHERE id = 1; TRUNCATE orders;");
    println!("    shop=> COMMIT;                             -- rolls back, as after any error");
    println!();
    println!("    shop=> SELECT current_user;                -- shop_support, her own role");
    println!();
    println!("Identities (password: name-demo) and the PostgreSQL roles they act as:");
    for (user, group, role) in IDENTITIES {
        println!("    {user:<6} group {group:<8} -> {role}");
    }
    println!("The client never sees a backend password; pgward logs in for it.");
    println!("Rules: the built-in set (docs/policy.md), plus one of the demo's own: the");
    println!("support group needs approval to change customers. Masking: the support");
    println!("group sees ssn, email and card_number masked (docs/masking.md).");
    println!("Roles (docs/roles.md): check them with");
    println!("    pgward doctor --config {}", config_path.display());
    println!(
        "Config: {}   Press Ctrl-C to stop and clean up.",
        config_path.display()
    );
    server.run(shutdown_signal()).await;
    drop(cluster);
    eprintln!("stopped; the throwaway cluster is removed");
    Ok(())
}

fn write_config(path: &Path, port: u16, pg_port: u16) -> anyhow::Result<()> {
    let mut roles = String::new();
    for role in ROLES.iter().filter(|r| **r != "pgward_catalog") {
        roles.push_str(&format!(
            "[upstreams.shop.roles.{role}]\npassword_file = \"{role}.password\"\n"
        ));
    }
    let mut users = String::new();
    let mut role_map = String::new();
    for (user, group, role) in IDENTITIES {
        users.push_str(&format!(
            "[users.{user}]\nscram_verifier = \"{}\"\ngroups = [\"{group}\"]\n\n",
            ScramVerifier::generate(&format!("{user}-demo"))
        ));
        role_map.push_str(&format!(
            "[[upstreams.shop.role_map]]\ngroups = [\"{group}\"]\nrole = \"{role}\"\n"
        ));
    }
    let text = format!(
        r#"# Written by `pgward demo`.
[server]
listen = "127.0.0.1:{port}"

[upstreams.shop]
host = "127.0.0.1"
port = {pg_port}
dbname = "shop"
# pgward's own catalog reads (the column map, role checks).
user = "pgward_catalog"
password_file = "pgward_catalog.password"
sslmode = "disable"

# Each identity acts as its own least-privilege role (docs/roles.md).
{role_map}
{roles}
{users}# The built-in rules (docs/policy.md) apply after these.
[policy]
builtin_rules = true

[[policy.rules]]
name = "support-changes-customers-with-approval"
action = "require_approval"
# Held in the session until a dba approves (docs/approvals.md).
approvers = ["dba"]
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
"#
    );
    std::fs::write(path, text)?;
    Ok(())
}
