//! The latency microbenchmark (`--latency`): one client, one statement per
//! transaction, so each pgbench transaction is one round trip; the
//! distribution of its latency per target, from pgbench's per-transaction
//! log (`-l`, µs), and what each proxy adds to direct PostgreSQL's.

use crate::report::{Cell, Results, TARGET_ORDER};
use std::fmt::Write;

/// Per-transaction latencies in µs, sorted, never empty.
#[derive(Debug, Clone)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    /// Sorts `us`; `None` when it is empty.
    pub fn new(mut us: Vec<u64>) -> Option<Self> {
        if us.is_empty() {
            return None;
        }
        us.sort_unstable();
        Some(Self(us))
    }

    /// All repetitions' latencies pooled into one distribution.
    fn pooled(cell: &Cell) -> Option<Self> {
        let all: Vec<u64> = cell
            .runs
            .iter()
            .filter_map(|r| r.latencies.as_ref())
            .flat_map(|l| l.0.iter().copied())
            .collect();
        Self::new(all)
    }

    /// The `p`-th percentile (nearest rank), µs.
    pub fn percentile(&self, p: f64) -> u64 {
        let rank = ((self.0.len() as f64) * p / 100.0).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    /// Transactions in the distribution.
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The percentiles the table shows.
const PERCENTILES: [f64; 4] = [50.0, 90.0, 99.0, 99.9];

/// The latency table: per workload and target, the pooled distribution,
/// and the difference from direct PostgreSQL at p50 and p99 (the latency
/// the proxy adds to one round trip).
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | target | transactions | p50 µs | p90 µs | p99 µs | p99.9 µs \
         | added p50 µs | added p99 µs | proxy CPU µs/tx |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (workload, cells) in results {
        let direct = cells.get("direct").and_then(Latencies::pooled);
        for target in TARGET_ORDER {
            let Some(cell) = cells.get(target) else {
                continue;
            };
            let Some(l) = Latencies::pooled(cell) else {
                continue;
            };
            let pcts: Vec<String> = PERCENTILES
                .iter()
                .map(|p| l.percentile(*p).to_string())
                .collect();
            let added = |p: f64| match (&direct, target) {
                (_, "direct") | (None, _) => "–".to_owned(),
                (Some(d), _) => format!("{:+}", l.percentile(p) as i64 - d.percentile(p) as i64),
            };
            let _ = writeln!(
                out,
                "| {workload} | {target} | {} | {} | {} | {} | {} |",
                l.len(),
                pcts.join(" | "),
                added(50.0),
                added(99.0),
                cell.cpu_us().map_or("–".to_owned(), |c| format!("{c:.1}")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latencies::new((1..=100).rev().collect()).expect("non-empty");
        assert_eq!(l.percentile(50.0), 50);
        assert_eq!(l.percentile(99.0), 99);
        assert_eq!(l.percentile(99.9), 100);
        assert_eq!(l.percentile(0.0), 1);
        let one = Latencies::new(vec![7]).expect("non-empty");
        assert_eq!(one.percentile(50.0), 7);
        assert_eq!(one.percentile(99.9), 7);
        assert!(Latencies::new(Vec::new()).is_none());
    }
}
