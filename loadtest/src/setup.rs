//! What every mode shares: the throwaway PostgreSQL with its data, and the
//! proxies that can be started in front of it (each as its own process, so
//! its CPU and memory can be read from /proc).

use crate::pgbench::Bench;
use crate::pin::{pin_postgres, Pinning};
use crate::report::{AUDIT, MASKED, NO_RULES};
use crate::targets::{self, Launch, Target, APP_ROLE, DB};

/// The least-privilege role the masked target's identity acts as.
const MASKED_ROLE: &str = "app_masked";
use anyhow::{bail, Context};
use pgward::auth::verifier::ScramVerifier;
use pgward::cluster::{Cluster, ClusterOptions};
use std::path::PathBuf;

/// A proxy the harness can start.
#[derive(Debug, Clone, Copy)]
pub enum Proxy {
    /// pgward under `name`, with `config` (TOML) appended to its
    /// configuration.
    Pgward {
        /// The target's name in reports.
        name: &'static str,
        /// Extra configuration: rules, masking.
        config: &'static str,
    },
    /// PgBouncer in session mode.
    Pgbouncer,
}

/// pgward as shipped: the built-in statement rules on.
pub const PGWARD: Proxy = Proxy::Pgward {
    name: "pgward",
    config: "",
};
/// pgward with no rules at all: the relay alone, to show what judging
/// statements costs.
pub const PGWARD_NO_RULES: Proxy = Proxy::Pgward {
    name: NO_RULES,
    config: "[policy]\nbuiltin_rules = false\n",
};
/// pgward with the default rules and the audit trail on (file sink in the
/// cluster's directory; the key is written there by [`write_audit_key`]).
pub const PGWARD_AUDIT: Proxy = Proxy::Pgward {
    name: AUDIT,
    config:
        "[audit]\nenabled = true\ndirectory = \"audit-trail\"\nsigning_key_file = \"audit.key\"\n",
};

/// Writes the audit target's signing key beside its config.
pub fn write_audit_key(dir: &std::path::Path) -> anyhow::Result<()> {
    let (private, _) = pgward::record::chain::generate_key();
    std::fs::write(dir.join("audit.key"), private)?;
    Ok(())
}

/// pgward with the built-in rules and masking 2 of the wide table's 10 text
/// columns (every statement then also passes the masking guard).
pub const PGWARD_MASKED: Proxy = Proxy::Pgward {
    name: MASKED,
    config: "[[masking.rules]]\nname = \"c3\"\ncolumns = [\"wide.c3\"]\nstrategy = \"partial\"\nkeep_last = 4\n\
             [[masking.rules]]\nname = \"c7\"\ncolumns = [\"wide.c7\"]\nstrategy = \"redact\"\n",
};

/// A running PostgreSQL loaded with pgbench's tables and the wide table,
/// and what is needed to put proxies in front of it.
pub struct Env {
    /// The cluster (stopped and removed on drop).
    pub cluster: Cluster,
    /// How pgbench is run.
    pub bench: Bench,
    /// The pgbench script of the wide-row workload.
    pub wide_script: PathBuf,
    /// pgward's launcher words and environment (pinning, allocator
    /// settings).
    pub pgward_launch: Launch,
    /// PgBouncer's launcher words (pinning).
    pub pgbouncer_launch: Launch,
    pgward_bin: PathBuf,
    app_password: String,
    app_verifier: String,
    password_file: PathBuf,
    pool_size: u32,
}

/// What [`Env::start`] needs from the command line.
pub struct EnvOptions {
    /// The pgward release binary.
    pub pgward_bin: PathBuf,
    /// pgbench scale factor.
    pub scale: u32,
    /// Idle sessions the memory reading opens.
    pub idle_sessions: usize,
    /// The largest pgbench client count.
    pub max_clients: u32,
    /// Who runs on which cores.
    pub pinning: Pinning,
    /// pgbench threads.
    pub threads: Option<u32>,
    /// Extra environment for pgward.
    pub pgward_env: Vec<(String, String)>,
    /// Extra lines for pgward's `[server]` section.
    pub pgward_server: Vec<String>,
}

