//! Instructions per transaction (`--callgrind`): each proxy runs under
//! `valgrind --tool=callgrind` while pgbench runs a fixed number of
//! select-only transactions through it with one client. Instruction counts
//! are repeatable on a shared, noisy machine, where CPU time is not.
//!
//! Startup, the login and shutdown are the same whatever the number of
//! transactions, so each proxy runs twice, with `small` and `large`
//! transactions, each time in a fresh process, and the difference of the
//! two totals divided by the difference of the counts is the cost of one
//! transaction. The same difference, function by function
//! (`callgrind_annotate`), shows where it goes.

use crate::pgbench::{self, Length, Workload};
use crate::setup::{Env, Proxy};
use crate::targets::Launch;
use anyhow::{bail, ensure, Context};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Functions listed per profile.
const TOP: usize = 15;
/// A profiled proxy gets this long to exit and write its profile.
const EXIT_GRACE: Duration = Duration::from_secs(120);

/// One proxy's two profiles for one protocol mode.
struct Profile {
    proxy: &'static str,
    mode: &'static str,
    small: PathBuf,
    large: PathBuf,
    per_tx: f64,
}

/// Runs the measurement for every proxy and mode and returns the report
/// section; profiles are left in `out`.
pub fn run(
    env: &Env,
    proxies: &[Proxy],
    large: u64,
    clients: u32,
    out: &Path,
    scratch: &Path,
) -> anyhow::Result<String> {
    ensure!(
        Command::new("valgrind").arg("--version").output().is_ok(),
        "--callgrind needs valgrind (apt-get install valgrind)"
    );
    ensure!(clients >= 1, "--callgrind-clients must be at least 1");
    // pgbench's -t counts per client: both runs are whole multiples.
    let per_client = (large / u64::from(clients)).max(2);
    let large = per_client * u64::from(clients);
    let small = (per_client / 5).max(1) * u64::from(clients);
    ensure!(
        large > small,
        "--callgrind-tx must be at least 2 per client"
    );
    // PgBouncer runs as the postgres user: its profile goes where it can write.
    let work = scratch.join("callgrind");
    std::fs::create_dir_all(&work)?;
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let mut profiles = Vec::new();
    for mode in ["simple", "prepared"] {
        for &proxy in proxies {
            let name = proxy_name(proxy);
            let mut totals = [0u64; 2];
            let mut files = Vec::new();
            for (i, n) in [small, large].into_iter().enumerate() {
                eprintln!("callgrind: {name}, -M {mode}, {n} transactions...");
                let file = work.join(format!("callgrind.{name}.{mode}.{n}.out"));
                totals[i] = profile(env, proxy, mode, n, clients, &file, scratch)?;
                let kept = out.join(file.file_name().context("profile name")?);
                std::fs::copy(&file, &kept)?;
                files.push(kept);
            }
            let per_tx = (totals[1] as f64 - totals[0] as f64) / (large - small) as f64;
            let large_file = files.pop().context("two profiles")?;
            let small_file = files.pop().context("two profiles")?;
            profiles.push(Profile {
                proxy: name,
                mode,
                small: small_file,
                large: large_file,
                per_tx,
            });
        }
    }
    markdown(&profiles, small, large, clients)
}

pub(crate) fn proxy_name(proxy: Proxy) -> &'static str {
    match proxy {
        Proxy::Pgward { name, .. } => name,
        Proxy::Pgbouncer => "pgbouncer",
    }
}

