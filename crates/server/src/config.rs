//! Settings of `capf serve`: command-line flags, `CAPF_*` environment variables and an
//! optional TOML file, in that order of precedence, over built-in defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::server::gate::GateLimits;
use capf_model::keyspec::KeySpec;
use capf_pki::ca::identity::{CapfKeyAlgorithm, IdentityOptions, SubjectFields};
use capf_store::{DatabaseUrl, LockoutPolicy};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// A database URL as given by a flag, the environment or the config file, not checked yet.
/// Its `Debug` masks the password (see [`capf_store::redact_url`]), so printing
/// [`ServeArgs`] or the parsed file never shows it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrlArg(pub String);

impl From<String> for DatabaseUrlArg {
    fn from(url: String) -> Self {
        DatabaseUrlArg(url)
    }
}

impl From<&str> for DatabaseUrlArg {
    fn from(url: &str) -> Self {
        DatabaseUrlArg(url.to_string())
    }
}

impl fmt::Debug for DatabaseUrlArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", capf_store::redact_url(&self.0))
    }
}

/// Flags of `capf serve`. Every one can also come from the environment or the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with settings (keys as the long flags, with '_' for '-').
    #[arg(long, env = "CAPF_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the CAPF TLS listener [default: 0.0.0.0:3804].
    #[arg(long, env = "CAPF_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Also serve legacy phones (TLS 1.0/1.1, RSA key exchange, CBC) on --listen: the
    /// ClientHello decides between rustls and OpenSSL. Weakens TLS for those phones; needs a
    /// build with the legacy-tls feature [default: false].
    #[arg(
        long,
        env = "CAPF_LEGACY_TLS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub legacy_tls: Option<bool>,
    /// Extra listener serving every client with OpenSSL, TLS 1.0 and up, RSA key exchange
    /// and CBC suites included (needs the legacy-tls build) [default: none].
    #[arg(long, env = "CAPF_LEGACY_TLS_LISTEN")]
    pub legacy_tls_listen: Option<SocketAddr>,
    /// Address of the HTTP API (health, capf.pem) [default: 127.0.0.1:3805].
    #[arg(long, env = "CAPF_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`, plain HTTP, no token)
    /// [default: off].
    #[arg(long, env = "CAPF_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the API over TLS on a loopback --api-listen too (any other address always
    /// gets TLS), with --api-cert/--api-key or else the CAPF certificate and key
    /// [default: false].
    #[arg(
        long,
        env = "CAPF_API_TLS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub api_tls: Option<bool>,
    /// TLS certificate (PEM chain) of the API; required with --api-key. Without them an
    /// API served over TLS uses the CAPF certificate and key.
    #[arg(long, env = "CAPF_API_CERT", requires = "api_key")]
    pub api_cert: Option<PathBuf>,
    /// Private key (PEM) of --api-cert.
    #[arg(long, env = "CAPF_API_KEY", requires = "api_cert")]
    pub api_key: Option<PathBuf>,
    /// Days an operation scheduled without "completes_by" stays performable [default: 7].
    #[arg(long, env = "CAPF_OPERATION_WINDOW_DAYS")]
    pub operation_window_days: Option<u32>,
    /// Key-generation attempts (phone sessions asked for a key) after which an install
    /// operation fails [default: 3].
    #[arg(long, env = "CAPF_KEYGEN_MAX_ATTEMPTS")]
    pub keygen_max_attempts: Option<u32>,
    /// Seconds between sweeps marking operations past their deadline timed out [default: 30].
    #[arg(long, env = "CAPF_SWEEP_INTERVAL")]
    pub sweep_interval: Option<u64>,
    /// Seconds a session's claim on an operation lasts unless its node renews it (every third
    /// of this). How long the operations of a node that crashed stay held before a phone's
    /// retry is served, here or on another node; at least 3 [default: 90].
    #[arg(long, env = "CAPF_CLAIM_LEASE")]
    pub claim_lease: Option<u64>,
    /// Directory of the embedded database [default: ./data].
    #[arg(long, env = "CAPF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory of the CAPF key and certificates [default: ./certs].
    #[arg(long, env = "CAPF_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://DATA_DIR/capf.db].
    // hide_env_values: `--help` would otherwise print the variable's value, password and all.
    #[arg(long, env = "CAPF_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrlArg>,
    /// Algorithm of a newly generated CAPF key: rsa-2048, rsa-3072, rsa-4096, ec-p256, ec-p384.
    #[arg(long, env = "CAPF_CAPF_KEY")]
    pub capf_key: Option<String>,
    /// Validity of a newly generated CAPF certificate, in days [default: 1825].
    #[arg(long, env = "CAPF_CAPF_VALIDITY_DAYS")]
    pub capf_validity_days: Option<u32>,
    /// Organization (O) of a newly generated CAPF certificate, copied into every LSC.
    #[arg(long, env = "CAPF_SUBJECT_O")]
    pub subject_o: Option<String>,
    /// Organizational unit (OU).
    #[arg(long, env = "CAPF_SUBJECT_OU")]
    pub subject_ou: Option<String>,
    /// Locality (L).
    #[arg(long, env = "CAPF_SUBJECT_L")]
    pub subject_l: Option<String>,
    /// State or province (ST).
    #[arg(long, env = "CAPF_SUBJECT_ST")]
    pub subject_st: Option<String>,
    /// Country (C), two letters.
    #[arg(long, env = "CAPF_SUBJECT_C")]
    pub subject_c: Option<String>,
    /// Separate CA certificate that signs LSCs (PEM); the CAPF certificate stays the TLS
    /// identity.
    #[arg(long, env = "CAPF_ISSUER_CERT", requires = "issuer_key")]
    pub issuer_cert: Option<PathBuf>,
    /// Private key of --issuer-cert (PEM, mode 0600).
    #[arg(long, env = "CAPF_ISSUER_KEY", requires = "issuer_cert")]
    pub issuer_key: Option<PathBuf>,
    /// Validity of issued LSCs in days, 1-1825 [default: 1825].
    #[arg(long, env = "CAPF_LSC_VALIDITY_DAYS")]
    pub lsc_validity_days: Option<u32>,
    /// Key scheduled when an operation names none [default: rsa-2048].
    #[arg(long, env = "CAPF_DEFAULT_KEY")]
    pub default_key: Option<String>,
    /// Seconds allowed for the TLS handshake [default: 15].
    #[arg(long, env = "CAPF_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<u64>,
    /// Seconds allowed for each phone frame outside key generation [default: 30].
    #[arg(long, env = "CAPF_FRAME_TIMEOUT")]
    pub frame_timeout: Option<u64>,
    /// Seconds a phone may take to generate its key (CUCM's maximum time for key
    /// generation) [default: 1800].
    #[arg(long, env = "CAPF_KEYGEN_TIMEOUT")]
    pub keygen_timeout: Option<u64>,
    /// Seconds a whole session may last, key generation included [default: 2400].
    #[arg(long, env = "CAPF_SESSION_TIMEOUT")]
    pub session_timeout: Option<u64>,
    /// Seconds sessions in flight may take to finish after SIGTERM; a second SIGTERM ends
    /// them at once [default: 30].
    #[arg(long, env = "CAPF_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
    /// Most sessions served at once; further connections are closed at once [default: 20000].
    #[arg(long, env = "CAPF_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// New connections per second per source address [default: 50].
    #[arg(long, env = "CAPF_CONN_RATE")]
    pub conn_rate: Option<u32>,
    /// New connections a source address may open at once above the rate [default: 500].
    #[arg(long, env = "CAPF_CONN_BURST")]
    pub conn_burst: Option<u32>,
    /// Concurrent sessions per source address [default: 2000].
    #[arg(long, env = "CAPF_MAX_SESSIONS_PER_ADDRESS")]
    pub max_sessions_per_address: Option<usize>,
    /// Days a MIC or SUDI chain may be past its expiry and still authenticate (old
    /// manufacturing CAs) [default: 0].
    #[arg(long, env = "CAPF_MIC_EXPIRY_ALLOWANCE_DAYS")]
    pub mic_expiry_allowance_days: Option<u32>,
    /// Consecutive failed authentications that lock a device [default: 10].
    #[arg(long, env = "CAPF_LOCKOUT_FAILURES")]
    pub lockout_failures: Option<u32>,
    /// Seconds a locked device stays locked [default: 600].
    #[arg(long, env = "CAPF_LOCKOUT_SECONDS")]
    pub lockout_seconds: Option<u64>,
    /// Name of this node in claims and logs [default: host name and process id].
    #[arg(long, env = "CAPF_NODE_ID")]
    pub node_id: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "CAPF_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Which log lines to write: a level (error, warn, info, debug, trace) or tracing
    /// directives such as "info,capf::server=debug" [default: info].
    #[arg(long, env = "CAPF_LOG")]
    pub log_filter: Option<String>,
}

