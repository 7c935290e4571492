//! Store errors.

use thiserror::Error;

/// A store failure. Every variant means the operation was not (or not durably) applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The underlying storage failed (IO error, or the database is locked by another process).
    #[error("storage IO failed: {0}")]
    Io(String),
    /// A record could not be decoded: wrong magic, unknown version, bad checksum, over the size
    /// limit, or a payload that does not match its type. The rest of the store stays readable.
    #[error("corrupt record{}: {reason}", where_.as_deref().map(|w| format!(" ({w})")).unwrap_or_default())]
    Corrupt {
        /// Which record, if known.
        where_: Option<String>,
        /// What is wrong with it.
        reason: String,
    },
    /// A value could not be encoded (too large, or not representable).
    #[error("record could not be encoded: {0}")]
    Encode(String),
    /// The store's committer has stopped (the store is closing).
    #[error("the store is closed")]
    Closed,
    /// The cluster's log did not take the write (unreachable, or this node no longer owns the
    /// room): it is not durable, and the room reloads from the log.
    #[error("the cluster's log did not take the write: {0}")]
    Replication(String),
    /// The cluster's log did not answer the write in time: it may still have taken it (the
    /// room reloads from the log, which decides).
    #[error("the cluster's log did not answer the write in time: {0}")]
    ReplicationUnknown(String),
}

impl StoreError {
    pub(crate) fn corrupt(reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            where_: None,
            reason: reason.into(),
        }
    }

    /// Names the record a decode error is about.
    pub(crate) fn at(self, what: String) -> StoreError {
        match self {
            StoreError::Corrupt { reason, .. } => StoreError::Corrupt {
                where_: Some(what),
                reason,
            },
            other => other,
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}
