//! pgward's load harness: pgbench against direct PostgreSQL, pgward and
//! PgBouncer, interleaved, with medians, ratios and a chart.
//! See loadtest/README.md.

mod callgrind;
mod idle;
mod latency;
mod pgbench;
mod pin;
mod report;
mod setup;
mod targets;
mod throughput;

use anyhow::{bail, Context};
use clap::Parser;
use pgbench::Length;
use pin::{CpuList, Pinning};
use report::{Cell, Results};
use setup::{Env, EnvOptions, Proxy, PGWARD, PGWARD_AUDIT, PGWARD_MASKED, PGWARD_NO_RULES};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use targets::Target;
use throughput::Plan;

/// pgbench side by side: direct PostgreSQL, pgward, PgBouncer.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A short run for CI (about a minute): fewer workloads, 1 repetition,
    /// 2 s each, 4 clients. Fails on failed transactions or a missing
    /// report, never on a timing.
    #[arg(long)]
    smoke: bool,
    /// The latency microbenchmark instead: 1 client, select-only, simple
    /// and prepared; the per-transaction latency distribution (p50 ... p99.9)
    /// of every target and what each proxy adds to direct PostgreSQL.
    #[arg(long, conflicts_with_all = ["smoke", "callgrind"])]
    latency: bool,
    /// Instructions per transaction instead: each proxy under
    /// `valgrind --tool=callgrind`, a fixed number of select-only
    /// transactions through it, and the functions they are spent in.
    #[arg(long, conflicts_with = "smoke")]
    callgrind: bool,
    /// Transactions of the larger callgrind run (the smaller has a fifth).
    #[arg(long, default_value_t = 5000)]
    callgrind_tx: u64,
    /// pgbench clients of the callgrind runs (1: every transaction pays a
    /// whole park and wake-up; more: a wake-up serves several, as under load).
    #[arg(long, default_value_t = 1)]
    callgrind_clients: u32,
    /// Repetitions of each workload per target (interleaved A B C A B C).
    #[arg(long, default_value_t = 2)]
    reps: u32,
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// pgbench scale factor for `pgbench -i`.
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// Client counts: the select-only workloads run at each, the others at
    /// the largest (default 1,16; with --smoke 4).
    #[arg(long, value_delimiter = ',')]
    clients: Vec<u32>,
    /// pgbench threads (-j), at most the client count (default 2).
    #[arg(long)]
    threads: Option<u32>,
    /// Run PostgreSQL on these CPUs (taskset -c list, e.g. 0-7).
    #[arg(long)]
    pin_postgres: Option<CpuList>,
    /// Run each proxy on these CPUs (e.g. 8-11).
    #[arg(long)]
    pin_proxy: Option<CpuList>,
    /// Run pgbench on these CPUs (e.g. 12-15).
    #[arg(long)]
    pin_pgbench: Option<CpuList>,
    /// Extra environment for the pgward processes, KEY=VALUE, repeatable
    /// (allocator experiments: MIMALLOC_PURGE_DELAY=0, MALLOC_ARENA_MAX=2).
    #[arg(long, value_parser = parse_env)]
    pgward_env: Vec<(String, String)>,
    /// An extra line for the pgward processes' `[server]` section,
    /// repeatable (e.g. `runtime = "per-core"`).
    #[arg(long)]
    pgward_server: Vec<String>,
    /// Run pgward-masked on every workload, not only the wide rows (its
    /// masking guard then judges every statement).
    #[arg(long)]
    masked_all: bool,
    /// Also run pgward with the audit trail on (file sink) and report audit
    /// on against off.
    #[arg(long)]
    audit: bool,
    /// Keep the proxies running this many seconds after the report, their
    /// pids printed, for inspection from outside (smaps, gdb, perf); with
    /// `--idle-only`, each proxy holding its idle sessions.
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// Idle client sessions each proxy holds for the memory reading,
    /// comma-separated for several readings (e.g. 1000,5000).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    idle_sessions: Vec<usize>,
    /// Only the idle-memory reading: each proxy freshly started for each
    /// `--idle-sessions` count (no load before it), no pgbench runs.
    #[arg(long, conflicts_with_all = ["smoke", "callgrind", "latency"])]
    idle_only: bool,
    /// The pgward binary (default: build target/release/pgward).
    #[arg(long)]
    pgward_bin: Option<PathBuf>,
    /// Where results folders are written.
    #[arg(long, default_value = "loadtest/results")]
    out: PathBuf,
    /// Only the workloads whose name contains this text (e.g. "wide").
    #[arg(long)]
    only: Option<String>,
    /// Only these proxies, comma-separated (pgward, pgward-norules,
    /// pgward-masked, pgward-audit, pgbouncer); default all. Direct
    /// PostgreSQL is measured in any case.
    #[arg(long, value_delimiter = ',')]
    proxies: Vec<String>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nloadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(mut args: Args) -> anyhow::Result<()> {
    if args.smoke {
        args.reps = 1;
        args.seconds = 2;
        args.scale = 1;
        for n in &mut args.idle_sessions {
            *n = (*n).min(100);
        }
    }
    if args.clients.is_empty() {
        args.clients = if args.smoke { vec![4] } else { vec![1, 16] };
    }
    anyhow::ensure!(
        args.clients.iter().all(|c| *c > 0),
        "--clients must be positive"
    );
    let load_at_start = load_average();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pgward_bin = match args.pgward_bin.clone() {
        Some(p) => p,
        None => build_pgward(&root)?,
    };
    let env = Env::start(EnvOptions {
        pgward_bin,
        scale: args.scale,
        idle_sessions: args.idle_sessions.iter().copied().max().unwrap_or(0),
        max_clients: args.clients.iter().copied().max().unwrap_or(1),
        pinning: pinning(&args),
        threads: args.threads,
        pgward_env: args.pgward_env.clone(),
        pgward_server: args.pgward_server.clone(),
    })?;
    let mut notes = Vec::new();
    let have_pgbouncer = targets::pgbouncer_binary().is_some();
    if !have_pgbouncer {
        notes.push(
            "PgBouncer is not installed (apt-get install pgbouncer): its columns are empty."
                .to_owned(),
        );
    }
    let mut proxies = vec![PGWARD, PGWARD_NO_RULES, PGWARD_MASKED];
    if args.audit {
        setup::write_audit_key(env.cluster.dir())?;
        proxies.push(PGWARD_AUDIT);
    }
    if have_pgbouncer {
        proxies.push(Proxy::Pgbouncer);
    }
    if !args.proxies.is_empty() {
        let known: Vec<&str> = proxies.iter().map(|p| callgrind::proxy_name(*p)).collect();
        for asked in &args.proxies {
            anyhow::ensure!(
                known.contains(&asked.as_str()),
                "--proxies: no proxy {asked:?} here (known: {})",
                known.join(", ")
            );
        }
        proxies.retain(|p| args.proxies.iter().any(|a| a == callgrind::proxy_name(*p)));
    }
    let dir = args.out.join(timestamp());
    std::fs::create_dir_all(&dir)?;
    if args.callgrind {
        // Relay, rules, rules + masking, then PgBouncer. Pinning and
        // repetitions do not change instruction counts.
        proxies.sort_by_key(|p| match p {
            Proxy::Pgward { name, .. } => report::TARGET_ORDER.iter().position(|t| t == name),
            Proxy::Pgbouncer => Some(usize::MAX),
        });
        let body = callgrind::run(
            &env,
            &proxies,
            args.callgrind_tx,
            args.callgrind_clients,
            &dir,
            env.cluster.dir(),
        )?;
        return write_report(&dir, &header(&args, &load_at_start, &notes), &body);
    }
    if args.idle_only {
        let idle = idle_fresh(&args, &env, &proxies, &mut notes)?;
        let body = report::idle_markdown(&idle, "RSS of the fresh process");
        return write_report(&dir, &header(&args, &load_at_start, &notes), &body);
    }
    let mut all: Vec<Target> = vec![env.direct()];
    for p in &proxies {
        all.push(env.start_configured(*p)?);
    }
    let results = measure(&args, &env, &all)?;
    let body = if args.latency {
        latency::markdown(&results)
    } else {
        let idle = idle_memory(&args, &all, &mut notes)?;
        std::fs::write(dir.join("chart.svg"), report::svg(&results))?;
        let mut body = report::markdown(&results, &idle);
        if args.audit {
            body.push_str(&report::audit_markdown(&results));
        }
        body
    };
    write_report(&dir, &header(&args, &load_at_start, &notes), &body)?;
    if args.hold > 0 {
        for t in all.iter().filter(|t| t.pid.is_some()) {
            eprintln!("holding: {} pid {}", t.name, t.pid.unwrap_or_default());
        }
        eprintln!("holding the proxies for {} s", args.hold);
        std::thread::sleep(Duration::from_secs(args.hold));
    }
    let failed: u64 = results
        .iter()
        .flat_map(|(_, c)| c.values())
        .map(Cell::failed)
        .sum();
    if failed > 0 {
        bail!("{failed} failed transactions");
    }
    Ok(())
}

