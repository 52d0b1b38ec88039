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

mod demo;

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
    /// Print a SCRAM-SHA-256 verifier for a client user (password read from
    /// stdin, or prompted for).
    Passwd {
        /// The user name (shown in the config snippet).
        user: String,
    },
    /// Start a throwaway PostgreSQL with sample data and pgward in front of it.
    Demo {
        /// Port for pgward (default: 6432 if free, else any free port).
        #[arg(long)]
        port: Option<u16>,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Run { config } => runtime.block_on(run(config)),
        Cmd::CheckConfig { config } => check_config(config),
        Cmd::Passwd { user } => passwd(&user),
        Cmd::Demo { port } => runtime.block_on(demo::run(port)),
    }
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path).context("invalid configuration")?;
    let gateway = Gateway::new(config).context("invalid configuration")?;
    let server = Server::bind(gateway).await.context("cannot listen")?;
    tokio::spawn(pgward::server::reload_rules_on_hangup(
        server.gateway(),
        path,
    ));
    tracing::info!(
        addr = %server.local_addr()?,
        rules_version = server.gateway().rules_version(),
        "pgward listening"
    );
    server.run(shutdown_signal()).await;
    Ok(())
}

fn check_config(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path).context("invalid configuration")?;
    let gateway = Gateway::new(config).context("invalid configuration")?;
    print!("{}", pgward::config::explain(&gateway.config));
    println!("configuration OK");
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
