//! pgward's load harness: pgbench against direct PostgreSQL, pgward and
//! PgBouncer, interleaved, with medians, ratios and a chart.
//! See loadtest/README.md.

mod idle;
mod pgbench;
mod report;
mod targets;

use anyhow::{bail, Context};
use clap::Parser;
use pgbench::Workload;
use pgward::auth::verifier::ScramVerifier;
use pgward::cluster::{Cluster, ClusterOptions};
use report::{Cell, Results};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use targets::{Target, APP_ROLE, DB};

/// pgbench side by side: direct PostgreSQL, pgward, PgBouncer.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A short run for CI (about a minute): fewer workloads, 1 repetition,
    /// 2 s each. Fails on failed transactions or a missing report, never on
    /// a timing.
    #[arg(long)]
    smoke: bool,
    /// Repetitions of each workload per target (interleaved A B C A B C).
    #[arg(long, default_value_t = 2)]
    reps: u32,
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// pgbench scale factor for `pgbench -i`.
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// Idle client sessions each proxy holds for the memory reading.
    #[arg(long, default_value_t = 1000)]
    idle_sessions: usize,
    /// The pgward binary (default: build target/release/pgward).
    #[arg(long)]
    pgward_bin: Option<PathBuf>,
    /// Where results folders are written.
    #[arg(long, default_value = "loadtest/results")]
    out: PathBuf,
    /// Only the workloads whose name contains this text (e.g. "wide").
    #[arg(long)]
    only: Option<String>,
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
        args.idle_sessions = args.idle_sessions.min(100);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pgward_bin = match args.pgward_bin.clone() {
        Some(p) => p,
        None => build_pgward(&root)?,
    };
    eprintln!("starting a throwaway PostgreSQL...");
    let cluster = Cluster::start(&ClusterOptions {
        tls: None,
        extra_conf: vec![format!("max_connections = {}", args.idle_sessions + 200)],
    })
    .context("cannot start PostgreSQL")?;
    let app_password = format!("app-{:016x}", rand::random::<u64>());
    // Stored pre-hashed, so PgBouncer's auth_file can hold the same verifier.
    let app_verifier = ScramVerifier::generate(&app_password);
    cluster.create_owned_database(APP_ROLE, &app_verifier, DB)?;
    cluster.psql(DB, &format!("SET ROLE {APP_ROLE}; {WIDE_TABLE}"))?;
    let password_file = cluster.dir().join("app.password");
    std::fs::write(&password_file, &app_password)?;
    let wide_script = cluster.dir().join("wide.sql");
    std::fs::write(&wide_script, WIDE_SCRIPT)?;
    let pgbench_bin = cluster.program("pgbench");

    let direct = targets::direct(&cluster, &app_password);
    eprintln!("loading data: pgbench -i -s {}...", args.scale);
    let init = pgbench::command(&pgbench_bin, &direct)
        .args(["-i", "-q", "-s", &args.scale.to_string(), DB])
        .output()?;
    if !init.status.success() {
        bail!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }

    let mut all: Vec<Target> = vec![direct];
    // pgward as shipped (built-in rules on), and with no rules at all, to
    // show what judging statements costs.
    all.push(targets::pgward(
        &pgward_bin,
        &cluster,
        &password_file,
        "pgward",
        "",
    )?);
    all.push(targets::pgward(
        &pgward_bin,
        &cluster,
        &password_file,
        report::NO_RULES,
        "[policy]\nbuiltin_rules = false\n",
    )?);
    // Masking 2 of the wide table's 10 text columns for the client.
    all.push(targets::pgward(
        &pgward_bin,
        &cluster,
        &password_file,
        report::MASKED,
        "[[masking.rules]]\nname = \"c3\"\ncolumns = [\"wide.c3\"]\nstrategy = \"partial\"\nkeep_last = 4\n\
         [[masking.rules]]\nname = \"c7\"\ncolumns = [\"wide.c7\"]\nstrategy = \"redact\"\n",
    )?);
    let mut notes = Vec::new();
    // Session mode with a pool that never makes a client wait, as pgward
    // gives every client its own server connection.
    let pool_size = u32::try_from(args.idle_sessions + 32).unwrap_or(u32::MAX);
    match targets::pgbouncer_binary() {
        Some(bin) => all.push(
            targets::pgbouncer(
                &bin,
                &cluster,
                &app_password,
                &app_verifier,
                pool_size,
                pgward::cluster::is_root(),
            )
            .context("PgBouncer failed to start")?,
        ),
        None => notes.push(
            "PgBouncer is not installed (apt-get install pgbouncer): its columns are empty."
                .to_owned(),
        ),
    }

    let mut workloads = workloads(args.smoke, &wide_script);
    if let Some(only) = &args.only {
        workloads.retain(|w| w.name.contains(only.as_str()));
        anyhow::ensure!(!workloads.is_empty(), "no workload name contains {only:?}");
    }
    let results = run_workloads(&workloads, &all, &args, &pgbench_bin, cluster.dir())?;

    eprintln!(
        "holding {} idle sessions through each proxy...",
        args.idle_sessions
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let mut idle_results = Vec::new();
    for target in all.iter().filter(|t| t.pid.is_some()) {
        // A failure here is reported, not fatal: the pgbench results stand.
        match runtime.block_on(idle::measure(target, args.idle_sessions)) {
            Ok(r) => idle_results.push((target.name, r)),
            Err(e) => notes.push(format!("idle-memory reading failed: {e:#}")),
        }
    }

    let header = header(&args, &notes);
    let md = report::markdown(&results, &idle_results, &header);
    let dir = args.out.join(timestamp());
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), &md)?;
    std::fs::write(dir.join("chart.svg"), report::svg(&results))?;
    println!("\n{md}");
    println!("written: {}", dir.join("report.md").display());
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

