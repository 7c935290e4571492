//! The one place that turns async-nats errors into [`ClusterError`]s, and the names of the
//! NATS things a cluster uses.
//!
//! Every async-nats error is mapped here, by its kind, to a stable [`ErrorKind`]; the original
//! error is kept only as the opaque source.

use std::error::Error as StdError;

use async_nats::connection::State;
use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind, PublishError,
    PublishErrorKind,
};
use async_nats::jetstream::stream::{
    ConsumerError, ConsumerErrorKind, LastRawMessageError, LastRawMessageErrorKind, PurgeError,
    PurgeErrorKind,
};
use async_nats::jetstream::ErrorCode;
use async_nats::{ConnectError, ConnectErrorKind, RequestError, RequestErrorKind};

use crate::error::{ClusterError, ErrorKind};

/// The names of one cluster's bucket, stream and subjects.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    cluster: String,
    /// The KV bucket of room leases: `roomcast_<cluster>_owners`.
    pub(crate) owners_bucket: String,
    /// The stream behind that bucket: `KV_roomcast_<cluster>_owners`.
    pub(crate) owners_stream: String,
    /// The stream of room logs: `roomcast_<cluster>_rooms`.
    pub(crate) rooms_stream: String,
}

impl Names {
    pub(crate) fn new(cluster: &str) -> Self {
        let owners_bucket = format!("roomcast_{cluster}_owners");
        Names {
            cluster: cluster.to_string(),
            owners_stream: format!("KV_{owners_bucket}"),
            owners_bucket,
            rooms_stream: format!("roomcast_{cluster}_rooms"),
        }
    }

    /// Every subject of the lease bucket: `$KV.<bucket>.>`.
    pub(crate) fn owners_subjects(&self) -> String {
        format!("$KV.{}.>", self.owners_bucket)
    }

    /// A room's lease key's subject: `$KV.<bucket>.<room>`.
    pub(crate) fn owner_key(&self, room: u64) -> String {
        format!("$KV.{}.{room}", self.owners_bucket)
    }

    /// The KV bucket of the room directory: `roomcast_<cluster>_rooms`.
    pub(crate) fn rooms_bucket(&self) -> String {
        format!("roomcast_{}_rooms", self.cluster)
    }

    /// Every room log's subject: `roomcast.<cluster>.room.*.log`.
    pub(crate) fn logs(&self) -> String {
        format!("roomcast.{}.room.*.log", self.cluster)
    }

    /// A room's log subject: `roomcast.<cluster>.room.<room>.log`.
    pub(crate) fn log(&self, room: u64) -> String {
        format!("roomcast.{}.room.{room}.log", self.cluster)
    }

    /// A room's event subject (core NATS): `roomcast.<cluster>.room.<room>.events`.
    pub(crate) fn events(&self, room: u64) -> String {
        format!("roomcast.{}.room.{room}.events", self.cluster)
    }

    /// A user's subject (core NATS): `roomcast.<cluster>.user.<hex of the user id>` (any user
    /// id makes a valid token).
    pub(crate) fn user(&self, user: &str) -> String {
        let mut subject = format!("roomcast.{}.user.", self.cluster);
        subject.reserve(user.len() * 2);
        for b in user.bytes() {
            subject.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            subject.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        subject
    }

    /// A node's call subject: `roomcast.<cluster>.node.<node>.call`.
    pub(crate) fn calls(&self, node: &str) -> String {
        format!("roomcast.{}.node.{node}.call", self.cluster)
    }
}

/// The header naming the calling node on a node-to-node request.
pub(crate) const FROM_HEADER: &str = "Roomcast-From";

/// The header that makes a JetStream write conditional on the subject's last sequence.
pub(crate) const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// The header that makes a JetStream write land only in the named stream.
pub(crate) const EXPECTED_STREAM: &str = "Nats-Expected-Stream";

/// The KV header marking a delete or purge marker.
pub(crate) const KV_OPERATION: &str = "KV-Operation";

pub(crate) fn unavailable(
    what: &str,
    source: impl StdError + Send + Sync + 'static,
) -> ClusterError {
    ClusterError::with_source(
        ErrorKind::Unavailable,
        format!("{what}: NATS did not answer"),
        source,
    )
}

pub(crate) fn timed_out(what: &str, timeout: std::time::Duration) -> ClusterError {
    ClusterError::new(
        ErrorKind::Unavailable,
        format!("{what}: no answer from NATS within {timeout:?}"),
    )
}

pub(crate) fn disconnected(what: &str, state: &State) -> ClusterError {
    let state = match state {
        State::Pending => "not connected yet",
        State::Connected => "connected",
        State::Disconnected => "disconnected (reconnecting)",
    };
    let mut error = ClusterError::new(
        ErrorKind::Unavailable,
        format!("{what}: the connection to NATS is {state}"),
    );
    error.not_sent = true;
    error
}

fn server(what: &str, source: impl StdError + Send + Sync + 'static) -> ClusterError {
    ClusterError::with_source(ErrorKind::Server, format!("{what}: NATS refused"), source)
}

pub(crate) fn connect(error: ConnectError) -> ClusterError {
    match error.kind() {
        ConnectErrorKind::ServerParse | ConnectErrorKind::Tls => ClusterError::with_source(
            ErrorKind::InvalidConfig,
            "connecting to NATS: bad server address or TLS setup",
            error,
        ),
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            server("connecting to NATS", error)
        }
        _ => unavailable("connecting to NATS", error),
    }
}

