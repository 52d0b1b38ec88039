//! Approval counters for `/metrics`: tickets by outcome, and how long held
//! statements waited for their decision.

use super::model::TicketState;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Wait histogram bounds, in seconds.
const WAIT_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
];

/// Outcomes counted, in `TicketState` order after `Pending`.
const OUTCOMES: [(TicketState, &str); 5] = [
    (TicketState::Approved, "approved"),
    (TicketState::Used, "used"),
    (TicketState::Denied, "denied"),
    (TicketState::Expired, "expired"),
    (TicketState::Withdrawn, "withdrawn"),
];

/// Approval counters.
#[derive(Debug, Default)]
pub struct ApprovalMetrics {
    held: AtomicU64,
    outcomes: [AtomicU64; OUTCOMES.len()],
    wait_buckets: [AtomicU64; WAIT_BUCKETS.len()],
    wait_count: AtomicU64,
    wait_sum_ms: AtomicU64,
}

impl ApprovalMetrics {
    /// A ticket was made for a statement (held, or refused in ticket mode).
    pub fn ticket_made(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// A ticket's statement ran or ended in `state` after `waited` (zero
    /// for statements that did not wait: break-glass, grants, ticket mode).
    pub fn ended(&self, state: TicketState, waited: Duration) {
        if let Some(i) = OUTCOMES.iter().position(|(s, _)| *s == state) {
            self.outcomes[i].fetch_add(1, Ordering::Relaxed);
        }
        if waited.is_zero() {
            return;
        }
        let seconds = waited.as_secs_f64();
        for (i, bound) in WAIT_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.wait_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.wait_count.fetch_add(1, Ordering::Relaxed);
        self.wait_sum_ms.fetch_add(
            u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Appends the Prometheus text form.
    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP pgward_approval_tickets_total Approval tickets made for statements.\n# TYPE pgward_approval_tickets_total counter\npgward_approval_tickets_total {}",
            load(&self.held)
        );
        let _ = writeln!(
            out,
            "# HELP pgward_approval_outcomes_total Statements needing approval, by outcome.\n# TYPE pgward_approval_outcomes_total counter"
        );
        for (i, (_, name)) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "pgward_approval_outcomes_total{{outcome=\"{name}\"}} {}",
                load(&self.outcomes[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP pgward_approval_wait_seconds How long held statements waited for their end.\n# TYPE pgward_approval_wait_seconds histogram"
        );
        for (i, bound) in WAIT_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "pgward_approval_wait_seconds_bucket{{le=\"{bound}\"}} {}",
                load(&self.wait_buckets[i])
            );
        }
        let count = load(&self.wait_count);
        let _ = writeln!(
            out,
            "pgward_approval_wait_seconds_bucket{{le=\"+Inf\"}} {count}\npgward_approval_wait_seconds_sum {}\npgward_approval_wait_seconds_count {count}",
            load(&self.wait_sum_ms) as f64 / 1e3
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_waits_are_counted() {
        let m = ApprovalMetrics::default();
        m.ticket_made();
        m.ended(TicketState::Approved, Duration::from_secs(3));
        m.ended(TicketState::Denied, Duration::from_millis(500));
        m.ended(TicketState::Used, Duration::ZERO);
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "pgward_approval_tickets_total 1",
            "pgward_approval_outcomes_total{outcome=\"approved\"} 1",
            "pgward_approval_outcomes_total{outcome=\"denied\"} 1",
            "pgward_approval_outcomes_total{outcome=\"used\"} 1",
            "pgward_approval_outcomes_total{outcome=\"expired\"} 0",
            "pgward_approval_wait_seconds_bucket{le=\"1\"} 1",
            "pgward_approval_wait_seconds_bucket{le=\"5\"} 2",
            "pgward_approval_wait_seconds_bucket{le=\"+Inf\"} 2",
            "pgward_approval_wait_seconds_sum 3.5",
            "pgward_approval_wait_seconds_count 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
    }
}
