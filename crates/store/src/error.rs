//! What can go wrong in the store, as types: the driver's own error where there is one, and
//! otherwise the ids and names involved, so a caller can tell cases apart without reading
//! text and a log line still says what happened.
//!
//! Every error is `Clone`: the SQLite writer commits many callers' transactions together and
//! reports a failed commit to each of them. Driver errors, which are not `Clone`, are shared
//! behind an `Arc` for that.

use std::sync::Arc;
use std::time::Duration;

use capf_model::device::{DeviceName, DeviceNameError};
use capf_model::keyspec::KeySpecParseError;
use capf_model::operation::ParseError;

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; the caller should retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Unavailable),
    #[error("database migration failed: {0}")]
    Migration(#[source] Arc<sqlx::migrate::MigrateError>),
    #[error("not found: {0}")]
    NotFound(Missing),
    /// A row read back holds a value this build does not understand.
    #[error("corrupt data: {0}")]
    Corrupt(#[source] Corrupt),
    #[error("invalid database url: {0}")]
    BadUrl(#[source] BadUrl),
    /// The change would break a uniqueness rule (e.g. a token name already in use).
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// The session no longer holds the operation's claim: another session took it over
    /// (after this one's lease ran out), so this one must not issue or complete anything.
    #[error("claim lost: {0}")]
    ClaimLost(ClaimLost),
}

/// Why the database could not serve a request.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unavailable {
    /// sqlx failed: PostgreSQL, or SQLite while it is opened and migrated.
    #[error(transparent)]
    Driver(Arc<sqlx::Error>),
    /// One of capf's own SQLite connections failed.
    #[error(transparent)]
    Sqlite(Arc<rusqlite::Error>),
    /// A file or thread the store needs could not be set up.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The database did not answer in time.
    #[error("no answer from the database within {} s", .0.as_secs())]
    TimedOut(Duration),
    /// A write waited longer than this for SQLite's writer and was refused unrun.
    #[error("the write waited more than {} s for the database", .0.as_secs())]
    Queued(Duration),
    /// A statement was given the wrong number of arguments (a bug in capf).
    #[error("statement takes {expected} parameters, given {given}: {sql}")]
    Parameters {
        expected: usize,
        given: usize,
        sql: String,
    },
    /// The store cannot serve (closed, or a part of it stopped); the text says which.
    #[error("{0}")]
    Stopped(&'static str),
}

/// What a request named that does not exist (or no longer is what it needs).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("device {0}")]
    Device(DeviceName),
    #[error("operation {0}")]
    Operation(i64),
    /// The operation exists but is no longer pending (or does not exist).
    #[error("pending operation {0}")]
    PendingOperation(i64),
    #[error("certificate {cert_id} awaiting confirmation for operation {op_id}")]
    AwaitingCertificate { cert_id: i64, op_id: i64 },
    /// A statement that must return a row returned none.
    #[error("row")]
    Row,
}

/// A stored value this build cannot read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Corrupt {
    /// A text enum column holds an unknown value.
    #[error("column {column}: {source}")]
    Enum {
        column: String,
        #[source]
        source: ParseError,
    },
    #[error("key spec: {0}")]
    KeySpec(#[source] KeySpecParseError),
    #[error("device name {text:?}: {source}")]
    DeviceName {
        text: String,
        #[source]
        source: DeviceNameError,
    },
    /// A number out of the range of what it counts.
    #[error("{what} {value}")]
    OutOfRange { what: &'static str, value: i64 },
    #[error("timestamp {0}")]
    Timestamp(i64),
    /// SQLite's integrity check found the file damaged (truncated, overwritten).
    #[error("the database file is damaged (SQLite quick_check: {0}); restore it from a backup")]
    Integrity(String),
    #[error("column {column} holds {found}, expected {wanted}")]
    WrongType {
        column: String,
        found: String,
        wanted: &'static str,
    },
    #[error("column {0} is NULL")]
    Null(String),
    #[error("no column {0}")]
    NoColumn(String),
    /// The driver could not decode a value.
    #[error(transparent)]
    Driver(Arc<sqlx::Error>),
    #[error(transparent)]
    Sqlite(Arc<rusqlite::Error>),
}

/// A database URL that cannot be used.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BadUrl {
    #[error("expected sqlite://PATH or postgres://USER@HOST/DB")]
    Scheme,
    /// The driver refused the URL; `url` has its password hidden.
    #[error("{url}: {source}")]
    Driver {
        url: String,
        #[source]
        source: Arc<sqlx::Error>,
    },
    #[error("an in-memory SQLite database cannot be shared by capf's connections; name a file")]
    InMemory,
}

/// A uniqueness rule the change would break.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("a token named {0:?} already exists")]
    TokenName(String),
}

/// A write fenced by a claim that `claimant` no longer holds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("operation {op_id} is held by {}, not by {claimant}", holder.as_deref().unwrap_or("nobody"))]
pub struct ClaimLost {
    pub op_id: i64,
    /// Who holds it now, if anyone.
    pub holder: Option<String>,
    pub claimant: String,
}

impl From<ParseError> for StoreError {
    fn from(e: ParseError) -> Self {
        StoreError::Corrupt(Corrupt::Enum {
            column: e.kind.to_string(),
            source: e,
        })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound(Missing::Row),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(Corrupt::Driver(Arc::new(e)))
            }
            other => StoreError::Unavailable(Unavailable::Driver(Arc::new(other))),
        }
    }
}

impl From<Unavailable> for StoreError {
    fn from(e: Unavailable) -> Self {
        StoreError::Unavailable(e)
    }
}

impl From<Corrupt> for StoreError {
    fn from(e: Corrupt) -> Self {
        StoreError::Corrupt(e)
    }
}

impl From<Missing> for StoreError {
    fn from(e: Missing) -> Self {
        StoreError::NotFound(e)
    }
}
