//! File descriptors: every phone session and every HTTP client holds one. At start the soft
//! open-file limit is raised to the hard one, and the HTTP listeners are given caps that fit
//! in a share of it, so that however many HTTP clients connect, the descriptors the CAPF
//! listener needs stay free.

/// Descriptors kept for everything that is neither a CAPF session nor an HTTP client: the
/// listeners, the database pool, log and key files, the blocking pool's reads.
pub const RESERVED: u64 = 64;
/// At most this fraction (1/N) of the descriptors left after [`RESERVED`] goes to HTTP.
const HTTP_SHARE_DIVISOR: u64 = 4;

/// How the descriptors are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdPlan {
    /// The open-file limit in force.
    pub limit: u64,
    /// Connection cap of the API listener.
    pub api: usize,
    /// Connection cap of the metrics listener (when there is one).
    pub metrics: usize,
    /// What the operator should know: caps lowered, sessions that cannot all be open.
    pub warnings: Vec<String>,
}

/// Raises the soft RLIMIT_NOFILE as far as the hard limit allows; returns the limit in
/// force (the current one when it cannot be read or raised).
pub fn raise_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024),
    }
}

/// Shares `limit` descriptors between `max_sessions` CAPF sessions and the HTTP listeners'
/// caps (`metrics` is `None` without a metrics listener).
pub fn plan(limit: u64, max_sessions: usize, api: usize, metrics: Option<usize>) -> FdPlan {
    let mut warnings = Vec::new();
    let usable = limit.saturating_sub(RESERVED);
    let share = (usable / HTTP_SHARE_DIVISOR).max(2);
    let wanted_metrics = metrics.unwrap_or(0) as u64;
    let wanted = api as u64 + wanted_metrics;
    let (api_cap, metrics_cap) = if wanted <= share {
        (api as u64, wanted_metrics)
    } else {
        // Scaled down together, each keeping at least one connection.
        let metrics_cap = if metrics.is_some() {
            (wanted_metrics * share / wanted).max(1)
        } else {
            0
        };
        let api_cap = share.saturating_sub(metrics_cap).max(1);
        warnings.push(format!(
            "the open-file limit is {limit}: HTTP connections capped at {api_cap} (API) and \
             {metrics_cap} (metrics) instead of {api} and {wanted_metrics}, so that they \
             cannot use the descriptors phone sessions need"
        ));
        (api_cap, metrics_cap)
    };
    let room = usable.saturating_sub(api_cap + metrics_cap);
    if (max_sessions as u64) > room {
        warnings.push(format!(
            "the open-file limit is {limit}: at most about {room} phone sessions can be open \
             at once, fewer than --max-sessions {max_sessions}; raise the limit (ulimit -n, \
             systemd LimitNOFILE=)"
        ));
    }
    FdPlan {
        limit,
        api: api_cap as usize,
        metrics: metrics_cap as usize,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generous_limit_keeps_the_caps() {
        let plan = plan(1 << 20, 20_000, 256, Some(16));
        assert_eq!((plan.api, plan.metrics), (256, 16));
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    }

    #[test]
    fn a_small_limit_lowers_the_http_caps_to_a_quarter() {
        // 200 - 64 = 136 usable; HTTP gets 34 of them, phone sessions the other 102.
        let plan = plan(200, 100, 256, Some(16));
        assert_eq!(plan.api + plan.metrics, 34);
        assert_eq!(plan.metrics, 2);
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("HTTP connections capped at 32 (API)"));
    }

    #[test]
    fn too_many_sessions_for_the_limit_are_reported() {
        let plan = plan(1024, 20_000, 256, None);
        assert_eq!((plan.api, plan.metrics), (240, 0));
        assert!(plan
            .warnings
            .iter()
            .any(|w| w.contains("at most about 720 phone sessions")));
    }

    #[test]
    fn a_limit_below_the_reserve_still_gives_every_listener_a_connection() {
        let plan = plan(10, 1, 256, Some(16));
        assert!(plan.api >= 1 && plan.metrics >= 1);
    }

    #[test]
    fn raising_returns_a_usable_limit() {
        assert!(raise_limit() >= 64);
    }
}
