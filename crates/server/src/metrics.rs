//! What capf counts, behind a seam: the server and the service report events to a
//! [`Metrics`]; only [`Prometheus`] knows about the exporter and its text format.

use std::fmt;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Events worth counting. Every method has a do-nothing default, so a test double or
/// [`NoMetrics`] implements only what it needs.
pub trait Metrics: Send + Sync + fmt::Debug {
    /// A phone's TLS handshake succeeded and its session starts.
    fn session_started(&self) {}
    /// A session ended (see `session::Outcome::as_str`).
    fn session_ended(&self, _outcome: &str) {}
    /// A TLS handshake failed: `timeout`, `protocol` (the peer spoke no acceptable TLS) or
    /// `io` (the connection broke).
    fn handshake_failed(&self, _kind: &str) {}
    /// A connection was closed before TLS by flood control.
    fn connection_refused(&self, _reason: &str) {}
    /// A phone confirmed an installed LSC of this key type.
    fn enrolled(&self, _key: &str) {}
    /// A failed authentication locked its device.
    fn locked_out(&self) {}
    /// Checking a phone's key, signing its LSC and recording it took this long.
    fn issued(&self, _elapsed: Duration) {}
    /// A database call failed (the session or request ended without its change).
    fn database_error(&self) {}
}

/// Counts nothing: when no metrics listener is configured.
#[derive(Debug, Default)]
pub struct NoMetrics;

impl Metrics for NoMetrics {}

type Labels = Vec<(&'static str, String)>;

/// The Prometheus exporter's side of the seam.
pub struct Prometheus {
    registry: Registry,
    sessions_active: Gauge,
    sessions: Family<Labels, Counter>,
    handshake_failures: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    enrollments: Family<Labels, Counter>,
    lockouts: Counter,
    issuance_seconds: Histogram,
    database_errors: Counter,
    operations: Family<Labels, Gauge<i64, AtomicI64>>,
}

impl fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prometheus").finish_non_exhaustive()
    }
}

impl Default for Prometheus {
    fn default() -> Self {
        Self::new()
    }
}

impl Prometheus {
    pub fn new() -> Prometheus {
        let mut registry = Registry::with_prefix("capf");
        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Phone sessions past their TLS handshake and not yet ended",
            sessions_active.clone(),
        );
        let sessions = Family::<Labels, Counter>::default();
        registry.register(
            "sessions",
            "Ended phone sessions by outcome",
            sessions.clone(),
        );
        let handshake_failures = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes on the CAPF port by kind",
            handshake_failures.clone(),
        );
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed by flood control before TLS, by reason",
            refused.clone(),
        );
        let enrollments = Family::<Labels, Counter>::default();
        registry.register(
            "enrollments",
            "LSCs installed (confirmed by the phone) by key type",
            enrollments.clone(),
        );
        let lockouts = Counter::default();
        registry.register(
            "lockouts",
            "Devices locked after too many failed authentications",
            lockouts.clone(),
        );
        // 1 ms to about 4 s: signing is milliseconds, a busy database adds more.
        let issuance_seconds = Histogram::new([
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0,
        ]);
        registry.register(
            "issuance_seconds",
            "Time to check a phone's key, sign its LSC and record it",
            issuance_seconds.clone(),
        );
        let database_errors = Counter::default();
        registry.register(
            "database_errors",
            "Database calls of phone sessions that failed",
            database_errors.clone(),
        );
        let operations = Family::<Labels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "operations",
            "Certificate operations in the database by status (all nodes)",
            operations.clone(),
        );
        Prometheus {
            registry,
            sessions_active,
            sessions,
            handshake_failures,
            refused,
            enrollments,
            lockouts,
            issuance_seconds,
            database_errors,
            operations,
        }
    }

    /// The exposition text, with the operation counts (status, count) read just before.
    pub fn render(&self, operations_by_status: &[(String, u64)]) -> String {
        self.operations.clear();
        for (status, count) in operations_by_status {
            self.operations
                .get_or_create(&vec![("status", status.clone())])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

fn label(name: &'static str, value: &str) -> Labels {
    vec![(name, value.to_string())]
}

impl Metrics for Prometheus {
    fn session_started(&self) {
        self.sessions_active.inc();
    }

    fn session_ended(&self, outcome: &str) {
        self.sessions_active.dec();
        self.sessions
            .get_or_create(&label("outcome", outcome))
            .inc();
    }

    fn handshake_failed(&self, kind: &str) {
        self.handshake_failures
            .get_or_create(&label("kind", kind))
            .inc();
    }

    fn connection_refused(&self, reason: &str) {
        self.refused.get_or_create(&label("reason", reason)).inc();
    }

    fn enrolled(&self, key: &str) {
        self.enrollments.get_or_create(&label("key", key)).inc();
    }

    fn locked_out(&self) {
        self.lockouts.inc();
    }

    fn issued(&self, elapsed: Duration) {
        self.issuance_seconds.observe(elapsed.as_secs_f64());
    }

    fn database_error(&self) {
        self.database_errors.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = Prometheus::new();
        m.session_started();
        m.session_started();
        m.session_ended("installed");
        m.enrolled("rsa-2048");
        m.handshake_failed("timeout");
        m.connection_refused("rate_limited");
        m.locked_out();
        m.issued(Duration::from_millis(3));
        m.database_error();
        let text = m.render(&[("pending".into(), 7), ("success".into(), 2)]);
        for line in [
            "capf_sessions_active 1",
            "capf_sessions_total{outcome=\"installed\"} 1",
            "capf_enrollments_total{key=\"rsa-2048\"} 1",
            "capf_tls_handshake_failures_total{kind=\"timeout\"} 1",
            "capf_connections_refused_total{reason=\"rate_limited\"} 1",
            "capf_lockouts_total 1",
            "capf_issuance_seconds_count 1",
            "capf_issuance_seconds_bucket{le=\"0.005\"} 1",
            "capf_database_errors_total 1",
            "capf_operations{status=\"pending\"} 7",
            "capf_operations{status=\"success\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        // A status that disappeared is not reported from an earlier scrape.
        let text = m.render(&[("success".into(), 3)]);
        assert!(!text.contains("status=\"pending\""), "{text}");
    }
}
