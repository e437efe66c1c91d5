//! Settings of `capf serve`: command-line flags, `CAPF_*` environment variables and an
//! optional TOML file, in that order of precedence, over built-in defaults.
//!
//! Each setting is declared once, in `settings.rs`, with whether SIGHUP applies it; the
//! flags, the file's keys, the resolved structs and the reload diffs are generated from
//! that list (`declare.rs`). `resolve.rs` checks the values and fills in defaults.

mod declare;
mod file;
mod reload;
mod resolve;
mod secret;
mod settings;
mod values;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use reload::{Change, LiveConfig};
pub use secret::DatabaseUrlArg;
pub use settings::{LiveSettings, ServeArgs, Settings, LIVE_SETTINGS, RESTART_SETTINGS, SETTINGS};
pub use values::{Days, GateLimits, LegacyTls, Limits, LogFormat};

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

/// Whether a SIGHUP applies a setting, as its declaration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Applied to sessions and requests that start after the reload.
    Live,
    /// Read once, at start (listeners, storage, identity, cluster timing); a reload that
    /// changes it warns that it needs a restart.
    Restart,
}

/// One declared setting: its name (the config file's key) and how a reload treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub reload: Reload,
}

/// Shortest claim lease a node may be given.
pub const MIN_CLAIM_LEASE_SECS: u64 = 3;
