//! CPU pinning: PostgreSQL, the proxies and pgbench each on their own cores
//! (`taskset`), so that on a many-core machine throughput and CPU per
//! transaction measure the proxy rather than a fight for the same cores.

use anyhow::{bail, Context};
use std::process::Command;

/// A CPU list as `taskset -c` takes it (`0-7`, `8,9,12-15`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(String);

impl std::str::FromStr for CpuList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let valid_range = |part: &str| {
            let mut bounds = part.splitn(2, '-');
            let ok = |b: Option<&str>| b.is_some_and(|b| !b.is_empty() && b.parse::<u32>().is_ok());
            let (lo, hi) = (bounds.next(), bounds.next());
            ok(lo) && (hi.is_none() || ok(hi))
        };
        if text.split(',').all(valid_range) {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a CPU list like 0-7 or 8,9,12-15 (see taskset -c)"
            ))
        }
    }
}

impl std::fmt::Display for CpuList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which cores each party runs on; `None` leaves it to the scheduler.
#[derive(Debug, Clone, Default)]
pub struct Pinning {
    /// The postmaster and every backend it forks.
    pub postgres: Option<CpuList>,
    /// Each proxy (pgward, PgBouncer).
    pub proxy: Option<CpuList>,
    /// pgbench.
    pub pgbench: Option<CpuList>,
}

impl Pinning {
    /// True when any party is pinned.
    pub fn any(&self) -> bool {
        self.postgres.is_some() || self.proxy.is_some() || self.pgbench.is_some()
    }

    /// Fails early, with a clear message, when pinning is asked for but
    /// `taskset` is missing.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.any() && Command::new("taskset").arg("--version").output().is_err() {
            bail!("CPU pinning needs taskset (util-linux)");
        }
        Ok(())
    }

    /// The words to put before a command so that it runs on `cpus`: the
    /// program is started already pinned, so a runtime that sizes its thread
    /// pool from the CPUs it may use (tokio does) sees only those.
    pub fn prefix(cpus: Option<&CpuList>) -> Vec<String> {
        cpus.map_or_else(Vec::new, |c| {
            vec!["taskset".to_owned(), "-c".to_owned(), c.to_string()]
        })
    }

    /// One line for the report header.
    pub fn describe(&self) -> String {
        if !self.any() {
            return "CPU pinning: none".to_owned();
        }
        let show = |c: &Option<CpuList>| c.as_ref().map_or("any".to_owned(), CpuList::to_string);
        format!(
            "CPU pinning (taskset): PostgreSQL {}, proxies {}, pgbench {}",
            show(&self.postgres),
            show(&self.proxy),
            show(&self.pgbench)
        )
    }
}

/// Pins a running PostgreSQL: the postmaster and the processes it has
/// already started, all threads (`taskset -a`). Backends forked later
/// inherit the postmaster's affinity.
pub fn pin_postgres(postmaster: u32, cpus: &CpuList) -> anyhow::Result<()> {
    let mut pids = vec![postmaster];
    pids.extend(children(postmaster));
    for pid in pids {
        let out = Command::new("taskset")
            .args(["-a", "-p", "-c", &cpus.to_string(), &pid.to_string()])
            .output()
            .context("cannot run taskset")?;
        // A background process may have exited in between; the postmaster
        // must be pinned.
        if !out.status.success() && pid == postmaster {
            bail!(
                "taskset -c {cpus} on PostgreSQL (pid {pid}) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// The pids whose parent is `parent`, from /proc.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The parent pid from /proc/<pid>/stat (the field after the state, which
/// follows the command name in parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_as_taskset_takes_them() {
        for good in ["0", "0-7", "8,9,12-15", "3,5"] {
            assert_eq!(
                good.parse::<CpuList>().map(|c| c.to_string()),
                Ok(good.to_owned())
            );
        }
        for bad in ["", "a", "1-", "-3", "1,,2", "0-7;rm", "1 2", "1-2-3"] {
            assert!(bad.parse::<CpuList>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prefix_only_when_pinned() {
        assert!(Pinning::prefix(None).is_empty());
        let cpus: CpuList = "8-11".parse().expect("valid");
        assert_eq!(Pinning::prefix(Some(&cpus)), ["taskset", "-c", "8-11"]);
    }

    #[test]
    fn this_process_has_a_parent() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }
}
