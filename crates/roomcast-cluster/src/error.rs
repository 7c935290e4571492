//! The crate's one error type, [`ClusterError`], with a stable [`ErrorKind`].
//!
//! No async-nats type appears here: a NATS error is kept only as the opaque
//! [`std::error::Error::source`] of a [`ClusterError`], for logs.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// What went wrong, stable across releases: match on it (or on its [`code`](ErrorKind::code)),
/// never on the message.
///
/// The kinds that matter most to a caller are the ones that say who is right:
/// [`Unavailable`](ErrorKind::Unavailable) (NATS did not answer: the outcome of a write is
/// *unknown*, try again later), [`LeaseHeld`](ErrorKind::LeaseHeld) and
/// [`LeaseLost`](ErrorKind::LeaseLost) (another node owns the room: stop acting for it), and
/// [`Fenced`](ErrorKind::Fenced) (the room's log moved on: this node's view is stale).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The [`ClusterConfig`](crate::ClusterConfig) or an argument is invalid (a cluster or node
    /// name outside `[A-Za-z0-9_-]{1,32}`, no server, a zero duration, a bad server address).
    InvalidConfig,
    /// The bucket or stream of this cluster already exists with another configuration (e.g.
    /// nodes that disagree on `lease_ttl`): fix the configuration, or remove the old bucket.
    ConfigMismatch,
    /// NATS is unreachable, the connection is down, or the call did not complete within
    /// `request_timeout`. For a write (an append, a lease change) the outcome is unknown: it may
    /// have been stored. Read back (`last_seq`, `owner_of`) before deciding.
    Unavailable,
    /// `acquire`: another node holds the room's lease ([`ClusterError::owner`] says which).
    LeaseHeld,
    /// `renew` or `release`: the lease is no longer this node's (it expired, or another node
    /// took the room since). The node must stop acting as the room's owner.
    LeaseLost,
    /// `append`: the room's log does not end where the caller expected (another node appended,
    /// or the log was purged): the caller's view is stale and nothing was appended.
    /// [`ClusterError::last_seq`] gives the log's actual last sequence when NATS reported it.
    Fenced,
    /// The payload is larger than [`Cluster::max_payload`](crate::Cluster::max_payload).
    PayloadTooLarge,
    /// `request`: no node serves that node id (nobody subscribed to its call subject).
    NoResponders,
    /// NATS answered with an error this crate does not expect (a JetStream API error, a
    /// permission error, a malformed answer). The message says what.
    Server,
}

impl ErrorKind {
    /// A stable, machine-readable code: `invalid_config`, `config_mismatch`, `unavailable`,
    /// `lease_held`, `lease_lost`, `fenced`, `payload_too_large`, `no_responders`, `server`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::ConfigMismatch => "config_mismatch",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::LeaseHeld => "lease_held",
            ErrorKind::LeaseLost => "lease_lost",
            ErrorKind::Fenced => "fenced",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::NoResponders => "no_responders",
            ErrorKind::Server => "server",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error of this crate: a [`kind`](ClusterError::kind), a human-readable message, and for
/// some kinds a detail ([`owner`](ClusterError::owner), [`last_seq`](ClusterError::last_seq)).
///
/// Cloneable (a lease's background renewer hands the same error to every watcher).
#[derive(Clone)]
pub struct ClusterError {
    kind: ErrorKind,
    message: String,
    owner: Option<String>,
    last_seq: Option<u64>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
    /// Known not to have reached NATS (the connection was down when the call was made).
    pub(crate) not_sent: bool,
}

impl ClusterError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ClusterError {
            kind,
            message: message.into(),
            owner: None,
            last_seq: None,
            source: None,
            not_sent: false,
        }
    }

    /// True if the call is known not to have reached NATS (the connection was down when it
    /// was made): an [`ErrorKind::Unavailable`] write without it may still have been stored.
    pub fn was_not_sent(&self) -> bool {
        self.not_sent
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        let mut error = ClusterError::new(kind, message);
        error.source = Some(Arc::new(source));
        error
    }

    pub(crate) fn with_owner(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    pub(crate) fn with_last_seq(mut self, last_seq: Option<u64>) -> Self {
        self.last_seq = last_seq;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The kind's stable code (see [`ErrorKind::code`]).
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// For [`ErrorKind::LeaseHeld`]: the node id that holds the lease, when it could be read.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// For [`ErrorKind::Fenced`]: the room log's actual last stream sequence as NATS reported it
    /// (`Some(0)`: the log is empty), when it did.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Whether this is [`ErrorKind::Unavailable`]: NATS unreachable or too slow.
    pub fn is_unavailable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }
}

impl fmt::Debug for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClusterError");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(owner) = &self.owner {
            d.field("owner", owner);
        }
        if let Some(last_seq) = self.last_seq {
            d.field("last_seq", &last_seq);
        }
        if let Some(source) = &self.source {
            d.field("source", &source.to_string());
        }
        d.finish()
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl StdError for ClusterError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_displayed() {
        let error = ClusterError::new(ErrorKind::LeaseHeld, "room 7 is held by b")
            .with_owner(Some("b".into()));
        assert_eq!(error.code(), "lease_held");
        assert_eq!(error.owner(), Some("b"));
        assert_eq!(error.to_string(), "lease_held: room 7 is held by b");
        let error = ClusterError::with_source(
            ErrorKind::Unavailable,
            "timed out",
            std::io::Error::other("reset"),
        );
        assert!(error.is_unavailable());
        assert!(StdError::source(&error).is_some());
        assert_eq!(error.to_string(), "unavailable: timed out (reset)");
    }
}