impl Env {
    /// Starts PostgreSQL (pinned, if asked), creates the app role and
    /// database, loads `pgbench -i` data and the wide table.
    pub fn start(options: EnvOptions) -> anyhow::Result<Self> {
        options.pinning.check()?;
        // Sizes max_connections and PgBouncer's pool: every client and every
        // idle session has its own server connection, never waits for one.
        let sessions = options.idle_sessions.max(options.max_clients as usize);
        eprintln!("starting a throwaway PostgreSQL...");
        let cluster = Cluster::start(&ClusterOptions {
            tls: None,
            extra_conf: vec![format!("max_connections = {}", sessions + 200)],
        })
        .context("cannot start PostgreSQL")?;
        if let Some(cpus) = &options.pinning.postgres {
            pin_postgres(postmaster_pid(&cluster)?, cpus)?;
        }
        let app_password = format!("app-{:016x}", rand::random::<u64>());
        // Stored pre-hashed, so PgBouncer's auth_file can hold the same verifier.
        let app_verifier = ScramVerifier::generate(&app_password);
        cluster.create_owned_database(APP_ROLE, &app_verifier, DB)?;
        cluster.psql(DB, &format!("SET ROLE {APP_ROLE}; {WIDE_TABLE}"))?;
        let password_file = cluster.dir().join("app.password");
        std::fs::write(&password_file, &app_password)?;
        let wide_script = cluster.dir().join("wide.sql");
        std::fs::write(&wide_script, WIDE_SCRIPT)?;
        let bench = Bench {
            bin: cluster.program("pgbench"),
            prefix: Pinning::prefix(options.pinning.pgbench.as_ref()),
            threads: options.threads,
        };
        let proxy_prefix = Pinning::prefix(options.pinning.proxy.as_ref());
        let env = Self {
            bench,
            wide_script,
            pgward_launch: Launch {
                prefix: proxy_prefix.clone(),
                env: options.pgward_env,
                server: options.pgward_server,
            },
            pgbouncer_launch: Launch {
                prefix: proxy_prefix,
                env: Vec::new(),
                server: Vec::new(),
            },
            pgward_bin: options.pgward_bin,
            app_verifier,
            password_file,
            // Session mode with a pool that never makes a client wait, as
            // pgward gives every client its own server connection.
            pool_size: u32::try_from(sessions + 32).unwrap_or(u32::MAX),
            app_password,
            cluster,
        };
        eprintln!("loading data: pgbench -i -s {}...", options.scale);
        let init = env
            .bench
            .command(&env.direct())
            .args(["-i", "-q", "-s", &options.scale.to_string(), DB])
            .output()?;
        if !init.status.success() {
            bail!(
                "pgbench -i failed: {}",
                String::from_utf8_lossy(&init.stderr)
            );
        }
        // The masked target's identity acts as a least-privilege role, as
        // pgward requires of masked identities: it reads and writes the
        // tables, owns and creates nothing.
        let masked_password = format!("masked-{:016x}", rand::random::<u64>());
        env.cluster.psql(
            DB,
            &format!(
                "CREATE ROLE {MASKED_ROLE} LOGIN PASSWORD '{masked_password}'; \
                 REVOKE TEMPORARY ON DATABASE {DB} FROM PUBLIC; \
                 GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public \
                   TO {MASKED_ROLE}"
            ),
        )?;
        std::fs::write(env.masked_password_file(), &masked_password)?;
        Ok(env)
    }

    /// Waits (up to a minute) until the server has ended the backends of
    /// clients that left, so their connection slots are free again.
    pub fn wait_backends_gone(&self) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}'");
        loop {
            let left: u64 = self
                .cluster
                .psql(DB_ADMIN, &sql)?
                .trim()
                .parse()
                .unwrap_or(u64::MAX);
            if left == 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("{left} backends of earlier sessions are still open after a minute");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// The masked role's password file.
    fn masked_password_file(&self) -> PathBuf {
        self.cluster.dir().join("masked.password")
    }

    /// PostgreSQL itself, logged in as the backend role.
    pub fn direct(&self) -> Target {
        targets::direct(&self.cluster, &self.app_password)
    }

    /// Starts `proxy` under `launch`.
    pub fn start_proxy(&self, proxy: Proxy, launch: &Launch) -> anyhow::Result<Target> {
        match proxy {
            Proxy::Pgward { name, config } => targets::pgward(
                &self.pgward_bin,
                &self.cluster,
                &self.password_file,
                // Masked identities must act as a least-privilege role.
                (name == MASKED).then(|| (MASKED_ROLE, self.masked_password_file())),
                name,
                config,
                launch,
            ),
            Proxy::Pgbouncer => {
                let bin = targets::pgbouncer_binary()
                    .context("PgBouncer is not installed (apt-get install pgbouncer)")?;
                targets::pgbouncer(
                    &bin,
                    &self.cluster,
                    &self.app_password,
                    &self.app_verifier,
                    self.pool_size,
                    pgward::cluster::is_root(),
                    launch,
                )
                .context("PgBouncer failed to start")
            }
        }
    }

    /// Starts `proxy` as configured on the command line (pinned, with the
    /// extra environment).
    pub fn start_configured(&self, proxy: Proxy) -> anyhow::Result<Target> {
        let launch = match proxy {
            Proxy::Pgward { .. } => &self.pgward_launch,
            Proxy::Pgbouncer => &self.pgbouncer_launch,
        };
        self.start_proxy(proxy, launch)
    }
}

/// The postmaster's pid (`SHOW data_directory`, then its postmaster.pid).
fn postmaster_pid(cluster: &Cluster) -> anyhow::Result<u32> {
    let data = cluster.psql(DB_ADMIN, "SHOW data_directory")?;
    let pidfile = PathBuf::from(data.trim()).join("postmaster.pid");
    let text = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("cannot read {}", pidfile.display()))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no pid in {}", pidfile.display()))
}

/// The database that exists before the app database is created.
const DB_ADMIN: &str = "postgres";

const WIDE_TABLE: &str = "CREATE TABLE wide (id int PRIMARY KEY, c1 text, c2 text, c3 text, \
    c4 text, c5 text, c6 text, c7 text, c8 text, c9 text, c10 text); \
    INSERT INTO wide SELECT g, md5(g::text), md5((g+1)::text), md5((g+2)::text), \
    md5((g+3)::text), md5((g+4)::text), md5((g+5)::text), md5((g+6)::text), \
    md5((g+7)::text), md5((g+8)::text), md5((g+9)::text) FROM generate_series(1, 10000) g; \
    ANALYZE wide;";

/// 100 rows x 10 text columns per transaction.
const WIDE_SCRIPT: &str =
    "\\set start random(1, 9901)\nSELECT * FROM wide WHERE id BETWEEN :start AND :start + 99;\n";