/// Starts `proxy` under callgrind, runs `n` transactions through it, stops
/// it and returns the instructions its whole life took.
fn profile(
    env: &Env,
    proxy: Proxy,
    mode: &str,
    n: u64,
    clients: u32,
    file: &Path,
    scratch: &Path,
) -> anyhow::Result<u64> {
    let _ = std::fs::remove_file(file);
    let mut launch = Launch {
        prefix: vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}", file.display()),
        ],
        env: Vec::new(),
        server: Vec::new(),
    };
    if let Proxy::Pgward { .. } = proxy {
        launch.env.clone_from(&env.pgward_launch.env);
        launch.server.clone_from(&env.pgward_launch.server);
    }
    let mut target = env.start_proxy(proxy, &launch)?;
    let workload = Workload {
        name: format!("select-only -M {mode}, {clients} clients"),
        clients,
        args: ["-S", "-M", mode, "--random-seed=1"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let result = pgbench::run(
        &env.bench,
        &target,
        &workload,
        Length::Transactions(n / u64::from(clients)),
        scratch,
        false,
    )?;
    ensure!(
        result.transactions == n && result.failed == 0,
        "{}: {} of {n} transactions, {} failed",
        target.name,
        result.transactions,
        result.failed
    );
    if !target.stop(EXIT_GRACE) {
        bail!("{} under callgrind did not exit in time", target.name);
    }
    Ok(total(file)?.saturating_sub(key_derivations(file)?))
}

/// Instructions pgward spent deriving backend keys (SCRAM's PBKDF2, some
/// 58 million a login). They belong to logins, which cancel out between
/// the two runs, except that pgward caches the derived key and two logins
/// racing for it (the session's, the code catalog's) derive it once or
/// twice depending on timing; left in, that one difference outweighs the
/// transactions of a 1-client run.
fn key_derivations(file: &Path) -> anyhow::Result<u64> {
    Ok(by_function(file, true)?
        .into_iter()
        .filter(|(name, _)| name.ends_with("scram_client::hi"))
        .map(|(_, n)| n)
        .max()
        .unwrap_or(0))
}

/// The total instruction count of a profile (its `totals:` line).
fn total(file: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("no callgrind profile at {}", file.display()))?;
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no totals line in {}", file.display()))
}

/// Instructions by function as callgrind_annotate lists them, inclusive or
/// self.
fn by_function(file: &Path, inclusive: bool) -> anyhow::Result<HashMap<String, u64>> {
    let out = Command::new("callgrind_annotate")
        .arg(format!(
            "--inclusive={}",
            if inclusive { "yes" } else { "no" }
        ))
        .arg("--threshold=100")
        .arg("--auto=no")
        .arg(file)
        .output()
        .context("cannot run callgrind_annotate")?;
    ensure!(
        out.status.success(),
        "callgrind_annotate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(parse_annotate(
        &String::from_utf8_lossy(&out.stdout),
        inclusive,
    ))
}

/// Reads `12,345 (1.23%)  file:function [object]` lines into instructions
/// by function. A function appears once per source file its code came from
/// (inlining): self costs of those parts add up, inclusive costs overlap,
/// so the largest is kept.
fn parse_annotate(text: &str, inclusive: bool) -> HashMap<String, u64> {
    let mut map: HashMap<String, u64> = HashMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let Some(name) = rest.trim_start().strip_prefix('(').and_then(|r| {
            let (_, after) = r.split_once(')')?;
            Some(after.trim())
        }) else {
            continue;
        };
        if name == "PROGRAM TOTALS" || name.is_empty() {
            continue;
        }
        let name = match name.rfind(" [") {
            Some(i) if name.ends_with(']') => &name[..i],
            _ => name,
        };
        let function = name.split_once(':').map_or(name, |(_file, f)| f);
        let entry = map.entry(function.to_owned()).or_insert(0);
        *entry = if inclusive {
            (*entry).max(count)
        } else {
            *entry + count
        };
    }
    map
}

/// Frames every transaction passes through on its way to pgward's code
/// (thread start, the runtime's scheduler and task polling): their
/// inclusive cost is everything, so the inclusive list leaves them out.
fn scaffolding(function: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "std::",
        "<std::",
        "core::ops::function::",
        "tokio::runtime::scheduler::",
        "tokio::runtime::task::",
        "tokio::runtime::blocking::",
        "tokio::runtime::context::",
        "start_thread",
        "0x",
    ];
    PREFIXES.iter().any(|p| function.starts_with(p))
}

