//! Every setting of `capf serve`, declared once: its help text, flag and environment
//! variable, the type it is given as (on the command line and in the config file alike), the
//! type it resolves to, and whether SIGHUP applies it (`live`) or it is read only at start
//! (`restart`). See `declare.rs` for what is generated from it; the values are checked and
//! defaulted in `resolve.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::declare::declare_settings;
use super::{DatabaseUrlArg, Days, LogFormat};
use capf_model::keyspec::KeySpec;
use capf_pki::ca::identity::CapfKeyAlgorithm;
use capf_store::DatabaseUrl;

declare_settings! {
    /// Address of the CAPF TLS listener [default: 0.0.0.0:3804].
    #[arg(long, env = "CAPF_LISTEN")]
    restart listen: SocketAddr => SocketAddr;

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
    restart legacy_tls: bool => bool;

    /// Extra listener serving every client with OpenSSL, TLS 1.0 and up, RSA key exchange
    /// and CBC suites included (needs the legacy-tls build) [default: none].
    #[arg(long, env = "CAPF_LEGACY_TLS_LISTEN")]
    restart legacy_tls_listen: SocketAddr => Option<SocketAddr>;

    /// Address of the HTTP API (health, capf.pem) [default: 127.0.0.1:3805].
    #[arg(long, env = "CAPF_API_LISTEN")]
    restart api_listen: SocketAddr => SocketAddr;

    /// Address of the Prometheus metrics endpoint (`GET /metrics`, plain HTTP, no token)
    /// [default: off].
    #[arg(long, env = "CAPF_METRICS_LISTEN")]
    restart metrics_listen: SocketAddr => Option<SocketAddr>;

    /// Most connections the API serves at once; further ones are closed at once (lowered
    /// at start to fit the open-file limit) [default: 256].
    #[arg(long, env = "CAPF_API_MAX_CONNECTIONS")]
    restart api_max_connections: usize => usize;

    /// Most connections the metrics endpoint serves at once [default: 16].
    #[arg(long, env = "CAPF_METRICS_MAX_CONNECTIONS")]
    restart metrics_max_connections: usize => usize;

    /// Seconds an HTTP client (API, metrics) has to send a request's headers, and that a
    /// kept-alive connection may wait for its next request [default: 10].
    #[arg(long, env = "CAPF_HTTP_HEADER_TIMEOUT")]
    restart http_header_timeout: u64 => Duration;

    /// Seconds an HTTP response may wait for the client to read it, and an HTTPS handshake
    /// may take, before the connection is dropped [default: 30].
    #[arg(long, env = "CAPF_HTTP_STALL_TIMEOUT")]
    restart http_stall_timeout: u64 => Duration;

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
    restart api_tls: bool => bool;

    /// TLS certificate (PEM chain) of the API; required with --api-key. Without them an
    /// API served over TLS uses the CAPF certificate and key.
    #[arg(long, env = "CAPF_API_CERT", requires = "api_key")]
    restart api_cert: PathBuf => Option<PathBuf>;

    /// Private key (PEM) of --api-cert.
    #[arg(long, env = "CAPF_API_KEY", requires = "api_cert")]
    restart api_key: PathBuf => Option<PathBuf>;

    /// Days an operation scheduled without "completes_by" stays performable [default: 7].
    #[arg(long, env = "CAPF_OPERATION_WINDOW_DAYS")]
    live operation_window_days: u32 => Days;

    /// Key-generation attempts (phone sessions asked for a key) after which an install
    /// operation fails [default: 3].
    #[arg(long, env = "CAPF_KEYGEN_MAX_ATTEMPTS")]
    live keygen_max_attempts: u32 => u32;

    /// Seconds between sweeps marking operations past their deadline timed out [default: 30].
    #[arg(long, env = "CAPF_SWEEP_INTERVAL")]
    restart sweep_interval: u64 => Duration;

    /// Seconds a session's claim on an operation lasts unless its node renews it (every third
    /// of this). How long the operations of a node that crashed stay held before a phone's
    /// retry is served, here or on another node; at least 3 [default: 90].
    #[arg(long, env = "CAPF_CLAIM_LEASE")]
    restart claim_lease: u64 => Duration;

    /// Directory of the embedded database [default: ./data].
    #[arg(long, env = "CAPF_DATA_DIR")]
    restart data_dir: PathBuf => PathBuf;

    /// Directory of the CAPF key and certificates [default: ./certs].
    #[arg(long, env = "CAPF_CERTS_DIR")]
    restart certs_dir: PathBuf => PathBuf;

    /// sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://DATA_DIR/capf.db].
    // hide_env_values: `--help` would otherwise print the variable's value, password and all.
    #[arg(long, env = "CAPF_DATABASE_URL", hide_env_values = true)]
    restart database_url: DatabaseUrlArg => DatabaseUrl;

    /// Algorithm of a newly generated CAPF key: rsa-2048, rsa-3072, rsa-4096, ec-p256, ec-p384.
    #[arg(long, env = "CAPF_CAPF_KEY")]
    restart capf_key: String => CapfKeyAlgorithm;

    /// Validity of a newly generated CAPF certificate, in days [default: 1825].
    #[arg(long, env = "CAPF_CAPF_VALIDITY_DAYS")]
    restart capf_validity_days: u32 => u32;

    /// Organization (O) of a newly generated CAPF certificate, copied into every LSC.
    #[arg(long, env = "CAPF_SUBJECT_O")]
    restart subject_o: String => Option<String>;

    /// Organizational unit (OU).
    #[arg(long, env = "CAPF_SUBJECT_OU")]
    restart subject_ou: String => Option<String>;

    /// Locality (L).
    #[arg(long, env = "CAPF_SUBJECT_L")]
    restart subject_l: String => Option<String>;

    /// State or province (ST).
    #[arg(long, env = "CAPF_SUBJECT_ST")]
    restart subject_st: String => Option<String>;

    /// Country (C), two letters.
    #[arg(long, env = "CAPF_SUBJECT_C")]
    restart subject_c: String => Option<String>;

    /// Separate CA certificate that signs LSCs (PEM); the CAPF certificate stays the TLS
    /// identity.
    #[arg(long, env = "CAPF_ISSUER_CERT", requires = "issuer_key")]
    restart issuer_cert: PathBuf => Option<PathBuf>;

    /// Private key of --issuer-cert (PEM, mode 0600).
    #[arg(long, env = "CAPF_ISSUER_KEY", requires = "issuer_cert")]
    restart issuer_key: PathBuf => Option<PathBuf>;

    /// Validity of issued LSCs in days, 1-1825 [default: 1825].
    #[arg(long, env = "CAPF_LSC_VALIDITY_DAYS")]
    live lsc_validity_days: u32 => u32;

    /// Key scheduled when an operation names none [default: rsa-2048].
    #[arg(long, env = "CAPF_DEFAULT_KEY")]
    live default_key: String => KeySpec;

    /// Seconds allowed for the TLS handshake [default: 15].
    #[arg(long, env = "CAPF_HANDSHAKE_TIMEOUT")]
    live handshake_timeout: u64 => Duration;

    /// Seconds allowed for each phone frame outside key generation [default: 30].
    #[arg(long, env = "CAPF_FRAME_TIMEOUT")]
    live frame_timeout: u64 => Duration;

    /// Seconds a phone may take to generate its key (CUCM's maximum time for key
    /// generation) [default: 1800].
    #[arg(long, env = "CAPF_KEYGEN_TIMEOUT")]
    live keygen_timeout: u64 => Duration;

    /// Seconds a whole session may last, key generation included [default: 2400].
    #[arg(long, env = "CAPF_SESSION_TIMEOUT")]
    live session_timeout: u64 => Duration;

    /// Seconds sessions in flight may take to finish after SIGTERM; a second SIGTERM ends
    /// them at once [default: 30].
    #[arg(long, env = "CAPF_DRAIN_TIMEOUT")]
    live drain_timeout: u64 => Duration;

    /// Most sessions served at once; further connections are closed at once [default: 20000].
    #[arg(long, env = "CAPF_MAX_SESSIONS")]
    live max_sessions: usize => usize;

    /// New connections per second per source address [default: 50].
    #[arg(long, env = "CAPF_CONN_RATE")]
    live conn_rate: u32 => u32;

    /// New connections a source address may open at once above the rate [default: 500].
    #[arg(long, env = "CAPF_CONN_BURST")]
    live conn_burst: u32 => u32;

    /// Concurrent sessions per source address [default: 2000].
    #[arg(long, env = "CAPF_MAX_SESSIONS_PER_ADDRESS")]
    live max_sessions_per_address: usize => usize;

    /// Days a MIC or SUDI chain may be past its expiry and still authenticate (old
    /// manufacturing CAs) [default: 0].
    #[arg(long, env = "CAPF_MIC_EXPIRY_ALLOWANCE_DAYS")]
    live mic_expiry_allowance_days: u32 => Days;

    /// Consecutive failed authentications that lock a device [default: 10].
    #[arg(long, env = "CAPF_LOCKOUT_FAILURES")]
    live lockout_failures: u32 => u32;

    /// Seconds a locked device stays locked [default: 600].
    #[arg(long, env = "CAPF_LOCKOUT_SECONDS")]
    live lockout_seconds: u64 => Duration;

    /// Name of this node in claims and logs [default: host name and process id].
    #[arg(long, env = "CAPF_NODE_ID")]
    restart node_id: String => String;

    /// Log format: text or json [default: text].
    #[arg(long, env = "CAPF_LOG_FORMAT")]
    restart log_format: String => LogFormat;

    /// Which log lines to write: a level (error, warn, info, debug, trace) or tracing
    /// directives such as "info,capf::server=debug" [default: info].
    #[arg(long, env = "CAPF_LOG")]
    live log_filter: String => String;
}
