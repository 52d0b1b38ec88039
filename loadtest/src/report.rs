//! The results folder: a Markdown table (medians, ratios) and an SVG chart.

use crate::idle::IdleResult;
use crate::pgbench::RunResult;
use std::collections::BTreeMap;
use std::fmt::Write;

/// All repetitions of one workload against one target.
#[derive(Debug, Default, Clone)]
pub struct Cell {
    /// One entry per repetition.
    pub runs: Vec<RunResult>,
}

impl Cell {
    fn median(&self, f: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
        let mut v: Vec<f64> = self.runs.iter().filter_map(f).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        Some(if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        })
    }
    /// Median TPS.
    pub fn tps(&self) -> Option<f64> {
        self.median(|r| Some(r.tps))
    }
    fn avg(&self) -> Option<f64> {
        self.median(|r| Some(r.latency_avg_ms))
    }
    fn p99(&self) -> Option<f64> {
        self.median(|r| Some(r.latency_p99_ms))
    }
    /// Median proxy CPU µs per transaction.
    pub fn cpu_us(&self) -> Option<f64> {
        self.median(|r| r.cpu_us_per_tx)
    }
    /// Median proxy user-space CPU µs per transaction.
    pub fn user_us(&self) -> Option<f64> {
        self.median(|r| r.user_us_per_tx)
    }
    /// Failed transactions over all repetitions.
    pub fn failed(&self) -> u64 {
        self.runs.iter().map(|r| r.failed).sum()
    }
}

/// The target name of pgward with no rules at all (the relay alone).
pub const NO_RULES: &str = "pgward-norules";
/// The target name of pgward masking 2 of the wide table's 10 columns
/// (run for the wide-row workload only).
pub const MASKED: &str = "pgward-masked";

/// The target name of pgward with the audit trail on (file sink), run
/// with `--audit`.
pub const AUDIT: &str = "pgward-audit";

/// Every target name, in the order tables list them.
pub const TARGET_ORDER: [&str; 6] = ["direct", NO_RULES, "pgward", AUDIT, MASKED, "pgbouncer"];

/// Results by workload (in run order) and target name.
pub type Results = Vec<(String, BTreeMap<&'static str, Cell>)>;

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

/// Audit on against off, per workload (`--audit`): the same rules, one
/// with every statement recorded to the file sink.
pub fn audit_markdown(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| workload | pgward TPS | pgward audit on TPS | audit on / off | CPU µs/tx (off / on) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    for (name, cells) in results {
        let tps = |t: &str| cells.get(t).and_then(Cell::tps);
        let cpu = |t: &str| fmt(cells.get(t).and_then(Cell::cpu_us), 1);
        if cells.contains_key(AUDIT) {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} / {} |",
                fmt(tps("pgward"), 0),
                fmt(tps(AUDIT), 0),
                ratio(tps(AUDIT), tps("pgward")),
                cpu("pgward"),
                cpu(AUDIT),
            );
        }
    }
    out
}

