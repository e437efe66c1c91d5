//! The database URL as given, which may carry a password.

use std::fmt;

use serde::Deserialize;

/// A database URL as given by a flag, the environment or the config file, not checked yet.
/// Its `Debug` masks the password (see [`capf_store::redact_url`]), so printing
/// [`ServeArgs`](super::ServeArgs) (flags or the parsed file) never shows it.
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
