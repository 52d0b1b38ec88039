//! Test harness: a throwaway PostgreSQL 15 cluster, pgward in front of it
//! (in-process, on a free port), and client helpers.
//!
//! Every test binary includes this module and uses a different subset of it.
#![allow(dead_code)]

pub mod approvals;
pub mod cdp;
pub mod certs;
pub mod fake_backend;
pub mod http;
pub mod raw;
pub mod tokens;

use pgward::auth::verifier::ScramVerifier;
use pgward::cluster::{Cluster, ClusterOptions};
use pgward::config::Config;
use pgward::gateway::Gateway;
use pgward::server::Server;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The client identity every test logs in as.
pub const USER: &str = "alice";
/// Its password (pgward holds only the verifier).
pub const PASSWORD: &str = "alice-secret";
/// The client-facing database name, mapped to the upstream below.
pub const DB: &str = "appdb";
/// The backend role pgward logs in as; its password is held by pgward only.
/// It owns `appdb`: the migrations role.
pub const APP_ROLE: &str = "app";
/// A least-privilege role for masked identities: it reads and writes what
/// the app role creates, and owns, creates and reaches nothing else.
pub const MASKED_ROLE: &str = "app_masked";

/// A cluster prepared with the `app` role and the `appdb` database.
pub struct Backend {
    /// The running cluster.
    pub cluster: Cluster,
    /// The backend role's password, written to `password_file`.
    pub app_password: String,
    /// File the config points `password_file` at.
    pub password_file: PathBuf,
    /// The masked role's password file.
    pub masked_password_file: PathBuf,
}

impl Backend {
    /// Starts and prepares a cluster.
    pub fn start(options: &ClusterOptions) -> Backend {
        let cluster = Cluster::start(options).expect("start PostgreSQL");
        let app_password = format!("app-{:016x}", rand::random::<u64>());
        cluster
            .create_owned_database(APP_ROLE, &app_password, DB)
            .expect("create role and database");
        let password_file = cluster.dir().join("app.password");
        std::fs::write(&password_file, format!("{app_password}\n")).expect("password file");
        let masked_password = format!("masked-{:016x}", rand::random::<u64>());
        cluster
            .psql(
                DB,
                &format!(
                    "CREATE ROLE {MASKED_ROLE} LOGIN PASSWORD '{masked_password}'; \
                     REVOKE TEMPORARY ON DATABASE {DB} FROM PUBLIC; \
                     ALTER DEFAULT PRIVILEGES FOR ROLE {APP_ROLE} \
                       GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {MASKED_ROLE}; \
                     ALTER DEFAULT PRIVILEGES FOR ROLE {APP_ROLE} \
                       GRANT USAGE, SELECT ON SEQUENCES TO {MASKED_ROLE}; \
                     ALTER DEFAULT PRIVILEGES FOR ROLE {APP_ROLE} \
                       GRANT USAGE ON SCHEMAS TO {MASKED_ROLE}"
                ),
            )
            .expect("create the masked role");
        let masked_password_file = cluster.dir().join("masked.password");
        std::fs::write(&masked_password_file, format!("{masked_password}\n"))
            .expect("password file");
        Backend {
            cluster,
            app_password,
            password_file,
            masked_password_file,
        }
    }

    /// One cluster shared by all tests of a test binary. The cluster's
    /// watchdog stops it when the binary exits (statics are never dropped).
    pub fn shared() -> &'static Backend {
        static SHARED: OnceLock<Backend> = OnceLock::new();
        SHARED.get_or_init(|| Backend::start(&ClusterOptions::default()))
    }

    /// Runs SQL in `appdb` as the superuser.
    pub fn admin_sql(&self, sql: &str) -> String {
        self.cluster
            .psql(DB, sql)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.cluster.log()))
    }

    /// [`Backend::config`] for tests with masked identities: the `dba`
    /// group (exempt from masking in those tests) acts as the app role,
    /// everyone else as the least-privilege masked role.
    pub fn masked_config(&self, server_extra: &str, upstream_extra: &str) -> String {
        self.config(
            server_extra,
            &format!(
                "role_map = [{{ groups = [\"dba\"], role = \"{APP_ROLE}\" }}, \
                 {{ users = [\"*\"], role = \"{MASKED_ROLE}\" }}]\n{upstream_extra}"
            ),
        )
    }

    /// A config text for pgward in front of this cluster. `server_extra` and
    /// `upstream_extra` are TOML lines added to `[server]` and the upstream.
    pub fn config(&self, server_extra: &str, upstream_extra: &str) -> String {
        let sslmode = if upstream_extra.contains("sslmode") {
            ""
        } else {
            "sslmode = \"disable\""
        };
        let host = if upstream_extra.contains("host =") {
            ""
        } else {
            "host = \"127.0.0.1\""
        };
        // Every identity acts as the app role unless the test maps roles.
        let role_map = if upstream_extra.contains("role_map") {
            String::new()
        } else {
            format!("role_map = [{{ users = [\"*\"], role = \"{APP_ROLE}\" }}]")
        };
        // A table of its own, after the extra lines (which may add roles).
        let roles = format!(
            "[upstreams.{DB}.roles.{MASKED_ROLE}]\npassword_file = \"{}\"",
            self.masked_password_file.display()
        );
        // PGWARD_TEST_SERVER: lines added to every test's `[server]`, to
        // run the whole suite under another setting (`runtime = "per-core"`).
        // A test that sets the runtime itself keeps its own.
        let suite_extra = std::env::var("PGWARD_TEST_SERVER")
            .ok()
            .filter(|_| !server_extra.contains("runtime"))
            .unwrap_or_default();
        format!(
            r#"[server]
listen = "127.0.0.1:0"
{server_extra}
{suite_extra}

[upstreams.{DB}]
{host}
port = {port}
user = "{APP_ROLE}"
password_file = "{password_file}"
{sslmode}
{role_map}
{upstream_extra}
{roles}

[databases]
{DB} = "{DB}"
otherdb = "{DB}"

[users.{USER}]
scram_verifier = "{verifier}"
groups = ["dev"]

[users.bob]
scram_verifier = "{bob}"
databases = ["otherdb"]
"#,
            port = self.cluster.port(),
            password_file = self.password_file.display(),
            verifier = ScramVerifier::generate(PASSWORD),
            bob = ScramVerifier::generate("bob-secret"),
        )
    }
}

