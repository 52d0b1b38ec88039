//! The three things pgbench is aimed at: PostgreSQL directly, pgward (the
//! release binary, a separate process so its CPU and memory can be read from
//! /proc), and PgBouncer in session mode when it is installed.

use anyhow::{bail, Context};
use pgward::auth::verifier::ScramVerifier;
use pgward::cluster::{free_port, Cluster};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The client identity pgbench uses through the proxies.
pub const CLIENT_USER: &str = "bench";
/// Its password.
pub const CLIENT_PASSWORD: &str = "bench-password";
/// The database everything runs in.
pub const DB: &str = "bench";
/// The backend role.
pub const APP_ROLE: &str = "app";

/// One endpoint pgbench can run against.
pub struct Target {
    /// `direct`, `pgward` or `pgbouncer`.
    pub name: &'static str,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Login password.
    pub password: String,
    /// The proxy process, for /proc readings (`None` for direct).
    pub pid: Option<u32>,
    child: Option<Child>,
}

impl Target {
    /// SIGTERMs the proxy itself (PgBouncer runs under runuser, whose
    /// SIGKILL would orphan it) and waits up to `grace` for the child we
    /// started to exit, then kills it. True when it exited by itself (a
    /// proxy under valgrind writes its profile only then).
    pub fn stop(&mut self, grace: Duration) -> bool {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// How a proxy process is started: words put before its command line
/// (`taskset -c 8-11`, `valgrind --tool=callgrind ...`) and extra
/// environment variables (allocator settings, for experiments).
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Program and arguments the proxy's command is appended to.
    pub prefix: Vec<String>,
    /// Extra environment for pgward (PgBouncer's is left as it is).
    pub env: Vec<(String, String)>,
    /// Extra lines for pgward's `[server]` section (PgBouncer has none).
    pub server: Vec<String>,
}

impl Launch {
    /// A command that runs `program` under the prefix.
    fn command(&self, program: &Path) -> Command {
        match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// The prefix as shell words, for PgBouncer's start script.
    fn shell_prefix(&self) -> String {
        self.prefix
            .iter()
            .map(|w| format!("'{}' ", w.replace('\'', r"'\''")))
            .collect()
    }
}

/// PostgreSQL itself, logged in as the backend role.
pub fn direct(cluster: &Cluster, app_password: &str) -> Target {
    Target {
        name: "direct",
        port: cluster.port(),
        user: APP_ROLE.into(),
        password: app_password.into(),
        pid: None,
        child: None,
    }
}

/// Waits until something accepts TCP connections on `port` (10 s, or 2
/// minutes under a prefix such as valgrind, which starts slowly).
fn wait_listening(port: u16, what: &str, log: &Path, launch: &Launch) -> anyhow::Result<()> {
    let tries = if launch.prefix.is_empty() { 200 } else { 2400 };
    for _ in 0..tries {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    bail!("{what} did not start listening on port {port}:\n{tail}")
}

/// pgward from `bin`, in front of the cluster, holding the app password,
/// under the name `name`, with `policy` (TOML) appended to its config: empty
/// for the default rules. With `role` (a role and its password file), the
/// client identity acts as that role instead of the app role.
pub fn pgward(
    bin: &Path,
    cluster: &Cluster,
    password_file: &Path,
    role: Option<(&str, std::path::PathBuf)>,
    name: &'static str,
    policy: &str,
    launch: &Launch,
) -> anyhow::Result<Target> {
    let port = free_port()?;
    let dir = cluster.dir();
    let (mapped, roles) = match &role {
        Some((role, file)) => (
            (*role).to_owned(),
            format!(
                "[upstreams.{DB}.roles.{role}]\npassword_file = \"{}\"\n",
                file.display()
            ),
        ),
        None => (APP_ROLE.to_owned(), String::new()),
    };
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
max_client_connections = 10000
{server}

[upstreams.{DB}]
host = "127.0.0.1"
port = {pg}
user = "{APP_ROLE}"
password_file = "{pwfile}"
sslmode = "disable"
role_map = [{{ users = ["*"], role = "{mapped}" }}]
{roles}
[users.{CLIENT_USER}]
scram_verifier = "{verifier}"

{policy}
"#,
        pg = cluster.port(),
        server = launch.server.join("\n"),
        pwfile = password_file.display(),
        verifier = ScramVerifier::generate(CLIENT_PASSWORD),
    );
    let path = dir.join(format!("{name}-loadtest.toml"));
    std::fs::write(&path, config)?;
    let log = dir.join(format!("{name}.log"));
    let child = launch
        .command(bin)
        .args(["run", "--config"])
        .arg(&path)
        .env("PGWARD_LOG", "pgward=warn")
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot start pgward from {}", bin.display()))?;
    let pid = child.id();
    let target = Target {
        name,
        port,
        user: CLIENT_USER.into(),
        password: CLIENT_PASSWORD.into(),
        pid: Some(pid),
        child: Some(child),
    };
    wait_listening(port, name, &log, launch)?;
    Ok(target)
}

/// Where PgBouncer is installed, if it is: the Debian paths, then PATH (a
/// machine set up from a bundle has a wrapper there, see README.md).
pub fn pgbouncer_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    [
        "/usr/sbin/pgbouncer",
        "/usr/bin/pgbouncer",
        "/usr/local/bin/pgbouncer",
    ]
    .iter()
    .map(PathBuf::from)
    .chain(std::env::split_paths(&path).map(|d| d.join("pgbouncer")))
    .find(|p| p.exists())
}

/// PgBouncer in session mode with a pool as large as the client count, so
/// that, like pgward, every client has its own server connection.
///
/// Clients log in as the app role itself, with the same SCRAM verifier in
/// PgBouncer's auth_file as in PostgreSQL (SCRAM pass-through). A forced
/// `user=… password=…` in `[databases]` would mirror pgward's held credential
/// better, but PgBouncer fails server logins that way when clients use SCRAM
/// (pgbouncer/pgbouncer issues 944 and 1461).
pub fn pgbouncer(
    bin: &Path,
    cluster: &Cluster,
    app_password: &str,
    app_verifier: &str,
    pool_size: u32,
    as_postgres: bool,
    launch: &Launch,
) -> anyhow::Result<Target> {
    let port = free_port()?;
    let dir = cluster.dir().join("pgbouncer");
    std::fs::create_dir_all(&dir)?;
    let userlist = dir.join("userlist.txt");
    std::fs::write(&userlist, format!("\"{APP_ROLE}\" \"{app_verifier}\"\n"))?;
    let pidfile = dir.join("pgbouncer.pid");
    let log = dir.join("pgbouncer.log");
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            r#"[databases]
{DB} = host=127.0.0.1 port={pg} dbname={DB}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
pool_mode = session
default_pool_size = {pool_size}
max_client_conn = 10000
max_db_connections = 0
pidfile = {pidfile}
logfile = {log}
log_connections = 0
log_disconnections = 0
server_tls_sslmode = disable
"#,
            pg = cluster.port(),
            userlist = userlist.display(),
            pidfile = pidfile.display(),
            log = log.display(),
        ),
    )?;
    // PgBouncer refuses to run as root. It needs two descriptors per
    // session; runuser resets the soft limit to 1024, so raise it to the hard
    // limit before exec.
    let script = format!(
        "ulimit -n \"$(ulimit -Hn)\"; exec {}'{}' '{}'",
        launch.shell_prefix(),
        bin.display(),
        ini.display()
    );
    let mut cmd = if as_postgres {
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()?;
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start PgBouncer")?;
    let mut target = Target {
        name: "pgbouncer",
        port,
        user: APP_ROLE.into(),
        password: app_password.into(),
        pid: None,
        child: Some(child),
    };
    wait_listening(port, "PgBouncer", &log, launch)?;
    target.pid = Some(wait_pidfile(&pidfile)?);
    Ok(target)
}

/// PgBouncer writes its pidfile after it starts listening (and under
/// valgrind well after), so wait for a pid to be there.
fn wait_pidfile(pidfile: &Path) -> anyhow::Result<u32> {
    for _ in 0..2400 {
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("PgBouncer wrote no pid to {}", pidfile.display())
}

/// CPU seconds a process has used so far, in user space and in the kernel
/// (on its behalf: its syscalls, and the loopback TCP work they run).
pub fn cpu_seconds(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks();
    Some(CpuTimes {
        user: utime / ticks,
        system: stime / ticks,
    })
}

/// A process's CPU seconds, [`cpu_seconds`].
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    pub user: f64,
    pub system: f64,
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS")
}

/// The anonymous part of a process's resident memory (heap, stacks: what
/// it allocated, as against the pages of its binary and libraries), bytes.
pub fn rss_anon_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "RssAnon")
}

/// One `kB` field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}
