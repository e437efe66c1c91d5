//! The log subscriber of `capf serve`, with a filter SIGHUP can replace.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log filter {filter:?}: {message}")]
    Filter { filter: String, message: String },
    #[error("cannot install the logger: {0}")]
    Install(String),
    #[error("cannot replace the log filter: {0}")]
    Reload(String),
}

/// Replaces the filter of the installed logger.
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

fn filter(directives: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(directives).map_err(|e| LogError::Filter {
        filter: directives.to_string(),
        message: e.to_string(),
    })
}

/// Installs the process's logger on stderr: `format`, lines passing `directives`.
pub fn init(format: LogFormat, directives: &str) -> Result<LogControl, LogError> {
    let (filter, handle) = reload::Layer::new(filter(directives)?);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
    // Boxed: the text and JSON layers are different types.
    let output = match format {
        LogFormat::Text => output.boxed(),
        LogFormat::Json => output.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .map_err(|e| LogError::Install(e.to_string()))?;
    Ok(LogControl { handle })
}

impl LogControl {
    /// Lines logged from now on pass `directives` instead.
    pub fn set_filter(&self, directives: &str) -> Result<(), LogError> {
        self.handle
            .reload(filter(directives)?)
            .map_err(|e| LogError::Reload(e.to_string()))
    }
}