/// The same settings as they may appear in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    legacy_tls: Option<bool>,
    legacy_tls_listen: Option<SocketAddr>,
    api_listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    api_tls: Option<bool>,
    api_cert: Option<PathBuf>,
    api_key: Option<PathBuf>,
    operation_window_days: Option<u32>,
    keygen_max_attempts: Option<u32>,
    sweep_interval: Option<u64>,
    claim_lease: Option<u64>,
    data_dir: Option<PathBuf>,
    certs_dir: Option<PathBuf>,
    database_url: Option<DatabaseUrlArg>,
    capf_key: Option<String>,
    capf_validity_days: Option<u32>,
    subject_o: Option<String>,
    subject_ou: Option<String>,
    subject_l: Option<String>,
    subject_st: Option<String>,
    subject_c: Option<String>,
    issuer_cert: Option<PathBuf>,
    issuer_key: Option<PathBuf>,
    lsc_validity_days: Option<u32>,
    default_key: Option<String>,
    handshake_timeout: Option<u64>,
    frame_timeout: Option<u64>,
    keygen_timeout: Option<u64>,
    session_timeout: Option<u64>,
    drain_timeout: Option<u64>,
    max_sessions: Option<usize>,
    conn_rate: Option<u32>,
    conn_burst: Option<u32>,
    max_sessions_per_address: Option<usize>,
    mic_expiry_allowance_days: Option<u32>,
    lockout_failures: Option<u32>,
    lockout_seconds: Option<u64>,
    node_id: Option<String>,
    log_format: Option<String>,
    log_filter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub legacy_tls: LegacyTls,
    pub api_listen: SocketAddr,
    /// Where the Prometheus endpoint listens, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS on the API even on a loopback address (beyond loopback it always is).
    pub api_tls: bool,
    /// Certificate chain and key of the API's TLS, when not the CAPF identity.
    pub api_tls_files: Option<(PathBuf, PathBuf)>,
    /// How often operations past their deadline are marked timed out.
    pub sweep_interval: Duration,
    /// How long a claim lasts without renewal; the node renews every third of it.
    pub claim_lease: Duration,
    pub data_dir: PathBuf,
    pub certs_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub identity: IdentityOptions,
    pub issuer: Option<(PathBuf, PathBuf)>,
    pub node_id: String,
    pub log_format: LogFormat,
    /// What SIGHUP may change. These are the values at start: running code reads the
    /// current ones from [`LiveConfig`].
    pub live: LiveSettings,
}

