//! Collects session outcomes and turns them into the figures a benchmark reports:
//! throughput, latency percentiles, failures by kind.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::outcome::{Failure, Outcome};

/// Latency distribution, in milliseconds. Percentiles are nearest-rank: p99 is a latency
/// some session actually had, never an interpolation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// The distribution of `samples` (sorted in place); `None` when there are none.
pub(super) fn percentiles(samples: &mut [Duration]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let n = samples.len();
    let rank = |p: f64| -> f64 {
        // Nearest rank: the smallest sample with at least p% of the samples at or below it.
        let index = ((p / 100.0) * n as f64).ceil() as usize;
        ms(samples[index.clamp(1, n) - 1])
    };
    let total: Duration = samples.iter().sum();
    Some(Percentiles {
        samples: n,
        p50_ms: rank(50.0),
        p95_ms: rank(95.0),
        p99_ms: rank(99.0),
        max_ms: ms(samples[n - 1]),
        mean_ms: round3(total.as_secs_f64() * 1000.0 / n as f64),
    })
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

/// Three decimals are microseconds: finer figures are noise, and they clutter the JSON.
pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Failures of one kind: how many, and the first one's message to start diagnosing with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureCount {
    pub kind: &'static str,
    pub count: u64,
    pub example: String,
}

/// Outcomes of a set of sessions, as they come in.
#[derive(Debug, Default)]
pub(super) struct Recorder {
    attempted: u64,
    succeeded: u64,
    server_share: Vec<Duration>,
    connect: Vec<Duration>,
    handshake: Vec<Duration>,
    start_lag: Vec<Duration>,
    failures: BTreeMap<Failure, (u64, String)>,
    tls: Option<String>,
}

impl Recorder {
    /// `start_lag`: how late the session started against an open-loop schedule.
    pub(super) fn record(&mut self, outcome: Outcome, start_lag: Option<Duration>) {
        self.attempted += 1;
        if let Some(lag) = start_lag {
            self.start_lag.push(lag);
        }
        match outcome {
            Outcome::Enrolled { timing, tls } => {
                self.succeeded += 1;
                self.server_share.push(timing.server_share());
                self.connect.push(timing.connect);
                self.handshake.push(timing.handshake);
                if self.tls.is_none() {
                    self.tls = Some(tls);
                }
            }
            Outcome::Failed {
                kind,
                detail,
                timing,
            } => {
                if let Some(t) = timing {
                    self.connect.push(t.connect);
                    self.handshake.push(t.handshake);
                }
                self.failures
                    .entry(kind)
                    .and_modify(|(count, _)| *count += 1)
                    .or_insert((1, detail));
            }
        }
    }

    pub(super) fn failed(&self) -> u64 {
        self.attempted - self.succeeded
    }

    /// The figures of a phase that took `wall` from its first session's start to its last
    /// session's end.
    pub(super) fn phase(mut self, wall: Duration) -> PhaseReport {
        let seconds = wall.as_secs_f64();
        PhaseReport {
            attempted: self.attempted,
            succeeded: self.succeeded,
            failed: self.attempted - self.succeeded,
            wall_seconds: round3(seconds),
            enrollments_per_second: if seconds > 0.0 {
                round3(self.succeeded as f64 / seconds)
            } else {
                0.0
            },
            server_share: percentiles(&mut self.server_share),
            connect: percentiles(&mut self.connect),
            handshake: percentiles(&mut self.handshake),
            start_lag: percentiles(&mut self.start_lag),
            errors: self
                .failures
                .into_iter()
                .map(|(kind, (count, example))| FailureCount {
                    kind: kind.as_str(),
                    count,
                    example,
                })
                .collect(),
            tls: self.tls,
        }
    }
}

/// The figures of one phase of a benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// From the first session's start to the last session's end.
    pub wall_seconds: f64,
    /// Successful enrollments per second of wall time.
    pub enrollments_per_second: f64,
    /// The server's share of each successful session (see the module documentation of
    /// `capf bench`): TCP connect to END_SESSION, minus the phone's own key wait.
    pub server_share: Option<Percentiles>,
    /// TCP connects (every session that completed a TLS handshake); part of the server
    /// share: a full accept backlog shows here, as SYN retransmissions of a second or more.
    pub connect: Option<Percentiles>,
    /// TLS handshakes (every session that completed one).
    pub handshake: Option<Percentiles>,
    /// With `--rate`: how late sessions started against the schedule (concurrency bound).
    pub start_lag: Option<Percentiles>,
    pub errors: Vec<FailureCount>,
    /// TLS version, suite and key exchange group of the first enrollment.
    pub tls: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::SessionTiming;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        samples.reverse();
        let p = percentiles(&mut samples).unwrap();
        assert_eq!(
            (p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(p.mean_ms, 50.5);
        let one = percentiles(&mut [Duration::from_micros(1500)]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (1.5, 1.5, 1.5));
        assert!(percentiles(&mut []).is_none());
    }

    #[test]
    fn server_share_leaves_out_the_phone_wait() {
        let mut r = Recorder::default();
        let timing = SessionTiming {
            connect: Duration::from_millis(1),
            handshake: Duration::from_millis(4),
            total: Duration::from_millis(110),
            phone_wait: Duration::from_millis(100),
        };
        r.record(
            Outcome::Enrolled {
                timing,
                tls: "TLSv1_3".into(),
            },
            None,
        );
        r.record(Outcome::failed(Failure::Tls, "first"), None);
        r.record(Outcome::failed(Failure::Tls, "second"), None);
        let phase = r.phase(Duration::from_millis(500));
        assert_eq!((phase.attempted, phase.succeeded, phase.failed), (3, 1, 2));
        assert_eq!(phase.enrollments_per_second, 2.0);
        assert_eq!(phase.server_share.unwrap().max_ms, 10.0);
        assert_eq!(phase.handshake.unwrap().max_ms, 4.0);
        assert_eq!(phase.connect.unwrap().max_ms, 1.0);
        assert!(phase.start_lag.is_none());
        assert_eq!(
            phase.errors,
            vec![FailureCount {
                kind: "tls",
                count: 2,
                example: "first".into()
            }]
        );
    }
}
