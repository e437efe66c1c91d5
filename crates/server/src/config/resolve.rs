//! From what was given (flags, environment, file) to checked [`Settings`], defaults filled
//! in. Called at start and on every SIGHUP: an error refuses the start or the reload whole.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    file, ConfigError, Days, GateLimits, Limits, LiveSettings, LogFormat, ServeArgs, Settings,
    MIN_CLAIM_LEASE_SECS,
};
use capf_model::keyspec::{KeySpec, KeySpecParseError};
use capf_pki::ca::identity::CapfKeyAlgorithm;
use capf_pki::ca::lsc::MAX_LSC_VALIDITY_DAYS;
use capf_store::{DatabaseUrl, LockoutPolicy};

impl Settings {
    pub fn resolve(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => file::read(path)?,
            None => ServeArgs::default(),
        };
        let given = args.clone().over(file);

        let data_dir = given.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
        let certs_dir = given.certs_dir.unwrap_or_else(|| PathBuf::from("./certs"));
        let database_url = match given.database_url {
            Some(url) => DatabaseUrl::new(url.0).map_err(|e| ConfigError::Invalid {
                name: "database_url",
                message: e.to_string(),
            })?,
            None => DatabaseUrl::sqlite_file(&data_dir.join("capf.db")),
        };
        let capf_key = match given.capf_key {
            Some(k) => k
                .parse::<CapfKeyAlgorithm>()
                .map_err(|e| ConfigError::Invalid {
                    name: "capf_key",
                    message: e.to_string(),
                })?,
            None => CapfKeyAlgorithm::default(),
        };
        let capf_validity_days = given.capf_validity_days.unwrap_or(1825);
        if capf_validity_days == 0 {
            return Err(ConfigError::Invalid {
                name: "capf_validity_days",
                message: "must be at least 1".into(),
            });
        }
        let lsc_validity_days = given.lsc_validity_days.unwrap_or(MAX_LSC_VALIDITY_DAYS);
        if !(1..=MAX_LSC_VALIDITY_DAYS).contains(&lsc_validity_days) {
            return Err(ConfigError::Invalid {
                name: "lsc_validity_days",
                message: format!("must be between 1 and {MAX_LSC_VALIDITY_DAYS}"),
            });
        }
        let default_key = match given.default_key {
            Some(k) => k
                .parse()
                .map_err(|e: KeySpecParseError| ConfigError::Invalid {
                    name: "default_key",
                    message: e.to_string(),
                })?,
            None => KeySpec::Rsa(2048),
        };
        let (issuer_cert, issuer_key) = pair(
            given.issuer_cert,
            given.issuer_key,
            "issuer_cert",
            "issuer_cert and issuer_key go together",
        )?;
        let limit_defaults = Limits::default();
        let handshake_timeout = secs(
            given.handshake_timeout,
            "handshake_timeout",
            limit_defaults.handshake_timeout,
        )?;
        let frame_timeout = secs(
            given.frame_timeout,
            "frame_timeout",
            limit_defaults.frame_timeout,
        )?;
        let keygen_timeout = secs(
            given.keygen_timeout,
            "keygen_timeout",
            limit_defaults.keygen_timeout,
        )?;
        let session_timeout = secs(
            given.session_timeout,
            "session_timeout",
            limit_defaults.session_timeout,
        )?;
        let drain_timeout = secs(
            given.drain_timeout,
            "drain_timeout",
            limit_defaults.drain_timeout,
        )?;
        let lockout_defaults = LockoutPolicy::default();
        let lockout_seconds = secs(
            given.lockout_seconds,
            "lockout_seconds",
            lockout_defaults.lock_duration,
        )?;
        let (api_cert, api_key) = pair(
            given.api_cert,
            given.api_key,
            "api_cert",
            "api_cert and api_key go together",
        )?;
        let operation_window_days = given.operation_window_days.unwrap_or(7);
        if !(1..=3650).contains(&operation_window_days) {
            return Err(ConfigError::Invalid {
                name: "operation_window_days",
                message: "must be between 1 and 3650".into(),
            });
        }
        let keygen_max_attempts = given.keygen_max_attempts.unwrap_or(3);
        if keygen_max_attempts == 0 {
            return Err(ConfigError::Invalid {
                name: "keygen_max_attempts",
                message: "must be at least 1".into(),
            });
        }
        let claim_lease = given.claim_lease.unwrap_or(90);
        if claim_lease < MIN_CLAIM_LEASE_SECS {
            // Renewed every third: shorter would renew more often than every second.
            return Err(ConfigError::Invalid {
                name: "claim_lease",
                message: format!("must be at least {MIN_CLAIM_LEASE_SECS} seconds"),
            });
        }
        let log_format = match given.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "log_format",
                    message: format!("{other:?}: expected text or json"),
                })
            }
        };
        let log_filter = match given.log_filter {
            Some(f) if !f.trim().is_empty() => f,
            _ => "info".to_string(),
        };
        // Checked here, so a filter that does not parse refuses the start or the reload
        // rather than silently logging something else.
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            return Err(ConfigError::Invalid {
                name: "log_filter",
                message: e.to_string(),
            });
        }
        let listen = given
            .listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 3804)));
        let legacy_tls = given.legacy_tls.unwrap_or(false);
        let legacy_tls_listen = given.legacy_tls_listen;
        if (legacy_tls || legacy_tls_listen.is_some()) && !cfg!(feature = "legacy-tls") {
            // Refused rather than ignored: an operator who asked for it must not believe the
            // old phones are served.
            return Err(ConfigError::Invalid {
                name: "legacy_tls",
                message: "this capf was built without the legacy-tls feature \
                          (cargo build --release --features legacy-tls)"
                    .into(),
            });
        }
        if legacy_tls_listen == Some(listen) && listen.port() != 0 {
            return Err(ConfigError::Invalid {
                name: "legacy_tls_listen",
                message: "must differ from listen (use legacy_tls to serve both on one port)"
                    .into(),
            });
        }
        let sweep_interval = secs(
            given.sweep_interval,
            "sweep_interval",
            Duration::from_secs(30),
        )?;
        let gate_defaults = GateLimits::default();
        // Caps and rates of zero would refuse everything: refused, never taken as one.
        let max_sessions = at_least_one(
            given.max_sessions,
            "max_sessions",
            limit_defaults.max_sessions,
        )?;
        let conn_rate = at_least_one(given.conn_rate, "conn_rate", gate_defaults.rate_per_second)?;
        let conn_burst = at_least_one(given.conn_burst, "conn_burst", gate_defaults.burst)?;
        let max_sessions_per_address = at_least_one(
            given.max_sessions_per_address,
            "max_sessions_per_address",
            gate_defaults.max_per_address,
        )?;
        let lockout_failures = at_least_one(
            given.lockout_failures,
            "lockout_failures",
            lockout_defaults.max_failures,
        )?;
        let api_max_connections =
            at_least_one(given.api_max_connections, "api_max_connections", 256)?;
        let metrics_max_connections =
            at_least_one(given.metrics_max_connections, "metrics_max_connections", 16)?;
        let http_header_timeout = secs(
            given.http_header_timeout,
            "http_header_timeout",
            Duration::from_secs(10),
        )?;
        let http_stall_timeout = secs(
            given.http_stall_timeout,
            "http_stall_timeout",
            Duration::from_secs(30),
        )?;
        Ok(Settings {
            listen,
            legacy_tls,
            legacy_tls_listen,
            api_listen: given
                .api_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3805))),
            metrics_listen: given.metrics_listen,
            api_max_connections,
            metrics_max_connections,
            http_header_timeout,
            http_stall_timeout,
            api_tls: given.api_tls.unwrap_or(false),
            api_cert,
            api_key,
            sweep_interval,
            claim_lease: Duration::from_secs(claim_lease),
            data_dir,
            certs_dir,
            database_url,
            capf_key,
            capf_validity_days,
            subject_o: given.subject_o,
            subject_ou: given.subject_ou,
            subject_l: given.subject_l,
            subject_st: given.subject_st,
            subject_c: given.subject_c,
            issuer_cert,
            issuer_key,
            node_id: given.node_id.unwrap_or_else(default_node_id),
            log_format,
            live: LiveSettings {
                operation_window_days: Days(operation_window_days),
                keygen_max_attempts,
                lsc_validity_days,
                default_key,
                handshake_timeout,
                frame_timeout,
                keygen_timeout,
                session_timeout,
                drain_timeout,
                max_sessions,
                conn_rate,
                conn_burst,
                max_sessions_per_address,
                mic_expiry_allowance_days: Days(given.mic_expiry_allowance_days.unwrap_or(0)),
                lockout_failures,
                lockout_seconds,
                log_filter,
            },
        })
    }
}

/// A duration in whole seconds, `default` when not given; zero is refused.
fn secs(
    given: Option<u64>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match given {
        None => Ok(default),
        Some(0) => Err(ConfigError::Invalid {
            name,
            message: "must be at least 1 second".into(),
        }),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// A count or rate, `default` when not given; zero is refused (it would refuse everything).
fn at_least_one<T: Copy + PartialEq + From<u8>>(
    given: Option<T>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match given {
        None => Ok(default),
        Some(n) if n == T::from(0) => Err(ConfigError::Invalid {
            name,
            message: "must be at least 1".into(),
        }),
        Some(n) => Ok(n),
    }
}

/// A certificate and its key: both or neither, else `name` is invalid with `message`.
fn pair(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    name: &'static str,
    message: &str,
) -> Result<(Option<PathBuf>, Option<PathBuf>), ConfigError> {
    if cert.is_some() != key.is_some() {
        return Err(ConfigError::Invalid {
            name,
            message: message.into(),
        });
    }
    Ok((cert, key))
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "capf".into());
    format!("{host}-{}", std::process::id())
}