impl Settings {
    /// Settings, named as in the config file, that differ in `new` but are read only at
    /// start (listeners, storage, identity, cluster timing). Names only: the database URL
    /// may carry a password.
    pub fn needing_restart(&self, new: &Settings) -> Vec<&'static str> {
        let (a, b) = (self, new);
        let (sa, sb) = (&a.identity.subject, &b.identity.subject);
        [
            ("listen", a.listen != b.listen),
            (
                "legacy_tls",
                a.legacy_tls.on_listen != b.legacy_tls.on_listen,
            ),
            (
                "legacy_tls_listen",
                a.legacy_tls.listen != b.legacy_tls.listen,
            ),
            ("api_listen", a.api_listen != b.api_listen),
            ("metrics_listen", a.metrics_listen != b.metrics_listen),
            ("api_tls", a.api_tls != b.api_tls),
            ("api_cert/api_key", a.api_tls_files != b.api_tls_files),
            ("sweep_interval", a.sweep_interval != b.sweep_interval),
            ("claim_lease", a.claim_lease != b.claim_lease),
            ("data_dir", a.data_dir != b.data_dir),
            ("certs_dir", a.certs_dir != b.certs_dir),
            (
                "database_url",
                a.database_url.expose() != b.database_url.expose(),
            ),
            ("capf_key", a.identity.key != b.identity.key),
            (
                "capf_validity_days",
                a.identity.validity_days != b.identity.validity_days,
            ),
            ("subject_o", sa.organization != sb.organization),
            (
                "subject_ou",
                sa.organizational_unit != sb.organizational_unit,
            ),
            ("subject_l", sa.locality != sb.locality),
            ("subject_st", sa.state != sb.state),
            ("subject_c", sa.country != sb.country),
            ("issuer_cert/issuer_key", a.issuer != b.issuer),
            ("node_id", a.node_id != b.node_id),
            ("log_format", a.log_format != b.log_format),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// The settings SIGHUP reloads. Each session (and each API request) reads them once, at its
/// start, so one session never mixes old and new values.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    /// Deadlines of new sessions, the global session cap and the drain deadline.
    pub limits: Limits,
    /// Flood control of new connections.
    pub gate: GateLimits,
    pub lockout: LockoutPolicy,
    /// How long past their expiry MIC and SUDI chains are still accepted.
    pub mic_expiry_allowance: chrono::Duration,
    pub lsc_validity_days: u32,
    /// Failed key-generation attempts after which an install operation fails.
    pub keygen_max_attempts: u32,
    /// Key scheduled when an operation names none.
    pub default_key: KeySpec,
    /// `completes_by` of an operation scheduled without one: now + this.
    pub operation_window: chrono::Duration,
    /// Tracing directives of the log filter.
    pub log_filter: String,
}

/// One live setting whose value a reload changed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: &'static str,
    pub old: String,
    pub new: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.name, self.old, self.new)
    }
}