/// The `TOP` functions by instructions per transaction: the large profile
/// minus the small one, divided by the difference in transactions.
fn top_per_tx(p: &Profile, inclusive: bool, dtx: u64) -> anyhow::Result<Vec<(String, f64)>> {
    let small = by_function(&p.small, inclusive)?;
    let large = by_function(&p.large, inclusive)?;
    let mut rows: Vec<(String, f64)> = large
        .into_iter()
        .filter(|(f, _)| !(inclusive && scaffolding(f)))
        .map(|(f, l)| {
            let s = small.get(&f).copied().unwrap_or(0);
            let per = (l as f64 - s as f64) / dtx as f64;
            (f, per)
        })
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(TOP);
    Ok(rows)
}

fn markdown(profiles: &[Profile], small: u64, large: u64, clients: u32) -> anyhow::Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Instructions per transaction (callgrind)\n\n\
         pgbench -S, {clients} client(s), {small} and {large} transactions in all, each through a fresh proxy \
         under `valgrind --tool=callgrind`; per transaction = (instructions at {large} - at \
         {small}) / {}, so startup, login and shutdown cancel out (pgward's backend key derivations, which its cache makes run once or twice depending on timing, are left out of both).\n",
        large - small
    );
    let _ = writeln!(out, "| proxy | -M simple | -M prepared |\n|---|---:|---:|");
    let mut names: Vec<&str> = Vec::new();
    for p in profiles {
        if !names.contains(&p.proxy) {
            names.push(p.proxy);
        }
    }
    for name in &names {
        let cell = |mode: &str| {
            profiles
                .iter()
                .find(|p| p.proxy == *name && p.mode == mode)
                .map_or("–".to_owned(), |p| format!("{:.0}", p.per_tx))
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} |",
            cell("simple"),
            cell("prepared")
        );
    }
    for p in profiles.iter().filter(|p| p.proxy != "pgbouncer") {
        for inclusive in [true, false] {
            let _ = writeln!(
                out,
                "\n### {}, -M {}: top {TOP} functions by {} instructions per transaction\n\n\
                 | instructions/tx | share | function |\n|---:|---:|---|",
                p.proxy,
                p.mode,
                if inclusive {
                    "inclusive (thread start and the runtime's task polling left out)"
                } else {
                    "self"
                }
            );
            for (f, per) in top_per_tx(p, inclusive, large - small)? {
                let _ = writeln!(
                    out,
                    "| {per:.0} | {:.1}% | `{}` |",
                    per / p.per_tx * 100.0,
                    f.replace('|', "\\|").replace('`', "'")
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_callgrind_annotate_lines() {
        let text = "\
--------------------------------------------------------------------------------
Ir                file:function
--------------------------------------------------------------------------------
642,844 (100.0%)  PROGRAM TOTALS
 326,874 (50.85%)  ./elf/rtld.c:_dl_start [/usr/lib/ld-linux-x86-64.so.2]
     12 ( 0.00%)  ???:0x000000000001ab70 [/usr/bin/ls]
     30 ( 0.00%)  ???:0x000000000001ab70 [/usr/lib/other.so]
   1,000 (0.16%)  src/relay.rs:pgward::session::relay::Relay<T>::step
Events recorded:  Ir
";
        let m = parse_annotate(text, false);
        assert_eq!(m.get("_dl_start"), Some(&326_874));
        assert_eq!(m.get("0x000000000001ab70"), Some(&42));
        assert_eq!(m.get("pgward::session::relay::Relay<T>::step"), Some(&1000));
        assert!(!m.contains_key("PROGRAM TOTALS"));
        assert_eq!(m.len(), 3);
        let inclusive = parse_annotate(text, true);
        assert_eq!(inclusive.get("0x000000000001ab70"), Some(&30));
    }

    #[test]
    fn runtime_frames_are_scaffolding_pgward_and_io_are_not() {
        assert!(scaffolding(
            "std::sys::backtrace::__rust_begin_short_backtrace"
        ));
        assert!(scaffolding(
            "tokio::runtime::scheduler::multi_thread::worker::Context::run_task"
        ));
        assert!(!scaffolding("tokio::runtime::io::driver::Driver::turn"));
        assert!(!scaffolding("pgward::session::run::{{closure}}"));
    }
}