fn pinning(args: &Args) -> Pinning {
    Pinning {
        postgres: args.pin_postgres.clone(),
        proxy: args.pin_proxy.clone(),
        pgbench: args.pin_pgbench.clone(),
    }
}

fn write_report(dir: &Path, header: &str, body: &str) -> anyhow::Result<()> {
    let md = format!("{header}\n{body}");
    std::fs::write(dir.join("report.md"), &md)?;
    println!("\n{md}");
    println!("written: {}", dir.join("report.md").display());
    Ok(())
}

/// The pgbench runs (throughput or latency) against every target.
fn measure(args: &Args, env: &Env, all: &[Target]) -> anyhow::Result<Results> {
    let plan = Plan {
        reps: args.reps,
        length: Length::Seconds(args.seconds),
        keep_latencies: args.latency,
        scratch: env.cluster.dir(),
    };
    let mut workloads = if args.latency {
        throughput::latency()
    } else {
        throughput::throughput(args.smoke, &args.clients, &env.wide_script)
    };
    if let Some(only) = &args.only {
        workloads.retain(|w| w.name.contains(only.as_str()));
        anyhow::ensure!(!workloads.is_empty(), "no workload name contains {only:?}");
    }
    let masked_everywhere = args.latency || args.masked_all;
    throughput::run_workloads(&env.bench, &workloads, all, masked_everywhere, &plan)
}

