//! Running pgbench against a target and reading its results: TPS and
//! average latency from the report, p99 from the per-transaction log.

use crate::targets::{Target, DB};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One workload: pgbench arguments other than the connection.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Row label in the report.
    pub name: String,
    /// Client count (also chooses the thread count).
    pub clients: u32,
    /// Extra pgbench arguments (mode, script, -S, -C...).
    pub args: Vec<String>,
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
    /// CPU seconds the proxy used per 1,000 transactions (None for direct).
    pub cpu_per_1k: Option<f64>,
}

/// pgbench with the target's connection settings.
pub fn command(pgbench: &Path, target: &Target) -> Command {
    let mut cmd = Command::new(pgbench);
    cmd.env("PGPASSWORD", &target.password)
        .env("PGSSLMODE", "disable")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(target.port.to_string())
        .args(["-U", &target.user]);
    cmd
}

/// Runs one workload for `seconds` and reads the results.
pub fn run(
    pgbench: &Path,
    target: &Target,
    workload: &Workload,
    seconds: u32,
    scratch: &Path,
) -> anyhow::Result<RunResult> {
    let log_dir = scratch.join(format!("log-{}-{}", target.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir)?;
    let prefix = log_dir.join("tx");
    let threads = workload.clients.clamp(1, 2);
    let cpu_before = target.pid.and_then(crate::targets::cpu_seconds);
    let mut cmd = command(pgbench, target);
    cmd.args(&workload.args)
        .args(["-c", &workload.clients.to_string()])
        .args(["-j", &threads.to_string()])
        .args(["-T", &seconds.to_string()])
        .arg("-l")
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
    result.latency_p99_ms = p99_from_logs(&log_dir)?;
    let _ = std::fs::remove_dir_all(&log_dir);
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        if result.transactions > 0 {
            result.cpu_per_1k = Some((b - a) / (result.transactions as f64 / 1000.0));
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

/// The 99th percentile of per-transaction latencies (µs, third column of
/// pgbench's `-l` log), in ms.
fn p99_from_logs(dir: &Path) -> anyhow::Result<f64> {
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
    if latencies.is_empty() {
        bail!("pgbench wrote no transaction log in {}", dir.display());
    }
    latencies.sort_unstable();
    let idx = ((latencies.len() as f64) * 0.99).ceil() as usize;
    let us = latencies[idx.saturating_sub(1).min(latencies.len() - 1)];
    Ok(us as f64 / 1000.0)
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