impl LiveSettings {
    /// What differs in `new`, named as in the config file. None of these values is secret.
    pub fn changes(&self, new: &LiveSettings) -> Vec<Change> {
        let secs = |d: Duration| format!("{}s", d.as_secs());
        let days = |d: chrono::Duration| format!("{}d", d.num_days());
        let (a, b) = (self, new);
        let mut out = Vec::new();
        let mut note = |name: &'static str, old: String, new: String| {
            if old != new {
                out.push(Change { name, old, new });
            }
        };
        note(
            "handshake_timeout",
            secs(a.limits.handshake_timeout),
            secs(b.limits.handshake_timeout),
        );
        note(
            "frame_timeout",
            secs(a.limits.frame_timeout),
            secs(b.limits.frame_timeout),
        );
        note(
            "keygen_timeout",
            secs(a.limits.keygen_timeout),
            secs(b.limits.keygen_timeout),
        );
        note(
            "session_timeout",
            secs(a.limits.session_timeout),
            secs(b.limits.session_timeout),
        );
        note(
            "drain_timeout",
            secs(a.limits.drain_timeout),
            secs(b.limits.drain_timeout),
        );
        note(
            "max_sessions",
            a.limits.max_sessions.to_string(),
            b.limits.max_sessions.to_string(),
        );
        note(
            "conn_rate",
            a.gate.rate_per_second.to_string(),
            b.gate.rate_per_second.to_string(),
        );
        note(
            "conn_burst",
            a.gate.burst.to_string(),
            b.gate.burst.to_string(),
        );
        note(
            "max_sessions_per_address",
            a.gate.max_per_address.to_string(),
            b.gate.max_per_address.to_string(),
        );
        note(
            "lockout_failures",
            a.lockout.max_failures.to_string(),
            b.lockout.max_failures.to_string(),
        );
        note(
            "lockout_seconds",
            secs(a.lockout.lock_duration),
            secs(b.lockout.lock_duration),
        );
        note(
            "mic_expiry_allowance_days",
            days(a.mic_expiry_allowance),
            days(b.mic_expiry_allowance),
        );
        note(
            "lsc_validity_days",
            a.lsc_validity_days.to_string(),
            b.lsc_validity_days.to_string(),
        );
        note(
            "keygen_max_attempts",
            a.keygen_max_attempts.to_string(),
            b.keygen_max_attempts.to_string(),
        );
        note(
            "default_key",
            a.default_key.to_string(),
            b.default_key.to_string(),
        );
        note(
            "operation_window_days",
            days(a.operation_window),
            days(b.operation_window),
        );
        note("log_filter", a.log_filter.clone(), b.log_filter.clone());
        out
    }
}

