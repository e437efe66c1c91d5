//! Reading the TOML config file.

use std::path::Path;

use super::{ConfigError, ServeArgs};

/// The settings the file at `path` gives; those it leaves out are `None`. Unknown keys are
/// refused, so a misspelt setting is not silently ignored.
pub(super) fn read(path: &Path) -> Result<ServeArgs, ConfigError> {
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
