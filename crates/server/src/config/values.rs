//! Types of resolved settings, and the groups the rest of the server takes them in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{LiveSettings, Settings};
use crate::http::HttpLimits;
use capf_pki::ca::identity::{IdentityOptions, SubjectFields};
use capf_store::LockoutPolicy;

/// A setting counted in whole days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days(pub u32);

impl Days {
    pub fn duration(self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where phones that need TLS 1.0/1.1 or RSA key exchange are served (OpenSSL). Both off
/// by default; either needs a build with the `legacy-tls` feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegacyTls {
    /// On the main listener, chosen by the ClientHello.
    pub on_listen: bool,
    /// On a listener of its own, for every client.
    pub listen: Option<SocketAddr>,
}

impl LegacyTls {
    pub fn enabled(&self) -> bool {
        self.on_listen || self.listen.is_some()
    }
}

/// Deadlines and caps of the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub frame_timeout: Duration,
    pub keygen_timeout: Duration,
    pub session_timeout: Duration,
    pub max_sessions: usize,
    /// How long sessions in flight may take to finish after SIGTERM.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(15),
            frame_timeout: Duration::from_secs(30),
            // CUCM's defaults: 30 minutes for a phone to generate its key...
            keygen_timeout: Duration::from_secs(1800),
            // ... and room for the rest of the session around it.
            session_timeout: Duration::from_secs(2400),
            max_sessions: 20_000,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Flood control of new connections (see `server::gate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// New connections per second per source address, sustained.
    pub rate_per_second: u32,
    /// Connections a source address may open at once above the rate.
    pub burst: u32,
    /// Concurrent sessions per source address.
    pub max_per_address: usize,
}

impl Default for GateLimits {
    /// Generous enough for a building of phones behind one NAT address rebooting at once.
    fn default() -> Self {
        GateLimits {
            rate_per_second: 50,
            burst: 500,
            max_per_address: 2000,
        }
    }
}

impl Settings {
    pub fn legacy(&self) -> LegacyTls {
        LegacyTls {
            on_listen: self.legacy_tls,
            listen: self.legacy_tls_listen,
        }
    }

    /// Certificate chain and key of the API's TLS, when not the CAPF identity.
    pub fn api_tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        self.api_cert.clone().zip(self.api_key.clone())
    }

    /// Certificate and key of a separate LSC issuer.
    pub fn issuer(&self) -> Option<(PathBuf, PathBuf)> {
        self.issuer_cert.clone().zip(self.issuer_key.clone())
    }

    /// Limits of an HTTP listener whose connection cap is `max_connections` (the API's or
    /// the metrics endpoint's, after `fds::plan` fitted them to the open-file limit).
    pub fn http_limits(&self, max_connections: usize) -> HttpLimits {
        HttpLimits {
            max_connections,
            header_timeout: self.http_header_timeout,
            stall_timeout: self.http_stall_timeout,
        }
    }

    /// How a CAPF identity is created when there is none.
    pub fn identity(&self) -> IdentityOptions {
        IdentityOptions {
            key: self.capf_key,
            subject: SubjectFields {
                organization: self.subject_o.clone(),
                organizational_unit: self.subject_ou.clone(),
                locality: self.subject_l.clone(),
                state: self.subject_st.clone(),
                country: self.subject_c.clone(),
            },
            validity_days: self.capf_validity_days,
        }
    }
}

impl LiveSettings {
    /// Deadlines of new sessions, the global session cap and the drain deadline.
    pub fn limits(&self) -> Limits {
        Limits {
            handshake_timeout: self.handshake_timeout,
            frame_timeout: self.frame_timeout,
            keygen_timeout: self.keygen_timeout,
            session_timeout: self.session_timeout,
            max_sessions: self.max_sessions,
            drain_timeout: self.drain_timeout,
        }
    }

    /// Flood control of new connections.
    pub fn gate(&self) -> GateLimits {
        GateLimits {
            rate_per_second: self.conn_rate,
            burst: self.conn_burst,
            max_per_address: self.max_sessions_per_address,
        }
    }

    pub fn lockout(&self) -> LockoutPolicy {
        LockoutPolicy {
            max_failures: self.lockout_failures,
            lock_duration: self.lockout_seconds,
        }
    }

    /// How long past their expiry MIC and SUDI chains are still accepted.
    pub fn mic_expiry_allowance(&self) -> chrono::Duration {
        self.mic_expiry_allowance_days.duration()
    }

    /// `completes_by` of an operation scheduled without one: now + this.
    pub fn operation_window(&self) -> chrono::Duration {
        self.operation_window_days.duration()
    }
}
