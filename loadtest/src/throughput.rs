//! The workloads and the interleaved runs: every target in turn per
//! repetition (direct, pgward, ..., direct, pgward, ...), so a noisy machine
//! affects each alike.

use crate::pgbench::{self, Bench, Length, Workload};
use crate::report::{Cell, Results, MASKED};
use crate::targets::Target;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// How a set of runs is done.
pub struct Plan<'a> {
    /// Repetitions per target.
    pub reps: u32,
    /// Length of each run.
    pub length: Length,
    /// Keep every transaction's latency (the latency mode pools them).
    pub keep_latencies: bool,
    /// Scratch directory for pgbench's logs.
    pub scratch: &'a Path,
}

/// The throughput workloads. The select-only workloads run at each of
/// `clients`, the others at the largest; `--smoke` has fewer.
pub fn throughput(smoke: bool, clients: &[u32], wide: &Path) -> Vec<Workload> {
    let most = clients.iter().copied().max().unwrap_or(1);
    let wide_arg = format!("--file={}", wide.display());
    let modes: &[&str] = if smoke {
        &["prepared"]
    } else {
        &["simple", "extended", "prepared"]
    };
    let mut list = Vec::new();
    for mode in modes {
        for &c in clients {
            list.push(workload(
                &format!("select-only -M {mode}"),
                c,
                &["-S", "-M", mode],
            ));
        }
    }
    list.push(workload("TPC-B-like", most, &[]));
    list.push(workload(
        "wide rows (100 x 10 text)",
        most,
        &["-M", "prepared", &wide_arg],
    ));
    list.push(workload(
        "connection per transaction (-C)",
        most,
        &["-S", "-C"],
    ));
    list
}

/// The latency workloads: one client, one statement per transaction.
pub fn latency() -> Vec<Workload> {
    ["simple", "prepared"]
        .iter()
        .map(|mode| {
            workload(
                &format!("select-only -M {mode} (latency)"),
                1,
                &["-S", "-M", mode],
            )
        })
        .collect()
}

fn workload(name: &str, clients: u32, args: &[&str]) -> Workload {
    Workload {
        name: format!(
            "{name}, {clients} client{}",
            if clients == 1 { "" } else { "s" }
        ),
        clients,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// The targets a workload runs against: the masked target only where
/// masked columns are read, unless `masked_everywhere`.
pub fn runs<'a>(
    all: &'a [Target],
    w: &'a Workload,
    masked_everywhere: bool,
) -> impl Iterator<Item = &'a Target> + 'a {
    all.iter()
        .filter(move |t| masked_everywhere || t.name != MASKED || w.name.starts_with("wide rows"))
}

/// Runs every workload, each target in turn per repetition, with a
/// progress bar on stderr.
pub fn run_workloads(
    bench: &Bench,
    workloads: &[Workload],
    all: &[Target],
    masked_everywhere: bool,
    plan: &Plan,
) -> anyhow::Result<Results> {
    let total: usize = workloads
        .iter()
        .map(|w| runs(all, w, masked_everywhere).count())
        .sum::<usize>()
        * plan.reps as usize;
    let mut done = 0;
    let mut results: Results = Vec::new();
    for w in workloads {
        let mut cells: BTreeMap<&'static str, Cell> = BTreeMap::new();
        for rep in 1..=plan.reps {
            for target in runs(all, w, masked_everywhere) {
                progress(
                    done,
                    total,
                    &format!("{} · {} · rep {rep}", w.name, target.name),
                );
                let r = pgbench::run(
                    bench,
                    target,
                    w,
                    plan.length,
                    plan.scratch,
                    plan.keep_latencies,
                )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(smoke: bool, clients: &[u32]) -> Vec<String> {
        throughput(smoke, clients, Path::new("/w.sql"))
            .into_iter()
            .map(|w| w.name)
            .collect()
    }

    #[test]
    fn defaults_give_the_workloads_ci_and_the_docs_know() {
        assert_eq!(
            names(true, &[4]),
            [
                "select-only -M prepared, 4 clients",
                "TPC-B-like, 4 clients",
                "wide rows (100 x 10 text), 4 clients",
                "connection per transaction (-C), 4 clients",
            ]
        );
        let full = names(false, &[1, 16]);
        assert_eq!(full.len(), 9);
        assert_eq!(full[0], "select-only -M simple, 1 client");
        assert_eq!(full[5], "select-only -M prepared, 16 clients");
        assert_eq!(full[6], "TPC-B-like, 16 clients");
    }

    #[test]
    fn client_counts_scale_the_select_only_rows_and_the_rest_takes_the_largest() {
        let w = names(false, &[1, 64, 256]);
        assert_eq!(w.len(), 3 * 3 + 3);
        assert!(w.contains(&"select-only -M extended, 256 clients".to_owned()));
        assert!(w.contains(&"wide rows (100 x 10 text), 256 clients".to_owned()));
    }
}