/// The current [`LiveSettings`], replaced whole on SIGHUP. Readers take an `Arc` and keep
/// it for the session or request, so a reload never changes values under them.
#[derive(Debug)]
pub struct LiveConfig(RwLock<Arc<LiveSettings>>);

impl LiveConfig {
    pub fn new(settings: LiveSettings) -> LiveConfig {
        LiveConfig(RwLock::new(Arc::new(settings)))
    }

    pub fn current(&self) -> Arc<LiveSettings> {
        // A poisoned lock still holds a whole Arc: the writer only swaps it.
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Installs `settings`; returns the ones they replace.
    pub fn replace(&self, settings: LiveSettings) -> Arc<LiveSettings> {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *current, Arc::new(settings))
    }
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

/// Shortest claim lease a node may be given.
pub const MIN_CLAIM_LEASE_SECS: u64 = 3;

/// Longest LSC validity, and the default (spec 6, issue: 1-1825 days).
pub const MAX_LSC_VALIDITY_DAYS: u32 = 1825;

impl Settings {
    pub fn resolve(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        // Flags and environment (clap merges those two) win over the file.
        macro_rules! pick {
            ($field:ident) => {
                args.$field.clone().or(file.$field.clone())
            };
        }
        let defaults = Limits::default();
        let secs = |v: Option<u64>, name: &'static str, default: Duration| match v {
            None => Ok(default),
            Some(0) => Err(ConfigError::Invalid {
                name,
                message: "must be at least 1 second".into(),
            }),
            Some(s) => Ok(Duration::from_secs(s)),
        };

