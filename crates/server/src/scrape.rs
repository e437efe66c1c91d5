//! The Prometheus endpoint, `GET /metrics`: plain HTTP and no token, so anyone who reaches
//! it can scrape, and a scrape must cost next to nothing. The operation counts (a query over
//! every operation) are read at most once per [`COUNTS_MAX_AGE`] however many ask, one
//! query at a time; scrapes beyond a small rate are answered 429 at once.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::warn;

use crate::metrics::{Metrics, Prometheus};
use capf_store::Store;

/// How old the operation counts of a scrape may be. Prometheus scrapes every 15 s or more.
pub const COUNTS_MAX_AGE: Duration = Duration::from_secs(10);
/// Longest a scrape waits for the count; past it the process figures are served alone.
const COUNT_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served per second, sustained, whoever asks: a few monitoring systems need far
/// less; a flood gets 429 without a query or a render.
const SCRAPES_PER_SECOND: u32 = 5;
const SCRAPE_BURST: u32 = 20;

/// Operation counts by status, as rendered.
type Counts = Vec<(String, u64)>;

/// What `/metrics` serves from.
pub struct Scrape {
    prometheus: Arc<Prometheus>,
    store: Arc<dyn Store>,
    max_age: Duration,
    /// The last counts and when they were read. The lock is held across the query, so
    /// concurrent scrapes of stale counts wait for one query instead of each running one.
    counts: Mutex<Option<(Instant, Counts)>>,
    limiter: DefaultDirectRateLimiter,
}

impl Scrape {
    pub fn new(prometheus: Arc<Prometheus>, store: Arc<dyn Store>) -> Scrape {
        Scrape::with_max_age(prometheus, store, COUNTS_MAX_AGE)
    }

    /// As [`Scrape::new`], with counts kept for `max_age`.
    pub fn with_max_age(
        prometheus: Arc<Prometheus>,
        store: Arc<dyn Store>,
        max_age: Duration,
    ) -> Scrape {
        let rate = NonZeroU32::new(SCRAPES_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(SCRAPE_BURST).unwrap_or(NonZeroU32::MIN);
        Scrape {
            prometheus,
            store,
            max_age,
            counts: Mutex::new(None),
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    pub fn router(self: Arc<Scrape>) -> Router {
        Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .with_state(self)
    }

    /// The operation counts, read anew only when older than the maximum age. A failed read
    /// is remembered as "no counts" for as long, so a database outage costs one query per
    /// period, not one per scrape.
    async fn counts(&self) -> Counts {
        let mut cached = self.counts.lock().await;
        if let Some((read_at, counts)) = cached.as_ref() {
            if read_at.elapsed() < self.max_age {
                return counts.clone();
            }
        }
        let counts = match tokio::time::timeout(COUNT_TIMEOUT, self.store.operation_counts()).await
        {
            Ok(Ok(counts)) => counts
                .into_iter()
                .map(|(status, n)| (status.as_str().to_string(), n))
                .collect(),
            Ok(Err(e)) => {
                self.prometheus.database_error();
                warn!(error = %e, "metrics: could not count operations");
                Vec::new()
            }
            Err(_) => {
                self.prometheus.database_error();
                warn!("metrics: counting operations timed out");
                Vec::new()
            }
        };
        *cached = Some((Instant::now(), counts.clone()));
        counts
    }
}

async fn metrics(State(scrape): State<Arc<Scrape>>) -> Response {
    if scrape.limiter.check().is_err() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "too many scrapes\n",
        )
            .into_response();
    }
    let counts = scrape.counts().await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        scrape.prometheus.render(&counts),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use capf_model::device::DeviceName;
    use capf_model::keyspec::KeySpec;
    use capf_model::operation::{AuthMode, OperationKind};
    use capf_store::{DatabaseUrl, NewOperation};
    use tower::ServiceExt;

    async fn store_with_operations(dir: &std::path::Path, n: u32) -> Arc<dyn Store> {
        let store = capf_store::open(&DatabaseUrl::sqlite_file(&dir.join("capf.db")))
            .await
            .unwrap();
        for i in 0..n {
            schedule(store.as_ref(), i).await;
        }
        store
    }

    async fn schedule(store: &dyn Store, i: u32) {
        let now = chrono::Utc::now();
        store
            .schedule(
                NewOperation {
                    device_name: DeviceName::from_admin(&format!("SEP{i:012X}")).unwrap(),
                    kind: OperationKind::Install,
                    auth_mode: AuthMode::Null,
                    auth_string: None,
                    key: KeySpec::Rsa(2048),
                    completes_by: now + chrono::TimeDelta::days(1),
                },
                now,
            )
            .await
            .unwrap();
    }

    async fn get(router: &Router) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn pending(text: &str) -> String {
        text.lines()
            .find(|l| l.starts_with("capf_operations{") && l.contains("\"pending\""))
            .unwrap_or("none")
            .to_string()
    }

    #[tokio::test]
    async fn counts_are_read_once_per_period_not_per_scrape() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_operations(dir.path(), 1).await;
        let prometheus = Arc::new(Prometheus::new());
        let kept = Arc::new(Scrape::with_max_age(
            Arc::clone(&prometheus),
            Arc::clone(&store),
            Duration::from_secs(3600),
        ))
        .router();
        let fresh = Arc::new(Scrape::with_max_age(
            prometheus,
            Arc::clone(&store),
            Duration::ZERO,
        ))
        .router();
        let (status, first) = get(&kept).await;
        assert_eq!(status, StatusCode::OK);
        assert!(pending(&first).ends_with(" 1"), "{first}");

        schedule(store.as_ref(), 99).await;
        // Within the period the count is not read again...
        assert_eq!(pending(&get(&kept).await.1), pending(&first));
        // ... where counts of age zero are.
        assert!(pending(&get(&fresh).await.1).ends_with(" 2"));
    }

    #[tokio::test]
    async fn a_flood_of_scrapes_gets_429_beyond_the_burst() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_operations(dir.path(), 0).await;
        let router = Arc::new(Scrape::new(Arc::new(Prometheus::new()), store)).router();
        let mut statuses = Vec::new();
        for _ in 0..(SCRAPE_BURST + 10) {
            statuses.push(get(&router).await.0);
        }
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count();
        // The burst, plus what the rate refilled while the loop ran.
        assert!(ok >= SCRAPE_BURST as usize, "{statuses:?}");
        assert!(refused >= 5, "{statuses:?}");
    }
}
