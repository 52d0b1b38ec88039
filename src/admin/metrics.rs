//! Metrics: counters the sessions bump (through a phase that is last in
//! every session when the admin listener is on) and their Prometheus text
//! form (docs/metrics.md lists them).

use crate::gateway::Gateway;
use crate::session::phases::{Outcome, Phase, Refused, RequestKind};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Latency histogram bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions that reached the relay.
    pub sessions_total: AtomicU64,
    /// Statements that ran (per Query statement, per Execute).
    pub statements_allowed: AtomicU64,
    /// Statements that failed on the server.
    pub statements_failed: AtomicU64,
    /// Bytes sent to clients (counted at each request's end).
    pub bytes_to_clients: AtomicU64,
    /// Failed logins to upstreams.
    pub backend_connect_failures: AtomicU64,
    /// Reloads accepted.
    pub reloads: AtomicU64,
    /// Reloads rejected.
    pub reload_failures: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Refusals by (SQLSTATE, rule, phase).
    refusals: Mutex<BTreeMap<(String, String, String), u64>>,
    /// Approval tickets and waits.
    pub approvals: crate::approvals::metrics::ApprovalMetrics,
}

impl Metrics {
    fn observe(&self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Refusals so far, all kinds together.
    pub fn refusal_count(&self) -> u64 {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    fn refused(&self, sqlstate: &str, rule: &str, by: &str) {
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry((sqlstate.into(), rule.into(), by.into()))
            .or_default() += 1;
    }
}

/// Counts one session's statements into the shared metrics.
pub(crate) struct MetricsPhase {
    metrics: Arc<Metrics>,
    last_bytes: u64,
    /// Refused requests whose stand-in's error is still to come (not to be
    /// counted again as a failure).
    refused: std::collections::VecDeque<u64>,
}

impl MetricsPhase {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        metrics.sessions_total.fetch_add(1, Ordering::Relaxed);
        Self {
            metrics,
            last_bytes: 0,
            refused: std::collections::VecDeque::new(),
        }
    }
}

impl Phase for MetricsPhase {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn wants_outcomes(&self) -> bool {
        true
    }

    fn on_outcome(&mut self, o: &Outcome<'_>) {
        let m = &self.metrics;
        m.bytes_to_clients.fetch_add(
            o.bytes_to_client.saturating_sub(self.last_bytes),
            Ordering::Relaxed,
        );
        self.last_bytes = self.last_bytes.max(o.bytes_to_client);
        // Refusals whose stand-in was skipped have no outcome: let them go.
        while self.refused.front().is_some_and(|id| *id < o.request_id) {
            self.refused.pop_front();
        }
        if self.refused.front() == Some(&o.request_id) {
            self.refused.pop_front();
            return;
        }
        if !matches!(o.kind, RequestKind::Query | RequestKind::Execute) {
            return;
        }
        // A refused request's stand-in error is counted by `on_refused`.
        if o.sqlstate.is_some() {
            m.statements_failed.fetch_add(1, Ordering::Relaxed);
        } else {
            m.statements_allowed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(d) = o.duration {
            m.observe(d.as_secs_f64());
        }
    }

    fn on_refused(&mut self, r: &Refused<'_>) {
        let rule = crate::record::phase::rule_in(&r.refusal.message).unwrap_or_default();
        self.metrics.refused(r.refusal.code.as_str(), &rule, r.by);
        if self.refused.len() < 4096 {
            self.refused.push_back(r.request_id);
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// A label value, escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of everything pgward counts.
pub fn render(gw: &Gateway) -> String {
    let m = &gw.metrics;
    let mut out = String::new();
    let sessions = gw.registry.list();
    gauge(
        &mut out,
        "pgward_sessions",
        "Sessions open now.",
        sessions.len() as u64,
    );
    let mut by_group: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &sessions {
        if s.groups.is_empty() {
            *by_group.entry("").or_default() += 1;
        }
        for g in &s.groups {
            *by_group.entry(g).or_default() += 1;
        }
    }
    let _ = writeln!(
        out,
        "# HELP pgward_sessions_by_group Sessions open now, by identity group (\"\" for none).\n# TYPE pgward_sessions_by_group gauge"
    );
    for (g, n) in by_group {
        let _ = writeln!(
            out,
            "pgward_sessions_by_group{{group=\"{}\"}} {n}",
            label(g)
        );
    }
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter(
        &mut out,
        "pgward_sessions_total",
        "Sessions that reached the relay.",
        load(&m.sessions_total),
    );
    let _ = writeln!(
        out,
        "# HELP pgward_statements_total Statements by decision and result.\n# TYPE pgward_statements_total counter\npgward_statements_total{{decision=\"allowed\",result=\"ok\"}} {}\npgward_statements_total{{decision=\"allowed\",result=\"error\"}} {}",
        load(&m.statements_allowed),
        load(&m.statements_failed)
    );
    let refusals = m.refusals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let _ = writeln!(
        out,
        "# HELP pgward_refusals_total Requests pgward refused, by SQLSTATE, rule and phase.\n# TYPE pgward_refusals_total counter"
    );
    for ((code, rule, by), n) in &refusals {
        let _ = writeln!(
            out,
            "pgward_refusals_total{{sqlstate=\"{}\",rule=\"{}\",phase=\"{}\"}} {n}",
            label(code),
            label(rule),
            label(by)
        );
    }
    let _ = writeln!(
        out,
        "# HELP pgward_statement_duration_seconds Statement latency seen in the proxy, from sending it to its end.\n# TYPE pgward_statement_duration_seconds histogram"
    );
    for (i, bound) in BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "pgward_statement_duration_seconds_bucket{{le=\"{bound}\"}} {}",
            load(&m.latency_buckets[i])
        );
    }
    let count = load(&m.latency_count);
    let _ = writeln!(
        out,
        "pgward_statement_duration_seconds_bucket{{le=\"+Inf\"}} {count}\npgward_statement_duration_seconds_sum {}\npgward_statement_duration_seconds_count {count}",
        load(&m.latency_sum_us) as f64 / 1e6
    );
    m.approvals.render(&mut out);
    counter(
        &mut out,
        "pgward_client_bytes_sent_total",
        "Bytes sent to clients.",
        load(&m.bytes_to_clients),
    );
    counter(
        &mut out,
        "pgward_backend_connect_failures_total",
        "Failed logins to upstreams.",
        load(&m.backend_connect_failures),
    );
    counter(
        &mut out,
        "pgward_reloads_total",
        "Accepted reloads.",
        load(&m.reloads),
    );
    counter(
        &mut out,
        "pgward_reload_failures_total",
        "Rejected reloads.",
        load(&m.reload_failures),
    );
    gauge(
        &mut out,
        "pgward_rules_version",
        "The rule-set version in force.",
        gw.rules_version(),
    );
    if let Some(audit) = &gw.audit {
        let s = audit.stats();
        gauge(
            &mut out,
            "pgward_audit_queue_depth",
            "Audit records queued or reserved.",
            s.queue_depth as u64,
        );
        counter(
            &mut out,
            "pgward_audit_records_dropped_total",
            "Audit records dropped (queue full, shed).",
            s.dropped,
        );
        counter(
            &mut out,
            "pgward_audit_records_written_total",
            "Audit records written.",
            s.written,
        );
        counter(
            &mut out,
            "pgward_audit_write_errors_total",
            "Failed audit writes.",
            s.write_errors,
        );
    }
    out
}