/// Runs every workload, each target in turn per repetition, with a
/// progress bar on stderr.
fn run_workloads(
    workloads: &[Workload],
    all: &[Target],
    args: &Args,
    pgbench_bin: &Path,
    scratch: &Path,
) -> anyhow::Result<Results> {
    let total: usize = workloads
        .iter()
        .map(|w| runs(all, w).count())
        .sum::<usize>()
        * args.reps as usize;
    let mut done = 0;
    let mut results: Results = Vec::new();
    for w in workloads {
        let mut cells: BTreeMap<&'static str, Cell> = BTreeMap::new();
        for rep in 1..=args.reps {
            for target in runs(all, w) {
                progress(
                    done,
                    total,
                    &format!("{} · {} · rep {rep}", w.name, target.name),
                );
                let r = pgbench::run(pgbench_bin, target, w, args.seconds, scratch)?;
                cells.entry(target.name).or_default().runs.push(r);
                done += 1;
            }
        }
        results.push((w.name.clone(), cells));
    }
    progress(done, total, "done");
    eprintln!();
    Ok(results)
}

/// The targets a workload runs against: the masked target only where masked
/// columns are read.
fn runs<'a>(all: &'a [Target], w: &'a Workload) -> impl Iterator<Item = &'a Target> + 'a {
    all.iter()
        .filter(move |t| t.name != report::MASKED || w.name.starts_with("wide rows"))
}

fn progress(done: usize, total: usize, what: &str) {
    const WIDTH: usize = 30;
    let filled = WIDTH * done / total.max(1);
    eprint!(
        "\r\x1b[2K[{}{}] {done}/{total} {what}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled)
    );
    let _ = std::io::stderr().flush();
}

const WIDE_TABLE: &str = "CREATE TABLE wide (id int PRIMARY KEY, c1 text, c2 text, c3 text, \
    c4 text, c5 text, c6 text, c7 text, c8 text, c9 text, c10 text); \
    INSERT INTO wide SELECT g, md5(g::text), md5((g+1)::text), md5((g+2)::text), \
    md5((g+3)::text), md5((g+4)::text), md5((g+5)::text), md5((g+6)::text), \
    md5((g+7)::text), md5((g+8)::text), md5((g+9)::text) FROM generate_series(1, 10000) g; \
    ANALYZE wide;";

/// 100 rows x 10 text columns per transaction.
const WIDE_SCRIPT: &str =
    "\\set start random(1, 9901)\nSELECT * FROM wide WHERE id BETWEEN :start AND :start + 99;\n";

fn workloads(smoke: bool, wide: &Path) -> Vec<Workload> {
    let w = |name: &str, clients: u32, args: &[&str]| Workload {
        name: format!(
            "{name}, {clients} client{}",
            if clients == 1 { "" } else { "s" }
        ),
        clients,
        args: args.iter().map(|s| s.to_string()).collect(),
    };
    let wide_arg = format!("--file={}", wide.display());
    if smoke {
        return vec![
            w("select-only -M prepared", 4, &["-S", "-M", "prepared"]),
            w("TPC-B-like", 4, &[]),
            w(
                "wide rows (100 x 10 text)",
                4,
                &["-M", "prepared", &wide_arg],
            ),
            w("connection per transaction (-C)", 4, &["-S", "-C"]),
        ];
    }
    let mut list = Vec::new();
    for mode in ["simple", "extended", "prepared"] {
        for clients in [1, 16] {
            list.push(w(
                &format!("select-only -M {mode}"),
                clients,
                &["-S", "-M", mode],
            ));
        }
    }
    list.push(w("TPC-B-like", 16, &[]));
    list.push(w(
        "wide rows (100 x 10 text)",
        16,
        &["-M", "prepared", &wide_arg],
    ));
    list.push(w("connection per transaction (-C)", 16, &["-S", "-C"]));
    list
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

fn timestamp() -> String {
    shell("date", &["-u", "+%Y%m%d-%H%M%S"])
}

fn header(args: &Args, notes: &[String]) -> String {
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
         - {}; PgBouncer: {}\n- mode: {}, {} repetition(s) of {} s per target, interleaved; \
         pgbench scale {}; medians reported\n",
        timestamp(),
        shell("nproc", &[]),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        shell("pgbench", &["--version"]),
        targets::pgbouncer_binary()
            .map(|b| shell(&b.to_string_lossy(), &["--version"]).lines().next().unwrap_or("").to_owned())
            .unwrap_or_else(|| "not installed".into()),
        if args.smoke { "smoke" } else { "full" },
        args.reps,
        args.seconds,
        args.scale,
    );
    for n in notes {
        h.push_str(&format!("- note: {n}\n"));
    }
    h
}
