//! Running pgbench against a target and reading its results: TPS and
//! average latency from the report, percentiles from the per-transaction
//! log, the proxy's CPU time from /proc.

use crate::latency::Latencies;
use crate::targets::{Target, DB};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One workload: pgbench arguments other than the connection.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Row label in the report.
    pub name: String,
    /// Client count (also bounds the thread count).
    pub clients: u32,
    /// Extra pgbench arguments (mode, script, -S, -C...).
    pub args: Vec<String>,
}

/// How pgbench itself is run: the program, words before it (`taskset -c
/// 12-15`) and its thread count.
#[derive(Debug, Clone)]
pub struct Bench {
    /// The pgbench program.
    pub bin: PathBuf,
    /// Program and arguments pgbench's command line is appended to.
    pub prefix: Vec<String>,
    /// pgbench threads (`-j`); `None`: 2, or 1 for one client.
    pub threads: Option<u32>,
}

impl Bench {
    /// pgbench with the target's connection settings.
    pub fn command(&self, target: &Target) -> Command {
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.env("PGPASSWORD", &target.password)
            .env("PGSSLMODE", "disable")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(target.port.to_string())
            .args(["-U", &target.user]);
        cmd
    }

    /// Threads for `clients` clients: never more threads than clients.
    fn threads(&self, clients: u32) -> u32 {
        self.threads.unwrap_or(2).clamp(1, clients.max(1))
    }
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy)]
pub enum Length {
    /// `-T`: seconds.
    Seconds(u32),
    /// `-t`: transactions per client.
    Transactions(u64),
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Transactions per second as pgbench reports it.
    pub tps: f64,
    /// Mean latency, ms.
    pub latency_avg_ms: f64,
    /// 99th percentile latency, ms, from the transaction log.
    pub latency_p99_ms: f64,
    /// Transactions processed.
    pub transactions: u64,
    /// Failed transactions.
    pub failed: u64,
    /// CPU µs (user + system) the proxy used per transaction over the run
    /// (None for direct).
    pub cpu_us_per_tx: Option<f64>,
    /// Of it, in user space (the rest is the kernel's: syscalls and the
    /// TCP stack, about the same for every proxy).
    pub user_us_per_tx: Option<f64>,
    /// Every transaction's latency, µs, sorted; kept only when asked for.
    pub latencies: Option<Latencies>,
}

/// Runs one workload and reads the results; `keep_latencies` keeps every
/// transaction's latency in the result.
pub fn run(
    bench: &Bench,
    target: &Target,
    workload: &Workload,
    length: Length,
    scratch: &Path,
    keep_latencies: bool,
) -> anyhow::Result<RunResult> {
    let log_dir = scratch.join(format!("log-{}-{}", target.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir)?;
    let prefix = log_dir.join("tx");
    let threads = bench.threads(workload.clients);
    let cpu_before = target.pid.and_then(crate::targets::cpu_seconds);
    let mut cmd = bench.command(target);
    cmd.args(&workload.args)
        .args(["-c", &workload.clients.to_string()])
        .args(["-j", &threads.to_string()]);
    match length {
        Length::Seconds(s) => cmd.args(["-T", &s.to_string()]),
        Length::Transactions(t) => cmd.args(["-t", &t.to_string()]),
    };
    cmd.arg("-l")
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(DB);
    let out = cmd.output().context("cannot run pgbench")?;
    let cpu_after = target.pid.and_then(crate::targets::cpu_seconds);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench {} against {} failed:\n{}{}",
            workload.name,
            target.name,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut result =
        parse_report(&stdout).with_context(|| format!("unreadable pgbench report:\n{stdout}"))?;
    let latencies = read_logs(&log_dir)?;
    let _ = std::fs::remove_dir_all(&log_dir);
    result.latency_p99_ms = latencies.percentile(99.0) as f64 / 1000.0;
    if keep_latencies {
        result.latencies = Some(latencies);
    }
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        if result.transactions > 0 {
            let per_tx = |seconds: f64| Some(seconds * 1e6 / result.transactions as f64);
            result.cpu_us_per_tx = per_tx(b.user + b.system - a.user - a.system);
            result.user_us_per_tx = per_tx(b.user - a.user);
        }
    }
    Ok(result)
}

/// Reads TPS, average latency, processed and failed counts.
pub fn parse_report(report: &str) -> Option<RunResult> {
    let mut r = RunResult::default();
    let mut seen_tps = false;
    for line in report.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            r.transactions = first_number(rest.split('/').next()?)? as u64;
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            r.failed = first_number(rest)? as u64;
        } else if let Some(rest) = line.strip_prefix("latency average =") {
            r.latency_avg_ms = first_number(rest)?;
        } else if let Some(rest) = line.strip_prefix("tps =") {
            if !seen_tps {
                r.tps = first_number(rest)?;
                seen_tps = true;
            }
        }
    }
    seen_tps.then_some(r)
}

fn first_number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Every per-transaction latency (µs, third column of pgbench's `-l` log)
/// in the logs under `dir`.
fn read_logs(dir: &Path) -> anyhow::Result<Latencies> {
    let mut latencies: Vec<u64> = Vec::new();
    let files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for line in text.lines() {
            if let Some(us) = line.split_whitespace().nth(2).and_then(|t| t.parse().ok()) {
                latencies.push(us);
            }
        }
    }
    Latencies::new(latencies)
        .with_context(|| format!("pgbench wrote no transaction log in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pg15_report() {
        let report = "transaction type: <builtin: select only>\n\
            number of transactions actually processed: 12345\n\
            number of failed transactions: 0 (0.000%)\n\
            latency average = 0.081 ms\n\
            initial connection time = 3.2 ms\n\
            tps = 12340.5 (without initial connection time)\n";
        let r = parse_report(report).expect("parsed");
        assert_eq!(r.transactions, 12345);
        assert_eq!(r.failed, 0);
        assert!((r.latency_avg_ms - 0.081).abs() < 1e-9);
        assert!((r.tps - 12340.5).abs() < 1e-9);
        assert!(parse_report("no tps here").is_none());
    }
}
