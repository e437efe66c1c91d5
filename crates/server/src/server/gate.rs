//! Flood control before the TLS handshake: a per-source-address rate limit on new
//! connections (governor) and a cap on concurrent sessions per source address.
//!
//! Both live in this process's memory: they protect this node's CPU. What must hold across
//! nodes (the authentication lockout) lives in the database.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::GateLimits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RateLimited,
    TooManySessions,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::TooManySessions => "too_many_sessions_from_address",
        }
    }
}

pub struct ConnectionGate {
    /// Replaced whole when the rate or burst changes: governor's quota is fixed per limiter.
    limiter: RwLock<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    live: Mutex<HashMap<IpAddr, usize>>,
    limits: Mutex<GateLimits>,
    refused: AtomicU64,
}

impl std::fmt::Debug for ConnectionGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionGate")
            .field("limits", &self.limits())
            .field("refused", &self.refused())
            .finish()
    }
}

/// A connection let through; frees its per-address slot when dropped.
#[derive(Debug)]
pub struct Admitted {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut live = self.gate.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = live.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.ip);
            }
        }
    }
}

fn limiter(limits: GateLimits) -> Arc<DefaultKeyedRateLimiter<IpAddr>> {
    let rate = NonZeroU32::new(limits.rate_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl ConnectionGate {
    pub fn new(limits: GateLimits) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            limiter: RwLock::new(limiter(limits)),
            live: Mutex::new(HashMap::new()),
            limits: Mutex::new(limits),
            refused: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> GateLimits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies new limits to the connections that come next. A new rate or burst starts a
    /// fresh limiter, so every address begins with a full burst; connections already let
    /// through keep their per-address slots and count against the new cap.
    pub fn set_limits(&self, new: GateLimits) {
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        if (limits.rate_per_second, limits.burst) != (new.rate_per_second, new.burst) {
            *self.limiter.write().unwrap_or_else(|e| e.into_inner()) = limiter(new);
        }
        *limits = new;
    }

    fn current_limiter(&self) -> Arc<DefaultKeyedRateLimiter<IpAddr>> {
        Arc::clone(&self.limiter.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Decides on a new connection from `ip`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        if self.current_limiter().check_key(&ip).is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::RateLimited);
        }
        let max_per_address = self.limits().max_per_address.max(1);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let count = live.entry(ip).or_insert(0);
        if *count >= max_per_address {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::TooManySessions);
        }
        *count += 1;
        Ok(Admitted {
            gate: Arc::clone(self),
            ip,
        })
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Forgets addresses whose rate state is back to full; call periodically so the
    /// limiter's memory does not grow with every address ever seen.
    pub fn forget_idle(&self) {
        let limiter = self.current_limiter();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_per_address() {
        let gate = ConnectionGate::new(GateLimits {
            rate_per_second: 1,
            burst: 3,
            max_per_address: 100,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| gate.admit(a).unwrap()).collect();
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::RateLimited);
        // Another address is not affected.
        assert!(gate.admit(b).is_ok());
        assert_eq!(gate.refused(), 1);
        drop(held);
    }

    #[test]
    fn concurrent_sessions_per_address_are_capped_and_freed() {
        let gate = ConnectionGate::new(GateLimits {
            rate_per_second: 1000,
            burst: 1000,
            max_per_address: 2,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::TooManySessions);
        drop(first);
        assert!(gate.admit(a).is_ok());
    }

    #[test]
    fn new_limits_apply_to_the_next_connections() {
        let gate = ConnectionGate::new(GateLimits {
            rate_per_second: 1,
            burst: 1,
            max_per_address: 100,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let first = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::RateLimited);

        gate.set_limits(GateLimits {
            rate_per_second: 1000,
            burst: 1000,
            max_per_address: 2,
        });
        // The held connection counts against the new cap.
        let _second = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::TooManySessions);
        drop(first);
        assert!(gate.admit(a).is_ok());

        // A lower cap than the connections held refuses new ones until enough end.
        gate.set_limits(GateLimits {
            rate_per_second: 1000,
            burst: 1000,
            max_per_address: 1,
        });
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::TooManySessions);
    }
}