/// The Markdown report.
pub fn markdown(results: &Results, idle: &[(&'static str, IdleResult)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | direct TPS | pgward TPS | pgward rules off TPS | PgBouncer TPS | pgward / direct \
         | pgward / PgBouncer | rules on / off | pgward masking TPS | masking on / off \
         | avg ms (direct / pgward / PgBouncer) \
         | p99 ms (direct / pgward / PgBouncer) \
         | proxy CPU µs/tx (pgward / rules off / masking / PgBouncer) \
         | of it user space | failed |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|"
    );
    for (name, cells) in results {
        let get = |t: &str| cells.get(t);
        let tps = |t: &str| get(t).and_then(Cell::tps);
        let per = |targets: &[&str], f: fn(&Cell) -> Option<f64>, d: usize| {
            targets
                .iter()
                .map(|t| fmt(get(t).and_then(f), d))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let failed: u64 = cells.values().map(Cell::failed).sum();
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {failed} |",
            fmt(tps("direct"), 0),
            fmt(tps("pgward"), 0),
            fmt(tps(NO_RULES), 0),
            fmt(tps("pgbouncer"), 0),
            ratio(tps("pgward"), tps("direct")),
            ratio(tps("pgward"), tps("pgbouncer")),
            ratio(tps("pgward"), tps(NO_RULES)),
            fmt(tps(MASKED), 0),
            ratio(tps(MASKED), tps("pgward")),
            per(&["direct", "pgward", "pgbouncer"], Cell::avg, 3),
            per(&["direct", "pgward", "pgbouncer"], Cell::p99, 3),
            per(&["pgward", NO_RULES, MASKED, "pgbouncer"], Cell::cpu_us, 1),
            per(&["pgward", NO_RULES, MASKED, "pgbouncer"], Cell::user_us, 1),
        );
    }
    out.push_str(&idle_markdown(idle, "RSS after the load runs"));
    out
}

/// The idle-memory table: each proxy's RSS before (`before` names that
/// moment) and holding its idle sessions, and the difference per session,
/// all of it and its anonymous part (the rest is pages of the binary's
/// code and data that the sessions first ran).
pub fn idle_markdown(idle: &[(&'static str, IdleResult)], before: &str) -> String {
    let mut out = String::new();
    if idle.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n| proxy | idle sessions | {before} | RSS holding them | per session | of it anonymous |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for (name, r) in idle {
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.1} KiB |",
            r.sessions,
            r.rss_before as f64 / 1048576.0,
            r.rss_with_sessions as f64 / 1048576.0,
            r.per_session() / 1024.0,
            r.anon_per_session() / 1024.0
        );
    }
    out
}

/// A horizontal bar chart: each proxy's median TPS as a percentage of
/// direct PostgreSQL's, per workload.
pub fn svg(results: &Results) -> String {
    const BAR: f64 = 14.0;
    const LABEL_W: f64 = 260.0;
    const PLOT_W: f64 = 460.0;
    let rows = results.len() as f64;
    let bars = [
        ("pgward", "#3572b0"),
        (NO_RULES, "#8fb3de"),
        ("pgbouncer", "#e08a1e"),
    ];
    let height = 60.0 + rows * (bars.len() as f64 * BAR + 14.0);
    let max_pct = results
        .iter()
        .flat_map(|(_, c)| {
            let direct = c.get("direct").and_then(Cell::tps);
            ["pgward", NO_RULES, "pgbouncer"]
                .into_iter()
                .filter_map(move |t| Some(c.get(t)?.tps()? / direct? * 100.0))
        })
        .fold(100.0f64, f64::max)
        .ceil();
    let x = |pct: f64| LABEL_W + pct / max_pct * PLOT_W;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">
<text x="10" y="20" font-size="14">Median TPS as % of direct PostgreSQL (pgward: blue, pgward without rules: light blue, PgBouncer: orange)</text>
"#,
        w = LABEL_W + PLOT_W + 80.0
    );
    let mut y = 40.0;
    for (name, cells) in results {
        let direct = cells.get("direct").and_then(Cell::tps);
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}">{}</text>"#,
            y + BAR + 4.0,
            escape(name)
        );
        for (i, (target, color)) in bars.iter().enumerate() {
            let by = y + i as f64 * BAR;
            if let (Some(t), Some(d)) = (cells.get(target).and_then(Cell::tps), direct) {
                let pct = t / d * 100.0;
                let _ = writeln!(
                    s,
                    r#"<rect x="{LABEL_W}" y="{by}" width="{:.1}" height="{}" fill="{color}"/><text x="{:.1}" y="{:.1}">{pct:.0}%</text>"#,
                    x(pct) - LABEL_W,
                    BAR - 2.0,
                    x(pct) + 4.0,
                    by + BAR - 4.0
                );
            }
        }
        y += bars.len() as f64 * BAR + 14.0;
    }
    let _ = writeln!(
        s,
        r#"<line x1="{0:.1}" y1="30" x2="{0:.1}" y2="{1}" stroke="black" stroke-dasharray="4 3"/><text x="{0:.1}" y="{2}">direct = 100%</text>
</svg>"#,
        x(100.0),
        y,
        y + 14.0
    );
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
