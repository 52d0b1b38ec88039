//! The pgward binary: CLI and error reporting only.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgward::config::Config;
use pgward::gateway::Gateway;
use pgward::server::{shutdown_signal, Server};
use std::path::PathBuf;

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod approvals_cli;
mod demo;
mod token_request_cli;

/// A PostgreSQL wire-protocol gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve clients with the given configuration.
    Run {
        /// Path to pgward.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and explain what it sets up.
    CheckConfig {
        /// Path to pgward.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Log in to every upstream as every mapped role and report what each
    /// role can do, a verdict per identity, and the statements that fix
    /// each finding. Exit status 1 when an identity with masked columns
    /// (or any identity, in strict mode) has a role that is not
    /// least-privilege.
    Doctor {
        /// Path to pgward.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a SCRAM-SHA-256 verifier for a client user (password read from
    /// stdin, or prompted for).
    Passwd {
        /// The user name (shown in the config snippet).
        user: String,
    },
    /// Signed tokens: keys, minting, revocation (docs/identity.md).
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Render a recorded session (`[audit] record_groups`) like a psql
    /// transcript.
    Replay {
        /// The session's id (as in its audit records).
        session: u64,
        /// The recordings directory (`[audit] recordings_directory`).
        #[arg(long, default_value = "recordings")]
        dir: PathBuf,
    },
    /// The audit trail: keys and verification.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Approve or deny statements waiting for approval, on a running
    /// pgward's admin API.
    Approvals {
        #[command(subcommand)]
        command: approvals_cli::ApprovalsCmd,
    },
    /// Time-window grants, on a running pgward's admin API.
    Grants {
        #[command(subcommand)]
        command: approvals_cli::GrantsCmd,
    },
    /// Start a throwaway PostgreSQL with sample data and pgward in front of it.
    Demo {
        /// Port for pgward (default: 6432 if free, else any free port).
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Make an Ed25519 signing key: writes the private key (PKCS#8 PEM,
    /// mode 0600) and prints the `[[tokens.keys]]` entry.
    Keygen {
        /// Key id, as tokens will name it.
        #[arg(long)]
        kid: String,
        /// Where to write the private key (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a token signed with the signing key (jti and expiry on stderr).
    Mint {
        /// Path to pgward.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// The user name the token logs in as (must match tokens.users).
        #[arg(long)]
        user: String,
        /// Groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Databases it may open, comma-separated or repeated.
        #[arg(long, value_delimiter = ',', required = true)]
        database: Vec<String>,
        /// Lifetime, e.g. 15m (at most tokens.max_ttl).
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Why it is issued (recorded in the token).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Revoke a token by its jti: running pgward instances end its sessions
    /// and refuse it from then on.
    Revoke {
        /// Path to pgward.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// The token's jti.
        jti: String,
        /// Why (kept in the revocation list).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Ask a running pgward for a token that is issued only once approvers
    /// agree ([[tokens.requests]]): prints the ticket, waits for the
    /// decision, and prints the token.
    Request(token_request_cli::RequestArgs),
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Make an Ed25519 key pair for signing checkpoints: the private key in
    /// OUT (for `[audit] signing_key_file`), the public key in OUT.pub.
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a trail's hash chain and signatures; exit status 1 names the
    /// first record modified, removed, reordered or truncated.
    Verify {
        /// The public key (OUT.pub from `audit keygen`).
        #[arg(long)]
        public_key: PathBuf,
        /// Accept a last file still being written (no closing checkpoint).
        #[arg(long)]
        open: bool,
        /// A seq the trail had reached (from pgward's `audit checkpoint`
        /// log lines, kept elsewhere): a trail that ends before it lost its
        /// newest records or files, which the files alone cannot show.
        #[arg(long, value_name = "SEQ")]
        reached: Option<u64>,
        /// Audit files, or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the session and statement records as JSON lines in another
    /// format (run `audit verify` first: export does not check the chain).
    Export {
        /// The format: `ocsf` (OCSF Datastore Activity events).
        #[arg(long)]
        format: String,
        /// Audit files, or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One precise line (with its causes), not a backtrace.
            eprintln!("pgward: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGWARD_LOG")
                .unwrap_or_else(|_| "pgward=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = match cli.command {
        // Its runtime is shaped by its config.
        Cmd::Run { config: path } => {
            let config = Config::load(&path).context("invalid configuration")?;
            return serving_runtime(&config.server)?.block_on(run(config, path));
        }
        other => other,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        Cmd::Run { .. } => Ok(()),
        Cmd::CheckConfig { config } => check_config(config),
        Cmd::Doctor { config, json } => runtime.block_on(doctor(config, json)),
        Cmd::Passwd { user } => passwd(&user),
        Cmd::Token { command } => token(command, &runtime),
        Cmd::Demo { port } => runtime.block_on(demo::run(port)),
        Cmd::Audit { command } => audit(command),
        Cmd::Replay { session, dir } => replay(session, &dir),
        Cmd::Approvals { command } => runtime.block_on(approvals_cli::approvals(command)),
        Cmd::Grants { command } => runtime.block_on(approvals_cli::grants(command)),
    }
}

fn replay(session: u64, dir: &std::path::Path) -> anyhow::Result<()> {
    use pgward::record::recordings;
    // The newest recording of that id (ids restart with pgward).
    let newest = recordings::find(dir, session, None)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .with_context(|| format!("no recording of session {session} in {}", dir.display()))?;
    let events = recordings::load(&newest.path).map_err(anyhow::Error::msg)?;
    print!("{}", pgward::record::replay::render(&events));
    Ok(())
}

fn audit(command: AuditCmd) -> anyhow::Result<()> {
    use pgward::record::{chain, verify};
    match command {
        AuditCmd::Keygen { out } => {
            let (private, public) = chain::generate_key();
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            use std::io::Write;
            o.open(&out)
                .and_then(|mut f| f.write_all(private.as_bytes()))
                .with_context(|| format!("cannot write {}", out.display()))?;
            let mut public_path = out.into_os_string();
            public_path.push(".pub");
            std::fs::write(&public_path, &public)
                .with_context(|| format!("cannot write {}", public_path.to_string_lossy()))?;
            println!("public key: {}", public.trim());
            Ok(())
        }
        AuditCmd::Verify {
            public_key,
            open,
            reached,
            paths,
        } => {
            let key = chain::PublicKey::load(&public_key)?;
            match verify::verify_paths_reaching(&paths, &key, open, reached)? {
                Ok(v) => {
                    println!(
                        "audit trail OK: {} files, {} lines, {} signed checkpoints",
                        v.files, v.lines, v.checkpoints
                    );
                    if v.unsigned_tail > 0 {
                        println!(
                            "note: the last {} lines follow the last checkpoint and are not signed yet",
                            v.unsigned_tail
                        );
                    }
                    Ok(())
                }
                Err(problem) => anyhow::bail!("audit trail check failed: {problem}"),
            }
        }
        AuditCmd::Export { format, paths } => {
            anyhow::ensure!(format == "ocsf", "--format: {format:?} is not one of: ocsf");
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for record in pgward::record::read_trail(&paths)? {
                if let Some(event) = pgward::record::ocsf::to_ocsf(&record) {
                    match writeln!(out, "{event}") {
                        // A reader that stopped early (`| head`) is no error.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                        r => r?,
                    }
                }
            }
            Ok(())
        }
    }
}

fn token(command: TokenCmd, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    use pgward::auth::token::{mint, revocation, utc};
    match command {
        TokenCmd::Keygen { kid, out } => {
            let (pem, public) = mint::keygen().map_err(anyhow::Error::msg)?;
            write_private(&out, &pem).with_context(|| format!("cannot write {}", out.display()))?;
            // Absolute, so the entry works from wherever the config lives.
            let out = std::fs::canonicalize(&out).unwrap_or(out);
            println!(
                "[[tokens.keys]]\nkid = \"{kid}\"\npublic_key = \"{public}\"\n\
                 private_key_file = \"{}\"\n\
                 # \"verify\" until every instance has this entry, then \"signing\"\n\
                 state = \"verify\"",
                out.display()
            );
            Ok(())
        }
        TokenCmd::Mint {
            config,
            user,
            groups,
            database,
            ttl,
            reason,
        } => {
            let config = Config::load(&config).context("invalid configuration")?;
            let ttl = pgward::config::units::parse_duration(&ttl)
                .map_err(|m| anyhow::anyhow!("--ttl: {m}"))?;
            let request = mint::MintRequest {
                user,
                groups: groups.into_iter().filter(|g| !g.is_empty()).collect(),
                databases: database.into_iter().filter(|d| !d.is_empty()).collect(),
                ttl,
                reason,
            };
            let minted = mint::mint(&config, &request, std::time::SystemTime::now())
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "jti {} kid {} expires {}",
                minted.jti,
                minted.kid,
                utc(minted.expires)
            );
            println!("{}", minted.token);
            Ok(())
        }
        TokenCmd::Request(args) => runtime.block_on(token_request_cli::request(args)),
        TokenCmd::Revoke {
            config,
            jti,
            reason,
        } => {
            let config = Config::load(&config).context("invalid configuration")?;
            if config.tokens.revocation_store {
                anyhow::bail!(
                    "the revocation list lives in the approvals store (tokens.revocation_store): \
                     revoke through a running pgward's admin API, POST /tokens/{{jti}}/revoke"
                );
            }
            let path = config
                .tokens
                .revocation_file
                .as_ref()
                .context("tokens.revocation_file is not set: nothing can be revoked")?;
            revocation::revoke(path, &jti, reason.as_deref())?;
            eprintln!("revoked {jti}");
            Ok(())
        }
    }
}

/// Writes a new private key file readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The runtime `pgward run` starts on, as `[server] runtime` and `threads`
/// ask: for shared, the one that runs every session; for per-core, one
/// worker thread for the admin API, approvals and background tasks (the
/// sessions run on threads of their own, see `Server::run`).
fn serving_runtime(
    server: &pgward::config::ServerConfig,
) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match (server.runtime, server.threads) {
        (pgward::config::RuntimeMode::PerCore, _) => {
            builder.worker_threads(1);
        }
        (pgward::config::RuntimeMode::Shared, Some(n)) => {
            builder.worker_threads(n.get());
        }
        (pgward::config::RuntimeMode::Shared, None) => {}
    }
    Ok(builder.enable_all().build()?)
}

async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let gateway = Gateway::new(config).context("invalid configuration")?;
    let _ = gateway.config_path.set(path.clone());
    let server = Server::bind(gateway).await.context("cannot listen")?;
    tokio::spawn(pgward::server::reload_rules_on_hangup(
        server.gateway(),
        path.clone(),
    ));
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    if let Some(admin) = &server.gateway().config.admin {
        let state = pgward::admin::AdminState {
            gw: server.gateway(),
            config_path: Some(path),
            ready: std::sync::Arc::clone(&ready),
        };
        let addr = pgward::admin::start(state, admin.listen, Default::default())
            .await
            .with_context(|| format!("admin.listen: cannot serve on {}", admin.listen))?;
        let scheme = if admin.tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %addr, scheme, "admin API listening");
    }
    server
        .run(async move {
            shutdown_signal().await;
            ready.store(false, std::sync::atomic::Ordering::Relaxed);
        })
        .await;
    Ok(())
}

fn check_config(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path).context("invalid configuration")?;
    let gateway = Gateway::new(config).context("invalid configuration")?;
    print!("{}", pgward::config::explain(&gateway.config));
    println!("configuration OK");
    Ok(())
}

async fn doctor(path: PathBuf, json: bool) -> anyhow::Result<()> {
    let config = Config::load(&path).context("invalid configuration")?;
    let diagnosis = pgward::doctor::diagnose(config)
        .await
        .context("invalid configuration")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&diagnosis)?);
    } else {
        print!("{}", pgward::doctor::render(&diagnosis));
    }
    anyhow::ensure!(
        !diagnosis.failed(),
        "a mapped role is not least-privilege (see above)"
    );
    Ok(())
}

fn passwd(user: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let line = if stdin.is_terminal() {
        // Typed passwords are not echoed.
        rpassword::prompt_password(format!("password for {user}: "))?
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line
    };
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "empty password");
    let verifier = pgward::auth::verifier::ScramVerifier::generate(password);
    println!("[users.{user}]\nscram_verifier = \"{verifier}\"");
    Ok(())
}
