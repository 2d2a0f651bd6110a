//! What went wrong in a store, by kind: callers decide by kind (answer 404 or 409, retry a
//! transaction, exit with a message) and never by matching an error's text.

use std::sync::Arc;

/// The cause of a database failure, kept for logs and `Error::source` chains.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// What kind of database failure happened, which decides what may be done about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFailure {
    /// A deadlock or serialization failure: the same transaction run again may succeed.
    Retryable,
    /// The database could not be reached, or a connection, file or thread broke.
    Unavailable,
    /// Stored data that does not decode (bad JSON, an unknown code, a seal that will not open).
    Corrupt,
    /// Anything else the database refused.
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique field (`uid`, event type name, `eventId`) is already taken.
    #[error("{0}")]
    Conflict(String),
    /// A configured limit would be exceeded.
    #[error("{0}")]
    LimitReached(String),
    /// The record to change does not exist.
    #[error("not found")]
    NotFound,
    /// Another change to the record committed between this change's read and its write (the
    /// record's `revision` moved); read it again and redo the change.
    #[error("the {0} was changed by another request at the same time")]
    Stale(&'static str),
    /// The store cannot be opened as configured: a data directory in use, a bad database URL
    /// or schema name. Nothing was changed.
    #[error("{0}")]
    InvalidConfig(String),
    /// The database failed; the operation had no effect.
    #[error("database error: {context}")]
    Database {
        kind: DatabaseFailure,
        context: String,
        #[source]
        source: Option<Source>,
    },
    /// The store is shutting down or its writer stopped.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// A database failure with its cause; the cause's text goes into the message too, since
    /// most logs print only the top error.
    pub fn database(
        kind: DatabaseFailure,
        context: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let context = if context.is_empty() {
            source.to_string()
        } else {
            format!("{context}: {source}")
        };
        Self::Database {
            kind,
            context,
            source: Some(Arc::new(source)),
        }
    }

    /// Stored data that does not decode.
    pub fn corrupt(context: impl Into<String>) -> Self {
        Self::Database {
            kind: DatabaseFailure::Corrupt,
            context: context.into(),
            source: None,
        }
    }

    /// Whether running the same transaction again may cure this error.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Database {
                kind: DatabaseFailure::Retryable,
                ..
            }
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_keep_their_cause_and_kind() {
        let cause = std::io::Error::other("disk on fire");
        let error = StoreError::database(DatabaseFailure::Unavailable, "opening kait.db", cause);
        assert_eq!(
            error.to_string(),
            "database error: opening kait.db: disk on fire"
        );
        let source = std::error::Error::source(&error).expect("the cause is kept");
        assert_eq!(source.to_string(), "disk on fire");
        assert!(!error.is_retryable());
        let deadlock = StoreError::database(
            DatabaseFailure::Retryable,
            "",
            std::io::Error::other("deadlock detected"),
        );
        assert!(deadlock.is_retryable());
        assert_eq!(deadlock.to_string(), "database error: deadlock detected");
    }
}
