//! A throwaway PostgreSQL cluster over the system's `initdb` / `pg_ctl`, in a
//! temp dir, on a free loopback port, with scram-sha-256 in pg_hba. Used by
//! `pgward demo` and by the integration tests. When running as root, the
//! cluster runs as the `postgres` user, since initdb refuses root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why a cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A PostgreSQL binary is missing.
    #[error("{0} not found: install the PostgreSQL server binaries (Debian: postgresql-15) and put them on PATH")]
    MissingBinary(&'static str),
    /// A command failed.
    #[error("{command} failed: {output}")]
    Command {
        /// What was run.
        command: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// File system trouble.
    #[error("cluster setup: {0}")]
    Io(#[from] std::io::Error),
}

/// Options for [`Cluster::start`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Server certificate and key (PEM) to enable TLS on the server.
    pub tls: Option<(String, String)>,
    /// Extra lines for postgresql.conf.
    pub extra_conf: Vec<String>,
}

/// A running throwaway cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as_postgres: bool,
    password: String,
}

/// The superuser of a throwaway cluster.
pub const SUPERUSER: &str = "postgres";

fn find_bin() -> Result<PathBuf, ClusterError> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|d| d.join("initdb").exists())
        .ok_or(ClusterError::MissingBinary("initdb"))
}

/// Whether this process runs as root (clusters then run as `postgres`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A free loopback port, as the OS hands one out.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn check(command: &str, out: std::io::Result<Output>) -> Result<Output, ClusterError> {
    let out = out?;
    if out.status.success() {
        return Ok(out);
    }
    Err(ClusterError::Command {
        command: command.to_owned(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    })
}

impl Cluster {
    /// initdb, configure and start a cluster.
    pub fn start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let bin = find_bin()?;
        let run_as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("pgward-pg-").tempdir()?;
        let password = format!("pw{:016x}", rand::random::<u64>());
        let mut cluster = Self {
            dir,
            bin,
            port: 0,
            run_as_postgres,
            password,
        };
        if run_as_postgres {
            check(
                "chown",
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(cluster.dir.path())
                    .output(),
            )?;
        }
        let pwfile = cluster.dir.path().join("pwfile");
        cluster.write_file(&pwfile, &cluster.password.clone())?;
        let data = cluster.data_dir();
        let mut initdb = cluster.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--auth=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        check("initdb", initdb.output())?;
        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!(
                "unix_socket_directories = '{}'",
                cluster.dir.path().display()
            ),
            "fsync = off".into(),
            "synchronous_commit = off".into(),
            "full_page_writes = off".into(),
            "max_connections = 300".into(),
            "shared_buffers = 128MB".into(),
        ];
        if let Some((cert, key)) = &options.tls {
            cluster.write_file(&data.join("server.crt"), cert)?;
            cluster.write_file(&data.join("server.key"), key)?;
            conf.push("ssl = on".into());
        }
        conf.extend(options.extra_conf.iter().cloned());
        let mut text = std::fs::read_to_string(data.join("postgresql.conf"))?;
        text.push('\n');
        text.push_str(&conf.join("\n"));
        text.push('\n');
        cluster.write_file(&data.join("postgresql.conf"), &text)?;
        cluster.launch()?;
        Ok(cluster)
    }

    /// Starts the server on a free port, retrying if another process takes
    /// the port between choosing and binding it.
    fn launch(&mut self) -> Result<(), ClusterError> {
        let mut last = None;
        for _ in 0..5 {
            self.port = free_port()?;
            let log = self.dir.path().join("server.log");
            let mut ctl = self.command("pg_ctl");
            ctl.arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {}", self.port))
                .arg("start");
            match check("pg_ctl start", ctl.output()) {
                Ok(_) => {
                    self.spawn_reaper();
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ClusterError::MissingBinary("pg_ctl")))
    }

    /// A detached watchdog that stops the server and removes its directory
    /// once this process is gone. Drop does that normally; the watchdog covers
    /// a killed test run and clusters held in statics, which are never dropped.
    fn spawn_reaper(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             kill -QUIT \"$(head -n 1 '{data}/postmaster.pid' 2>/dev/null)\" 2>/dev/null; \
             sleep 1; rm -rf '{dir}'",
            pid = std::process::id(),
            data = self.data_dir().display(),
            dir = self.dir.path().display(),
        );
        let spawned = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the cluster watchdog");
        }
    }

    /// Path of a PostgreSQL client or server program of this installation.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes a file the server user can read (and only it, for keys).
    fn write_file(&self, path: &Path, contents: &str) -> Result<(), ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, contents)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        if self.run_as_postgres {
            check(
                "chown",
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(path)
                    .output(),
            )?;
        }
        Ok(())
    }

    /// A command for a PostgreSQL binary, as the right user.
    pub fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.env("PGPASSWORD", &self.password);
        cmd
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The data directory's parent, a scratch dir owned by the server user.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs SQL as the superuser with psql (ON_ERROR_STOP), returning stdout.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, ClusterError> {
        let mut cmd = self.command("psql");
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .args(["-U", SUPERUSER, "-d", database, "-c", sql]);
        let out = check("psql", cmd.output())?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a login role and a database it owns. `password` may be clear
    /// text or a SCRAM verifier (PostgreSQL stores a verifier as given).
    pub fn create_owned_database(
        &self,
        role: &str,
        password: &str,
        database: &str,
    ) -> Result<(), ClusterError> {
        self.psql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        )?;
        // CREATE DATABASE cannot share a psql -c string (one implicit
        // transaction) with another statement.
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {database} OWNER {role}"),
        )?;
        Ok(())
    }

    /// The server log, for diagnosing a failed test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut ctl = self.command("pg_ctl");
        ctl.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = ctl.output();
    }
}