/// Each proxy's resident memory after the runs and holding each
/// `--idle-sessions` count of idle sessions. A failure is reported, not
/// fatal: the pgbench results stand.
fn idle_memory(
    args: &Args,
    all: &[Target],
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<(&'static str, idle::IdleResult)>> {
    let runtime = tokio::runtime::Runtime::new()?;
    let mut idle_results = Vec::new();
    for &n in &args.idle_sessions {
        eprintln!("holding {n} idle sessions through each proxy...");
        for target in all.iter().filter(|t| t.pid.is_some()) {
            let reading = runtime.block_on(idle::measure(target, n, Duration::ZERO));
            keep_reading(target, reading, &mut idle_results, notes);
        }
    }
    Ok(idle_results)
}

/// `--idle-only`: for each count, each proxy is started afresh (so memory
/// a previous reading left with the allocator cannot be reused and hide
/// what sessions cost) and holds that many idle sessions.
fn idle_fresh(
    args: &Args,
    env: &Env,
    proxies: &[Proxy],
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<(&'static str, idle::IdleResult)>> {
    let runtime = tokio::runtime::Runtime::new()?;
    let mut idle_results = Vec::new();
    for &n in &args.idle_sessions {
        for proxy in proxies {
            let target = env.start_configured(*proxy)?;
            eprintln!("holding {n} idle sessions through {}...", target.name);
            let hold = Duration::from_secs(args.hold);
            let reading = runtime.block_on(idle::measure(&target, n, hold));
            keep_reading(&target, reading, &mut idle_results, notes);
            drop(target);
            // The server ends its backends a moment after their clients
            // left; the next proxy needs the connection slots.
            env.wait_backends_gone()?;
        }
    }
    Ok(idle_results)
}

/// Keeps a reading, or notes why there is none.
fn keep_reading(
    target: &Target,
    reading: anyhow::Result<idle::IdleResult>,
    results: &mut Vec<(&'static str, idle::IdleResult)>,
    notes: &mut Vec<String>,
) {
    match reading {
        Ok(r) => results.push((target.name, r)),
        Err(e) => notes.push(format!("idle-memory reading failed: {e:#}")),
    }
}

fn build_pgward(root: &Path) -> anyhow::Result<PathBuf> {
    eprintln!("building pgward (release)...");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "pgward"])
        .current_dir(root)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building pgward failed");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target_dir.join("release").join("pgward"))
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn mode_line(args: &Args) -> String {
    if args.callgrind {
        return format!(
            "mode: callgrind (instruction counts, no repetitions); pgbench scale {}",
            args.scale
        );
    }
    let mode = if args.smoke {
        "smoke"
    } else if args.latency {
        "latency (every transaction's latency, pooled over the repetitions)"
    } else if args.idle_only {
        "idle memory only (each proxy started afresh per session count)"
    } else {
        "full"
    };
    format!(
        "mode: {mode}, {} repetition(s) of {} s per target, interleaved; pgbench scale {}; \
         medians reported",
        args.reps, args.seconds, args.scale
    )
}

fn timestamp() -> String {
    shell("date", &["-u", "+%Y%m%d-%H%M%S"])
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn header(args: &Args, load_at_start: &str, notes: &[String]) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let mut h = format!(
        "# pgward load test\n\n- date: {} (UTC)\n- machine: {} cores, {cpu}; load average at start: {}\n\
         - {}; PgBouncer: {}\n- {}\n- clients: {}; pgbench threads: {}; {}\n",
        timestamp(),
        shell("nproc", &[]),
        load_at_start,
        shell("pgbench", &["--version"]),
        targets::pgbouncer_binary()
            .map(|b| shell(&b.to_string_lossy(), &["--version"]).lines().next().unwrap_or("").to_owned())
            .unwrap_or_else(|| "not installed".into()),
        mode_line(args),
        if args.latency || args.callgrind {
            "1".to_owned()
        } else {
            args.clients
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
        args.threads
            .map_or("2 (1 for one client)".to_owned(), |t| t.to_string()),
        pinning(args).describe(),
    );
    if !args.pgward_env.is_empty() {
        let env: Vec<String> = args
            .pgward_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        h.push_str(&format!("- pgward environment: {}\n", env.join(" ")));
    }
    if !args.pgward_server.is_empty() {
        h.push_str(&format!(
            "- pgward [server]: {}\n",
            args.pgward_server.join("; ")
        ));
    }
    for n in notes {
        h.push_str(&format!("- note: {n}\n"));
    }
    h
}