        let data_dir = pick!(data_dir).unwrap_or_else(|| PathBuf::from("./data"));
        let certs_dir = pick!(certs_dir).unwrap_or_else(|| PathBuf::from("./certs"));
        let database_url = match pick!(database_url) {
            Some(url) => DatabaseUrl::new(url.0).map_err(|e| ConfigError::Invalid {
                name: "database_url",
                message: e.to_string(),
            })?,
            None => DatabaseUrl::sqlite_file(&data_dir.join("capf.db")),
        };
        let key = match pick!(capf_key) {
            Some(k) => k
                .parse::<CapfKeyAlgorithm>()
                .map_err(|e| ConfigError::Invalid {
                    name: "capf_key",
                    message: e.to_string(),
                })?,
            None => CapfKeyAlgorithm::default(),
        };
        let capf_validity_days = pick!(capf_validity_days).unwrap_or(1825);
        if capf_validity_days == 0 {
            return Err(ConfigError::Invalid {
                name: "capf_validity_days",
                message: "must be at least 1".into(),
            });
        }
        let lsc_validity_days = pick!(lsc_validity_days).unwrap_or(MAX_LSC_VALIDITY_DAYS);
        if !(1..=MAX_LSC_VALIDITY_DAYS).contains(&lsc_validity_days) {
            return Err(ConfigError::Invalid {
                name: "lsc_validity_days",
                message: format!("must be between 1 and {MAX_LSC_VALIDITY_DAYS}"),
            });
        }
        let default_key = match pick!(default_key) {
            Some(k) => k
                .parse()
                .map_err(
                    |e: capf_model::keyspec::KeySpecParseError| ConfigError::Invalid {
                        name: "default_key",
                        message: e.to_string(),
                    },
                )?,
            None => KeySpec::Rsa(2048),
        };
        let issuer = match (pick!(issuer_cert), pick!(issuer_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "issuer_cert",
                    message: "issuer_cert and issuer_key go together".into(),
                })
            }
        };
        let limits = Limits {
            handshake_timeout: secs(
                pick!(handshake_timeout),
                "handshake_timeout",
                defaults.handshake_timeout,
            )?,
            frame_timeout: secs(
                pick!(frame_timeout),
                "frame_timeout",
                defaults.frame_timeout,
            )?,
            keygen_timeout: secs(
                pick!(keygen_timeout),
                "keygen_timeout",
                defaults.keygen_timeout,
            )?,
            session_timeout: secs(
                pick!(session_timeout),
                "session_timeout",
                defaults.session_timeout,
            )?,
            max_sessions: pick!(max_sessions).unwrap_or(defaults.max_sessions).max(1),
            drain_timeout: secs(
                pick!(drain_timeout),
                "drain_timeout",
                defaults.drain_timeout,
            )?,
        };
        let gate_defaults = GateLimits::default();
        let gate = GateLimits {
            rate_per_second: pick!(conn_rate)
                .unwrap_or(gate_defaults.rate_per_second)
                .max(1),
            burst: pick!(conn_burst).unwrap_or(gate_defaults.burst).max(1),
            max_per_address: pick!(max_sessions_per_address)
                .unwrap_or(gate_defaults.max_per_address)
                .max(1),
        };
        let lockout_defaults = LockoutPolicy::default();
        let lockout = LockoutPolicy {
            max_failures: pick!(lockout_failures)
                .unwrap_or(lockout_defaults.max_failures)
                .max(1),
            lock_duration: secs(
                pick!(lockout_seconds),
                "lockout_seconds",
                lockout_defaults.lock_duration,
            )?,
        };
        let api_tls_files = match (pick!(api_cert), pick!(api_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "api_cert",
                    message: "api_cert and api_key go together".into(),
                })
            }
        };
        let operation_window_days = pick!(operation_window_days).unwrap_or(7);
        if !(1..=3650).contains(&operation_window_days) {
            return Err(ConfigError::Invalid {
                name: "operation_window_days",
                message: "must be between 1 and 3650".into(),
            });
        }
        let keygen_max_attempts = pick!(keygen_max_attempts).unwrap_or(3);
        if keygen_max_attempts == 0 {
            return Err(ConfigError::Invalid {
                name: "keygen_max_attempts",
                message: "must be at least 1".into(),
            });
        }
        let claim_lease = pick!(claim_lease).unwrap_or(90);
        if claim_lease < MIN_CLAIM_LEASE_SECS {
            // Renewed every third: shorter would renew more often than every second.
            return Err(ConfigError::Invalid {
                name: "claim_lease",
                message: format!("must be at least {MIN_CLAIM_LEASE_SECS} seconds"),
            });
        }
        let log_format = match pick!(log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "log_format",
                    message: format!("{other:?}: expected text or json"),
                })
            }
        };
        let log_filter = match pick!(log_filter) {
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
        let listen = pick!(listen).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 3804)));
        let legacy_tls = LegacyTls {
            on_listen: pick!(legacy_tls).unwrap_or(false),
            listen: pick!(legacy_tls_listen),
        };
        if legacy_tls.enabled() && !cfg!(feature = "legacy-tls") {
            // Refused rather than ignored: an operator who asked for it must not believe the
            // old phones are served.
            return Err(ConfigError::Invalid {
                name: "legacy_tls",
                message: "this capf was built without the legacy-tls feature \
                          (cargo build --release --features legacy-tls)"
                    .into(),
            });
        }
        if legacy_tls.listen == Some(listen) && listen.port() != 0 {
            return Err(ConfigError::Invalid {
                name: "legacy_tls_listen",
                message: "must differ from listen (use legacy_tls to serve both on one port)"
                    .into(),
            });
        }
        Ok(Settings {
            listen,
            legacy_tls,
            api_listen: pick!(api_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3805))),
            metrics_listen: pick!(metrics_listen),
            api_tls: pick!(api_tls).unwrap_or(false),
            api_tls_files,
            sweep_interval: secs(
                pick!(sweep_interval),
                "sweep_interval",
                Duration::from_secs(30),
            )?,
            claim_lease: Duration::from_secs(claim_lease),
            data_dir,
            certs_dir,
            database_url,
            identity: IdentityOptions {
                key,
                subject: SubjectFields {
                    organization: pick!(subject_o),
                    organizational_unit: pick!(subject_ou),
                    locality: pick!(subject_l),
                    state: pick!(subject_st),
                    country: pick!(subject_c),
                },
                validity_days: capf_validity_days,
            },
            issuer,
            node_id: pick!(node_id).unwrap_or_else(default_node_id),
            log_format,
            live: LiveSettings {
                limits,
                gate,
                lockout,
                mic_expiry_allowance: chrono::Duration::days(i64::from(
                    pick!(mic_expiry_allowance_days).unwrap_or(0),
                )),
                lsc_validity_days,
                keygen_max_attempts,
                default_key,
                operation_window: chrono::Duration::days(i64::from(operation_window_days)),
                log_filter,
            },
        })
    }
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: describe_toml_error(&text, &e),
    })
}