/// A JetStream write. `WrongLastSequence` is mapped by the caller (it means a lost lease or a
/// fenced append); with it the log's actual last sequence, parsed from the server's answer.
pub(crate) enum WriteError {
    WrongLastSequence(Option<u64>),
    Other(ClusterError),
}

pub(crate) fn write(what: &str, error: PublishError) -> WriteError {
    let mapped = match error.kind() {
        PublishErrorKind::WrongLastSequence => {
            return WriteError::WrongLastSequence(wrong_last_sequence(&error));
        }
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => unavailable(what, error),
        PublishErrorKind::MaxPayloadExceeded => ClusterError::with_source(
            ErrorKind::PayloadTooLarge,
            format!("{what}: the message is larger than the server's max_payload"),
            error,
        ),
        PublishErrorKind::StreamNotFound => ClusterError::with_source(
            ErrorKind::Server,
            format!("{what}: no JetStream stream holds this subject (was it deleted?)"),
            error,
        ),
        _ => server(what, error),
    };
    WriteError::Other(mapped)
}

/// The server says "wrong last sequence: N"; N is the subject's actual last sequence.
fn wrong_last_sequence(error: &PublishError) -> Option<u64> {
    let text = error.source()?.to_string();
    let at = text.find("wrong last sequence")?;
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

pub(crate) fn last_message(what: &str, error: LastRawMessageError) -> ClusterError {
    match error.kind() {
        LastRawMessageErrorKind::JetStream(_) => server(what, error),
        LastRawMessageErrorKind::InvalidSubject => ClusterError::with_source(
            ErrorKind::InvalidConfig,
            format!("{what}: invalid subject"),
            error,
        ),
        // A timeout or a dropped connection.
        _ => unavailable(what, error),
    }
}

pub(crate) fn is_no_message(error: &LastRawMessageError) -> bool {
    match error.kind() {
        LastRawMessageErrorKind::NoMessageFound => true,
        LastRawMessageErrorKind::JetStream(error) => {
            error.error_code() == ErrorCode::NO_MESSAGE_FOUND
        }
        _ => false,
    }
}

pub(crate) fn purge(what: &str, error: PurgeError) -> ClusterError {
    match error.kind() {
        PurgeErrorKind::JetStream(_) => server(what, error),
        _ => unavailable(what, error),
    }
}

pub(crate) fn consumer(what: &str, error: ConsumerError) -> ClusterError {
    match error.kind() {
        ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request => unavailable(what, error),
        _ => server(what, error),
    }
}

pub(crate) fn create_stream(what: &str, error: CreateStreamError) -> ClusterError {
    match error.kind() {
        CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => {
            unavailable(what, error)
        }
        _ => server(what, error),
    }
}

/// Whether creating a stream failed because a stream exists already: with this name and
/// another configuration (10058), or, when nodes race to create the same stream on
/// nats-server 2.9, the loser's "subjects overlap with an existing stream" (10065) although
/// the winner's stream is the very same.
pub(crate) fn is_stream_in_the_way(error: &CreateStreamError) -> bool {
    matches!(
        error.kind(),
        CreateStreamErrorKind::JetStream(e)
            if e.error_code() == ErrorCode::STREAM_NAME_EXIST
                || e.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP
    )
}

pub(crate) fn get_stream(what: &str, error: GetStreamError) -> ClusterError {
    match error.kind() {
        GetStreamErrorKind::Request => unavailable(what, error),
        GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            ClusterError::with_source(
                ErrorKind::ConfigMismatch,
                format!("{what}: another stream holds its subjects"),
                error,
            )
        }
        _ => server(what, error),
    }
}

pub(crate) fn request(what: &str, error: RequestError) -> ClusterError {
    match error.kind() {
        RequestErrorKind::NoResponders => ClusterError::with_source(
            ErrorKind::NoResponders,
            format!("{what}: no node serves this node id"),
            error,
        ),
        RequestErrorKind::MaxPayloadExceeded => ClusterError::with_source(
            ErrorKind::PayloadTooLarge,
            format!("{what}: the message is larger than the server's max_payload"),
            error,
        ),
        RequestErrorKind::InvalidSubject => ClusterError::with_source(
            ErrorKind::InvalidConfig,
            format!("{what}: invalid subject"),
            error,
        ),
        _ => unavailable(what, error),
    }
}

/// A core publish or subscribe failed: the client's connection task is gone or full.
pub(crate) fn core(what: &str, error: impl StdError + Send + Sync + 'static) -> ClusterError {
    unavailable(what, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let names = Names::new("eu-1");
        assert_eq!(names.owners_bucket, "roomcast_eu-1_owners");
        assert_eq!(names.owners_stream, "KV_roomcast_eu-1_owners");
        assert_eq!(names.owners_subjects(), "$KV.roomcast_eu-1_owners.>");
        assert_eq!(names.owner_key(42), "$KV.roomcast_eu-1_owners.42");
        assert_eq!(names.rooms_stream, "roomcast_eu-1_rooms");
        assert_eq!(names.logs(), "roomcast.eu-1.room.*.log");
        assert_eq!(names.log(7), "roomcast.eu-1.room.7.log");
        assert_eq!(names.events(7), "roomcast.eu-1.room.7.events");
        assert_eq!(names.calls("node-a"), "roomcast.eu-1.node.node-a.call");
    }
}