/// pgward serving in the test's runtime until dropped or shut down.
pub struct Pgward {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state (rules reload, counters).
    pub gateway: std::sync::Arc<Gateway>,
    /// The config text it started with.
    pub config_text: String,
    dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Pgward {
    /// Starts pgward with this config text (relative paths resolve against
    /// `dir`).
    pub async fn start_in(config_text: &str, dir: &Path) -> Pgward {
        let config = Config::parse(config_text, &dir.join("pgward.toml"))
            .unwrap_or_else(|e| panic!("config: {e}\n{config_text}"));
        let server = Server::bind(Gateway::new(config).expect("gateway"))
            .await
            .expect("bind");
        let addr = server.local_addr().expect("local addr");
        let gateway = server.gateway();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Pgward {
            addr,
            gateway,
            config_text: config_text.to_owned(),
            dir: dir.to_owned(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Writes `text` as a config file beside the startup one and reloads it
    /// (as SIGHUP does).
    pub fn reload_text(
        &self,
        text: &str,
    ) -> Result<pgward::gateway::Reloaded, pgward::gateway::ReloadError> {
        let path = self
            .dir
            .join(format!("reload-{:016x}.toml", rand::random::<u64>()));
        std::fs::write(&path, text).expect("write reload file");
        let result = self.gateway.reload(&path);
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Reloads the startup config with `extra` appended.
    pub fn reload_with(
        &self,
        extra: &str,
    ) -> Result<pgward::gateway::Reloaded, pgward::gateway::ReloadError> {
        self.reload_text(&format!("{}\n{extra}", self.config_text))
    }

    /// pgward with the default config in front of `backend`.
    pub async fn start(backend: &Backend) -> Pgward {
        Self::start_in(&backend.config("", ""), backend.cluster.dir()).await
    }

    /// A tokio-postgres config for `user` / `password` on `appdb`.
    pub fn client_config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.addr.port())
            .user(user)
            .password(password)
            .dbname(DB)
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        c
    }

    /// Connects as alice, spawning the connection task.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect_with(&self.client_config(USER, PASSWORD))
            .await
            .expect("connect through pgward")
    }

    /// A libpq DSN for psql / pgbench (password via PGPASSWORD).
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname={DB} sslmode=disable",
            self.addr.port()
        )
    }

    /// Runs psql as alice with `-X -A -t`, `options` and `-c sql`.
    pub async fn psql(&self, options: &[&str], sql: &str) -> std::process::Output {
        let psql = Backend::shared().cluster.program("psql");
        let mut command = std::process::Command::new(psql);
        command
            .env("PGPASSWORD", PASSWORD)
            .args(["-X", "-A", "-t"])
            .args(options)
            .arg("-c")
            .arg(sql)
            .arg(self.dsn());
        tokio::task::spawn_blocking(move || command.output().expect("psql"))
            .await
            .expect("psql")
    }

    /// Stops accepting, drains and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

impl Drop for Pgward {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Connects without TLS and spawns the connection task.
pub async fn connect_with(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects and forwards the connection's asynchronous messages
/// (notifications, notices) to a channel.
pub async fn connect_with_messages(
    config: &tokio_postgres::Config,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
) {
    let (client, mut connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Ends with the connection (None) or on its first error.
        while let Some(Ok(m)) = futures::future::poll_fn(|cx| connection.poll_message(cx)).await {
            let _ = tx.send(m);
        }
    });
    (client, rx)
}

/// Connects, retrying every 100 ms for up to 10 s (a server still starting,
/// a slot still being freed, a cluster recovering); `None` if it never
/// succeeds. With `check_query`, a session only counts once `SELECT 1` works.
pub async fn connect_eventually(
    config: &tokio_postgres::Config,
    check_query: bool,
) -> Option<tokio_postgres::Client> {
    for _ in 0..100 {
        if let Ok(c) = connect_with(config).await {
            if !check_query || c.simple_query("SELECT 1").await.is_ok() {
                return Some(c);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// The SQLSTATE code of a tokio-postgres error, or "" when it has none.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

/// The server-side message of a tokio-postgres error, or its display form.
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// The rows of a simple-protocol result, as text.
pub fn text_rows(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// A name prefix no other call in this process (nor another test process)
/// gets: `prefix`, the process id and a counter. Tests share the cluster.
pub fn fresh_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "{prefix}{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