/// Where and what, without the text of the line: toml's own message quotes it, and the line
/// may be `database_url = "postgres://capf:PASSWORD@..."`.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| before.matches('\n').count() + 1);
    let message = e.message().trim_end();
    match line {
        Some(line) => format!("line {line}: {message}"),
        None => message.to_string(),
    }
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "capf".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.listen, "0.0.0.0:3804".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.certs_dir, PathBuf::from("./certs"));
        assert_eq!(s.database_url.expose(), "sqlite://./data/capf.db");
        assert_eq!(s.live.lsc_validity_days, 1825);
        assert_eq!(s.live.lockout, LockoutPolicy::default());
        assert_eq!(s.claim_lease, Duration::from_secs(90));
    }

    #[test]
    fn claim_lease_has_a_floor() {
        let lease = |secs| {
            Settings::resolve(&ServeArgs {
                claim_lease: Some(secs),
                ..Default::default()
            })
            .map(|s| s.claim_lease)
        };
        assert_eq!(lease(3).unwrap(), Duration::from_secs(3));
        assert!(matches!(
            lease(2),
            Err(ConfigError::Invalid {
                name: "claim_lease",
                ..
            })
        ));
    }

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capf.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:4000\"\ndata_dir = \"/var/lib/capf\"\nlsc_validity_days = 365\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:5000".parse().unwrap()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/capf"));
        assert_eq!(s.database_url.expose(), "sqlite:///var/lib/capf/capf.db");
        assert_eq!(s.live.lsc_validity_days, 365);
    }

    #[test]
    fn api_tls_from_flag_or_file() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().serve;
        assert!(!Settings::resolve(&parse(&["capf"])).unwrap().api_tls);
        assert!(
            Settings::resolve(&parse(&["capf", "--api-tls"]))
                .unwrap()
                .api_tls
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capf.toml");
        std::fs::write(&path, "api_tls = true\n").unwrap();
        let from_file = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let a = Settings::resolve(&from_file).unwrap();
        assert!(a.api_tls);
        let off = ServeArgs {
            api_tls: Some(false),
            ..from_file
        };
        let b = Settings::resolve(&off).unwrap();
        assert!(!b.api_tls, "the flag wins over the file");
        assert_eq!(a.needing_restart(&b), ["api_tls"]);
    }

    #[test]
    fn legacy_tls_settings() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.serve);
        assert_eq!(parse(&["capf"]).unwrap().legacy_tls, None);
        assert_eq!(
            parse(&["capf", "--legacy-tls"]).unwrap().legacy_tls,
            Some(true)
        );
        assert_eq!(
            parse(&["capf", "--legacy-tls=false"]).unwrap().legacy_tls,
            Some(false)
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capf.toml");
        std::fs::write(
            &path,
            "legacy_tls = true\nlegacy_tls_listen = \"127.0.0.1:3806\"\n",
        )
        .unwrap();
        let from_file = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let on_listen_off = ServeArgs {
            legacy_tls: Some(false),
            ..from_file.clone()
        };
        let same_port = ServeArgs {
            listen: Some("127.0.0.1:3806".parse().unwrap()),
            ..from_file.clone()
        };
        assert!(!Settings::resolve(&ServeArgs::default())
            .unwrap()
            .legacy_tls
            .enabled());
        if cfg!(feature = "legacy-tls") {
            let s = Settings::resolve(&from_file).unwrap();
            assert_eq!(
                s.legacy_tls,
                LegacyTls {
                    on_listen: true,
                    listen: Some("127.0.0.1:3806".parse().unwrap())
                }
            );
            // The flag wins over the file, as every other setting.
            assert!(
                !Settings::resolve(&on_listen_off)
                    .unwrap()
                    .legacy_tls
                    .on_listen
            );
            assert!(Settings::resolve(&same_port).is_err());
        } else {
            // Asked for but not built in: refused, never silently ignored.
            assert!(matches!(
                Settings::resolve(&from_file),
                Err(ConfigError::Invalid {
                    name: "legacy_tls",
                    ..
                })
            ));
        }
    }

    #[test]
    fn bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capf.toml");
        std::fs::write(&path, "no_such_setting = 1\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(matches!(
            Settings::resolve(&args),
            Err(ConfigError::Parse { .. })
        ));
        let args = ServeArgs {
            lsc_validity_days: Some(1826),
            ..Default::default()
        };
        assert!(Settings::resolve(&args).is_err());
        let args = ServeArgs {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        };
        assert!(Settings::resolve(&args).is_err());
    }

    #[test]
    fn log_filter_is_checked() {
        let filter = |f: &str| {
            Settings::resolve(&ServeArgs {
                log_filter: Some(f.into()),
                ..Default::default()
            })
            .map(|s| s.live.log_filter)
        };
        assert_eq!(filter("").unwrap(), "info");
        assert_eq!(
            filter("warn,capf::server=debug").unwrap(),
            "warn,capf::server=debug"
        );
        assert!(matches!(
            filter("capf=loud"),
            Err(ConfigError::Invalid {
                name: "log_filter",
                ..
            })
        ));
    }

    #[test]
    fn reload_names_what_changed_and_what_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capf.toml");
        let args = ServeArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:5000".parse().unwrap()),
            ..Default::default()
        };
        std::fs::write(&path, "lockout_failures = 10\n").unwrap();
        let before = Settings::resolve(&args).unwrap();
        std::fs::write(
            &path,
            "lockout_failures = 2\nconn_rate = 7\nlisten = \"127.0.0.1:6000\"\n\
             database_url = \"postgres://capf:secret@db/capf\"\napi_listen = \"127.0.0.1:7000\"\n",
        )
        .unwrap();
        let after = Settings::resolve(&args).unwrap();
        let changes: Vec<String> = before
            .live
            .changes(&after.live)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(changes, ["conn_rate: 50 -> 7", "lockout_failures: 10 -> 2"]);
        // The flag wins over the file on reload too: listen did not change.
        assert_eq!(
            before.needing_restart(&after),
            ["api_listen", "database_url"]
        );
        assert!(before.live.changes(&before.live).is_empty());
        assert!(before.needing_restart(&before).is_empty());
    }

    #[test]
    fn debug_of_the_arguments_hides_the_database_password() {
        let url = "postgres://capf:s3cretPW@db/capf?sslpassword=k3yPW&sslmode=require";
        let args = ServeArgs {
            database_url: Some(url.into()),
            ..Default::default()
        };
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("s3cretPW") && !shown.contains("k3yPW"),
            "{shown}"
        );
        assert!(shown.contains("db/capf"), "{shown}");
        let settings = Settings::resolve(&args).unwrap();
        assert_eq!(settings.database_url.expose(), url);
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cretPW") && !shown.contains("k3yPW"),
            "{shown}"
        );

        let file: FileSettings = toml::from_str(&format!("database_url = {url:?}\n")).unwrap();
        let shown = format!("{file:?}");
        assert!(
            !shown.contains("s3cretPW") && !shown.contains("k3yPW"),
            "{shown}"
        );
        assert_eq!(file.database_url.map(|u| u.0).as_deref(), Some(url));
    }

    #[test]
    fn a_broken_config_file_is_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capf.toml");
        std::fs::write(
            &path,
            "lockout_failures = 2\ndatabase_url = \"postgres://capf:s3cretPW@db/capf\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let shown = match Settings::resolve(&args) {
            Err(e @ ConfigError::Parse { .. }) => e.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        };
        assert!(!shown.contains("s3cretPW"), "{shown}");
        assert!(shown.contains("line 2"), "{shown}");
    }

    #[test]
    fn help_does_not_print_the_database_url_from_the_environment() {
        use clap::CommandFactory;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let command = Cli::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "database_url")
            .expect("the --database-url argument");
        // The rendered help with the variable set: tests/secrets.rs, in a process of its own.
        assert!(arg.is_hide_env_values_set());
    }

    #[test]
    fn live_config_swaps_whole() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        let live = LiveConfig::new(s.live.clone());
        let held = live.current();
        let mut next = s.live.clone();
        next.lockout.max_failures = 3;
        let old = live.replace(next);
        assert_eq!(old.lockout.max_failures, 10);
        // A reader keeps what it took.
        assert_eq!(held.lockout.max_failures, 10);
        assert_eq!(live.current().lockout.max_failures, 3);
    }
}
