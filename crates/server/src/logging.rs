//! The log subscriber of `capf serve`, with a filter SIGHUP can replace.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log filter {filter:?}: {message}")]
    Filter { filter: String, message: String },
    #[error("cannot install the logger: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
    #[error("cannot replace the log filter: {0}")]
    Reload(#[source] tracing_subscriber::reload::Error),
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

/// Keeps the log-writing thread running; dropping it writes out what is queued.
#[must_use = "log lines queued when this is dropped are written out; keep it until exit"]
pub struct LogFlush(#[allow(dead_code)] WorkerGuard);

/// Installs the process's logger on stderr: `format`, lines passing `directives`.
///
/// Lines are formatted where they are logged and written by a thread of their own, in
/// batches: a session's task never waits on stderr. If that thread falls more than
/// `QUEUED_LINES` behind (stderr blocked), further lines are dropped rather than stall
/// phones; the audit trail is in the database, not the log.
pub fn init(format: LogFormat, directives: &str) -> Result<(LogControl, LogFlush), LogError> {
    const QUEUED_LINES: usize = 128 * 1024;
    let (filter, handle) = reload::Layer::new(filter(directives)?);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .thread_name("capf-log")
        .finish(std::io::stderr());
    let output = fmt::layer().with_ansi(ansi).with_writer(writer);
    // Boxed: the text and JSON layers are different types.
    let output = match format {
        LogFormat::Text => output.boxed(),
        LogFormat::Json => output.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()?;
    Ok((LogControl { handle }, LogFlush(guard)))
}

impl LogControl {
    /// Lines logged from now on pass `directives` instead.
    pub fn set_filter(&self, directives: &str) -> Result<(), LogError> {
        self.handle
            .reload(filter(directives)?)
            .map_err(LogError::Reload)
    }
}
