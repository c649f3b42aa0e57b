//! The store's error type.
//!
//! Owns `StoreError`: one variant per thing a caller can act on (not found, busy, closed,
//! refused transition, input over a limit, crypto/key problems, schema too new). It must not
//! hide the cause: every variant that wraps an I/O or SQLite error keeps it as `source` and
//! names the path or item involved.

use std::path::PathBuf;

use super::crypto::CryptoError;
use super::model::ExecStatus;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot open database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "database {} has schema version {found}, but this packd knows versions up to {supported}: \
         it was written by a newer packd; upgrade packd or restore a backup",
        path.display()
    )]
    SchemaTooNew { path: PathBuf, found: i64, supported: i64 },

    #[error("database migration {version} failed: {source}")]
    Migration {
        version: usize,
        #[source]
        source: rusqlite::Error,
    },

    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),

    #[error("{what} {key} not found")]
    NotFound { what: &'static str, key: String },

    #[error("execution {id} is {from}; it cannot become {to}")]
    InvalidTransition { id: i64, from: ExecStatus, to: ExecStatus },

    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },

    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { what: &'static str, size: usize, limit: usize },

    /// The write queue is full (only from the `try_*` methods); an HTTP caller answers 503.
    #[error("the database write queue is full ({capacity} writes pending); try again later")]
    Busy { capacity: usize },

    #[error("the store is closed")]
    Closed,

    /// The operation itself succeeded but its transaction did not commit, so it did not happen.
    #[error("write was not committed: {0}")]
    Commit(String),

    #[error(transparent)]
    Crypto(#[from] CryptoError),
}
