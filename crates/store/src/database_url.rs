//! The database URL: which engine, and where, without ever showing its password.

use std::fmt;

use crate::error::{BadUrl, Result, StoreError};

/// A database URL whose `Debug`/`Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Result<DatabaseUrl> {
        let url = url.into();
        if url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
        {
            Ok(DatabaseUrl(url))
        } else {
            Err(StoreError::BadUrl(BadUrl::Scheme))
        }
    }

    /// A SQLite database file.
    pub fn sqlite_file(path: &std::path::Path) -> DatabaseUrl {
        DatabaseUrl(format!("sqlite://{}", path.display()))
    }

    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres")
    }

    /// The full URL, password included: only for handing to the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced, for logs (see [`redact_url`]).
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// Whether a URL query parameter carries a secret. sqlx takes the password from
/// `?password=` as well as from the user info, libpq's `sslpassword` unlocks a client key;
/// anything else named like a password or token is masked too, since a log line is no
/// place to find out it mattered. Names are compared without case, `-` or `_`.
fn is_secret_param(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect();
    ["password", "passwd", "pwd", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

/// A database URL fit for logs: the user info's password and every secret-bearing query
/// parameter (see [`is_secret_param`]) become `***`. A URL that does not parse is hidden
/// whole: where its password starts cannot be told.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparseable database url>".into();
    };
    let mut masked = false;
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have user info, which then have no password.
        masked = parsed.set_password(Some("***")).is_ok();
    }
    if parsed.query_pairs().any(|(name, _)| is_secret_param(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_param(&name) {
                    "***".to_string()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        masked = true;
    }
    if masked {
        parsed.to_string()
    } else {
        // Unchanged, byte for byte: the URL crate's normal form may differ from the text.
        url.to_string()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_hides_password() {
        let url = DatabaseUrl::new("postgres://capf:s3cret@db.example:5432/capf").unwrap();
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(!url.to_string().contains("s3cret"));
        assert!(url.expose().contains("s3cret"));
        assert!(DatabaseUrl::new("mysql://x").is_err());
    }

    #[test]
    fn database_url_hides_secret_query_parameters() {
        for text in [
            "postgres://capf@db/capf?password=s3cret",
            "postgres://capf@db/capf?PassWord=s3cret&application_name=capf",
            "postgres://capf@db/capf?sslmode=require&sslpassword=s3cret",
            "postgres://capf@db/capf?ssl-password=s3cret",
            "postgres://capf@db/capf?pass%77ord=s3cret",
            "postgresql://capf:s3cret@db/capf?password=s3cret&password=s3cret",
            "postgres://capf@db/capf?auth_token=s3cret",
        ] {
            let url = DatabaseUrl::new(text).unwrap();
            for shown in [url.to_string(), format!("{url:?}"), url.redacted()] {
                assert!(!shown.contains("s3cret"), "{text} shown as {shown}");
                assert!(shown.contains("***"), "{text} shown as {shown}");
            }
            assert_eq!(url.expose(), text);
        }
        // What is not secret stays readable.
        let url = DatabaseUrl::new("postgres://capf:pw@db/capf?sslmode=require&user=capf").unwrap();
        assert_eq!(
            url.redacted(),
            "postgres://capf:***@db/capf?sslmode=require&user=capf"
        );
        let url = DatabaseUrl::new("postgres://capf@db:5432/capf?sslmode=disable").unwrap();
        assert_eq!(url.redacted(), url.expose());
        let url = DatabaseUrl::sqlite_file(std::path::Path::new("./data/capf.db"));
        assert_eq!(url.redacted(), "sqlite://./data/capf.db");
    }

    #[test]
    fn unparseable_database_url_is_hidden_whole() {
        let url = DatabaseUrl::new("postgres://capf:s3cret@[db/capf").unwrap();
        assert_eq!(url.redacted(), "<unparseable database url>");
        assert!(!format!("{url:?}").contains("s3cret"));
    }
}
