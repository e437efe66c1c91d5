//! What a SIGHUP reload changes: the log of live settings whose value changed, and the
//! current live settings that sessions read.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{Days, LiveSettings};
use capf_model::keyspec::KeySpec;

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

/// How the value of a live setting reads in the reload log: as the config file gives it,
/// with its unit where it has one. Each resolved type of a live setting needs one, which is
/// also why no secret may be a live setting without a masking impl here.
pub(crate) trait LogValue {
    fn log_value(&self) -> String;
}

impl LogValue for u32 {
    fn log_value(&self) -> String {
        self.to_string()
    }
}

impl LogValue for usize {
    fn log_value(&self) -> String {
        self.to_string()
    }
}

impl LogValue for String {
    fn log_value(&self) -> String {
        self.clone()
    }
}

/// Settings in seconds are whole seconds.
impl LogValue for Duration {
    fn log_value(&self) -> String {
        format!("{}s", self.as_secs())
    }
}

impl LogValue for Days {
    fn log_value(&self) -> String {
        format!("{}d", self.0)
    }
}

impl LogValue for KeySpec {
    fn log_value(&self) -> String {
        self.to_string()
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
